"""Connecting sockets share one read of their battle, and stay gap-free when the view they are
given is older than their feed. An agent reconnecting with its session token keeps it.
Real server process, real sockets, both configurations."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.clients import Client, agent_path, connect, spectator_path
from tests.helpers_http import auth
from tests.live_helpers import (
    assert_gap_free,
    battle_events,
    of_type,
    play_turn,
    table,
    wait_event,
)
from tests.support import spawn_server

LOBBY = {"startDelayMs": 60_000, "turnDurationMs": 30_000, "voteDurationMs": 30_000}
PLAYING = {"startDelayMs": 100, "turnDurationMs": 30_000, "voteDurationMs": 30_000}


@pytest.fixture
def long_view_server(
    backend_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A server whose battle views live a minute: every connect after the first is a reuse."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = {**backend_env, "ARENA_SNAPSHOT_TTL_MS": "60000"}
    if "DATABASE_URL" not in env:  # embedded: a SQLite file of its own (one process per file)
        env["ARENA_DATA_DIR"] = str(tmp_path_factory.mktemp("views-embedded"))
    with spawn_server(env, log_path) as url:
        yield url


@pytest.fixture
async def http(long_view_server: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=long_view_server, timeout=10) as client:
        yield client


async def view_reads(http: httpx.AsyncClient) -> dict[str, float]:
    text = (await http.get("/metrics")).text
    found = re.findall(r'^arena_battle_view_reads_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: float(value) for outcome, value in found}


def delta(after: dict[str, float], before: dict[str, float], outcome: str) -> float:
    return after.get(outcome, 0.0) - before.get(outcome, 0.0)


async def test_a_crowd_of_spectators_costs_one_read(
    long_view_server: str, http: httpx.AsyncClient
) -> None:
    async with table(long_view_server, http, join=0, **LOBBY) as t:
        before = await view_reads(http)
        async with contextlib.AsyncExitStack() as stack:
            crowd: list[Client] = await asyncio.gather(
                *(
                    stack.enter_async_context(connect(long_view_server, spectator_path(t.room)))
                    for _ in range(25)
                )
            )
            snapshots = await asyncio.gather(*(c.wait_type("snapshot") for c in crowd))
        after = await view_reads(http)
    assert {s["lastSeq"] for s in snapshots} == {snapshots[0]["lastSeq"]}
    assert all(s["battle"]["roomCode"] == t.room for s in snapshots)
    assert delta(after, before, "miss") == 1, (before, after)
    assert delta(after, before, "hit") + delta(after, before, "shared") == 24, (before, after)


async def test_an_older_shared_view_is_followed_by_the_events_after_it(
    long_view_server: str, http: httpx.AsyncClient
) -> None:
    async with table(long_view_server, http, **PLAYING) as t:
        a, _ = t.sockets
        await wait_event(a, "turn_started", turnNumber=1)
        async with connect(long_view_server, spectator_path(t.room)) as first:
            seen = (await first.wait_type("snapshot"))["lastSeq"]
            # A turn is played: events the first spectator's (shared) view does not hold.
            ack = await play_turn(a, 1, "An argument the late spectator must not miss.")
            await first.wait_for(lambda f: f.get("seq") == ack["seq"])
            async with connect(long_view_server, spectator_path(t.room)) as late:
                snapshot = await late.wait_type("snapshot")
                await late.wait_for(lambda f: f.get("seq", 0) >= ack["seq"])
                events = battle_events(late.frames)
    assert snapshot["lastSeq"] == seen  # the shared view, older than the turn
    assert [turn["turnNumber"] for turn in snapshot["turns"]] == []
    assert_gap_free(events, first=seen + 1)
    turns = of_type(events, "turn")
    assert [(e["turnNumber"], e["seq"]) for e in turns] == [(1, ack["seq"])]


async def test_an_agent_reconnecting_with_its_session_token_keeps_it(
    long_view_server: str, http: httpx.AsyncClient
) -> None:
    async with table(long_view_server, http, seats=2, join=1, **LOBBY) as t:
        welcome = await t.sockets[0].wait_type("welcome")
        token = welcome["sessionToken"]
        agent = t.agents[0]
        for _ in range(2):
            async with connect(long_view_server, agent_path(t.room), headers=auth(token)) as again:
                back = await again.wait_type("welcome")
            assert back["sessionToken"] == token
            assert back["sessionExpiresAt"] == welcome["sessionExpiresAt"]
            assert back["you"]["agentId"] == agent["id"]
        # An API key still gets a new token.
        async with connect(
            long_view_server, agent_path(t.room), headers=auth(agent["apiKey"])
        ) as by_key:
            fresh = await by_key.wait_type("welcome")
        assert fresh["sessionToken"] != token
