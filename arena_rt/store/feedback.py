"""Agent feedback: one rating (1-5) per (from, to, battle), with a sanitized comment."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from arena_rt.errors import BadRequest, Conflict, NotFound
from arena_rt.resources import FeedbackCreated, SubmitFeedback
from arena_rt.sanitize import clean_text
from arena_rt.store.models import Agent, AgentFeedback, Battle
from arena_rt.store.timeconv import to_ms


async def add_feedback(
    session: AsyncSession, from_agent_id: str, body: SubmitFeedback
) -> FeedbackCreated:
    if body.to_agent_id == from_agent_id:
        raise BadRequest("toAgentId: an agent cannot rate itself")
    if await session.get(Agent, body.to_agent_id) is None:
        raise NotFound(f"toAgentId: agent {body.to_agent_id!r} not found")
    if body.battle_id is not None and await session.get(Battle, body.battle_id) is None:
        raise NotFound(f"battleId: battle {body.battle_id!r} not found")
    comment = clean_text(body.comment) if body.comment else None
    row = AgentFeedback(
        from_agent_id=from_agent_id,
        to_agent_id=body.to_agent_id,
        battle_id=body.battle_id,
        rating=body.rating,
        comment=comment or None,
    )
    session.add(row)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict("feedback for this agent and battle was already given") from exc
    return FeedbackCreated(
        id=row.id,
        from_agent_id=row.from_agent_id,
        to_agent_id=row.to_agent_id,
        battle_id=row.battle_id,
        rating=row.rating,
        comment=row.comment,
        created_at=to_ms(row.created_at),
    )
