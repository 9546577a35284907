"""Who runs a battle: exactly one process at a time.

Production: a lease in Redis (``SET NX PX``), renewed by its holder and released with a
compare-and-delete, so only the holder can extend or drop it. The event log's unique
(battle, seq) key is the fence behind it: a process that lost its lease (paused, partitioned)
and still tries to append collides with the new owner's rows and stops. Embedded mode is one
process, so ownership is local.
"""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

LEASE_PREFIX = "arena:owner:"

# For each key: extend it when we hold it, take it back when it expired and nobody else took
# it (a slow sweep must not orphan a live battle), else report it lost (1 held, 0 lost).
_RENEW = """
local held = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[i] = 1
  elseif not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""
RENEW_BATCH = 500
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Ownership(Protocol):
    lease_ms: int

    async def acquire(self, battle_id: str) -> str | None:
        """None when this process now owns the battle, else the owner's node id."""

    async def renew(self, battle_ids: list[str]) -> set[str]:
        """The battles among ``battle_ids`` this process still holds, leases extended."""
        ...

    async def release(self, battle_id: str) -> None: ...


class LocalOwnership:
    lease_ms = 0

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def acquire(self, battle_id: str) -> str | None:
        return None

    async def renew(self, battle_ids: list[str]) -> set[str]:
        return set(battle_ids)

    async def release(self, battle_id: str) -> None:
        return None


class RedisOwnership:
    def __init__(self, redis: Redis, node_id: str, lease_ms: int = 15_000) -> None:
        self._redis = redis
        self.node_id = node_id
        self.lease_ms = lease_ms
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, battle_id: str) -> str | None:
        key = LEASE_PREFIX + battle_id
        if await self._redis.set(key, self.node_id, nx=True, px=self.lease_ms):
            return None
        holder = await self._redis.get(key)
        if holder is None:  # expired between the two calls: try once more
            got = await self._redis.set(key, self.node_id, nx=True, px=self.lease_ms)
            return None if got else "unknown"
        owner = holder.decode() if isinstance(holder, bytes) else str(holder)
        return None if owner == self.node_id else owner

    async def renew(self, battle_ids: list[str]) -> set[str]:
        held: set[str] = set()
        for start in range(0, len(battle_ids), RENEW_BATCH):
            chunk = battle_ids[start : start + RENEW_BATCH]
            flags = await self._renew(
                keys=[LEASE_PREFIX + b for b in chunk], args=[self.node_id, self.lease_ms]
            )
            held.update(b for b, flag in zip(chunk, flags, strict=True) if flag)
        return held

    async def release(self, battle_id: str) -> None:
        await self._release(keys=[LEASE_PREFIX + battle_id], args=[self.node_id])
