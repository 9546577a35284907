"""Two ``arena-rt serve`` processes sharing one PostgreSQL database and one Redis.

The battle is run by the process it was created on (A). A spectator on the other process (B)
sees every event through Redis, in seq order, equal to the log; an agent that connects to B
for A's battle is told ``not_owner`` and closed with 4010. PostgreSQL + Redis only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.clients import Bot, agent_path, connect, spectator_path
from tests.conftest import postgres_env
from tests.helpers_http import auth
from tests.live_helpers import (
    assert_alive,
    assert_gap_free,
    battle_events,
    expect_refused,
    fetch_events,
    of_type,
    persisted,
    table,
    unchanged,
    wait_event,
)
from tests.support import spawn_server

FAST = {"startDelayMs": 100, "turnDurationMs": 3_000, "voteDurationMs": 500, "maxTurns": 4}


@pytest.fixture(scope="module")
def two_servers(migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    env = postgres_env(migrated_pg)
    logs = tmp_path_factory.mktemp("two-servers")
    with (
        spawn_server(env, logs / "a.log") as a,
        spawn_server(env, logs / "b.log") as b,
    ):
        yield [a, b]


@pytest.fixture
async def http_a(two_servers: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=two_servers[0], timeout=10) as client:
        yield client


@pytest.fixture
async def http_b(two_servers: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=two_servers[1], timeout=10) as client:
        yield client


async def test_a_spectator_on_the_other_process_sees_every_event_in_order(
    two_servers: list[str], http_a: httpx.AsyncClient, http_b: httpx.AsyncClient
) -> None:
    a_url, b_url = two_servers
    async with (
        table(a_url, http_a, join=0, **FAST) as t,
        connect(b_url, spectator_path(t.room)) as watcher,
        connect(b_url, spectator_path(t.room, 0)) as replayer,
    ):
        snapshot = await watcher.wait_type("snapshot")
        assert snapshot["battle"]["roomCode"] == t.room
        bots = []
        try:
            for agent in t.agents:
                client = await t.seat(agent)
                bots.append(Bot(client, agent["id"]))
            for spectator in (watcher, replayer):
                await wait_event(spectator, "state", status="COMPLETED", timeout=30)
        finally:
            for bot in bots:
                await bot.stop()

        logged = await fetch_events(http_a, t.room)
        assert await fetch_events(http_b, t.room) == logged
        live = battle_events(watcher.frames)
        assert_gap_free(live, snapshot["lastSeq"] + 1)
        assert live == logged[snapshot["lastSeq"] :]
        assert replayer.frames == logged
        assert len(of_type(logged, "turn")) == FAST["maxTurns"]
        assert of_type(logged, "result")
        # A late spectator on B, resuming mid-battle, gets exactly the rest.
        k = len(logged) // 2
        async with connect(b_url, spectator_path(t.room, k)) as late:
            await late.wait_for(lambda f: f.get("seq") == logged[-1]["seq"], 10)
            assert late.frames == logged[k:]


async def test_an_agent_on_the_wrong_process_is_told_not_owner_and_closed_4010(
    two_servers: list[str], http_a: httpx.AsyncClient, http_b: httpx.AsyncClient
) -> None:
    a_url, b_url = two_servers
    async with table(a_url, http_a, join=1, **FAST) as t:
        first = t.sockets[0]
        second = t.agents[1]
        async with unchanged(http_a, t.room):
            async with connect(b_url, agent_path(t.room), headers=auth(second["apiKey"])) as lost:
                await expect_refused(lost, "not_owner", 4010)
            # The seated agent, too, if it reconnects on B: and its socket on A is kept.
            async with connect(
                b_url, agent_path(t.room), headers=auth(t.agents[0]["apiKey"])
            ) as moved:
                await expect_refused(moved, "not_owner", 4010)
            await assert_alive(first)
        assert (await persisted(http_b, t.room)) == (await persisted(http_a, t.room))

        # On the owner the same agent takes its seat and the battle starts.
        await t.seat(second)
        await wait_event(first, "turn_started", turnNumber=1)
