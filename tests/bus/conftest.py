"""Fixtures for the bus tests: a real Redis (never a fake), a unique key prefix per test, and
factories that stop whatever they started."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from bus_support import REDIS_URL, RUN_ID, STEP, BusFactory
from redis.asyncio import Redis

from arena_rt.bus import Bus, Hub, MemoryBus, RedisBus


@pytest.fixture(scope="session")
async def redis_admin() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, not a test result
        await client.aclose()
        pytest.fail(
            f"these tests need a real Redis at {REDIS_URL} ({exc}); start one with "
            '`redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no`'
        )
    yield client
    keys = [key async for key in client.scan_iter(match=f"arena-test:{RUN_ID}:*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"arena-test:{RUN_ID}:{uuid.uuid4().hex[:8]}:battle:"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def make_bus(backend: str, prefix: str, redis_admin: Redis) -> AsyncIterator[BusFactory]:
    """Build (not start) buses of the parametrized backend; every one is stopped afterwards."""
    made: list[Bus] = []

    def factory(on_message: Any = None, **options: Any) -> Bus:
        bus: Bus
        if backend == "memory":
            for redis_only in ("backoff_base", "health_interval", "subscribe_timeout"):
                options.pop(redis_only, None)
            bus = MemoryBus(on_message, **options)
        else:
            options.setdefault("prefix", prefix)
            options.setdefault("client_name", f"arena-test-{RUN_ID}-{uuid.uuid4().hex[:6]}")
            bus = RedisBus(REDIS_URL, on_message, **options)
        made.append(bus)
        return bus

    yield factory
    async with asyncio.timeout(STEP):
        for bus in made:
            await bus.stop()


@pytest.fixture
async def make_redis_bus(prefix: str, redis_admin: Redis) -> AsyncIterator[Callable[..., RedisBus]]:
    made: list[RedisBus] = []

    def factory(on_message: Any = None, url: str = REDIS_URL, **options: Any) -> RedisBus:
        options.setdefault("prefix", prefix)
        options.setdefault("client_name", f"arena-test-{RUN_ID}-{uuid.uuid4().hex[:6]}")
        bus = RedisBus(url, on_message, **options)
        made.append(bus)
        return bus

    yield factory
    async with asyncio.timeout(STEP):
        for bus in made:
            await bus.stop()


@pytest.fixture
async def make_hub() -> AsyncIterator[Callable[..., Awaitable[Hub]]]:
    """Start a bus and a hub on it; both are stopped afterwards (hub first)."""
    made: list[tuple[Hub, Bus]] = []

    async def factory(bus: Bus, load_after: Any, **options: Any) -> Hub:
        hub = Hub(bus, load_after, **options)
        await bus.start()
        await hub.start()
        made.append((hub, bus))
        return hub

    yield factory
    async with asyncio.timeout(STEP):
        for hub, bus in made:
            await hub.stop()
            await bus.stop()
