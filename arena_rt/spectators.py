"""How many spectators watch each battle, across every node (PROTOCOL ext: ``spectatorCount``).

Each node counts its own spectator sockets. Embedded mode reads those counts directly. With
Redis, every node keeps its count in the battle's hash ``arena:spectators:<battleId>`` under its
node id as ``"<count>:<expiresAtMs>"`` and rewrites it after a change (changes within 0.2 s
together) and every 10 s; a reader
sums the fields that have not expired, so a node that dies stops counting within 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence

from redis.asyncio import Redis

log = logging.getLogger("arena_rt.spectators")

PREFIX = "arena:spectators:"
FIELD_TTL_MS = 30_000
REFRESH_S = 10.0
COALESCE_S = 0.2  # changes within this are written together


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SpectatorCounts:
    def __init__(self, node_id: str, redis: Redis | None) -> None:
        self.node_id = node_id
        self.redis = redis
        self.local: Counter[str] = Counter()
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.redis is not None:
            self._task = asyncio.create_task(self._publish(), name="arena-spectator-counts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def enter(self, battle_id: str) -> None:
        self.local[battle_id] += 1
        self._changed(battle_id)

    def leave(self, battle_id: str) -> None:
        self.local[battle_id] -= 1
        if self.local[battle_id] <= 0:
            del self.local[battle_id]
        self._changed(battle_id)

    def _changed(self, battle_id: str) -> None:
        self._dirty.add(battle_id)
        self._wake.set()

    async def counts(self, battle_ids: Sequence[str]) -> dict[str, int]:
        if self.redis is None or not battle_ids:
            return {battle_id: self.local.get(battle_id, 0) for battle_id in battle_ids}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for battle_id in battle_ids:
                    pipe.hgetall(PREFIX + battle_id)
                rows = await pipe.execute()
        except Exception as exc:  # counts are advisory: never fail a listing for them
            log.warning("spectator counts unavailable: %s", exc)
            return {battle_id: self.local.get(battle_id, 0) for battle_id in battle_ids}
        now = _now_ms()
        found: dict[str, int] = {}
        for battle_id, fields in zip(battle_ids, rows, strict=True):
            total = 0
            for raw in fields.values():
                count, _, expires = raw.decode().partition(":")
                if expires.isdigit() and int(expires) > now:
                    total += int(count)
            found[battle_id] = total
        return found

    async def _publish(self) -> None:
        redis = self.redis
        if redis is None:
            return
        refreshed = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(refreshed + REFRESH_S - time.monotonic(), 0)):
                    await self._wake.wait()
                    # Changes come in waves (a crowd arriving): gather them into one write.
                    await asyncio.sleep(COALESCE_S)
            self._wake.clear()
            # A change rewrites the battles that changed; every REFRESH_S, every battle watched
            # here is rewritten too (its field would expire otherwise).
            battle_ids = self._dirty
            if time.monotonic() - refreshed >= REFRESH_S:
                battle_ids = battle_ids | set(self.local)
                refreshed = time.monotonic()
            self._dirty = set()
            if not battle_ids:
                continue
            expires = _now_ms() + FIELD_TTL_MS
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    for battle_id in battle_ids:
                        key = PREFIX + battle_id
                        count = self.local.get(battle_id, 0)
                        if count:
                            pipe.hset(key, self.node_id, f"{count}:{expires}")
                            pipe.pexpire(key, FIELD_TTL_MS * 2)
                        else:
                            pipe.hdel(key, self.node_id)
                    await pipe.execute()
            except Exception as exc:
                log.warning("could not publish spectator counts: %s", exc)
                self._dirty |= battle_ids
