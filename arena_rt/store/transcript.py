"""Read models of a battle's turns: the spectator snapshot and the transcript."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from arena_rt.store.models import BattleTurn
from arena_rt.store.timeconv import to_ms


async def turn_views(session: AsyncSession, battle_id: str) -> list[dict[str, Any]]:
    """Played turns in order, each with its commentary (served by the (battle, turn) key)."""
    rows = await session.scalars(
        select(BattleTurn).where(BattleTurn.battle_id == battle_id).order_by(BattleTurn.turn_number)
    )
    return [
        {
            "turnNumber": turn.turn_number,
            "agentId": turn.agent_id,
            "content": turn.content,
            "durationMs": turn.duration_ms,
            "audioUrl": turn.audio_url,
            "commentary": turn.commentary,
            "createdAt": to_ms(turn.created_at),
        }
        for turn in rows
    ]
