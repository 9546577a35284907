"""Shared helpers of the live-socket acceptance tests (errors, resume, slow consumers, scale-out).

Every wait is bounded. Battles are seated over real sockets against a real server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.clients import Client, Frame, agent_path, connect
from tests.helpers_http import auth, create_battle, register

_pings = itertools.count(1)
_refs = itertools.count(1)


def new_ref(prefix: str = "r") -> str:
    return f"{prefix}{next(_refs)}"


async def persisted(http: httpx.AsyncClient, room: str) -> dict[str, Any]:
    """What the database says about a battle: its event log and its transcript."""
    events = await http.get(f"/api/battles/{room}/events")
    assert events.status_code == 200, events.text
    transcript = await http.get(f"/api/battles/{room}/transcript")
    assert transcript.status_code == 200, transcript.text
    return {"events": events.json()["events"], "transcript": transcript.json()}


async def fetch_events(http: httpx.AsyncClient, room: str, since: int = 0) -> list[Frame]:
    response = await http.get(f"/api/battles/{room}/events", params={"since": since})
    assert response.status_code == 200, response.text
    events: list[Frame] = response.json()["events"]
    return events


@contextlib.asynccontextmanager
async def unchanged(http: httpx.AsyncClient, room: str) -> AsyncIterator[dict[str, Any]]:
    """Asserts that the block leaves the battle's events and transcript exactly as they were."""
    before = await persisted(http, room)
    yield before
    after = await persisted(http, room)
    assert after == before, "the database changed"


def mark(client: Client) -> int:
    """The index of the next frame the client will receive (take it before sending)."""
    return len(client.frames)


async def assert_alive(client: Client, timeout: float = 5.0) -> None:
    """The socket is still open and served: a ping is answered by its pong."""
    t = next(_pings) * 1000 + 7
    start = mark(client)
    await client.send({"type": "ping", "t": t})
    await client.wait_for(lambda f: f.get("type") == "pong" and f.get("t") == t, timeout, start)
    assert client.close_code is None


async def reply_to(client: Client, frame: Frame | str, timeout: float = 5.0) -> Frame:
    """Send a frame (or raw text) and return the ack/error that answers it.

    Frames with a ``ref`` are matched by it; otherwise the next error frame is the answer.
    """
    start = mark(client)
    if isinstance(frame, str):
        await client.conn.send(frame)
        ref = None
    else:
        await client.send(frame)
        ref = frame.get("ref")

    def answers(f: Frame) -> bool:
        if ref is not None:
            return f.get("type") in ("ack", "error") and f.get("ref") == ref
        return f.get("type") == "error"

    return await client.wait_for(answers, timeout, start)


async def expect_error(
    client: Client, frame: Frame | str, code: str, timeout: float = 5.0
) -> Frame:
    answer = await reply_to(client, frame, timeout)
    assert answer["type"] == "error", answer
    assert answer["code"] == code, answer
    assert isinstance(answer["message"], str) and answer["message"]
    return answer


async def expect_ack(client: Client, frame: Frame, timeout: float = 5.0) -> Frame:
    answer = await reply_to(client, frame, timeout)
    assert answer["type"] == "ack", answer
    return answer


async def expect_refused(client: Client, code: str, close_code: int, timeout: float = 10.0) -> None:
    """The server answered with an error frame of ``code`` and closed with ``close_code``."""
    closed = await client.wait_closed(timeout)
    errors = [f for f in client.frames if f.get("type") == "error"]
    assert [e["code"] for e in errors] == [code], client.frames
    assert closed == close_code, (closed, client.frames)


def of_type(frames: list[Frame], kind: str, **fields: Any) -> list[Frame]:
    return [
        f for f in frames if f.get("type") == kind and all(f.get(k) == v for k, v in fields.items())
    ]


EVENT_TYPES = frozenset(
    {
        "state",
        "participant_joined",
        "participant_left",
        "turn_started",
        "turn",
        "turn_skipped",
        "commentary",
        "voting_started",
        "vote_tally",
        "result",
        "resumed",
    }
)


def battle_events(frames: list[Frame]) -> list[Frame]:
    """The battle events among a socket's frames (acks carry a ``seq`` too: left out)."""
    return [f for f in frames if f.get("type") in EVENT_TYPES]


def assert_gap_free(events: list[Frame], first: int = 1) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), seqs


def ndjson(text: str) -> list[Frame]:
    return [json.loads(line) for line in text.splitlines()]


@dataclass
class Table:
    """A battle with agents seated over real sockets (in join order = position order)."""

    base: str
    http: httpx.AsyncClient
    room: str
    battle: Frame
    outsider: Frame  # registered, not seated
    agents: list[Frame]
    sockets: list[Client] = field(default_factory=list)
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def connect_agent(self, agent: Frame, **query: Any) -> Client:
        client = await self.stack.enter_async_context(
            connect(self.base, agent_path(self.room, **query), headers=auth(agent["apiKey"]))
        )
        return client

    async def seat(self, agent: Frame, **query: Any) -> Client:
        client = await self.connect_agent(agent, **query)
        welcome = await client.wait_type("welcome")
        assert welcome["you"]["agentId"] == agent["id"], welcome
        return client

    def socket_of(self, agent_id: str) -> Client:
        for agent, client in zip(self.agents, self.sockets, strict=False):
            if agent["id"] == agent_id:
                return client
        raise KeyError(agent_id)


@contextlib.asynccontextmanager
async def table(
    base: str,
    http: httpx.AsyncClient,
    *,
    seats: int = 2,
    join: int | None = None,
    **settings: Any,
) -> AsyncIterator[Table]:
    """Register ``seats`` agents and one outsider, create the battle (by the first agent) and
    seat the first ``join`` agents (all by default) in order. The keys of every agent and of
    the outsider are verified once up front, so connecting later costs no bcrypt."""
    *agents, outsider = await asyncio.gather(*(register(http) for _ in range(seats + 1)))
    battle, *_ = await asyncio.gather(
        create_battle(http, agents[0]["apiKey"], **settings),
        *(warm_key(http, agent["apiKey"]) for agent in [*agents[1:], outsider]),
    )
    t = Table(base, http, battle["roomCode"], battle, outsider, agents)
    async with t.stack:
        for agent in agents[: seats if join is None else join]:
            t.sockets.append(await t.seat(agent))
        yield t


async def warm_key(http: httpx.AsyncClient, key: str) -> None:
    """Authenticate with ``key`` without creating anything (the body is refused after the key
    is verified), so the server has it in its verified-key cache."""
    response = await http.post("/api/battles", json={}, headers=auth(key))
    assert response.status_code == 400, response.text


async def wait_event(client: Client, kind: str, timeout: float = 10.0, **fields: Any) -> Frame:
    assert kind in EVENT_TYPES, kind
    return await client.wait_for(
        lambda f: f.get("type") == kind and all(f.get(k) == v for k, v in fields.items()),
        timeout,
    )


async def play_turn(client: Client, number: int, content: str, timeout: float = 5.0) -> Frame:
    """Play turn ``number`` and return its ack (with the stored event's seq)."""
    ack = await expect_ack(
        client,
        {"type": "turn", "turnNumber": number, "content": content, "ref": new_ref("turn")},
        timeout,
    )
    assert isinstance(ack["seq"], int), ack
    return ack


def first(frames: list[Frame], predicate: Callable[[Frame], bool]) -> Frame:
    return next(f for f in frames if predicate(f))
