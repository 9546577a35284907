"""Retries and resumption: lost acks, missed deadlines, ``since`` for spectators and agents,
the event log as NDJSON, and idempotent HTTP votes. Real sockets, real server process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.clients import Client, agent_path, connect, spectator_path
from tests.helpers_http import auth
from tests.live_helpers import (
    EVENT_TYPES,
    Table,
    assert_gap_free,
    battle_events,
    expect_ack,
    fetch_events,
    mark,
    ndjson,
    new_ref,
    of_type,
    persisted,
    play_turn,
    reply_to,
    table,
    wait_event,
)

STILL = {"startDelayMs": 100, "turnDurationMs": 30_000, "voteDurationMs": 30_000}


@pytest.fixture
async def http(server_process: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server_process, timeout=10) as client:
        yield client


def events_of(client: Client, start: int = 0) -> list[dict[str, Any]]:
    return battle_events(client.frames[start:])


async def wait_seq(client: Client, seq: int, timeout: float = 10.0) -> None:
    await client.wait_for(lambda f: f.get("type") in EVENT_TYPES and f["seq"] >= seq, timeout)


async def settle_commentary(http: httpx.AsyncClient, room: str, turns: int) -> list[dict[str, Any]]:
    """The log once the commentator has spoken on ``turns`` turns (it runs beside the battle)."""
    for _ in range(100):
        events = await fetch_events(http, room)
        if len(of_type(events, "commentary")) >= turns:
            return events
        await asyncio.sleep(0.05)
    raise AssertionError(f"no commentary on {turns} turns: {events}")


# --------------------------------------------------------------------------- lost acks


async def test_a_repeated_turn_is_acked_again_with_the_same_seq_and_stored_once(
    server_process: str, http: httpx.AsyncClient
) -> None:
    async with table(server_process, http, maxTurns=2, **STILL) as t:
        a, b = t.sockets
        await wait_event(a, "turn_started", turnNumber=1)
        frame = {"type": "turn", "turnNumber": 1, "content": "Said once.", "ref": "lost-ack"}
        start = mark(a)
        # The ack of the first copy is "lost": the agent sends the very same frame again.
        await a.send(frame)
        await a.send(frame)
        await a.wait_for(
            lambda _f: len(of_type(a.frames[start:], "ack", ref="lost-ack")) >= 2, 10, start
        )
        acks = of_type(a.frames[start:], "ack", ref="lost-ack")
        assert len(acks) == 2 and acks[0]["seq"] == acks[1]["seq"], acks
        seq = acks[0]["seq"]
        assert not of_type(a.frames[start:], "error"), a.frames[start:]

        # Later, once the other agent is on, a third copy still gets the same answer.
        await wait_event(b, "turn_started", turnNumber=2)
        third = await expect_ack(a, frame)
        assert third["seq"] == seq

        events = await settle_commentary(http, t.room, 1)
        played = of_type(events, "turn")
        assert [(e["turnNumber"], e["seq"], e["content"]) for e in played] == [
            (1, seq, "Said once.")
        ]
        assert len(of_type(events, "commentary", turnNumber=1)) == 1
        assert len(of_type(events, "turn_started", turnNumber=2)) == 1
        transcript = (await persisted(http, t.room))["transcript"]
        assert [(x["turnNumber"], x["content"]) for x in transcript["turns"]] == [(1, "Said once.")]
        # The agents saw the turn once, too.
        await wait_seq(b, events[-1]["seq"])
        for client in (a, b):
            assert len(of_type(client.frames, "turn")) == 1
            assert_gap_free(events_of(client), events_of(client)[0]["seq"])


# --------------------------------------------------------------------------- missed deadlines


async def test_a_missed_deadline_is_skipped_with_timeout_and_play_moves_on(
    server_process: str, http: httpx.AsyncClient
) -> None:
    settings = {"startDelayMs": 100, "turnDurationMs": 700, "voteDurationMs": 300, "maxTurns": 3}
    async with table(server_process, http, **settings) as t:
        a, b = t.sockets
        agent_a, agent_b = t.agents
        started = await wait_event(a, "turn_started", turnNumber=1)
        assert started["agentId"] == agent_a["id"]
        # Agent A says nothing.
        skipped = await wait_event(a, "turn_skipped", turnNumber=1, timeout=5)
        assert skipped["agentId"] == agent_a["id"]
        assert skipped["reason"] == "timeout"
        assert skipped["at"] >= started["deadlineAt"]
        nxt = await wait_event(b, "turn_started", turnNumber=2)
        assert nxt["agentId"] == agent_b["id"] and nxt["seq"] == skipped["seq"] + 1
        # Too late for turn 1: refused, nothing stored.
        answer = await reply_to(
            a, {"type": "turn", "turnNumber": 1, "content": "Sorry, late.", "ref": "late"}
        )
        assert answer["type"] == "error" and answer["code"] in ("not_your_turn", "wrong_turn")
        await play_turn(b, 2, "Meanwhile, my point.")
        await wait_event(a, "turn_started", turnNumber=3)
        await play_turn(a, 3, "Back in the game.")
        await wait_event(a, "state", status="COMPLETED", timeout=15)

        events = await fetch_events(http, t.room)
        flow = [
            (e["type"], e.get("turnNumber"))
            for e in events
            if e["type"] in ("turn_started", "turn", "turn_skipped")
        ]
        assert flow == [
            ("turn_started", 1),
            ("turn_skipped", 1),
            ("turn_started", 2),
            ("turn", 2),
            ("turn_started", 3),
            ("turn", 3),
        ]
        transcript = (await persisted(http, t.room))["transcript"]
        assert [x["turnNumber"] for x in transcript["turns"]] == [2, 3]
        assert [(s["turnNumber"], s["reason"]) for s in transcript["skipped"]] == [(1, "timeout")]


# --------------------------------------------------------------------------- since


async def test_a_late_spectator_with_since_gets_exactly_the_events_after_it(
    server_process: str, http: httpx.AsyncClient
) -> None:
    settings = {**STILL, "voteDurationMs": 300, "maxTurns": 4}
    async with table(server_process, http, **settings) as t:
        a, b = t.sockets
        await wait_event(a, "turn_started", turnNumber=1)
        await play_turn(a, 1, "First point about sandwiches.")
        await wait_event(b, "turn_started", turnNumber=2)
        await play_turn(b, 2, "Second point about hot dogs.")
        before = await settle_commentary(http, t.room, 2)
        last = before[-1]["seq"]
        k = last // 2
        async with (
            connect(server_process, spectator_path(t.room, k)) as late,
            connect(server_process, spectator_path(t.room, 0)) as from_start,
            connect(server_process, spectator_path(t.room, last)) as at_head,
        ):
            await wait_seq(late, last)
            await wait_seq(from_start, last)
            # No snapshot with since: the events after k, as the log has them.
            assert late.frames == await fetch_events(http, t.room, k) == before[k:]
            assert from_start.frames == before
            await assert_only_live(at_head)

            await wait_event(a, "turn_started", turnNumber=3)
            await play_turn(a, 3, "Third point.")
            await wait_event(b, "turn_started", turnNumber=4)
            await play_turn(b, 4, "Fourth point.")
            for spectator in (late, from_start, at_head):
                await wait_event(spectator, "state", status="COMPLETED", timeout=15)
            logged = await fetch_events(http, t.room)
            await wait_seq(late, logged[-1]["seq"])
            assert late.frames == logged[k:]
            assert from_start.frames == logged
            assert at_head.frames == logged[last:]
            assert of_type(logged, "result")


async def assert_only_live(client: Client) -> None:
    await asyncio.sleep(0.3)
    assert client.frames == [], client.frames


async def test_an_agent_reconnecting_with_since_gets_the_missed_events_in_order(
    server_process: str, http: httpx.AsyncClient
) -> None:
    async with table(server_process, http, maxTurns=4, **STILL) as t:
        a, b = t.sockets
        agent_b = t.agents[1]
        welcome = b.frames[0]
        assert welcome["type"] == "welcome"
        started = await wait_event(b, "turn_started", turnNumber=1)
        k = started["seq"]
        await b.close()  # B drops; its seat waits for it (reconnect grace)

        await play_turn(a, 1, "While you were away.")
        events = await settle_commentary(http, t.room, 1)
        assert of_type(events, "turn_started", turnNumber=2)
        missed = await fetch_events(http, t.room, k)
        assert missed and missed[0]["seq"] == k + 1

        # Back with the session token of the first welcome (no bcrypt), resuming after k.
        async with connect(
            server_process, agent_path(t.room, since=k), headers=auth(welcome["sessionToken"])
        ) as again:
            back = await again.wait_type("welcome")
            assert again.frames[0] is back
            assert back["you"] == welcome["you"]
            assert back["lastSeq"] == events[-1]["seq"]
            await wait_seq(again, back["lastSeq"])
            assert events_of(again) == missed == events[k:]
            # Then live: B plays its turn and sees it.
            ack = await play_turn(again, 2, "I am back.")
            await wait_seq(again, ack["seq"])
            logged = await fetch_events(http, t.room)
            seen = events_of(again)
            assert seen == logged[k : k + len(seen)]
            assert_gap_free(seen, k + 1)
            assert of_type(logged, "turn", turnNumber=2)[0]["agentId"] == agent_b["id"]
            assert not of_type(logged, "participant_left")

        # Without since, a reconnecting agent gets what follows its welcome's lastSeq.
        async with connect(
            server_process, agent_path(t.room), headers=auth(welcome["sessionToken"])
        ) as plain:
            back = await plain.wait_type("welcome")
            await wait_event(a, "turn_started", turnNumber=3)
            await play_turn(a, 3, "Third.")
            await wait_event(plain, "turn", turnNumber=3)
            assert events_of(plain)[0]["seq"] == back["lastSeq"] + 1
            assert_gap_free(events_of(plain), back["lastSeq"] + 1)


# --------------------------------------------------------------------------- the log over HTTP


async def test_events_as_ndjson_are_one_json_object_per_line(
    server_process: str, http: httpx.AsyncClient
) -> None:
    async with table(server_process, http, maxTurns=2, **STILL) as t:
        a = t.sockets[0]
        await wait_event(a, "turn_started", turnNumber=1)
        await play_turn(a, 1, 'Quotes " and \\ and newlines\nstay inside one line.')
        logged = await settle_commentary(http, t.room, 1)
        for since in (0, 2, len(logged)):
            response = await http.get(
                f"/api/battles/{t.room}/events",
                params={"since": since},
                headers={"Accept": "application/x-ndjson"},
            )
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            lines = response.text.splitlines()
            assert all(line.strip() for line in lines)
            assert response.text == "".join(line + "\n" for line in lines)
            assert ndjson(response.text) == logged[since:]
            assert all(isinstance(json.loads(line), dict) for line in lines)
        plain = await http.get(f"/api/battles/{t.room}/events")
        assert plain.headers["content-type"].startswith("application/json")
        assert plain.json()["events"] == logged


# --------------------------------------------------------------------------- HTTP votes


async def post_vote(
    http: httpx.AsyncClient, room: str, target: str, key: str, token: str | None = None
) -> httpx.Response:
    headers = {"Idempotency-Key": key, **(auth(token) if token else {})}
    return await http.post(
        f"/api/battles/{room}/votes", json={"targetAgentId": target}, headers=headers
    )


async def test_http_votes_are_idempotent_and_only_taken_while_voting(
    server_process: str, http: httpx.AsyncClient
) -> None:
    settings = {**STILL, "voteDurationMs": 2_500, "maxTurns": 2, "enableCommentator": False}
    async with table(server_process, http, **settings) as t:
        a, b = t.sockets
        agent_a, agent_b = t.agents
        await wait_event(a, "turn_started", turnNumber=1)
        # Outside VOTING: 409 invalid_state, and the key is not used up.
        early = await post_vote(http, t.room, agent_a["id"], "early-key")
        assert early.status_code == 409, early.text
        assert early.json()["error"]["code"] == "invalid_state"
        by_agent = await post_vote(http, t.room, agent_a["id"], "early-b", agent_b["apiKey"])
        assert by_agent.status_code == 409
        assert by_agent.json()["error"]["code"] == "invalid_state"

        await play_turn(a, 1, "One.")
        await wait_event(b, "turn_started", turnNumber=2)
        await play_turn(b, 2, "Two.")
        await wait_event(a, "voting_started")

        key = new_ref("audience-")
        first = await post_vote(http, t.room, agent_a["id"], key)
        assert first.status_code == 201, first.text
        repeat = await post_vote(http, t.room, agent_a["id"], key)
        assert (repeat.status_code, repeat.json()) == (first.status_code, first.json())
        # The same key with another body still gets the first answer (nothing new is counted).
        changed = await post_vote(http, t.room, agent_b["id"], key)
        assert (changed.status_code, changed.json()) == (first.status_code, first.json())

        agent_key = new_ref("agent-b-")
        mine = await post_vote(http, t.room, agent_a["id"], agent_key, agent_b["apiKey"])
        assert mine.status_code == 201, mine.text
        again = await post_vote(http, t.room, agent_a["id"], agent_key, agent_b["apiKey"])
        assert (again.status_code, again.json()) == (mine.status_code, mine.json())
        second = await post_vote(http, t.room, agent_a["id"], new_ref("x-"), agent_b["apiKey"])
        assert second.status_code == 409, second.text
        assert second.json()["error"]["code"] == "duplicate"
        missing = await http.post(
            f"/api/battles/{t.room}/votes", json={"targetAgentId": agent_a["id"]}
        )
        assert missing.status_code == 400
        assert missing.json()["error"]["code"] == "bad_message"

        tally = await a.wait_for(
            lambda f: f.get("type") == "vote_tally" and f["counts"][agent_a["id"]] == 2, 10
        )
        assert tally["counts"] == {agent_a["id"]: 2, agent_b["id"]: 0}
        await wait_event(a, "state", status="COMPLETED", timeout=15)

        transcript = (await persisted(http, t.room))["transcript"]
        assert transcript["tally"]["agents"] == {agent_a["id"]: 1}
        assert transcript["tally"]["audience"] == {agent_a["id"]: 1}
        late = await post_vote(http, t.room, agent_b["id"], new_ref("late-"))
        assert late.status_code == 409, late.text
        assert late.json()["error"]["code"] == "invalid_state"
        repeat_late = await post_vote(http, t.room, agent_a["id"], key)
        assert repeat_late.status_code in (201, 409)


async def test_vote_keys_used_in_another_battle_do_not_break_this_one(
    server_process: str, http: httpx.AsyncClient
) -> None:
    """Idempotency keys are unique across the whole votes table (MoltArena schema). A key
    that another battle already used must be refused (or scoped), never crash this battle."""
    settings = {**STILL, "voteDurationMs": 1_000, "maxTurns": 2, "enableCommentator": False}
    key = new_ref("shared-key-")
    async with (
        table(server_process, http, **settings) as first,
        table(server_process, http, **settings) as second,
    ):
        await asyncio.gather(*(to_voting(t) for t in (first, second)))
        used = await post_vote(http, first.room, first.agents[0]["id"], key)
        assert used.status_code == 201, used.text
        try:
            response = await http.post(
                f"/api/battles/{second.room}/votes",
                json={"targetAgentId": second.agents[0]["id"]},
                headers={"Idempotency-Key": key},
                timeout=3,
            )
        except httpx.ReadTimeout:
            raise AssertionError("the vote was never answered") from None
        assert response.status_code in (201, 409), response.text
        final = await second.sockets[0].wait_for(
            lambda f: f.get("type") == "state" and f["status"] in ("COMPLETED", "CANCELLED"), 15
        )
        assert final["status"] == "COMPLETED", final


async def to_voting(t: Table) -> None:
    a, b = t.sockets
    await wait_event(a, "turn_started", turnNumber=1)
    await play_turn(a, 1, "One.")
    await wait_event(b, "turn_started", turnNumber=2)
    await play_turn(b, 2, "Two.")
    await wait_event(a, "voting_started")
