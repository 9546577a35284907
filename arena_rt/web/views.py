"""What a socket needs when it connects, read once per battle and shared.

A crowd arriving at one battle (a link shared in a chat, a reconnect wave after a deploy) would
otherwise cost one room lookup plus a snapshot read (battle row, participants, last seq, turns)
and one encoding per socket. Here a room code's battle row is remembered (its identity and
configuration never change), and a battle's view — the snapshot encoded once — is reused for
``ttl_s``; concurrent misses for one battle share a single read.

A reused view may be older than the socket's feed. Callers stay gap-free by asking
:meth:`BattleView.read_after`: a view read before the feed was attached is followed by a
replay of the events after its ``last_seq`` (``resume(feed, view.last_seq)``), as a client's
``since`` is.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.errors import NotFound
from arena_rt.metrics import Metrics
from arena_rt.protocol import Snapshot, encode
from arena_rt.resources import BattleResource
from arena_rt.store import battles
from arena_rt.store.models import Battle
from arena_rt.store.transcript import turn_views

DEFAULT_TTL_S = 1.0  # a snapshot's spectator count may be this old; events fill the rest
DEFAULT_MAX_BATTLES = 10_000

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class BattleView:
    """A battle as of ``last_seq``: its resource and the spectator snapshot frame."""

    battle_id: str
    room_code: str
    last_seq: int
    resource: BattleResource
    snapshot: bytes  # the encoded ``snapshot`` frame, shared by every spectator it is sent to
    read_at: float  # time.monotonic() when the read began

    def read_after(self, instant: float) -> bool:
        """Whether the read began after ``instant`` (e.g. when a feed was attached)."""
        return self.read_at >= instant


class BattleViews:
    def __init__(
        self,
        db: async_sessionmaker[AsyncSession],
        metrics: Metrics | None = None,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_battles: int = DEFAULT_MAX_BATTLES,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._ttl_s = ttl_s
        self._max = max_battles
        self._rows: OrderedDict[str, Battle] = OrderedDict()  # by room code
        self._views: OrderedDict[str, BattleView] = OrderedDict()
        self._reads: dict[str, asyncio.Task[BattleView]] = {}

    async def battle(self, room_code: str) -> Battle:
        """The battle of a room code; NotFound when there is none.

        The row is remembered: use it for what never changes (id, room code, configuration —
        what a runner is built from), never for its status or result, which a view has.
        """
        key = room_code.upper()
        found = self._rows.get(key)
        if found is None:
            async with self._db() as session:
                found = await battles.battle_by_room(session, key)  # NotFound isn't remembered
            _remember(self._rows, key, found, self._max)
        return found

    async def view(self, battle_id: str, *, at_least_seq: int = 0) -> BattleView:
        """The battle's view, reused while younger than the TTL and at least ``at_least_seq``."""
        cached = self._views.get(battle_id)
        if (
            cached is not None
            and cached.last_seq >= at_least_seq
            and time.monotonic() - cached.read_at < self._ttl_s
        ):
            self._count("hit")
            return cached
        read = self._reads.get(battle_id)
        if read is None:
            read = asyncio.create_task(self._read(battle_id), name=f"battle-view-{battle_id}")
            self._reads[battle_id] = read
            read.add_done_callback(lambda _: self._reads.pop(battle_id, None))
            self._count("miss")
        else:
            self._count("shared")
        # Shielded: one waiting socket going away must not cancel the read the others share.
        view = await asyncio.shield(read)
        if view.last_seq < at_least_seq:  # a read that began before the caller's seq: again
            return await self.view(battle_id, at_least_seq=at_least_seq)
        return view

    def forget(self, battle_id: str) -> None:
        self._views.pop(battle_id, None)

    async def _read(self, battle_id: str) -> BattleView:
        read_at = time.monotonic()
        async with self._db() as session:
            conn = await session.connection()
            if conn.dialect.name == "postgresql":
                # One snapshot for every statement: lastSeq, status and turns agree. (SQLite's
                # read transaction is a snapshot already.)
                await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            battle = await session.get(Battle, battle_id)
            if battle is None:
                raise NotFound(f"battle {battle_id!r} not found")
            resource = await battles.battle_resource(session, battle)
            turns = await turn_views(session, battle_id)
        frame = encode(
            Snapshot(battle=msgspec.to_builtins(resource), turns=turns, last_seq=resource.last_seq)
        )
        view = BattleView(battle_id, battle.room_code, resource.last_seq, resource, frame, read_at)
        _remember(self._views, battle_id, view, self._max)
        return view

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.view_reads.labels(outcome).inc()


def _remember(cache: OrderedDict[K, V], key: K, value: V, bound: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > bound:
        cache.popitem(last=False)
