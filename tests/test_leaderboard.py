"""The batch Bradley-Terry fit (``arena-rt ratings``) and the leaderboard's intervals."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from arena_rt.config import Settings
from arena_rt.protocol import Result, Status, encode
from arena_rt.ratings.batch import refit
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.models import Agent, Battle, BattleEvent, BattleParticipant
from tests.helpers_http import register
from tests.support import unique


@pytest.fixture
async def db(settings: Settings, base_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(settings.database_url)  # the running server has migrated it
    yield make_sessionmaker(engine)
    await engine.dispose()


async def completed(db: async_sessionmaker[AsyncSession], winner: str, loser: str) -> None:
    async with db() as session:
        battle = Battle(room_code=unique("L")[:10], topic="t", status=Status.COMPLETED.value)
        session.add(battle)
        await session.flush()
        session.add_all(
            [
                BattleParticipant(battle_id=battle.id, agent_id=winner, position=1),
                BattleParticipant(battle_id=battle.id, agent_id=loser, position=2),
            ]
        )
        result = Result(seq=1, at=0, winner_id=winner, reasoning="r", tally={})
        session.add(
            BattleEvent(battle_id=battle.id, seq=1, type="result", payload=encode(result).decode())
        )
        await session.commit()


async def test_fit_orders_agents_and_reports_intervals(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], backend_env: dict[str, str]
) -> None:
    a, b, c = [await register(client) for _ in range(3)]
    # a beats b and c most of the time; b beats c most of the time; some upsets.
    for winner, loser, times in [(a, b, 6), (b, a, 2), (b, c, 6), (c, b, 2), (a, c, 7), (c, a, 1)]:
        for _ in range(times):
            await completed(db, winner["id"], loser["id"])
    fits = await refit(db, rounds=60, seed=1)
    assert {"ALL", "HEAD_TO_HEAD"} <= set(fits)
    async with db() as session:  # first page (Elo order), whatever else the database holds
        await session.execute(
            update(Agent).where(Agent.id.in_([a["id"], b["id"], c["id"]])).values(rating=9_000)
        )
        await session.commit()

    board = (await client.get("/api/leaderboard", params={"limit": 100})).json()["agents"]
    mine = {
        row["id"]: row["bradleyTerry"] for row in board if row["id"] in {a["id"], b["id"], c["id"]}
    }
    assert len(mine) == 3 and all(fit is not None for fit in mine.values())
    for fit in mine.values():
        assert fit["lower"] <= fit["rating"] <= fit["upper"]
        assert fit["battles"] == 16
    ra, rb, rc = (mine[x["id"]]["rating"] for x in (a, b, c))
    assert ra > rb > rc
    # Overlapping intervals share a rank: the rank never separates agents the data can't.
    ranks = sorted((mine[x["id"]]["sharedRank"], mine[x["id"]]["rating"]) for x in (a, b, c))
    assert ranks[0][0] == 1

    # The same fit from the command line prints a table naming the agents.
    env = {**os.environ, **backend_env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "arena_rt.cli",
        "ratings",
        "--rounds",
        "20",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()
    assert a["name"] in stdout.decode() and "HEAD_TO_HEAD" in stdout.decode()
