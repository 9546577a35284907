"""A node alone: SIGTERM stops it cleanly, and its battles resume when it starts again, with
the timers that ran during the downtime extended by it (nobody is skipped for our restart).
Both configurations: the embedded default and PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.clients import connect, spectator_path
from tests.conftest import embedded_env, postgres_env
from tests.live_helpers import battle_events, fetch_events, of_type
from tests.roaming import RoamingAgent
from tests.support import free_port, spawn_node
from tests.test_failover import assert_played_fairly, new_battle

DOWNTIME_S = 4.0  # longer than what is left of the turn in play when the node stops


async def test_a_lone_node_restarts_and_its_battles_go_on(
    backend_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A database of the test's own: no other test's server may adopt the battle meanwhile.
    if "DATABASE_URL" in backend_env:
        env = postgres_env(request.getfixturevalue("own_database"))
    else:
        env = embedded_env(tmp_path / "data")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with spawn_node(env, tmp_path / "first.log", port) as first:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            room, agents = await new_battle(http, turnDurationMs=3_000)
        players = [RoamingAgent(agent, room, [url], think_s=1.0) for agent in agents]
        playing = [asyncio.create_task(p.run(timeout=90)) for p in players]
        async with connect(url, spectator_path(room, 0)) as watcher:
            started = await watcher.wait_type("turn_started", timeout=30, turnNumber=2)
        stopped_at = time.monotonic()
        exit_code = await asyncio.to_thread(first.terminate, 60)
        assert exit_code in (0, -15), first.log()[-2000:]
    await asyncio.sleep(max(0.0, DOWNTIME_S - (time.monotonic() - stopped_at)))
    assert time.time() * 1000 > started["deadlineAt"]  # the turn's deadline passed meanwhile
    with spawn_node(env, tmp_path / "second.log", port) as second:
        await asyncio.gather(*playing)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            logged = await fetch_events(http, room)
        assert_played_fairly(logged, players)
        resumed = of_type(logged, "resumed")
        assert resumed and resumed[0]["outageMs"] >= DOWNTIME_S * 1000 * 0.9, resumed
        assert battle_events(logged) == logged
        assert "resumed" in second.log()
