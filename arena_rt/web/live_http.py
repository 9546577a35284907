"""HTTP routes of the live engine: votes, the event log and the transcript."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from arena_rt.battle.calls import VoteCall
from arena_rt.errors import BadRequest, RateLimited
from arena_rt.protocol import MAX_IDEMPOTENCY_KEY, Status
from arena_rt.resources import SubmitVote
from arena_rt.store import battles
from arena_rt.store.events import read_after
from arena_rt.store.models import BattleEvent, Vote
from arena_rt.store.transcript import turn_views
from arena_rt.web.http import (
    bearer,
    client_address,
    json_response,
    query_int,
    read_body,
    services,
)


async def events(request: Request) -> Response:
    svc = services(request)
    since = query_int(request, "since", 0, 0, 2**31 - 1)
    async with svc.db() as session:
        battle = await battles.battle_by_room(session, request.path_params["room_code"])
    rows = await read_after(svc.db, battle.id, since)
    # The stored bytes are exactly what sockets carry: joined, never re-encoded.
    if "application/x-ndjson" in request.headers.get("accept", ""):
        body = b"".join(data + b"\n" for _, data in rows)
        return Response(body, media_type="application/x-ndjson")
    body = b'{"roomCode":"%s","events":[%s]}' % (
        battle.room_code.encode(),
        b",".join(data for _, data in rows),
    )
    return Response(body, media_type="application/json")


async def transcript(request: Request) -> Response:
    svc = services(request)
    async with svc.db() as session:
        battle = await battles.battle_by_room(session, request.path_params["room_code"])
        resource = await battles.battle_resource(session, battle)
        turns = await turn_views(session, battle.id)
        tally_rows = await session.execute(
            select(Vote.target_agent_id, Vote.voter_id.is_(None), func.count())
            .where(Vote.battle_id == battle.id)
            .group_by(Vote.target_agent_id, Vote.voter_id.is_(None))
        )
        skipped = await session.scalars(
            select(BattleEvent.payload).where(
                BattleEvent.battle_id == battle.id, BattleEvent.type == "turn_skipped"
            )
        )
        skipped_payloads = list(skipped)
    agents: dict[str, int] = {}
    audience: dict[str, int] = {}
    for target, is_audience, count in tally_rows:
        (audience if is_audience else agents)[target] = count
    total = {k: agents.get(k, 0) + audience.get(k, 0) for k in {*agents, *audience}}
    result: dict[str, Any] | None = None
    if resource.status is Status.COMPLETED:
        result = {
            "winnerId": resource.winner_id,
            "winningTeamId": resource.winning_team_id,
            "reasoning": resource.judge_reasoning,
        }
    body = {
        "battle": resource,
        "turns": turns,
        "skipped": [msgspec.json.decode(p) for p in skipped_payloads],
        "tally": {"total": total, "agents": agents, "audience": audience},
        "result": result,
    }
    return json_response(body)


async def vote(request: Request) -> Response:
    svc = services(request)
    key = request.headers.get("idempotency-key", "").strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"Idempotency-Key header: required, 1 to {MAX_IDEMPOTENCY_KEY} characters")
    token = bearer(request)
    voter_id = (await svc.authenticate(token)).agent_id if token else None
    if voter_id is None and not svc.vote_limiter.allow(client_address(request)):
        raise RateLimited("too many votes from this address")
    body = await read_body(request, SubmitVote)
    async with svc.db() as session:
        battle = await battles.battle_by_room(session, request.path_params["room_code"])
    call = VoteCall(
        agent_id=voter_id,
        peer=_HTTP_PEER.id,
        target_agent_id=body.target_agent_id,
        idempotency_key=key,
    )
    answer = await svc.gateway.perform(battle, call, _HTTP_PEER)
    if not answer.ok:
        raise answer.as_error()
    # A repeated key gets the first answer: the target of the vote that key recorded.
    target = answer.recorded_target or body.target_agent_id
    return json_response({"accepted": True, "targetAgentId": target, "idempotencyKey": key}, 201)


class _NoSocket:
    """An HTTP vote's stand-in for a socket: its answer is the response, nothing is pushed."""

    id = "http"

    def kick(self, code: int, reason: str) -> None:
        return None


_HTTP_PEER = _NoSocket()


routes = [
    Route("/api/battles/{room_code}/events", events, methods=["GET"]),
    Route("/api/battles/{room_code}/transcript", transcript, methods=["GET"]),
    Route("/api/battles/{room_code}/votes", vote, methods=["POST"]),
]
