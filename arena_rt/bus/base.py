"""The bus interface: how one process tells every process about a battle's new events.

Exceptions::

    BusError                    anything the bus (or the hub on top of it) reports
    ├── NotStartedError         an operation before ``start()`` or after ``stop()``
    │   ├── BusNotStartedError
    │   └── HubNotStartedError
    ├── BusUnavailableError     the backend could not be reached (after one retry)
    └── FeedClosedError         a spectator feed was closed (overflow, unfillable gap, shutdown)

A backend moves already-encoded event bytes (encode once: the same ``bytes`` reach every
subscriber) and keeps a short per-battle history so a reconnecting spectator can resume
without touching the database. Events are identified by their ``seq`` (1, 2, 3, ... per battle,
no gaps, see ARCHITECTURE invariant 3).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "Bus",
    "BusError",
    "BusNotStartedError",
    "BusUnavailableError",
    "FeedClosedError",
    "FeedClosedReason",
    "HubNotStartedError",
    "MessageHandler",
    "NotStartedError",
    "ReconnectHandler",
    "StepHandler",
    "contiguous_after",
]

log = logging.getLogger("arena_rt.bus")

DEFAULT_HISTORY_SIZE = 1000

MessageHandler = Callable[[str, int, bytes], None]
"""``on_message(battle_id, seq, data)``: synchronous, must not block."""

StepHandler = Callable[[str, Sequence[tuple[int, bytes]]], None]
"""``on_step(battle_id, events)``: one step's events (contiguous seqs) published by this
process, delivered together; without one, each goes to ``on_message``."""

ReconnectHandler = Callable[[frozenset[str]], None]
"""``on_reconnect(battle_ids)``: the listener came back; events for these battles may be lost."""


class BusError(Exception):
    """Base of every error raised by the bus package."""


class NotStartedError(BusError):
    """An operation was called before ``start()`` or after ``stop()``."""


class BusNotStartedError(NotStartedError):
    pass


class HubNotStartedError(NotStartedError):
    pass


class BusUnavailableError(BusError):
    """The backend (Redis) could not be reached, even after a retry."""


class FeedClosedReason(StrEnum):
    OVERFLOW = "overflow"  # the spectator's bounded queue was full: close 4008, resume with since
    GAP = "gap"  # missed events could not be recovered: close, the client resumes with since
    SHUTDOWN = "shutdown"  # the hub is stopping: close 1001


class FeedClosedError(BusError):
    def __init__(self, battle_id: str, reason: FeedClosedReason) -> None:
        super().__init__(f"feed for battle {battle_id!r} closed: {reason}")
        self.battle_id = battle_id
        self.reason = reason


def contiguous_after(
    entries: Iterable[tuple[int, bytes]], after_seq: int, *, have_any: bool
) -> list[tuple[int, bytes]] | None:
    """The entries with ``seq > after_seq`` if they are exactly ``after_seq+1, after_seq+2, ...``.

    ``entries`` is a history in increasing ``seq`` order. ``have_any`` says whether the history
    holds anything at all: an empty history proves nothing (expired, or never written), so the
    answer is ``None``; a non-empty one whose newest entry is ``<= after_seq`` proves there is
    nothing newer, so the answer is ``[]``. Any hole (a publish that never reached the history)
    also gives ``None``: the caller then reads the database, which has every event.
    """
    out: list[tuple[int, bytes]] = []
    expected = after_seq + 1
    for seq, data in entries:
        if seq <= after_seq:
            continue
        if seq != expected:
            return None
        out.append((seq, data))
        expected += 1
    if not out and not have_any:
        return None
    return out


class Bus(ABC):
    """One small interface over the in-process and the Redis backends.

    Subclasses implement the ``_``-prefixed hooks; the public methods add the lifecycle guard
    and argument checks so every backend behaves the same way.

    Subscriptions are a set, not a count: subscribing twice is subscribing once, and one
    ``unsubscribe`` ends it. The :class:`~arena_rt.bus.hub.Hub` counts local spectators.
    ``subscribe`` returns only once delivery is guaranteed for every later ``publish``.
    """

    def __init__(
        self,
        on_message: MessageHandler | None = None,
        *,
        on_reconnect: ReconnectHandler | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.history_size = history_size
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._on_step: StepHandler | None = None
        self._started = False
        self._subscriptions: set[str] = set()
        self._sub_lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        return self._started

    @property
    def subscriptions(self) -> frozenset[str]:
        """The battles this process currently listens to."""
        return frozenset(self._subscriptions)

    def bind(
        self,
        on_message: MessageHandler,
        on_reconnect: ReconnectHandler | None = None,
        on_step: StepHandler | None = None,
    ) -> None:
        """Set the callbacks after construction (the hub does this); only before ``start()``."""
        if self._started:
            raise BusError("bind() must be called before start()")
        if self._on_message is not None:
            raise BusError("this bus already has a message handler")
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._on_step = on_step

    async def start(self) -> None:
        if self._started:
            raise BusError(f"{type(self).__name__} already started")
        await self._start()
        self._started = True

    async def stop(self) -> None:
        """Cancel and await every task the bus owns and close its connections. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._subscriptions.clear()
        await self._stop()

    # ------------------------------------------------------------------ operations

    async def publish(self, battle_id: str, seq: int, data: bytes) -> None:
        """Append ``(seq, data)`` to the battle's history and deliver it to every subscriber."""
        self._check_started()
        if seq < 1:
            raise ValueError(f"seq must be >= 1, got {seq}")
        await self._publish(battle_id, seq, data)

    async def publish_many(self, battle_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """Publish one step's events, in seq order, in one round trip where the backend can."""
        self._check_started()
        if any(seq < 1 for seq, _ in events):
            raise ValueError(f"seqs must be >= 1, got {[seq for seq, _ in events]}")
        if events:
            await self._publish_many(battle_id, events)

    @abstractmethod
    def publish_soon(
        self, battle_id: str, events: Sequence[tuple[int, bytes]]
    ) -> asyncio.Future[None]:
        """:meth:`publish_many` without waiting for it: steps are published in the order of
        these calls; the future settles when this one is (its error, if it failed)."""

    async def history(self, battle_id: str, after_seq: int) -> list[tuple[int, bytes]] | None:
        """Recent events with ``seq > after_seq`` in order, or ``None`` when the history can't
        prove it has all of them (trimmed, expired, or a hole): then read the database."""
        self._check_started()
        return await self._history(battle_id, max(after_seq, 0))

    async def subscribe(self, battle_id: str) -> None:
        self._check_started()
        async with self._sub_lock:
            if battle_id in self._subscriptions:
                return
            await self._subscribe(battle_id)
            self._subscriptions.add(battle_id)

    async def unsubscribe(self, battle_id: str) -> None:
        self._check_started()
        async with self._sub_lock:
            if battle_id not in self._subscriptions:
                return
            self._subscriptions.discard(battle_id)
            await self._unsubscribe(battle_id)

    async def ping(self) -> None:
        """Return when the backend answers; raise :class:`BusError` otherwise (``/healthz``)."""
        self._check_started()
        await self._ping()

    # ------------------------------------------------------------------ for subclasses

    def _check_started(self) -> None:
        if not self._started:
            raise BusNotStartedError(f"{type(self).__name__} is not started")

    def _emit(self, battle_id: str, seq: int, data: bytes) -> None:
        handler = self._on_message
        if handler is None:
            return
        try:
            handler(battle_id, seq, data)
        except Exception:
            # One broken delivery must not stop delivery for every other battle.
            log.exception("bus message handler failed (battle %s, seq %d)", battle_id, seq)

    def _emit_step(self, battle_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """This process's own step, to its own subscribers: together when they take steps."""
        handler = self._on_step
        if handler is None or len(events) == 1:
            for seq, data in events:
                self._emit(battle_id, seq, data)
            return
        try:
            handler(battle_id, events)
        except Exception:
            log.exception("bus step handler failed (battle %s, seq %d)", battle_id, events[0][0])

    def _emit_reconnect(self, battle_ids: frozenset[str]) -> None:
        handler = self._on_reconnect
        if handler is None:
            return
        try:
            handler(battle_ids)
        except Exception:
            log.exception("bus reconnect handler failed")

    @abstractmethod
    async def _start(self) -> None: ...

    @abstractmethod
    async def _stop(self) -> None: ...

    @abstractmethod
    async def _publish(self, battle_id: str, seq: int, data: bytes) -> None: ...

    async def _publish_many(self, battle_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        for seq, data in events:
            await self._publish(battle_id, seq, data)

    @abstractmethod
    async def _history(self, battle_id: str, after_seq: int) -> list[tuple[int, bytes]] | None: ...

    @abstractmethod
    async def _subscribe(self, battle_id: str) -> None: ...

    @abstractmethod
    async def _unsubscribe(self, battle_id: str) -> None: ...

    @abstractmethod
    async def _ping(self) -> None: ...
