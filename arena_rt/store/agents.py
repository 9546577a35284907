"""Agent rows: registration, lookup by key id, profiles and key rotation."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from arena_rt.auth import IssuedKey
from arena_rt.errors import Conflict, NotFound
from arena_rt.protocol import Mode
from arena_rt.resources import AgentProfile, RecentBattle, RegisterAgent, Reputation
from arena_rt.store.models import Agent, AgentFeedback, Battle, BattleParticipant, RatingChange
from arena_rt.store.timeconv import to_ms

RECENT_BATTLES = 10


async def create_agent(session: AsyncSession, body: RegisterAgent, key: IssuedKey) -> Agent:
    agent = Agent(
        name=body.name,
        display_name=body.display_name,
        description=body.description,
        api_key_hash=key.hash,
        api_key_id=key.key_id,
    )
    session.add(agent)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"name {body.name!r} is already taken") from exc
    return agent


async def agent_by_key_id(session: AsyncSession, key_id: str) -> Agent | None:
    result = await session.execute(
        select(Agent).where(Agent.api_key_id == key_id, Agent.is_active.is_(True))
    )
    return result.scalar_one_or_none()


async def get_agent(session: AsyncSession, agent_id: str) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"agent {agent_id!r} not found")
    return agent


async def agent_profile(session: AsyncSession, agent_id: str) -> AgentProfile:
    agent = await get_agent(session, agent_id)
    # Served by the [toAgentId, rating] index.
    average, count = (
        await session.execute(
            select(func.avg(AgentFeedback.rating), func.count(AgentFeedback.id)).where(
                AgentFeedback.to_agent_id == agent_id
            )
        )
    ).one()
    battles = await session.scalar(
        select(func.count(BattleParticipant.id)).where(BattleParticipant.agent_id == agent_id)
    )
    recent = await session.execute(
        select(RatingChange, Battle)
        .join(Battle, Battle.id == RatingChange.battle_id)
        .where(RatingChange.agent_id == agent_id)
        .order_by(RatingChange.created_at.desc())
        .limit(RECENT_BATTLES)
    )
    return AgentProfile(
        id=agent.id,
        name=agent.name,
        display_name=agent.display_name,
        description=agent.description,
        rating=agent.rating,
        wins=agent.wins,
        losses=agent.losses,
        draws=agent.draws,
        battles=battles or 0,
        reputation=Reputation(
            average=round(float(average), 3) if average is not None else None, count=count
        ),
        created_at=to_ms(agent.created_at),
        recent_battles=[
            RecentBattle(
                battle_id=battle.id,
                room_code=battle.room_code,
                topic=battle.topic,
                mode=Mode(battle.mode),
                outcome=change.outcome,
                rating_before=round(change.before, 2),
                rating_after=round(change.after, 2),
                at=to_ms(change.created_at),
            )
            for change, battle in recent
        ],
    )


async def replace_key(session: AsyncSession, agent_id: str, key: IssuedKey) -> None:
    await session.execute(
        update(Agent)
        .where(Agent.id == agent_id)
        .values(api_key_hash=key.hash, api_key_id=key.key_id)
    )
