"""Battles outlive their process: kill -9 of the owner, and SIGTERM (a deploy).

Real ``arena-rt serve`` processes on one PostgreSQL database (of each test's own, so no other
test's server adopts these battles) and one Redis, with default lease settings. Agents connect
only to the surviving nodes; nobody contacts the dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from redis.asyncio import Redis

from arena_rt.battle.ownership import LEASE_PREFIX
from arena_rt.protocol import DRAIN_REASON
from tests.clients import Client, Frame, agent_path, connect, spectator_path
from tests.conftest import REDIS_URL, postgres_env
from tests.helpers_http import auth, create_battle, register
from tests.live_helpers import battle_events, expect_refused, fetch_events, of_type
from tests.roaming import RoamingAgent
from tests.support import Node, spawn_node

SETTINGS = {"startDelayMs": 100, "turnDurationMs": 10_000, "voteDurationMs": 1_000, "maxTurns": 4}
TAKEOVER_LIMIT_S = 10.0  # the bound for the default lease settings


@contextlib.contextmanager
def nodes(pg_url: str, folder: Path, count: int) -> Iterator[list[Node]]:
    env = postgres_env(pg_url)
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(spawn_node({**env, "ARENA_NODE_ID": f"n{i}"}, folder / f"{i}.log"))
            for i in range(count)
        ]


async def new_battle(http: httpx.AsyncClient, **settings: int) -> tuple[str, list[Frame]]:
    agents = list(await asyncio.gather(register(http), register(http)))
    battle = await create_battle(http, agents[0]["apiKey"], **{**SETTINGS, **settings})
    return battle["roomCode"], agents


def assert_played_fairly(
    logged: list[Frame], players: list[RoamingAgent], expected_turns: int = SETTINGS["maxTurns"]
) -> None:
    """Completed, nobody skipped, every acknowledged turn stored once with the acked seq."""
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    assert of_type(logged, "state", status="COMPLETED"), logged[-3:]
    assert not of_type(logged, "turn_skipped"), of_type(logged, "turn_skipped")
    turns = {e["seq"]: e for e in of_type(logged, "turn")}
    for player in players:
        assert player.final == "COMPLETED"
        assert player.gaps == 0
        for number, seq in player.acks.items():
            assert turns[seq]["turnNumber"] == number and turns[seq]["agentId"] == player.agent_id
    numbers = [e["turnNumber"] for e in turns.values()]
    assert len(numbers) == len(set(numbers)) == expected_turns


async def test_kill_9_of_the_owner_mid_turn_loses_nothing(
    own_database: str, tmp_path: Path
) -> None:
    with nodes(own_database, tmp_path, 3) as (a, b, c):
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=10) as http_a,
            httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
        ):
            room, agents = await new_battle(http_a)  # created on A: A runs it
        async with (
            httpx.AsyncClient(base_url=b.url, timeout=10) as http_b,
            connect(b.url, spectator_path(room, 0)) as on_b,
            connect(c.url, spectator_path(room, 0)) as on_c,
        ):
            # Both agents on B, thinking 1.5 s per turn; they never contact A.
            players = [RoamingAgent(agent, room, [b.url, c.url], think_s=1.5) for agent in agents]
            playing = [asyncio.create_task(p.run(timeout=90)) for p in players]
            started = await on_c.wait_type("turn_started", timeout=30, turnNumber=2)
            before = max(e["seq"] for e in battle_events(on_c.frames))
            killed_at = time.monotonic()
            a.kill()  # mid-turn: turn 2's agent is still thinking
            await on_c.wait_for(lambda f: f.get("seq", 0) > before, timeout=30)
            takeover_s = time.monotonic() - killed_at
            print(f"\ntakeover after kill -9: {takeover_s:.2f} s (turn {started['turnNumber']})")
            await asyncio.gather(*playing)
            logged = await fetch_events(http_b, room)
            for spectator in (on_b, on_c):
                await spectator.wait_for(lambda f: f.get("seq") == logged[-1]["seq"], 10)
                assert battle_events(spectator.frames) == logged  # same seqs, in order
        assert_played_fairly(logged, players)
        assert takeover_s <= TAKEOVER_LIMIT_S
        assert not any("not_owner" in str(e) for p in players for e in p.errors)


async def test_sigterm_drains_the_owner_and_battles_go_on_elsewhere(
    own_database: str, tmp_path: Path
) -> None:
    with nodes(own_database, tmp_path, 2) as (a, b):
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as http_a:
            battles = [await new_battle(http_a) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            spectators: list[Client] = [
                await stack.enter_async_context(connect(b.url, spectator_path(room, 0)))
                for room, _ in battles
            ]
            # The agents start on A, the owner, and move to B when A closes their sockets.
            players = [
                RoamingAgent(agent, room, [a.url, b.url], think_s=0.5)
                for room, agents in battles
                for agent in agents
            ]
            playing = [asyncio.create_task(p.run(timeout=90)) for p in players]
            for spectator in spectators:
                await spectator.wait_type("turn_started", timeout=30, turnNumber=2)
            exit_code = await asyncio.to_thread(a.terminate, 60)
            await asyncio.gather(*playing)
            async with httpx.AsyncClient(base_url=b.url, timeout=10) as http_b:
                for (room, _), spectator in zip(battles, spectators, strict=True):
                    logged = await fetch_events(http_b, room)
                    await spectator.wait_for(lambda f, s=logged[-1]["seq"]: f.get("seq") == s, 10)
                    assert battle_events(spectator.frames) == logged  # no gap, no duplicate
        # uvicorn re-raises the SIGTERM it caught once it has shut down cleanly.
        assert exit_code in (0, -15), a.log()[-3000:]
        assert "Finished server process" in a.log()
        async with httpx.AsyncClient(base_url=b.url, timeout=10) as http_b:
            for room, _ in battles:
                mine = [p for p in players if p.room == room]
                assert_played_fairly(await fetch_events(http_b, room), mine)
        for player in players:
            closed_by_drain = [(code, why) for code, why in player.closes if code == 1001]
            assert closed_by_drain, player.closes
            assert all(DRAIN_REASON in why for _, why in closed_by_drain), player.closes
            assert b.url in player.connected_to
        assert "drain finished" in a.log()


async def test_not_owner_only_when_no_owner_answers_within_the_forward_timeout(
    own_database: str, tmp_path: Path
) -> None:
    """A battle whose lease a node holds that never answers (gone without its lease lapsing):
    the agent is told ``not_owner`` and closed 4010 once the forward timeout has passed."""
    env = {**postgres_env(own_database), "ARENA_FORWARD_TIMEOUT_MS": "1500"}
    with spawn_node(env, tmp_path / "node.log") as node:
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            room, agents = await new_battle(http)
            battle = (await http.get(f"/api/battles/{room}")).json()
        redis = Redis.from_url(REDIS_URL)
        try:
            await redis.set(LEASE_PREFIX + battle["id"], "ghost 999999999", px=60_000)
            await asyncio.sleep(2.5)  # the node sees its lease taken and stops its runner
            began = time.monotonic()
            async with connect(
                node.url, agent_path(room), headers=auth(agents[1]["apiKey"])
            ) as refused:
                await expect_refused(refused, "not_owner", 4010)
            waited = time.monotonic() - began
            assert 1.5 <= waited < 6, waited
            assert "ghost" in refused.frames[0]["message"]
        finally:
            await redis.delete(LEASE_PREFIX + battle["id"])
            await redis.aclose()
