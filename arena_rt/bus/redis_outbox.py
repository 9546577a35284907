"""What this process publishes to Redis, batched: every step queued in one loop tick goes out
in one pipeline, in the order the steps were queued.

A runner used to wait for its own ``MULTI … EXEC`` round trip per step: at 100 busy battles
that was a hundred round trips a second, each resumed behind the event loop's other work, and
the battle's next input waited for it. Now the runner queues its step and goes on (the events
are durable already and this process's own spectators have them); one task writes whatever
has queued since its last round trip as one pipeline. Per battle the order is the queue's, and
within a step each ``XADD`` precedes its ``PUBLISH`` on the one connection, so an event a
subscriber sees live is already in the history, as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arena_rt.bus.base import BusError, BusNotStartedError, BusUnavailableError

log = logging.getLogger("arena_rt.bus.redis")

MAX_STEPS_PER_ROUND = 500  # a bound on one pipeline (and on the wait of its last step)
# Runners don't wait for their publishes, so while Redis is slow or gone steps would pile up
# at commit speed: past this many, a step is refused at once (it is durable; subscribers on
# other nodes fill the gap from the history or the database on the next event).
MAX_QUEUED_STEPS = 20_000
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(slots=True)
class _Step:
    battle_id: str
    events: Sequence[tuple[int, bytes]]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PublishOutbox:
    """Steps queued by :meth:`put`, written by one task, one pipeline per round."""

    def __init__(
        self,
        client: Callable[[], Redis],
        log_key: Callable[[str], str],
        channel: Callable[[str], str],
        history_size: int,
        history_ttl: int,
    ) -> None:
        self._client = client
        self._log_key = log_key
        self._channel = channel
        self._history_size = history_size
        self._history_ttl = history_ttl
        self._queue: list[_Step] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # pipelines written (each carries every step queued before it)

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_rounds(), name="bus-publish-outbox")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        queued, self._queue = self._queue, []
        _fail(queued, BusNotStartedError("bus stopped"))

    def put(self, battle_id: str, events: Sequence[tuple[int, bytes]]) -> asyncio.Future[None]:
        """Queue one step's events; the future settles once Redis has them (or cannot)."""
        if self._task is None:
            raise BusNotStartedError("RedisBus is not started")
        step = _Step(battle_id, events)
        if len(self._queue) >= MAX_QUEUED_STEPS:
            step.done.set_exception(
                BusUnavailableError(f"{MAX_QUEUED_STEPS} steps wait to be published already")
            )
            return step.done
        self._queue.append(step)
        self._ready.set()
        return step.done

    async def _write_rounds(self) -> None:
        while True:
            await self._ready.wait()
            # One more loop round: the runners woken with this one queue their steps too.
            await asyncio.sleep(0)
            batch = self._queue[:MAX_STEPS_PER_ROUND]
            del self._queue[:MAX_STEPS_PER_ROUND]
            if not self._queue:
                self._ready.clear()
            self.rounds += 1
            try:
                await self._write(batch)
            except BusError as exc:
                _fail(batch, exc)
            except asyncio.CancelledError:
                _fail(batch, BusNotStartedError("bus stopped"))
                raise

    async def _write(self, batch: list[_Step]) -> None:
        results: list[object] = []
        for attempt in (1, 2):
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for step in batch:
                        key = self._log_key(step.battle_id)
                        for seq, data in step.events:
                            pipe.xadd(
                                key,
                                {b"data": data},
                                id=f"{seq}-0",
                                maxlen=self._history_size,
                                approximate=True,
                            )
                        pipe.expire(key, self._history_ttl)
                        channel = self._channel(step.battle_id)
                        for seq, data in step.events:
                            pipe.publish(channel, b"%d\n" % seq + data)
                    results = await pipe.execute(raise_on_error=False)
                break
            except _TRANSIENT as exc:
                if attempt == 2:
                    raise BusUnavailableError(
                        f"publish of {len(batch)} step(s) failed twice: {exc}"
                    ) from exc
                log.warning("publish of %d step(s) failed (%s), retrying", len(batch), exc)
            except RedisError as exc:
                raise BusError(f"publish of {len(batch)} step(s) failed: {exc}") from exc
        at = 0
        for step in batch:
            count = 2 * len(step.events) + 1  # its XADDs, one EXPIRE, its PUBLISHes
            _settle(step, results[at : at + count])
            at += count


def _fail(steps: list[_Step], error: BusError) -> None:
    for step in steps:
        if not step.done.done():
            step.done.set_exception(error)


def _settle(step: _Step, results: Sequence[object]) -> None:
    if step.done.done():  # its publisher stopped waiting
        return
    for (seq, _), appended in zip(step.events, results, strict=False):
        if isinstance(appended, ResponseError) and "equal or smaller" in str(appended):
            # A retry of a publish that did land, or a stale stream: history keeps its order.
            log.info("history of battle %s already at or past seq %d", step.battle_id, seq)
            continue
        if isinstance(appended, Exception):
            step.done.set_exception(
                BusError(f"XADD for battle {step.battle_id} seq {seq} failed: {appended}")
            )
            return
    failed = next((r for r in results[len(step.events) :] if isinstance(r, Exception)), None)
    if failed is not None:
        step.done.set_exception(BusError(f"publish of battle {step.battle_id} failed: {failed}"))
    else:
        step.done.set_result(None)
