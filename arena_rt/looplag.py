"""Event-loop lag: how late a timer fires. Every socket, timer and commit of a process shares
one loop, so a stall here (a long callback, a collection, CPU starvation) is added to every
turn's latency; a real-time server watches it. Exported as ``arena_loop_lag_seconds``; a lag
over ``WARN_S`` is logged with its size."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from prometheus_client import Histogram

log = logging.getLogger("arena_rt.looplag")

INTERVAL_S = 0.1
WARN_S = 0.25


async def _watch(histogram: Histogram) -> None:
    while True:
        asked = time.perf_counter()
        await asyncio.sleep(INTERVAL_S)
        lag = time.perf_counter() - asked - INTERVAL_S
        histogram.observe(max(lag, 0.0))
        if lag > WARN_S:
            log.warning("event loop stalled %.0f ms", lag * 1000)


@contextlib.asynccontextmanager
async def watching(histogram: Histogram) -> AsyncIterator[None]:
    task = asyncio.create_task(_watch(histogram), name="arena-loop-lag")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
