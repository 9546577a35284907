"""Battle leases in real Redis: one owner, growing fencing tokens, batched renewal, no theft,
no orphaned battle, and the outage a new owner learns from the alive mark."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from arena_rt.battle.ownership import (
    ALIVE_PREFIX,
    LEASE_PREFIX,
    LeaseHeld,
    LocalOwnership,
    RedisOwnership,
)
from tests.conftest import REDIS_URL
from tests.support import unique


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def keys(battles: list[str]) -> list[str]:
    return [LEASE_PREFIX + b for b in battles] + [ALIVE_PREFIX + b for b in battles]


async def test_one_owner_growing_tokens_and_renewal(redis: Redis) -> None:
    a, b = (
        RedisOwnership(redis, unique("node-a"), 5_000),
        RedisOwnership(redis, unique("node-b"), 5_000),
    )
    battles = [unique("battle") for _ in range(3)]
    try:
        tokens = []
        for battle in battles:
            lease = await a.acquire(battle)
            assert lease.outage_ms == 0  # never run before
            tokens.append(lease.token)
            with pytest.raises(LeaseHeld) as held:
                await b.acquire(battle)  # taken: B is told who owns it, and under which token
            assert (held.value.holder.node_id, held.value.holder.token) == (a.node_id, lease.token)
            assert await b.holder(battle) == held.value.holder
        assert tokens == sorted(tokens) and len(set(tokens)) == 3
        assert await a.renew(battles) == set(battles)
        assert await b.renew(battles) == set()
        assert await b.unowned(battles) == []

        # An expired lease nobody took is taken back by its runner's node, not orphaned.
        await redis.delete(LEASE_PREFIX + battles[0])
        assert await b.unowned(battles) == [battles[0]]
        assert await a.renew(battles) == set(battles)
        assert await redis.pttl(LEASE_PREFIX + battles[0]) > 4_000

        # A lease another node took is reported lost, and a release cannot steal it back.
        await redis.delete(LEASE_PREFIX + battles[1])
        taken = await b.acquire(battles[1])
        assert taken.token > tokens[1]  # a new owner always has a larger token
        assert await a.renew(battles) == {battles[0], battles[2]}
        await a.release(battles[1])
        holder = await b.holder(battles[1])
        assert holder is not None and holder.node_id == b.node_id
    finally:
        await redis.delete(*keys(battles))


async def test_a_new_owner_learns_how_long_the_battle_had_none(redis: Redis) -> None:
    a, b = (
        RedisOwnership(redis, unique("node-a"), 300),
        RedisOwnership(redis, unique("node-b"), 300),
    )
    crashed, handed, finished = (unique("battle") for _ in range(3))
    try:
        for battle in (crashed, handed, finished):
            await a.acquire(battle)
        await a.release(handed, handoff=True)  # a drain: B may claim it at once
        await a.release(finished)  # over: the next owner (if any) starts fresh
        lease = await b.acquire(handed)
        assert 0 <= lease.outage_ms < 200
        assert (await b.acquire(finished)).outage_ms == 0
        await asyncio.sleep(0.8)  # A "crashed": no renewal, the lease lapsed 0.3 s in
        assert await b.unowned([crashed]) == [crashed]
        lease = await b.acquire(crashed)
        assert 700 <= lease.outage_ms < 2_000  # since A's last sign of life, on Redis's clock
    finally:
        await redis.delete(*keys([crashed, handed, finished]))


async def test_renewal_is_batched_for_many_battles(redis: Redis) -> None:
    node = RedisOwnership(redis, unique("node"), 5_000)
    battles = [unique("battle") for _ in range(1_200)]  # over one RENEW_BATCH
    try:
        for battle in battles:
            await node.acquire(battle)
        assert await node.renew(battles) == set(battles)
    finally:
        await redis.delete(*keys(battles))


async def test_the_embedded_node_measures_its_downtime_from_its_heartbeat(tmp_path: Path) -> None:
    heartbeat = tmp_path / "arena_rt.db.alive"
    first = LocalOwnership("n", heartbeat)
    assert (await first.acquire("b")).outage_ms == 0  # no heartbeat yet: a first start
    first.beat()
    await asyncio.sleep(0.3)
    restarted = LocalOwnership("n", heartbeat)
    assert 300 <= (await restarted.acquire("b")).outage_ms < 2_000
    restarted.resumed()  # up again: battles loaded from now on were never down
    assert (await restarted.acquire("c")).outage_ms == 0
