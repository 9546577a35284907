"""Group commit: steps of many battles written in one transaction, each acked after commit.

A runner hands its step over and waits; the committer drains whatever has queued up (up to a
bound) and writes it all in one transaction, so 500 busy battles cost a handful of commits per
second instead of 500. Each battle has at most one step in flight (its runner waits), which
keeps per-battle order. Several groups are written at once, each on its own connection.

Transient faults are not battle faults (:mod:`arena_rt.store.faults`): a lost connection, an
administrator's shutdown, a database not accepting connections, a deadlock or serialization
abort. The group is written again, with backoff, for as long as it takes: while the database
is unreachable the battles wait (and the committer says it is ``unavailable``, so new client
inputs are refused with a clear error instead of piling up). Before writing a group again it
asks which of its steps did land (a COMMIT may succeed although its connection died): those
are done, never written twice; a step whose seq holds another writer's event fails. When a
group fails otherwise, its steps are retried one by one so one battle's bad step cannot fail
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.metrics import Metrics
from arena_rt.store.battle_writes import Landed, StepWrite, landed, write_steps
from arena_rt.store.faults import UNREACHABLE, transient_reason
from arena_rt.store.group_statement import GroupStatementWriter
from arena_rt.store.models import utcnow

log = logging.getLogger("arena_rt.committer")

LINGER_ROUNDS = 4  # event-loop rounds a group waits for more steps while they keep coming
BACKOFF_S = (0.02, 2.0)  # first and longest pause between attempts at a group (jittered)
WATCH_S = 1.0  # with nothing written for this long, ask the database whether it is there
WATCH_TIMEOUT_S = 2.0
WATCH_CONFIRM_TIMEOUT_S = 5.0  # the second chance of a probe that timed out


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
        statement: GroupStatementWriter | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        # PostgreSQL: groups of only frequent rows in one statement (one round trip).
        self._statement = statement
        self._metrics = metrics
        self._max_group = max_group
        self._writers = writers
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._unreachable: str | None = None  # why the database can't be reached, while so
        self.unreachable_since_ms = 0  # wall clock, while unreachable: how long timers paused
        self._reachable = asyncio.Event()
        self._reachable.set()
        self._last_contact = time.monotonic()  # the last time the database answered

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="arena-committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._statement is not None:
            await self._statement.close()
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
            writers.create_task(self._watch_database(), name="arena-committer-watch")

    async def _watch_database(self) -> None:
        """Ask the database every second when nothing was written meanwhile: so an outage is
        known (and turn timers held) even when no battle happened to write."""
        while True:
            await asyncio.sleep(WATCH_S)
            if time.monotonic() - self._last_contact < WATCH_S:
                continue
            await self.check_database()

    async def check_database(self) -> None:
        """One probe: ``SELECT 1``. A late answer is not yet an outage: an event loop busy with
        a connect storm reads a healthy database's answer late too (a 3 s stall was seen with
        12,000 sockets connecting), so a probe that timed out is asked again, with longer to
        answer, before battles are told the database is gone."""
        failure = await self._probe(WATCH_TIMEOUT_S)
        if isinstance(failure, TimeoutError):
            failure = await self._probe(WATCH_CONFIRM_TIMEOUT_S)
        if failure is None:
            self._last_contact = time.monotonic()
            self._recovered()
            return
        reason = transient_reason(failure)
        if reason is not None:
            self._mark_unreachable(reason)

    async def _probe(self, timeout_s: float) -> Exception | None:
        try:
            async with asyncio.timeout(timeout_s), self._sessionmaker() as session:
                await session.execute(text("SELECT 1"))
        except Exception as exc:
            return exc
        return None

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

    @property
    def available(self) -> bool:
        """False while the database cannot be reached (the last attempt failed for that)."""
        return self._unreachable is None

    async def wait_available(self) -> None:
        await self._reachable.wait()

    async def _write_group(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        pending = group
        attempt = 0
        try:
            while pending:
                try:
                    await self._write([p.step for p in pending])
                    break
                except Exception as exc:
                    reason = transient_reason(exc)
                    if reason is None:
                        await self._isolate(pending)
                        return
                    attempt += 1
                    self._fault(reason, len(pending), attempt, exc)
                    await asyncio.sleep(backoff_s(attempt))
                    pending = await self._not_landed(pending)
        except asyncio.CancelledError:
            for p in group:
                if not p.done.done():
                    p.done.set_exception(CommitError("server shutting down"))
            raise
        self._last_contact = time.monotonic()
        self._recovered()
        if self._metrics is not None:
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
            self._metrics.events.inc(sum(len(p.step.events) for p in pending))
        for p in pending:
            self._settle(p, None)

    async def _isolate(self, group: list[_Pending]) -> None:
        """A group failed for a reason that is not transient: find the step(s) at fault."""
        if len(group) == 1:
            log.exception("commit failed for battle %s", group[0].step.battle_id)
            self._settle(group[0], CommitError("could not persist the step"))
            return
        for p in group:
            await self._write_group([p])

    async def _not_landed(self, pending: list[_Pending]) -> list[_Pending]:
        """The steps still to write: those the failed attempt did store are settled as done,
        those whose seq another writer holds fail. When the database can't even be asked,
        all of them (the next attempt asks again)."""
        try:
            async with self._sessionmaker() as session:
                found = await landed(session, [p.step for p in pending])
        except Exception as exc:
            if transient_reason(exc) is None:
                raise
            return pending
        still: list[_Pending] = []
        for p, outcome in zip(pending, found, strict=True):
            if outcome is Landed.NO:
                still.append(p)
            elif outcome is Landed.YES:
                log.info(
                    "step of battle %s had landed before its connection died", p.step.battle_id
                )
                self._settle(p, None)
            else:
                log.error(
                    "battle %s seq %d holds another writer's event: this writer lost the battle",
                    p.step.battle_id,
                    p.step.events[0].seq,
                )
                self._settle(p, CommitError("the seq was written by another process"))
        return still

    def _fault(self, reason: str, steps: int, attempt: int, exc: Exception) -> None:
        if self._metrics is not None:
            self._metrics.commit_retries.labels(reason).inc()
        self._mark_unreachable(reason)
        # Every attempt while it is new, then one line in ten: an outage is not a log flood.
        if attempt <= 3 or attempt % 10 == 0:
            log.warning(
                "group of %d steps not written (%s: %s); attempt %d, trying again",
                steps,
                reason,
                type(exc).__name__,
                attempt,
            )

    def _mark_unreachable(self, reason: str) -> None:
        if reason not in UNREACHABLE or self._unreachable is not None:
            return
        log.warning("the database cannot be reached (%s): battles wait for it", reason)
        self._unreachable = reason
        self.unreachable_since_ms = time.time_ns() // 1_000_000
        self._reachable.clear()
        if self._metrics is not None:
            self._metrics.database_up.set(0)

    def _recovered(self) -> None:
        if self._unreachable is not None:
            log.warning("the database answers again (%s is over)", self._unreachable)
            self._unreachable = None
            self._reachable.set()
            if self._metrics is not None:
                self._metrics.database_up.set(1)

    async def _write(self, steps: list[StepWrite]) -> None:
        if self._statement is not None:
            now = utcnow()
            rows = self._statement.rows_for(steps, now)
            if rows is not None:
                await self._statement.write(rows, now)
                return
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


def backoff_s(attempt: int) -> float:
    first, longest = BACKOFF_S
    return random.uniform(0.5, 1.0) * min(longest, first * 2.0 ** (attempt - 1))
