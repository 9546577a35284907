"""HTTP API routes (PROTOCOL.md section 1)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import aliased
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from arena_rt.battle.supervisor import NotOwner
from arena_rt.errors import BadRequest, Forbidden, RateLimited, TooLarge, Unavailable
from arena_rt.protocol import Mode, encode
from arena_rt.ratings.batch import ALL_MODES
from arena_rt.resources import CreateBattle, RegisterAgent, RegisteredAgent, SubmitFeedback
from arena_rt.store import agents, battles, feedback
from arena_rt.store.models import Agent, Battle, BattleParticipant, LeaderboardEntry
from arena_rt.store.timeconv import to_ms
from arena_rt.web.services import Principal, Services

log = logging.getLogger("arena_rt.http")

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 100

T = TypeVar("T")


def services(request: Request) -> Services:
    found: Services = request.state.services
    return found


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(body), status, headers=headers, media_type="application/json")


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def authenticated(request: Request) -> Principal:
    return await services(request).authenticate(bearer(request))


async def read_body(request: Request, kind: type[T]) -> T:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not body:
        raise BadRequest("a JSON body is required")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


# --------------------------------------------------------------------------- agents


async def register_agent(request: Request) -> Response:
    svc = services(request)
    if not svc.registrations.allow(client_address(request)):
        raise RateLimited("too many registrations from this address; try again in a minute")
    body = await read_body(request, RegisterAgent)
    key = await svc.keys.issue()
    async with svc.db() as session:
        agent = await agents.create_agent(session, body, key)
    log.info("agent registered id=%s name=%s keyId=%s", agent.id, agent.name, key.key_id)
    created = RegisteredAgent(
        id=agent.id,
        name=agent.name,
        display_name=agent.display_name,
        api_key=key.key,
        key_id=key.key_id,
    )
    return json_response(created, 201, {"Cache-Control": "no-store"})


async def get_agent(request: Request) -> Response:
    async with services(request).db() as session:
        profile = await agents.agent_profile(session, request.path_params["agent_id"])
    return json_response(profile)


async def rotate_key(request: Request) -> Response:
    svc = services(request)
    principal = await authenticated(request)
    agent_id = request.path_params["agent_id"]
    if principal.agent_id != agent_id:
        raise Forbidden("an agent can only rotate its own key")
    if principal.via != "key":
        raise Forbidden("rotating a key needs the current API key, not a session token")
    key = await svc.keys.issue()
    async with svc.db() as session, session.begin():
        await agents.replace_key(session, agent_id, key)
        await svc.sessions.revoke_agent(session, agent_id)
    log.info("agent key rotated id=%s keyId=%s", agent_id, key.key_id)
    body = {"id": agent_id, "apiKey": key.key, "keyId": key.key_id}
    return json_response(body, 201, {"Cache-Control": "no-store"})


# --------------------------------------------------------------------------- battles


async def create_battle(request: Request) -> Response:
    svc = services(request)
    principal = await authenticated(request)
    body = await read_body(request, CreateBattle)
    async with svc.db() as session:
        battle = await battles.create_battle(session, body, principal.agent_id)
        resource = await battles.battle_resource(session, battle)
    try:
        await svc.supervisor.runner_for(battle)  # arms the lobby idle timeout from now
    except NotOwner:
        pass  # another node took it between the insert and here: it runs there, which serves
    except Exception as exc:
        # No stored battle without a runner and a lease: take it back, the client retries.
        log.warning("battle %s not started (%r); removed", battle.room_code, exc, exc_info=True)
        async with svc.db() as session, session.begin():
            await battles.delete_unstarted(session, battle.id)
        raise Unavailable("could not start the battle right now; try again") from exc
    log.info(
        "battle created room=%s mode=%s by=%s", battle.room_code, battle.mode, battle.created_by_id
    )
    resource.spectator_count = 0  # nobody can be watching a battle that did not exist
    return json_response(resource, 201)


async def list_battles(request: Request) -> Response:
    statuses = battles.parse_statuses(request.query_params.get("status"))
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)
    cursor = request.query_params.get("cursor") or None
    svc = services(request)
    async with svc.db() as session:
        page = await battles.list_battles(session, statuses, limit, cursor)
    counts = await svc.spectators.counts([b.id for b in page.battles])
    for battle in page.battles:
        battle.spectator_count = counts.get(battle.id, 0)
    return json_response(page)


async def get_battle(request: Request) -> Response:
    async with services(request).db() as session:
        battle = await battles.battle_by_room(session, request.path_params["room_code"])
        resource = await battles.battle_resource(session, battle)
    resource.spectator_count = (await services(request).spectators.counts([battle.id]))[battle.id]
    return json_response(resource)


# --------------------------------------------------------------------------- feedback, board


async def submit_feedback(request: Request) -> Response:
    svc = services(request)
    principal = await authenticated(request)
    body = await read_body(request, SubmitFeedback)
    async with svc.db() as session:
        created = await feedback.add_feedback(session, principal.agent_id, body)
    return json_response(created, 201)


async def leaderboard(request: Request) -> Response:
    """Agents by Elo rating, with the last batch Bradley-Terry fit's interval and shared rank."""
    limit = query_int(request, "limit", 50, 1, MAX_PAGE)
    mode = request.query_params.get("mode")
    if mode is not None and mode not in {m.value for m in Mode}:
        raise BadRequest(f"mode must be one of {', '.join(m.value for m in Mode)}")
    fit = aliased(LeaderboardEntry)
    query = (
        select(Agent, fit)
        .outerjoin(fit, (fit.agent_id == Agent.id) & (fit.mode == (mode or ALL_MODES)))
        .where(Agent.is_active.is_(True))
        .order_by(Agent.rating.desc(), Agent.wins.desc(), Agent.id)
        .limit(limit)
    )
    if mode is not None:  # agents who have played that mode (Elo ratings are global)
        played = (
            select(BattleParticipant.agent_id)
            .join(Battle, Battle.id == BattleParticipant.battle_id)
            .where(Battle.mode == mode)
        )
        query = query.where(Agent.id.in_(played))
    async with services(request).db() as session:
        rows = list(await session.execute(query))
    board = [
        {
            "rank": rank,
            "id": agent.id,
            "name": agent.name,
            "displayName": agent.display_name,
            "rating": round(agent.rating, 2),
            "wins": agent.wins,
            "losses": agent.losses,
            "draws": agent.draws,
            "bradleyTerry": None
            if entry is None
            else {
                "rating": entry.rating,
                "lower": entry.lower,
                "upper": entry.upper,
                "sharedRank": entry.rank,
                "battles": entry.battles,
                "fittedAt": to_ms(entry.fitted_at),
            },
        }
        for rank, (agent, entry) in enumerate(rows, start=1)
    ]
    return json_response({"mode": mode, "agents": board})


# --------------------------------------------------------------------------- operations


async def healthz(request: Request) -> Response:
    svc = services(request)
    checks: dict[str, str] = {}
    failed: list[str] = []
    for name, probe in (("database", svc.check_database), ("bus", svc.bus.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except Exception as exc:
            log.warning("health check %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}"
            failed.append(name)
    if failed:
        err = Unavailable(f"{', '.join(failed)} not answering")
        body = {"error": {"code": err.code.value, "message": err.message}, "checks": checks}
        return json_response(body, 503)
    return json_response({"status": "ok", "checks": checks, "node": svc.settings.node_id})


async def metrics(request: Request) -> Response:
    return Response(
        services(request).metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


routes = [
    Route("/api/agents", register_agent, methods=["POST"]),
    Route("/api/agents/{agent_id}", get_agent, methods=["GET"]),
    Route("/api/agents/{agent_id}/keys", rotate_key, methods=["POST"]),
    Route("/api/battles", create_battle, methods=["POST"]),
    Route("/api/battles", list_battles, methods=["GET"]),
    Route("/api/battles/{room_code}", get_battle, methods=["GET"]),
    Route("/api/feedback", submit_feedback, methods=["POST"]),
    Route("/api/leaderboard", leaderboard, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
