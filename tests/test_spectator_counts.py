"""Spectator counts across nodes in real Redis: summed over nodes, written after changes, and
kept alive for quiet battles while other battles keep changing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from arena_rt import spectators
from arena_rt.spectators import SpectatorCounts
from tests.conftest import REDIS_URL
from tests.support import unique


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def short_lived(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fields live 0.9 s and are refreshed every 0.3 s, so expiry shows within the test."""
    monkeypatch.setattr(spectators, "FIELD_TTL_MS", 900)
    monkeypatch.setattr(spectators, "REFRESH_S", 0.3)
    monkeypatch.setattr(spectators, "COALESCE_S", 0.02)


async def test_counts_sum_over_nodes_and_a_quiet_battle_stays_counted(
    redis: Redis, short_lived: None
) -> None:
    a, b = SpectatorCounts(unique("node"), redis), SpectatorCounts(unique("node"), redis)
    quiet, busy = unique("battle"), unique("battle")
    await a.start()
    await b.start()
    try:
        a.enter(quiet)
        b.enter(quiet)
        b.enter(quiet)
        await asyncio.sleep(0.2)
        assert await a.counts([quiet]) == {quiet: 3}
        # Another battle changes all the time; the quiet one must outlive its fields' TTL.
        for _ in range(20):
            a.enter(busy)
            await asyncio.sleep(0.05)
            a.leave(busy)
            await asyncio.sleep(0.05)
        assert await b.counts([quiet, busy]) == {quiet: 3, busy: 0}
        b.leave(quiet)
        await asyncio.sleep(0.2)
        assert await a.counts([quiet]) == {quiet: 2}
    finally:
        await a.stop()
        await b.stop()
    await asyncio.sleep(1.0)  # stopped nodes stop counting once their fields expire
    assert await SpectatorCounts("reader", redis).counts([quiet]) == {quiet: 0}
