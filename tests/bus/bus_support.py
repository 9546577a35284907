"""Helpers shared by the bus tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest
from redis.asyncio import Redis

from arena_rt.bus import Bus, Hub

REDIS_URL = os.environ.get("ARENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
RUN_ID = uuid.uuid4().hex[:10]  # every key and channel of this run starts with arena-test:RUN_ID
STEP = 5.0  # seconds: the bound on any single wait in these tests


async def eventually(predicate: Callable[[], bool], *, within: float = STEP) -> None:
    """Wait until ``predicate()`` is true, polling; fail the test after ``within`` seconds.
    (Polling on purpose: the state is changed by other tasks and by Redis, not by one event.)"""
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - see the docstring
                await asyncio.sleep(0.002)
    except TimeoutError:
        pytest.fail(f"condition not met within {within}s")


def frame(battle_id: str, seq: int) -> bytes:
    """A stand-in for an encoded event: unique per battle and seq."""
    return b'{"type":"turn","seq":%d,"battle":"%s"}' % (seq, battle_id.encode())


class Recorder:
    """A bus ``on_message`` / ``on_reconnect`` that remembers everything it was given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, int, bytes]] = []
        self.reconnects: list[frozenset[str]] = []

    def on_message(self, battle_id: str, seq: int, data: bytes) -> None:
        self.messages.append((battle_id, seq, data))

    def on_reconnect(self, battle_ids: frozenset[str]) -> None:
        self.reconnects.append(battle_ids)

    def seqs(self, battle_id: str) -> list[int]:
        return [seq for b, seq, _ in self.messages if b == battle_id]


class EventLog:
    """The database's ``battle_events`` for these tests: persist first, then publish."""

    def __init__(self) -> None:
        self.events: dict[str, list[tuple[int, bytes]]] = {}
        self.loads = 0

    def head(self, battle_id: str) -> int:
        events = self.events.get(battle_id)
        return events[-1][0] if events else 0

    def persist(self, battle_id: str, seq: int) -> bytes:
        data = frame(battle_id, seq)
        self.events.setdefault(battle_id, []).append((seq, data))
        return data

    async def append(self, bus: Bus, battle_id: str, count: int = 1) -> None:
        """What the battle runner does: commit the next events, then publish each."""
        for _ in range(count):
            seq = self.head(battle_id) + 1
            await bus.publish(battle_id, seq, self.persist(battle_id, seq))

    async def append_step(self, bus: Bus, battle_id: str, count: int) -> None:
        """A step of ``count`` events committed together, handed to the bus at once."""
        first = self.head(battle_id) + 1
        seqs = range(first, first + count)
        await bus.publish_soon(battle_id, [(s, self.persist(battle_id, s)) for s in seqs])

    async def load_after(self, battle_id: str, after_seq: int) -> list[tuple[int, bytes]]:
        self.loads += 1
        await asyncio.sleep(0)
        return [(s, d) for s, d in self.events.get(battle_id, []) if s > after_seq]


MakeHub = Callable[..., Awaitable[Hub]]


class BusFactory(Protocol):
    def __call__(self, on_message: Any = None, **options: Any) -> Bus: ...


async def client_ids(admin: Redis, name: str) -> list[str]:
    return [c["id"] for c in await admin.client_list() if c.get("name") == name]


async def kill_clients(admin: Redis, name: str) -> int:
    """CLIENT KILL every connection named ``name`` (only ours: other runs use other names)."""
    killed = 0
    for client_id in await client_ids(admin, name):
        killed += await admin.client_kill_filter(_id=client_id)
    return killed
