"""Time for runners: real (the event loop) or manual (tests advance it; nothing sleeps)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def call_at(self, when_ms: int, callback: Callable[[str], None], arg: str) -> TimerHandle: ...


class RealClock:
    """Wall-clock milliseconds for the wire; the loop's monotonic timer for waiting."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def call_at(self, when_ms: int, callback: Callable[[str], None], arg: str) -> TimerHandle:
        delay = max(0.0, (when_ms - self.now_ms()) / 1000)
        return asyncio.get_running_loop().call_later(delay, callback, arg)


class _ManualHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when told to: ``advance(ms)`` fires what falls due, in order."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms
        self._heap: list[tuple[int, int, _ManualHandle, Callable[[str], None], str]] = []
        self._order = itertools.count()

    def now_ms(self) -> int:
        return self._now

    def call_at(self, when_ms: int, callback: Callable[[str], None], arg: str) -> TimerHandle:
        handle = _ManualHandle()
        heapq.heappush(self._heap, (when_ms, next(self._order), handle, callback, arg))
        return handle

    def next_due(self) -> int | None:
        live = [entry[0] for entry in self._heap if not entry[2].cancelled]
        return min(live) if live else None

    def advance(self, ms: int) -> None:
        target = self._now + ms
        while self._heap and self._heap[0][0] <= target:
            when, _, handle, callback, arg = heapq.heappop(self._heap)
            self._now = max(self._now, when)
            if not handle.cancelled:
                callback(arg)
        self._now = target
