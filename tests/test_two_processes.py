"""Two ``arena-rt serve`` processes sharing one PostgreSQL database and one Redis.

The battle is run by the process it was created on (A). A spectator on the other process (B)
sees every event through Redis, in seq order, equal to the log; an agent that connects to B
for A's battle plays through B, which forwards its inputs to A. PostgreSQL + Redis only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import msgspec
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from arena_rt.battle.calls import LeaveCall
from arena_rt.cluster.messages import Request
from arena_rt.cluster.relay import node_channel, relay_key
from tests.clients import Bot, agent_path, connect, spectator_path
from tests.conftest import REDIS_URL, postgres_env
from tests.helpers_http import auth
from tests.live_helpers import (
    assert_alive,
    assert_gap_free,
    battle_events,
    expect_ack,
    expect_error,
    fetch_events,
    of_type,
    persisted,
    table,
    unchanged,
    wait_event,
)
from tests.support import TEST_SECRET, Node, spawn_node, unique

FAST = {"startDelayMs": 100, "turnDurationMs": 3_000, "voteDurationMs": 500, "maxTurns": 4}


@pytest.fixture(scope="module")
def two_nodes(migrated_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    env = postgres_env(migrated_pg)
    logs = tmp_path_factory.mktemp("two-servers")
    suffix = unique("")
    with (
        spawn_node({**env, "ARENA_NODE_ID": f"a{suffix}"}, logs / "a.log") as a,
        spawn_node({**env, "ARENA_NODE_ID": f"b{suffix}"}, logs / "b.log") as b,
    ):
        yield [a, b]


@pytest.fixture(scope="module")
def two_servers(two_nodes: list[Node]) -> list[str]:
    return [node.url for node in two_nodes]


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


async def test_an_agent_on_another_process_plays_through_the_owner(
    two_servers: list[str], http_a: httpx.AsyncClient, http_b: httpx.AsyncClient
) -> None:
    """B forwards the agent's inputs to A, the owner: the same frames as on A."""
    a_url, b_url = two_servers
    async with table(a_url, http_a, join=1, **FAST) as t:
        first = t.sockets[0]
        second = t.agents[1]
        async with connect(b_url, agent_path(t.room), headers=auth(second["apiKey"])) as on_b:
            welcome = await on_b.wait_type("welcome")
            assert welcome["you"] == {"agentId": second["id"], "position": 2, "teamId": None}
            started = await wait_event(on_b, "turn_started", turnNumber=1)
            assert started["agentId"] == t.agents[0]["id"]
            # Errors come back as on the owner, the socket stays open.
            await expect_error(
                on_b,
                {"type": "turn", "turnNumber": 1, "content": "x", "ref": "e1"},
                "not_your_turn",
            )
            await expect_error(
                on_b,
                {"type": "vote", "targetAgentId": "nobody", "idempotencyKey": "k"},
                "invalid_state",
            )
            await assert_alive(on_b)
            await expect_ack(first, {"type": "turn", "turnNumber": 1, "content": "one", "ref": "a"})
            await wait_event(on_b, "turn_started", turnNumber=2)
            turn = {"type": "turn", "turnNumber": 2, "content": "two", "ref": "b"}
            acked = await expect_ack(on_b, turn)
            again = await expect_ack(on_b, {**turn, "ref": "c"})  # idempotent: the same seq
            assert again["seq"] == acked["seq"]
            logged = await fetch_events(http_a, t.room)
            stored = of_type(logged, "turn", turnNumber=2)
            assert [e["seq"] for e in stored] == [acked["seq"]]
            assert stored[0]["agentId"] == second["id"] and stored[0]["content"] == "two"

            # The agent connecting again on the owner replaces its socket on B (4000).
            async with connect(a_url, agent_path(t.room), headers=auth(second["apiKey"])) as on_a:
                await on_a.wait_type("welcome")
                assert await on_b.wait_closed(10) == 4000
            assert await persisted(http_b, t.room) == await persisted(http_a, t.room)


async def test_forged_replayed_and_stale_forwards_are_refused_and_never_applied(
    two_nodes: list[Node], http_a: httpx.AsyncClient
) -> None:
    """What reaches a node's channel without the cluster's key, twice, for another node or
    under an old fencing token changes nothing; each is logged."""
    a = two_nodes[0]
    a_id = a.node_id
    async with table(a.url, http_a, join=1, **FAST) as t:
        seated = t.agents[0]
        leave = LeaveCall(agent_id=seated["id"], peer="p1")  # applied, it would free the seat
        redis = Redis.from_url(REDIS_URL)
        listener = redis.pubsub()
        key = relay_key(TEST_SECRET)
        await listener.subscribe(node_channel(key, "intruder"))
        async with unchanged(http_a, t.room):

            def request(token: int, corr: str, to: str = a_id) -> Request:
                return Request(
                    sender="intruder",
                    sent_at=time.time_ns() // 1_000_000,
                    corr=corr,
                    to=to,
                    battle_id=t.battle["id"],
                    token=token,
                    call=leave,
                )

            def signed(message: Request, with_key: bytes = key) -> bytes:
                body = msgspec.json.encode(message)
                return hmac.new(with_key, body, hashlib.sha256).hexdigest().encode() + body

            channel = node_channel(key, a_id)
            forged = signed(
                request(1, "c-forged"), relay_key("another secret of 48 characters.....")
            )
            await redis.publish(channel, forged)
            await redis.publish(channel, signed(request(1, "c-other", to="b-node")))
            # A valid signature under a token that is not the owner's: "moved", not applied.
            await redis.publish(channel, signed(request(0, "c-stale")))
            reply = await _next_message(listener)
            assert reply["ok"] is False and reply["code"] == "not_owner", reply
            # The same request again (a replay) is not even answered.
            await redis.publish(channel, signed(request(0, "c-stale")))
            with pytest.raises(TimeoutError):
                await _next_message(listener, timeout=1.0)
            await assert_alive(t.sockets[0])
        await listener.aclose()
        await redis.aclose()
    log = a.log()
    assert "refused a message with a bad signature" in log
    assert "refused a request for another node" in log
    assert "stale token 0" in log
    assert "refused a replayed request" in log


async def _next_message(listener: PubSub, timeout: float = 5.0) -> dict[str, object]:
    async with asyncio.timeout(timeout):
        while True:
            item = await listener.get_message(ignore_subscribe_messages=True, timeout=timeout)
            if item is not None:
                body = item["data"][64:]
                found: dict[str, object] = msgspec.json.decode(body)
                return found
