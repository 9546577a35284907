"""The battle event log: append (inside the caller's transaction) and read after a seq."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.store.models import BattleEvent

# (seq, type, the encoded JSON bytes exactly as clients receive them)
EncodedEvent = tuple[int, str, bytes]


async def append_events(
    session: AsyncSession, battle_id: str, events: Sequence[EncodedEvent]
) -> None:
    if not events:
        return
    await session.execute(
        insert(BattleEvent),
        [
            {"battle_id": battle_id, "seq": seq, "type": kind, "payload": data.decode()}
            for seq, kind, data in events
        ],
    )


async def read_after(
    sessionmaker: async_sessionmaker[AsyncSession],
    battle_id: str,
    after_seq: int,
    limit: int | None = None,
) -> list[tuple[int, bytes]]:
    """Persisted events with seq > after_seq, oldest first (served by the (battle, seq) key)."""
    query = (
        select(BattleEvent.seq, BattleEvent.payload)
        .where(BattleEvent.battle_id == battle_id, BattleEvent.seq > after_seq)
        .order_by(BattleEvent.seq)
    )
    if limit is not None:
        query = query.limit(limit)
    async with sessionmaker() as session:
        rows = await session.execute(query)
        return [(seq, payload.encode()) for seq, payload in rows]
