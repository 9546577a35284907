"""Every socket error of PROTOCOL section 4, provoked over real sockets against a real server.

After each error the socket is still served (a ping gets its pong) unless the protocol says it
closes, and the battle's persisted state (``/events`` and ``/transcript``) is exactly as before.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.clients import Client, Frame, agent_path, connect, spectator_path
from tests.helpers_http import auth, register
from tests.live_helpers import (
    assert_alive,
    expect_ack,
    expect_error,
    expect_refused,
    mark,
    new_ref,
    of_type,
    persisted,
    play_turn,
    table,
    unchanged,
    wait_event,
)

AUTH_TIMEOUT_S = 5.0  # the server's default (Limits.auth_timeout_s)
RATE_BURST = 40  # the per-connection bucket: 20 frames/s, burst 40
ABUSE_STRIKES = 10  # bad frames before the server closes with 1008
MAX_CONTENT = 8_000
MAX_FRAME = 64 * 1024

# Long turns and votes: the battle holds still while errors are provoked.
STILL = {"turnDurationMs": 30_000, "voteDurationMs": 30_000, "maxTurns": 2}


@pytest.fixture
async def http(server_process: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server_process, timeout=10) as client:
        yield client


def turn(
    number: int, content: str = "A fine argument.", ref: str | None = None
) -> dict[str, object]:
    return {"type": "turn", "turnNumber": number, "content": content, "ref": ref or new_ref("t")}


def vote(target: str, key: str | None = None, ref: str | None = None) -> dict[str, object]:
    return {
        "type": "vote",
        "targetAgentId": target,
        "idempotencyKey": new_ref("key-") if key is None else key,
        "ref": ref or new_ref("v"),
    }


# --------------------------------------------------------------------------- bad_message

AGENT_BAD_FRAMES = [
    '{"type": "turn", "turnNumber": 1',  # truncated JSON
    "not json at all",
    "[1, 2, 3]",  # JSON, but not an object
    '{"type": "dance", "ref": "x"}',  # unknown type
    '{"turnNumber": 1, "content": "no type"}',  # no type at all
    '{"type": "turn", "content": "no turn number", "ref": "x"}',  # missing field
    '{"type": "vote", "targetAgentId": "someone"}',  # missing idempotencyKey
    '{"type": "turn", "turnNumber": "one", "content": "x"}',  # wrong field type
    '{"type": "auth", "token": "again"}',  # auth after authentication
]
SPECTATOR_BAD_FRAMES = [
    "{{{",
    '{"type": "turn", "turnNumber": 1, "content": "spectators do not play"}',
    '{"type": "vote", "idempotencyKey": "k"}',  # missing targetAgentId
    '{"type": "leave"}',
]


async def test_bad_frames_get_bad_message_and_the_socket_stays_open(
    server_process: str, http: httpx.AsyncClient
) -> None:
    assert len(AGENT_BAD_FRAMES) < ABUSE_STRIKES
    async with (
        table(server_process, http, join=1) as t,
        connect(server_process, spectator_path(t.room)) as spectator,
    ):
        await spectator.wait_type("snapshot")
        agent = t.sockets[0]
        async with unchanged(http, t.room):
            for raw in AGENT_BAD_FRAMES:
                await expect_error(agent, raw, "bad_message")
                await assert_alive(agent)
            for raw in SPECTATOR_BAD_FRAMES:
                await expect_error(spectator, raw, "bad_message")
                await assert_alive(spectator)
            # A binary frame that is not UTF-8 is a bad frame too, not a crash.
            start = mark(spectator)
            await spectator.conn.send(b"\xff\xfe\x00")
            error = await spectator.wait_for(lambda f: f.get("type") == "error", 5, start)
            assert error["code"] == "bad_message"
            await assert_alive(spectator)


# --------------------------------------------------------------------------- unauthorized


async def test_unauthorized_sockets_are_refused_with_4001(
    server_process: str, http: httpx.AsyncClient
) -> None:
    async with table(server_process, http, join=1) as t:
        path = agent_path(t.room)
        # Say nothing: the server gives up after its auth timeout. Opened first so the other
        # cases run while it waits.
        async with unchanged(http, t.room), connect(server_process, path) as silent:
            silent_since = time.monotonic()
            async with connect(server_process, path, headers=auth("ak_notakey.nope")) as header:
                await expect_refused(header, "unauthorized", 4001)
            basic = {"Authorization": "Basic dXNlcjpwYXNz"}
            async with connect(server_process, path, headers=basic) as wrong_scheme:
                # No bearer token: the server waits for an auth frame; a forged one is refused.
                await wrong_scheme.send({"type": "auth", "token": "st_forged.token"})
                await expect_refused(wrong_scheme, "unauthorized", 4001)
            async with connect(server_process, path) as bad_frame:
                await bad_frame.send({"type": "auth", "token": t.agents[1]["apiKey"] + "x"})
                await expect_refused(bad_frame, "unauthorized", 4001)
            async with connect(server_process, path) as not_auth:
                await not_auth.send({"type": "ping", "t": 1})
                await expect_refused(not_auth, "unauthorized", 4001)
            async with connect(server_process, path) as garbage:
                await garbage.conn.send("hello?")
                await expect_refused(garbage, "unauthorized", 4001)
            await expect_refused(silent, "unauthorized", 4001, timeout=AUTH_TIMEOUT_S + 5)
            waited = time.monotonic() - silent_since
            assert AUTH_TIMEOUT_S - 0.5 <= waited <= AUTH_TIMEOUT_S + 4, waited

        # The same credentials in a first auth frame work (the header-less path is real).
        async with connect(server_process, path) as framed:
            await framed.send({"type": "auth", "token": t.agents[1]["apiKey"]})
            welcome = await framed.wait_type("welcome")
            assert welcome["you"]["agentId"] == t.agents[1]["id"]
            await assert_alive(framed)


# --------------------------------------------------------------------------- not_found


async def test_unknown_room_is_not_found_and_closed_with_4004(
    server_process: str, http: httpx.AsyncClient
) -> None:
    agent = await register(http)
    for path in (agent_path("NOSUCHRM"), spectator_path("NOSUCHRM"), spectator_path("NOSUCH", 3)):
        async with connect(server_process, path, headers=auth(agent["apiKey"])) as client:
            await expect_refused(client, "not_found", 4004)
    assert (await http.get("/api/battles/NOSUCHRM")).status_code == 404


# --------------------------------------------------------------------------- seats and turns


async def test_seat_and_turn_errors_leave_the_battle_untouched(
    server_process: str, http: httpx.AsyncClient
) -> None:
    settings = {**STILL, "startDelayMs": 2_000, "enableCommentator": False}
    async with (
        table(server_process, http, **settings) as t,
        connect(server_process, spectator_path(t.room)) as spectator,
    ):
        await spectator.wait_type("snapshot")
        a, b = t.sockets
        agent_a, agent_b = t.agents
        await wait_event(a, "state", status="STARTING")

        # STARTING: the seats are taken; nothing can be played or voted yet.
        async with unchanged(http, t.room) as before:
            assert before["transcript"]["battle"]["status"] == "STARTING"
            # The outsider's key is cached by the server, so this is quick.
            async with connect(
                server_process, agent_path(t.room), headers=auth(t.outsider["apiKey"])
            ) as third:
                await expect_refused(third, "battle_full", 4009)
            await expect_error(a, turn(1), "invalid_state")
            await expect_error(a, vote(agent_b["id"]), "invalid_state")
            await expect_error(spectator, vote(agent_a["id"]), "invalid_state")
            for client in (a, b, spectator):
                await assert_alive(client)

        started = await wait_event(a, "turn_started", turnNumber=1, timeout=10)
        assert started["agentId"] == agent_a["id"]
        await wait_event(b, "turn_started", turnNumber=1)

        async with unchanged(http, t.room) as before:
            assert before["transcript"]["battle"]["status"] == "IN_PROGRESS"
            # A seat can't be taken once the battle has started.
            async with connect(
                server_process, agent_path(t.room), headers=auth(t.outsider["apiKey"])
            ) as late:
                await expect_refused(late, "invalid_state", 1008)
            await expect_error(b, turn(1), "not_your_turn")
            await expect_error(b, turn(2), "not_your_turn")
            await expect_error(a, turn(2), "wrong_turn")
            await expect_error(a, turn(0), "wrong_turn")
            await expect_error(a, vote(agent_b["id"]), "invalid_state")
            await expect_error(spectator, vote(agent_b["id"]), "invalid_state")
            too_long = turn(1, "x" * (MAX_CONTENT + 1), ref="long")
            error = await expect_error(a, too_long, "too_large")
            assert error["ref"] == "long"
            # Markup is stripped first: what is left is measured.
            await expect_error(a, turn(1, "<b>" + "y" * (MAX_CONTENT + 1) + "</b>"), "too_large")
            for client in (a, b, spectator):
                await assert_alive(client)

        # The cap applies after sanitizing: 8,000 characters once the tags are gone is fine.
        padded = "<i></i>" * 500 + "z" * MAX_CONTENT + "<script>alert(1)</script>"
        assert len(padded) > MAX_CONTENT
        ack = await play_turn(a, 1, padded)
        stored = await persisted(http, t.room)
        [played] = of_type(stored["events"], "turn")
        assert played["seq"] == ack["seq"]
        assert played["content"] == "z" * MAX_CONTENT
        assert [x["content"] for x in stored["transcript"]["turns"]] == ["z" * MAX_CONTENT]


async def test_vote_errors_leave_the_battle_untouched(
    server_process: str, http: httpx.AsyncClient
) -> None:
    settings = {**STILL, "startDelayMs": 100, "enableCommentator": False}
    async with (
        table(server_process, http, **settings) as t,
        connect(server_process, spectator_path(t.room)) as spectator,
    ):
        await spectator.wait_type("snapshot")
        a, b = t.sockets
        agent_a, agent_b = t.agents
        await wait_event(a, "turn_started", turnNumber=1)
        await play_turn(a, 1, "Opening statement.")
        await wait_event(b, "turn_started", turnNumber=2)
        await play_turn(b, 2, "Rebuttal.")
        await wait_event(a, "voting_started")

        first = await expect_ack(a, vote(agent_b["id"], key="a-votes-b", ref="first"))
        await expect_ack(spectator, vote(agent_a["id"], key="audience-1"))
        tally = await spectator.wait_for(
            lambda f: (
                f.get("type") == "vote_tally"
                and f["counts"] == {agent_a["id"]: 1, agent_b["id"]: 1}
            ),
            timeout=10,
        )
        await wait_event(a, "vote_tally", seq=tally["seq"])

        async with unchanged(http, t.room) as before:
            assert before["transcript"]["battle"]["status"] == "VOTING"
            await expect_error(a, vote(agent_a["id"]), "forbidden")
            await expect_error(b, vote(agent_b["id"]), "forbidden")
            await expect_error(a, vote("no-such-agent"), "not_found")
            await expect_error(spectator, vote("no-such-agent"), "not_found")
            await expect_error(a, vote(agent_b["id"], key="a-votes-b-again"), "duplicate")
            await expect_error(a, vote(agent_a["id"], key="a-changes-mind"), "forbidden")
            await expect_error(spectator, vote(agent_b["id"], key="audience-2"), "duplicate")
            # Keys the votes table can't hold (over 200 characters, NUL, empty) are refused
            # before they reach the battle, from a voter who hasn't voted yet.
            for bad_key in ("k" * 201, "nul\x00key", ""):
                await expect_error(b, vote(agent_a["id"], key=bad_key), "bad_message")
                await expect_error(spectator, vote(agent_a["id"], key=bad_key), "bad_message")
            # The same idempotency key again: the first answer again, and nothing stored.
            again = await expect_ack(a, vote(agent_b["id"], key="a-votes-b", ref="first"))
            assert again == first
            await expect_ack(spectator, vote(agent_a["id"], key="audience-1"))
            await expect_error(a, turn(3), "invalid_state")
            # Over HTTP: self votes and votes by agents outside the battle are forbidden.
            self_vote = await http.post(
                f"/api/battles/{t.room}/votes",
                json={"targetAgentId": agent_b["id"]},
                headers={**auth(agent_b["apiKey"]), "Idempotency-Key": new_ref("http-")},
            )
            assert self_vote.status_code == 403, self_vote.text
            assert self_vote.json()["error"]["code"] == "forbidden"
            outsider = await http.post(
                f"/api/battles/{t.room}/votes",
                json={"targetAgentId": agent_b["id"]},
                headers={**auth(t.outsider["apiKey"]), "Idempotency-Key": new_ref("http-")},
            )
            assert outsider.status_code == 403, outsider.text
            assert outsider.json()["error"]["code"] == "forbidden"
            for client in (a, b, spectator):
                await assert_alive(client)
            await asyncio.sleep(1.2)  # a tally interval: a wrongly counted vote would show
        assert of_type(spectator.frames, "vote_tally") == [tally]
        assert before["transcript"]["tally"]["agents"] == {agent_b["id"]: 1}
        assert before["transcript"]["tally"]["audience"] == {agent_a["id"]: 1}


async def test_query_values_the_database_cannot_hold_are_refused(
    server_process: str, http: httpx.AsyncClient
) -> None:
    settings = {**STILL, "mode": "TEAM", "maxParticipants": 4}
    async with table(server_process, http, seats=4, join=1, **settings) as t:
        joiner = t.agents[1]
        async with unchanged(http, t.room):
            # Team ids are at most 50 characters, without control characters.
            for team in ("t" * 51, "nul%00team"):
                path = agent_path(t.room, team=team)
                async with connect(server_process, path, headers=auth(joiner["apiKey"])) as c:
                    await expect_refused(c, "bad_message", 1008)
            # ``since`` is a seq: a non-negative integer in range.
            for since in ("abc", "-1", "%C2%B2", "1e3", str(2**63)):
                path = f"/ws/battles/{t.room}/spectate?since={since}"
                async with connect(server_process, path) as c:
                    assert await c.wait_closed(10) == 1008, (since, c.frames)
                async with connect(
                    server_process,
                    f"/ws/battles/{t.room}/agent?since={since}",
                    headers=auth(joiner["apiKey"]),
                ) as c:
                    assert await c.wait_closed(10) == 1008, (since, c.frames)
        # The battle is unharmed: a proper team name takes a seat.
        seated = await t.seat(joiner, team="Blue")
        assert of_type(seated.frames, "welcome")[0]["you"]["teamId"] == "Blue"
        assert (await persisted(http, t.room))["transcript"]["battle"]["status"] == "LOBBY"


# --------------------------------------------------------------------------- size limits


async def test_content_over_the_cap_is_an_error_and_a_huge_frame_closes_1009(
    server_process: str, http: httpx.AsyncClient
) -> None:
    async with (
        table(server_process, http, join=1) as t,
        connect(server_process, spectator_path(t.room)) as spectator,
    ):
        await spectator.wait_type("snapshot")
        a = t.sockets[0]
        async with unchanged(http, t.room) as before:
            # Under the frame limit but over the content cap: an error, the socket stays.
            big = turn(1, "w" * (MAX_FRAME - 4_000), ref="big")
            assert len(json.dumps(big)) < MAX_FRAME
            error = await expect_error(a, big, "too_large")
            assert error["ref"] == "big"
            await assert_alive(a)
            # Over the frame limit: closed with 1009.
            await a.conn.send(json.dumps(turn(1, "w" * (MAX_FRAME + 1))))
            assert await a.wait_closed(10) == 1009
            await spectator.conn.send(json.dumps({"type": "ping", "t": "p" * (MAX_FRAME + 1)}))
            assert await spectator.wait_closed(10) == 1009
        # The seat is kept: the agent comes back on a new socket, and that changes nothing.
        again = await t.seat(t.agents[0])
        await assert_alive(again)
        assert await persisted(http, t.room) == before


# --------------------------------------------------------------------------- rate limits, abuse


async def burst(client: Client, sent: int) -> list[Frame]:
    """Send ``sent`` pings at once; return the answers (pongs and errors), in order."""
    start = mark(client)
    await asyncio.gather(
        *(client.conn.send(json.dumps({"type": "ping", "t": i})) for i in range(sent))
    )

    def answers() -> list[Frame]:
        return [f for f in client.frames[start:] if f["type"] in ("pong", "error")]

    await client.wait_for(lambda _f: len(answers()) >= sent, 10, start)
    return answers()


async def test_a_burst_over_the_rate_limit_is_rate_limited_not_closed(
    server_process: str, http: httpx.AsyncClient
) -> None:
    sent = RATE_BURST + 6
    async with (
        table(server_process, http, join=1) as t,
        connect(server_process, spectator_path(t.room)) as spectator,
    ):
        await spectator.wait_type("snapshot")
        async with unchanged(http, t.room):
            for client in (t.sockets[0], spectator):
                replies = await burst(client, sent)
                pongs = of_type(replies, "pong")
                errors = of_type(replies, "error")
                assert all(e["code"] == "rate_limited" for e in errors), errors
                assert RATE_BURST <= len(pongs) < sent, len(pongs)
                assert len(errors) == sent - len(pongs)
                assert [p["t"] for p in pongs] == sorted(p["t"] for p in pongs)
                await asyncio.sleep(0.3)  # the bucket refills at 20 frames/s
                await assert_alive(client)


async def test_repeated_abuse_is_closed_with_1008(
    server_process: str, http: httpx.AsyncClient
) -> None:
    async with table(server_process, http, join=1) as t, unchanged(http, t.room):
        a = t.sockets[0]
        for _ in range(ABUSE_STRIKES - 1):
            await expect_error(a, "{oops", "bad_message")
        await assert_alive(a)
        await a.conn.send("{oops")
        assert await a.wait_closed(10) == 1008
        assert len(of_type(a.frames, "error", code="bad_message")) == ABUSE_STRIKES

        async with connect(server_process, spectator_path(t.room)) as spectator:
            await spectator.wait_type("snapshot")
            for _ in range(ABUSE_STRIKES):
                await spectator.conn.send('{"type": "vote"}')
            assert await spectator.wait_closed(10) == 1008

        # A flood: every frame past the burst is a strike.
        flooder = await t.seat(t.agents[0])
        await asyncio.gather(
            *(flooder.conn.send('{"type": "ping"}') for _ in range(RATE_BURST * 3))
        )
        assert await flooder.wait_closed(10) == 1008
        assert of_type(flooder.frames, "error", code="rate_limited")


async def test_sockets_struck_out_right_after_connecting_are_closed_promptly(
    server_process: str, http: httpx.AsyncClient
) -> None:
    """The close must not depend on where the socket's other tasks happen to be (e.g. halfway
    through reading the history when the reader gives up on the client)."""
    async with table(server_process, http, join=1) as t:
        for _ in range(20):
            async with connect(server_process, spectator_path(t.room)) as spectator:
                await asyncio.gather(*(spectator.conn.send("{") for _ in range(ABUSE_STRIKES)))
                assert await spectator.wait_closed(5) == 1008


# --------------------------------------------------------------------------- replaced


async def test_reconnecting_agent_replaces_its_older_socket_with_4000(
    server_process: str, http: httpx.AsyncClient
) -> None:
    async with table(server_process, http, join=1, startDelayMs=100, **STILL) as t:
        old = t.sockets[0]
        async with unchanged(http, t.room):
            new = await t.seat(t.agents[0])
            assert await old.wait_closed(10) == 4000
            assert old.conn.close_reason == "replaced"
            await assert_alive(new)
        # The new socket is the agent's: it sees the battle go on, and plays.
        await t.seat(t.agents[1])
        started = await wait_event(new, "turn_started", turnNumber=1)
        assert started["agentId"] == t.agents[0]["id"]
        ack = await play_turn(new, 1, "Still here.")
        events = (await persisted(http, t.room))["events"]
        assert [e["type"] for e in events].count("participant_joined") == 2
        assert not of_type(events, "participant_left")
        assert of_type(events, "turn")[0]["seq"] == ack["seq"]
