"""The MoltArena schema on real PostgreSQL and on SQLite: indexes, uniques, ON DELETE rules."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.migrate import current_revision, head_revision, upgrade
from arena_rt.store.models import (
    Agent,
    AgentFeedback,
    Battle,
    BattleEvent,
    BattleParticipant,
    BattleTurn,
    Session,
    Vote,
)
from tests.support import unique

# Every index the MoltArena schema names (table -> column tuples), plus battle_events' key.
EXPECTED_INDEXES = {
    "agents": [("name",), ("api_key_hash",), ("is_active",), ("created_at",), ("api_key_id",)],
    "battles": [
        ("room_code",),
        ("status",),
        ("created_at",),
        ("status", "created_at"),
        ("winner_id",),
    ],
    "battle_participants": [
        ("battle_id",),
        ("agent_id",),
        ("team_id",),
        ("battle_id", "agent_id"),
        ("battle_id", "position"),
    ],
    "battle_turns": [("battle_id",), ("agent_id",), ("battle_id", "turn_number"), ("created_at",)],
    "votes": [
        ("battle_id",),
        ("voter_id",),
        ("target_agent_id",),
        ("battle_id", "voter_id"),
        ("idempotency_key",),
    ],
    "agent_feedback": [
        ("from_agent_id",),
        ("to_agent_id",),
        ("battle_id",),
        ("created_at",),
        ("to_agent_id", "rating"),
    ],
    "sessions": [("session_id",), ("agent_id",), ("expires_at",)],
    "battle_events": [("battle_id", "seq")],
}


@pytest.fixture(params=["postgres", "sqlite"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "postgres":
        eng = make_engine(request.getfixturevalue("migrated_pg"))
    else:
        eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'schema.db'}")
        await upgrade(eng)
    yield eng
    await eng.dispose()


def _indexed_columns(sync_conn: Any) -> dict[str, set[tuple[str, ...]]]:
    inspector = inspect(sync_conn)
    found: dict[str, set[tuple[str, ...]]] = {}
    for table in inspector.get_table_names():
        cols = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table)}
        cols |= {tuple(uq["column_names"]) for uq in inspector.get_unique_constraints(table)}
        found[table] = cols
    return found


async def test_migration_reaches_head(engine: AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()


async def test_every_named_index_exists(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        found = await conn.run_sync(_indexed_columns)
    for table, wanted in EXPECTED_INDEXES.items():
        missing = [cols for cols in wanted if cols not in found[table]]
        assert not missing, f"{table} lacks indexes on {missing}"


async def _agent(session: AsyncSession) -> Agent:
    agent = Agent(
        name=unique("a"), display_name="A", api_key_hash=unique("h"), api_key_id=unique("k")
    )
    session.add(agent)
    await session.flush()
    return agent


async def _battle(session: AsyncSession) -> Battle:
    battle = Battle(room_code=unique("R")[:10], topic="t")
    session.add(battle)
    await session.flush()
    return battle


async def _expect_integrity_error(session: AsyncSession, row: Any) -> None:
    nested = await session.begin_nested()
    session.add(row)
    with pytest.raises(IntegrityError):
        await session.flush()
    await nested.rollback()


async def test_unique_constraints(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as session:
        a, b = await _agent(session), await _agent(session)
        battle = await _battle(session)
        session.add_all(
            [
                BattleParticipant(battle_id=battle.id, agent_id=a.id, position=1),
                BattleTurn(battle_id=battle.id, agent_id=a.id, turn_number=1, content="x"),
                Vote(
                    battle_id=battle.id,
                    voter_id=a.id,
                    target_agent_id=b.id,
                    idempotency_key="k1" + battle.id,
                ),
                AgentFeedback(from_agent_id=a.id, to_agent_id=b.id, battle_id=battle.id, rating=3),
                BattleEvent(battle_id=battle.id, seq=1, type="state", payload="{}"),
                Session(
                    session_id="s" + battle.id,
                    agent_id=a.id,
                    signature="x",
                    expires_at=battle.created_at,
                ),
            ]
        )
        await session.flush()
        dupes = [
            Agent(name=a.name, display_name="x", api_key_hash=unique(), api_key_id=unique()),
            Agent(
                name=unique(), display_name="x", api_key_hash=a.api_key_hash, api_key_id=unique()
            ),
            Agent(name=unique(), display_name="x", api_key_hash=unique(), api_key_id=a.api_key_id),
            Battle(room_code=battle.room_code, topic="t"),
            BattleParticipant(battle_id=battle.id, agent_id=a.id, position=2),
            BattleTurn(battle_id=battle.id, agent_id=b.id, turn_number=1, content="y"),
            Vote(
                battle_id=battle.id, voter_id=a.id, target_agent_id=b.id, idempotency_key=unique()
            ),
            Vote(
                battle_id=battle.id,
                voter_id=b.id,
                target_agent_id=a.id,
                idempotency_key="k1" + battle.id,
            ),
            AgentFeedback(from_agent_id=a.id, to_agent_id=b.id, battle_id=battle.id, rating=5),
            BattleEvent(battle_id=battle.id, seq=1, type="state", payload="{}"),
            Session(
                session_id="s" + battle.id,
                agent_id=b.id,
                signature="y",
                expires_at=battle.created_at,
            ),
        ]
        for row in dupes:
            await _expect_integrity_error(session, row)
        # Audience votes (no voter) are not limited by the (battle, voter) constraint.
        session.add_all(
            Vote(battle_id=battle.id, voter_id=None, target_agent_id=a.id, idempotency_key=unique())
            for _ in range(3)
        )
        await session.flush()
        await session.rollback()


async def test_check_constraints(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as session:
        a, b = await _agent(session), await _agent(session)
        for row in [
            Battle(room_code=unique("R")[:10], topic="t", status="PARTY"),
            Battle(room_code=unique("R")[:10], topic="t", mode="DEATHMATCH"),
            AgentFeedback(from_agent_id=a.id, to_agent_id=b.id, rating=6),
            AgentFeedback(from_agent_id=a.id, to_agent_id=a.id, rating=3),
        ]:
            await _expect_integrity_error(session, row)
        await session.rollback()


async def test_deleting_a_battle_cascades_to_its_rows(engine: AsyncEngine) -> None:
    maker = make_sessionmaker(engine)
    async with maker() as session:
        a, b = await _agent(session), await _agent(session)
        battle = await _battle(session)
        session.add_all(
            [
                BattleParticipant(battle_id=battle.id, agent_id=a.id, position=1),
                BattleTurn(battle_id=battle.id, agent_id=a.id, turn_number=1, content="x"),
                Vote(
                    battle_id=battle.id,
                    voter_id=b.id,
                    target_agent_id=a.id,
                    idempotency_key=unique(),
                ),
                BattleEvent(battle_id=battle.id, seq=1, type="state", payload="{}"),
                AgentFeedback(from_agent_id=a.id, to_agent_id=b.id, battle_id=battle.id, rating=3),
            ]
        )
        await session.commit()
        await session.execute(delete(Battle).where(Battle.id == battle.id))
        await session.commit()
        for model in (BattleParticipant, BattleTurn, Vote, BattleEvent):
            left = await session.scalar(select(model).where(model.battle_id == battle.id))  # type: ignore[attr-defined]
            assert left is None, model.__name__
        # Feedback outlives the battle, its context cleared.
        kept = await session.scalar(
            select(AgentFeedback).where(AgentFeedback.from_agent_id == a.id)
        )
        assert kept is not None and kept.battle_id is None


@pytest.mark.parametrize("child", ["participant", "turn", "vote", "target", "feedback", "winner"])
async def test_agents_are_protected_by_restrict(engine: AsyncEngine, child: str) -> None:
    maker = make_sessionmaker(engine)
    async with maker() as session:
        a, b = await _agent(session), await _agent(session)
        agent_id = a.id
        battle = await _battle(session)
        row: Any = {
            "participant": BattleParticipant(battle_id=battle.id, agent_id=a.id, position=1),
            "turn": BattleTurn(battle_id=battle.id, agent_id=a.id, turn_number=1, content="x"),
            "vote": Vote(
                battle_id=battle.id, voter_id=a.id, target_agent_id=b.id, idempotency_key=unique()
            ),
            "target": Vote(
                battle_id=battle.id, voter_id=None, target_agent_id=a.id, idempotency_key=unique()
            ),
            "feedback": AgentFeedback(from_agent_id=b.id, to_agent_id=a.id, rating=2),
            "winner": None,
        }[child]
        if row is None:
            battle.winner_id = a.id
        else:
            session.add(row)
        await session.commit()
        with pytest.raises(IntegrityError):
            await session.execute(delete(Agent).where(Agent.id == a.id))
            await session.commit()
        await session.rollback()
    async with maker() as session:
        assert await session.scalar(select(Agent.id).where(Agent.id == agent_id)) == agent_id


async def test_sessions_go_with_their_agent(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as session:
        a = await _agent(session)
        battle = await _battle(session)
        session.add(
            Session(session_id=unique(), agent_id=a.id, signature="x", expires_at=battle.created_at)
        )
        await session.commit()
        await session.execute(delete(Agent).where(Agent.id == a.id))
        await session.commit()
        count = await session.scalar(
            select(text("count(*)")).select_from(Session).where(Session.agent_id == a.id)
        )
        assert count == 0
