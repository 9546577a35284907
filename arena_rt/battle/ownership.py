"""Who runs a battle: exactly one process at a time, and for how long nobody did.

Production: a lease in Redis (``SET NX PX``) whose value names the holder and its fencing
token (``"<node> <token>"``; tokens come from one counter, so every acquisition of a battle
gets a larger one). The holder renews it in batches and releases it with a compare-and-delete.
A process that lost its lease (paused, partitioned) and still tries to append collides with
the new owner's rows on the log's unique (battle, seq) key and stops: the last guard.

Each battle also has an *alive* mark: Redis's own clock (``TIME``, so no two nodes' clocks are
compared) at its holder's last renewal. Whoever acquires the battle next learns how long it had
no live owner (the outage), and extends the timers that ran meanwhile by that much. Releasing
a battle for a hand-off stamps the mark (the outage is the hand-off's few milliseconds);
releasing a finished battle removes it.

Embedded mode is one process, so ownership is local; its alive mark is a heartbeat file beside
the database, so a restart, too, knows how long it was down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from redis.asyncio import Redis

log = logging.getLogger("arena_rt.ownership")

LEASE_PREFIX = "arena:owner:"
ALIVE_PREFIX = "arena:alive:"
FENCE_KEY = "arena:fence"  # one counter for every battle: tokens only ever grow
ALIVE_TTL_MS = 7 * 24 * 3600 * 1000  # a battle down longer than this resumes without extension
RENEW_BATCH = 500
SCAN_BATCH = 1_000

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: lease, alive. ARGV: node, lease_ms, alive_ttl_ms, fence key.
# -> {1, token, outage_ms} when this node holds it now, {0, holder} when another does.
_ACQUIRE = (
    _NOW
    + """
local holder = redis.call('GET', KEYS[1])
if holder then
  local node, token = string.match(holder, '^(.*) (%d+)$')
  if node == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(token), 0}
  end
  return {0, holder}
end
local token = redis.call('INCR', ARGV[4])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
local outage = 0
local alive = redis.call('GET', KEYS[2])
if alive then
  outage = math.max(0, now - tonumber(alive))
end
redis.call('SET', KEYS[2], now, 'PX', ARGV[3])
return {1, token, outage}
"""
)

# KEYS: n leases, then their n alive marks. ARGV: lease_ms, alive_ttl_ms, then n holder values.
# For each: extend it when we hold it, take it back when it lapsed and nobody took it (a slow
# sweep must not orphan a live battle), else report it lost (1 held, 0 lost).
_RENEW = (
    _NOW
    + """
local n = #KEYS / 2
local held = {}
for i = 1, n do
  local value = ARGV[2 + i]
  local holder = redis.call('GET', KEYS[i])
  if holder == value or not holder then
    redis.call('SET', KEYS[i], value, 'PX', ARGV[1])
    redis.call('SET', KEYS[n + i], now, 'PX', ARGV[2])
    held[i] = 1
  else
    held[i] = 0
  end
end
return held
"""
)

# KEYS: lease, alive. ARGV: holder value, "handoff" or "final", alive_ttl_ms.
_RELEASE = (
    _NOW
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] == 'handoff' then
  redis.call('SET', KEYS[2], now, 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class Lease:
    """This node's hold on a battle."""

    token: int  # fencing token: larger than any earlier holder's
    outage_ms: int  # how long the battle had no live owner before this acquisition


@dataclass(frozen=True, slots=True)
class Holder:
    node_id: str
    token: int


class LeaseHeld(Exception):
    """Another node holds the battle's lease."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(f"held by node {holder.node_id}")
        self.holder = holder


def parse_holder(value: bytes | str) -> Holder:
    text = value.decode() if isinstance(value, bytes) else value
    node, _, token = text.rpartition(" ")
    if not node or not token.isdigit():
        return Holder(text, 0)  # a lease written by an older release: no token
    return Holder(node, int(token))


class Ownership(Protocol):
    node_id: str
    lease_ms: int

    async def acquire(self, battle_id: str) -> Lease:
        """Hold the battle (raises :class:`LeaseHeld` naming who does)."""
        ...

    async def holder(self, battle_id: str) -> Holder | None:
        """Who holds the battle now, or None when nobody does."""
        ...

    async def unowned(self, battle_ids: list[str]) -> list[str]:
        """The battles among ``battle_ids`` whose lease has lapsed (nobody runs them)."""
        ...

    async def renew(self, battle_ids: list[str]) -> set[str]:
        """The battles among ``battle_ids`` this process still holds, leases extended."""
        ...

    async def release(self, battle_id: str, *, handoff: bool = False) -> None:
        """Let go: ``handoff`` for a battle another node should carry on at once."""
        ...


class LocalOwnership:
    """One process owns everything; the heartbeat file tells a restart how long it was down."""

    lease_ms = 0

    def __init__(self, node_id: str, heartbeat: Path | None = None) -> None:
        self.node_id = node_id
        self._heartbeat = heartbeat
        self._down_since = _read_heartbeat(heartbeat)  # the last beat before this start
        self._tokens = 0

    async def acquire(self, battle_id: str) -> Lease:
        self._tokens += 1
        outage = 0 if self._down_since is None else max(0, _now_ms() - self._down_since)
        return Lease(self._tokens, outage)

    async def holder(self, battle_id: str) -> Holder | None:
        return None

    async def unowned(self, battle_ids: list[str]) -> list[str]:
        return []

    async def renew(self, battle_ids: list[str]) -> set[str]:
        self.beat()
        return set(battle_ids)

    async def release(self, battle_id: str, *, handoff: bool = False) -> None:
        return None

    def resumed(self) -> None:
        """Every battle left live is running again: those loaded from now on were never down."""
        self._down_since = None

    def beat(self) -> None:
        """Stamp the heartbeat: a restart measures its downtime from the last stamp."""
        if self._heartbeat is None:
            return
        try:
            self._heartbeat.write_text(str(_now_ms()))
        except OSError as exc:
            log.warning("could not write the heartbeat %s: %s", self._heartbeat, exc)


def _read_heartbeat(path: Path | None) -> int | None:
    if path is None:
        return None
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RedisOwnership:
    def __init__(self, redis: Redis, node_id: str, lease_ms: int = 5_000) -> None:
        self._redis = redis
        self.node_id = node_id
        self.lease_ms = lease_ms
        self._held: dict[str, str] = {}  # battle -> the lease value this node wrote
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, battle_id: str) -> Lease:
        keys = [LEASE_PREFIX + battle_id, ALIVE_PREFIX + battle_id]
        reply = await self._acquire(
            keys=keys, args=[self.node_id, self.lease_ms, ALIVE_TTL_MS, FENCE_KEY]
        )
        if int(reply[0]) != 1:
            raise LeaseHeld(parse_holder(reply[1]))
        token, outage = int(reply[1]), int(reply[2])
        self._held[battle_id] = f"{self.node_id} {token}"
        return Lease(token, outage)

    async def holder(self, battle_id: str) -> Holder | None:
        value = await self._redis.get(LEASE_PREFIX + battle_id)
        return None if value is None else parse_holder(value)

    async def unowned(self, battle_ids: list[str]) -> list[str]:
        lapsed: list[str] = []
        for start in range(0, len(battle_ids), SCAN_BATCH):
            chunk = battle_ids[start : start + SCAN_BATCH]
            values = await self._redis.mget([LEASE_PREFIX + b for b in chunk])
            lapsed.extend(b for b, value in zip(chunk, values, strict=True) if value is None)
        return lapsed

    async def renew(self, battle_ids: list[str]) -> set[str]:
        held: set[str] = set()
        known = [b for b in battle_ids if b in self._held]
        for start in range(0, len(known), RENEW_BATCH):
            chunk = known[start : start + RENEW_BATCH]
            keys = [LEASE_PREFIX + b for b in chunk] + [ALIVE_PREFIX + b for b in chunk]
            args: list[str | int] = [self.lease_ms, ALIVE_TTL_MS]
            args.extend(self._held[b] for b in chunk)
            flags = await self._renew(keys=keys, args=args)
            held.update(b for b, flag in zip(chunk, flags, strict=True) if flag)
        return held

    async def release(self, battle_id: str, *, handoff: bool = False) -> None:
        value = self._held.pop(battle_id, None)
        if value is None:
            return
        keys = [LEASE_PREFIX + battle_id, ALIVE_PREFIX + battle_id]
        how = "handoff" if handoff else "final"
        await self._release(keys=keys, args=[value, how, ALIVE_TTL_MS])
