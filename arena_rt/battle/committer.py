"""Group commit: steps of many battles written in one transaction, each acked after commit.

A runner hands its step over and waits; the committer drains whatever has queued up (up to a
bound) and writes it all in one transaction, so 500 busy battles cost a handful of commits per
second instead of 500. Each battle has at most one step in flight (its runner waits), which
keeps per-battle order. Several groups are written at once, each on its own connection. A group
the database aborted to break a deadlock is written again; when a group fails otherwise, its
steps are retried one by one so one battle's bad step cannot fail the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.metrics import Metrics
from arena_rt.store.battle_writes import StepWrite, write_steps

log = logging.getLogger("arena_rt.committer")

LINGER_ROUNDS = 4  # event-loop rounds a group waits for more steps while they keep coming


RETRIES = 4  # attempts at a group the database aborted to break a deadlock
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure


def _is_transient(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES


class CommitError(Exception):
    """The step was not persisted; the runner must not publish or ack it."""


@dataclass(slots=True)
class _Pending:
    step: StepWrite
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Committer:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
        *,
        max_group: int = 256,
        queue_size: int = 10_000,
        writers: int = 2,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._metrics = metrics
        self._max_group = max_group
        self._writers = writers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="arena-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():  # nobody will write these: tell their runners
            pending = self._queue.get_nowait()
            if not pending.done.done():
                pending.done.set_exception(CommitError("server shutting down"))

    async def commit(self, step: StepWrite) -> None:
        """Returns once the step is durable; raises CommitError when it could not be."""
        if self._task is None:
            raise CommitError("committer is not running")
        pending = _Pending(step)
        await self._queue.put(pending)
        await pending.done

    async def _run(self) -> None:
        # Several groups in flight, each in its own transaction on its own connection: while
        # one waits for the database, the next is already being written. A battle never has
        # two steps queued (its runner waits for each), so groups never share a battle.
        async with asyncio.TaskGroup() as writers:
            for n in range(self._writers):
                writers.create_task(self._write_groups(), name=f"arena-committer-{n}")

    async def _write_groups(self) -> None:
        while True:
            group = [await self._queue.get()]
            self._drain(group)
            # Runners woken by the last commit are still stepping: let the loop run them while
            # they keep adding steps (a few rounds at most), so one transaction carries many
            # battles' steps instead of a trickle of small commits.
            for _ in range(LINGER_ROUNDS):
                if len(group) >= self._max_group:
                    break
                await asyncio.sleep(0)
                if not self._drain(group):
                    break
            await self._write_group(group)

    def _drain(self, group: list[_Pending]) -> int:
        """Move what is queued into ``group`` (up to the bound); how many were moved."""
        moved = 0
        while len(group) < self._max_group and not self._queue.empty():
            group.append(self._queue.get_nowait())
            moved += 1
        return moved

    async def _write_group(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            await self._write_retrying([p.step for p in group])
        except asyncio.CancelledError:
            for p in group:
                if not p.done.done():
                    p.done.set_exception(CommitError("server shutting down"))
            raise
        except Exception:
            if len(group) == 1:
                log.exception("commit failed for battle %s", group[0].step.battle_id)
                self._settle(group[0], CommitError("could not persist the step"))
                return
            for p in group:  # isolate the failing step(s)
                await self._write_group([p])
            return
        if self._metrics is not None:
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
            self._metrics.events.inc(sum(len(p.step.events) for p in group))
        for p in group:
            self._settle(p, None)

    async def _write_retrying(self, steps: list[StepWrite]) -> None:
        """Write, again when the database aborted the transaction only to break a deadlock or
        a serialization conflict with a concurrent one (the other went through)."""
        for attempt in range(1, RETRIES + 1):
            try:
                await self._write(steps)
                return
            except DBAPIError as exc:
                if attempt == RETRIES or not _is_transient(exc):
                    raise
                log.warning(
                    "group of %d steps aborted by the database (%s); retry %d of %d",
                    len(steps),
                    getattr(exc.orig, "sqlstate", "?"),
                    attempt,
                    RETRIES - 1,
                )
                await asyncio.sleep(random.uniform(0.002, 0.02) * attempt)

    async def _write(self, steps: list[StepWrite]) -> None:
        async with self._sessionmaker() as session, session.begin():
            await write_steps(session, steps)

    @staticmethod
    def _settle(pending: _Pending, error: Exception | None) -> None:
        if pending.done.done():  # the runner gave up waiting (cancelled)
            return
        if error is None:
            pending.done.set_result(None)
        else:
            pending.done.set_exception(error)
