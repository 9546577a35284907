"""The loop-lag watcher sees a stalled event loop and says how long it stalled."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from arena_rt import looplag


async def test_a_blocked_loop_is_measured_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    histogram = Histogram("lag", "lag", registry=CollectorRegistry(), buckets=(0.05, 0.2, 1.0))
    with caplog.at_level(logging.WARNING, logger="arena_rt.looplag"):
        async with looplag.watching(histogram):
            await asyncio.sleep(0.25)  # a few quiet ticks
            time.sleep(0.4)  # noqa: ASYNC251 -- the point: a callback that never yields
            await asyncio.sleep(0.15)
    samples = {s.name: s.value for s in histogram.collect()[0].samples if not s.labels}
    assert samples["lag_count"] >= 3
    assert samples["lag_sum"] >= 0.29  # the stall, less the 100 ms the timer was asked for
    stalled_ms = [int(r.getMessage().split()[3]) for r in caplog.records if "stalled" in r.msg]
    # The blocking call is among them (a loaded machine may add stalls of its own).
    assert any(290 <= ms <= 1000 for ms in stalled_ms), stalled_ms
