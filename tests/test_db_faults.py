"""The database's weather is not the battle's fault: connections reset by the server (as a
failover or a pooler restart does) and a database unreachable for a while. Real processes on
a PostgreSQL database of the test's own, whose backends only this test terminates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from tests.clients import agent_path, connect
from tests.conftest import PG_ADMIN, postgres_env
from tests.helpers_http import auth
from tests.live_helpers import fetch_events, of_type
from tests.roaming import RoamingAgent
from tests.support import spawn_node
from tests.tcp_proxy import proxy_to
from tests.test_failover import assert_played_fairly, new_battle

STORM_S = 10.0
RESET_EVERY_S = 0.4  # ~25 resets in 10 s
TURNS = 60  # at 0.1 s a turn, the battles play through the whole storm


async def test_six_battles_complete_through_25_connection_resets_in_10_s(
    own_database: str, tmp_path: Path
) -> None:
    database = make_url(own_database).database
    with spawn_node(postgres_env(own_database), tmp_path / "node.log") as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            battles = [await new_battle(http, maxTurns=TURNS) for _ in range(6)]
        players = [
            RoamingAgent(agent, room, [node.url], think_s=0.1)
            for room, agents in battles
            for agent in agents
        ]
        playing = [asyncio.create_task(p.run(timeout=120)) for p in players]
        async with asyncio.timeout(30):  # every battle under way before the storm
            await asyncio.gather(*(p.playing.wait() for p in players))
        admin = await asyncpg.connect(PG_ADMIN)
        resets = terminated = 0
        try:
            loop = asyncio.get_running_loop()
            until = loop.time() + STORM_S
            while loop.time() < until:
                terminated += await admin.fetchval(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()) AS killed",
                    database,
                )
                resets += 1
                await asyncio.sleep(RESET_EVERY_S)
        finally:
            await admin.close()
        await asyncio.gather(*playing)
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            for room, _ in battles:
                mine = [p for p in players if p.room == room]
                assert_played_fairly(await fetch_events(http, room), mine, expected_turns=TURNS)
            metrics = (await http.get("/metrics")).text
        retried = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("arena_commit_retries_total{")
        )
    print(f"\n{resets} resets, {terminated} backends terminated, {retried:.0f} commit retries")
    # The storm hit the server's connections while the battles played. Whether a reset lands
    # inside a commit (retried) or between two (the pool's pre-ping replaces the connection)
    # is chance here; tests/test_committer.py cuts a commit mid-flight deterministically.
    assert resets >= 20 and terminated >= resets


async def test_while_the_database_is_unreachable_inputs_get_unavailable_and_the_battle_resumes(
    own_database: str, tmp_path: Path
) -> None:
    url = make_url(own_database)
    with proxy_to(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
        with spawn_node(postgres_env(through_proxy), tmp_path / "node.log") as node:
            async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
                room, agents = await new_battle(http, turnDurationMs=20_000)
                first, second = agents
                async with (
                    connect(node.url, agent_path(room), headers=auth(first["apiKey"])) as one,
                    connect(node.url, agent_path(room), headers=auth(second["apiKey"])) as two,
                ):
                    await one.wait_type("turn_started", timeout=15, turnNumber=1)
                    proxy.cut()
                    turn = {"type": "turn", "turnNumber": 1, "content": "Held.", "ref": "a"}
                    await one.send(turn)  # in flight: it waits for the database
                    await asyncio.sleep(1.0)
                    await one.send({**turn, "ref": "b"})
                    refused = await one.wait_for(lambda f: f.get("ref") == "b", 10)
                    assert refused["type"] == "error" and refused["code"] == "unavailable"
                    assert not [f for f in one.frames if f.get("ref") == "a"]  # not acked yet
                    await asyncio.sleep(2.0)
                    proxy.restore()
                    acked = await one.wait_for(lambda f: f.get("ref") == "a", 15)
                    assert acked["type"] == "ack", acked
                    await two.wait_type("turn_started", timeout=15, turnNumber=2)
                    again = {"type": "turn", "turnNumber": 1, "content": "Held.", "ref": "c"}
                    await one.send(again)  # the repeat of the held turn: the same seq
                    repeat = await one.wait_for(lambda f: f.get("ref") == "c", 10)
                    assert repeat["type"] == "ack" and repeat["seq"] == acked["seq"]
                logged = await fetch_events(http, room)
                stored = of_type(logged, "turn", turnNumber=1)
                assert [e["seq"] for e in stored] == [acked["seq"]]
                assert not of_type(logged, "state", status="CANCELLED")
                assert json.loads((await http.get(f"/api/battles/{room}")).text)["status"] in (
                    "IN_PROGRESS",
                    "VOTING",
                )
            log = node.log()
            assert "the database answers again" in log


async def test_a_turn_that_runs_out_while_the_database_is_unreachable_is_extended(
    own_database: str, tmp_path: Path
) -> None:
    """Nobody writes while the database is away; the turn's deadline passes meanwhile. The
    turn is not skipped: its timer waits for the database, and the deadline moves by the
    outage (a ``resumed`` event), so the agent still plays it."""
    url = make_url(own_database)
    with proxy_to(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
        with spawn_node(postgres_env(through_proxy), tmp_path / "node.log") as node:
            async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
                room, agents = await new_battle(http, turnDurationMs=2_500, maxTurns=2)
                first, second = agents
                async with (
                    connect(node.url, agent_path(room), headers=auth(first["apiKey"])) as one,
                    connect(node.url, agent_path(room), headers=auth(second["apiKey"])) as two,
                ):
                    started = await one.wait_type("turn_started", timeout=15, turnNumber=1)
                    proxy.cut()
                    await asyncio.sleep(4.0)  # past the turn's deadline
                    proxy.restore()
                    resumed = await one.wait_type("resumed", timeout=15)
                    assert resumed["deadlineAt"] > started["deadlineAt"] + 3_000
                    turn = {"type": "turn", "turnNumber": 1, "content": "Late.", "ref": "a"}
                    await one.send(turn)
                    acked = await one.wait_for(lambda f: f.get("ref") == "a", 10)
                    assert acked["type"] == "ack", acked
                    await two.wait_type("turn_started", timeout=10, turnNumber=2)
                logged = await fetch_events(http, room)
                assert not of_type(logged, "turn_skipped", turnNumber=1), logged
            assert "the database cannot be reached" in node.log()
