"""Battle leases in real Redis: one owner, batched renewal, no theft, no orphaned battle."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from arena_rt.battle.ownership import LEASE_PREFIX, RedisOwnership
from tests.conftest import REDIS_URL
from tests.support import unique


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def test_one_owner_and_renewal(redis: Redis) -> None:
    a, b = (
        RedisOwnership(redis, unique("node-a"), 5_000),
        RedisOwnership(redis, unique("node-b"), 5_000),
    )
    battles = [unique("battle") for _ in range(3)]
    try:
        for battle in battles:
            assert await a.acquire(battle) is None
            assert await b.acquire(battle) == a.node_id  # taken: B is told who owns it
        assert await a.renew(battles) == set(battles)
        assert await b.renew(battles) == set()

        # An expired lease nobody took is taken back by its runner's node, not orphaned.
        await redis.delete(LEASE_PREFIX + battles[0])
        assert await a.renew(battles) == set(battles)
        assert await redis.pttl(LEASE_PREFIX + battles[0]) > 4_000

        # A lease another node holds is reported lost, and a release cannot steal it back.
        await redis.set(LEASE_PREFIX + battles[1], b.node_id, px=5_000)
        assert await a.renew(battles) == {battles[0], battles[2]}
        await a.release(battles[1])
        assert await redis.get(LEASE_PREFIX + battles[1]) == b.node_id.encode()
    finally:
        await redis.delete(*(LEASE_PREFIX + battle for battle in battles))


async def test_renewal_is_batched_for_many_battles(redis: Redis) -> None:
    node = RedisOwnership(redis, unique("node"), 5_000)
    battles = [unique("battle") for _ in range(1_200)]  # over one RENEW_BATCH
    try:
        for battle in battles:
            await node.acquire(battle)
        assert await node.renew(battles) == set(battles)
    finally:
        await redis.delete(*(LEASE_PREFIX + battle for battle in battles))
