"""The group committer under concurrency, on PostgreSQL: many battles sharing agents finish at
once, their groups written by concurrent writers; every result commits and ratings add up."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.battle.committer import Committer
from arena_rt.metrics import Metrics
from arena_rt.protocol import Mode, ParticipantJoined, Result
from arena_rt.store.battle_writes import StepWrite
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.models import INITIAL_RATING, Agent, Battle, RatingChange
from tests.support import unique

AGENTS = 6
BATTLES = 80


@pytest.fixture
async def db(migrated_pg: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(migrated_pg)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def seated_battles(
    db: async_sessionmaker[AsyncSession],
) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Agents, and battles of two of them each (in every order), seated through the committer's
    own write path so their participant rows exist."""
    rng = random.Random(7)
    async with db() as session:
        agents = [
            Agent(name=unique("a"), display_name="A", api_key_hash=unique(), api_key_id=unique())
            for _ in range(AGENTS)
        ]
        battles = [Battle(room_code=unique("R")[:10], topic="Deadlocks?") for _ in range(BATTLES)]
        session.add_all([*agents, *battles])
        await session.commit()
        pairs = [rng.sample([a.id for a in agents], 2) for _ in battles]
        return [a.id for a in agents], [
            (b.id, pair) for b, pair in zip(battles, pairs, strict=True)
        ]


async def test_battles_sharing_agents_all_finish_when_written_concurrently(
    db: async_sessionmaker[AsyncSession],
) -> None:
    agent_ids, battles = await seated_battles(db)
    # Small groups and several writers: many concurrent transactions over the same six agents.
    committer = Committer(db, Metrics(), max_group=3, writers=4)
    await committer.start()
    try:
        await asyncio.gather(
            *(
                committer.commit(
                    StepWrite.of(
                        battle_id,
                        [
                            ParticipantJoined(seq=n + 1, at=0, agent_id=agent_id, position=n)
                            for n, agent_id in enumerate(pair)
                        ],
                        [],
                        dict.fromkeys(pair),
                    )
                )
                for battle_id, pair in battles
            )
        )
        results = [
            StepWrite.of(
                battle_id,
                [Result(seq=3, at=0, winner_id=pair[0], reasoning="first", tally={})],
                [],
                dict.fromkeys(pair),
                mode=Mode.HEAD_TO_HEAD,
            )
            for battle_id, pair in battles
        ]
        outcomes = await asyncio.gather(
            *(committer.commit(step) for step in results), return_exceptions=True
        )
    finally:
        await committer.stop()
    assert [o for o in outcomes if o is not None] == []
    async with db() as session:
        ratings = (
            await session.execute(select(Agent.rating).where(Agent.id.in_(agent_ids)))
        ).scalars()
        changes = await session.scalar(
            select(func.count())
            .select_from(RatingChange)
            .where(RatingChange.agent_id.in_(agent_ids))
        )
    assert changes == 2 * BATTLES
    assert sum(ratings) == pytest.approx(AGENTS * INITIAL_RATING)  # Elo moves are zero-sum
