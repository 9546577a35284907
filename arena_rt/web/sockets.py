"""Agent and spectator sockets (PROTOCOL.md section 2).

A socket's one long-lived task is its reader (frames in). The battle's events (replayed from
``since``, then live) and the outbox (acks, errors, pongs) are written by the hub's direct
writes or by short-lived helper tasks that start when something is queued and end once it is
written (``SocketPeer.serve``); everything stops together. Game logic is not here: frames
become machine inputs for the runner.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Awaitable, Coroutine
from typing import Any

import msgspec
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from arena_rt.battle.calls import AnyCall, LeaveCall, TurnCall, VoteCall
from arena_rt.battle.session import Answer
from arena_rt.bus.base import FeedClosedError, FeedClosedReason
from arena_rt.bus.hub import Feed, Write, catch_up, drain
from arena_rt.errors import ArenaError, BadRequest, NotFound, Unauthorized, error_for
from arena_rt.protocol import (
    DRAIN_REASON,
    MAX_IDEMPOTENCY_KEY,
    Ack,
    AgentIdentity,
    AuthFrame,
    CloseCode,
    ErrorCode,
    ErrorFrame,
    LeaveFrame,
    PingFrame,
    Pong,
    TurnFrame,
    VoteFrame,
    Welcome,
    agent_frame_decoder,
    encode,
    spectator_frame_decoder,
)
from arena_rt.sanitize import clean_text
from arena_rt.store.models import Battle
from arena_rt.web.connection import (
    Closing,
    SocketPeer,
    close_quietly,
    next_frame,
    receive_text,
)
from arena_rt.web.services import Principal, Services
from arena_rt.web.views import BattleView

log = logging.getLogger("arena_rt.sockets")

MAX_SEQ = 2**31 - 1  # the seq column (as /events?since= bounds it)
MAX_TEAM_ID = 50  # BattleParticipant.team_id

_CLOSE_FOR = {
    ErrorCode.BATTLE_FULL: CloseCode.BATTLE_FULL,
    ErrorCode.NOT_FOUND: CloseCode.NOT_FOUND,
    ErrorCode.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    ErrorCode.NOT_OWNER: CloseCode.NOT_OWNER,
    ErrorCode.UNAVAILABLE: CloseCode.TRY_AGAIN_LATER,
}


def _services(ws: WebSocket) -> Services:
    found: Services = ws.state.services
    return found


def _since(ws: WebSocket) -> int | None:
    raw = ws.query_params.get("since")
    if raw is None or raw == "":
        return None
    # ASCII digits only ("²".isdigit() is true, int("²") fails) and within the seq column.
    if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_SEQ:
        raise Closing(CloseCode.POLICY, "since must be a non-negative integer")
    return int(raw)


def _fits(text: str, limit: int) -> bool:
    """Storable as an identifier: 1 to ``limit`` characters, no control characters (a longer
    value overflows its column and PostgreSQL refuses NUL: the battle's write would fail)."""
    return 0 < len(text) <= limit and not any(unicodedata.category(c) == "Cc" for c in text)


def _team(ws: WebSocket) -> str | None:
    team = ws.query_params.get("team") or None
    if team is not None and not _fits(team, MAX_TEAM_ID):
        raise BadRequest(f"team: 1 to {MAX_TEAM_ID} characters, no control characters")
    return team


def _bad_key(peer: SocketPeer, key: str, ref: str | None) -> bool:
    """Answer ``bad_message`` for an idempotency key the votes table can't hold."""
    if _fits(key, MAX_IDEMPOTENCY_KEY):
        return False
    message = f"idempotencyKey: 1 to {MAX_IDEMPOTENCY_KEY} characters, no control characters"
    peer.error(ErrorCode.BAD_MESSAGE, message, ref)
    return True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _battle(svc: Services, ws: WebSocket) -> Battle:
    """The room's battle row: for its id and configuration only (see ``BattleViews.battle``)."""
    return await svc.views.battle(ws.path_params["room_code"])


async def _authenticate(svc: Services, ws: WebSocket) -> Principal:
    """Header first; else the first frame must be ``auth`` within the configured time."""
    header = ws.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return await svc.authenticate(token.strip())
    try:
        async with asyncio.timeout(svc.settings.limits.auth_timeout_s):
            raw = await receive_text(ws)
    except TimeoutError as exc:
        raise Unauthorized("no credentials within the auth timeout") from exc
    try:
        frame = agent_frame_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise Unauthorized('the first frame must be {"type": "auth", "token": …}') from exc
    if not isinstance(frame, AuthFrame):
        raise Unauthorized('the first frame must be {"type": "auth", "token": …}')
    return await svc.authenticate(frame.token)


async def _fail(ws: WebSocket, error: ArenaError, code: int | None = None) -> None:
    await ws.send_text(
        encode({"type": "error", "code": error.code.value, "message": error.message}).decode()
    )
    await close_quietly(ws, code or _CLOSE_FOR.get(error.code, CloseCode.POLICY), error.code.value)


_FEED_CLOSE = {
    FeedClosedReason.OVERFLOW: (CloseCode.SLOW_CONSUMER, "slow_consumer"),
    FeedClosedReason.GAP: (1011, "missed events; resume with since"),
    FeedClosedReason.SHUTDOWN: (CloseCode.GOING_AWAY, DRAIN_REASON),
}


async def _pump_events(peer: SocketPeer, feed: Feed, after: int, *, replay: bool = True) -> None:
    """The battle's events after ``after`` (:func:`catch_up`); it returns once live.

    Once live, an event that finds this socket idle is written by the hub itself (the feed's
    sink: one shared frame, no task woken per socket); one that is queued instead (a write in
    progress, a paused transport) starts a helper task that writes the queue out in order and
    ends (:func:`drain`), so an idle socket has no task waiting on its feed.
    ``replay=False``: ``after`` is a snapshot's ``lastSeq`` read once the feed was attached,
    so there is nothing to fetch before going live (see :func:`resume`).
    """
    if peer.direct:
        feed.attach(peer.write_now, peer.write_step_now)
    write = _write_to(peer)
    pumping: asyncio.Task[None] | None = None

    def on_queued() -> None:
        nonlocal pumping
        if pumping is None or pumping.done():
            pumping = peer.spawn(_feed_closing(drain(feed, write)))

    try:
        await _feed_closing(catch_up(feed, after, write, replay=replay))
        feed.on_queued = on_queued
        if feed.qsize():
            on_queued()
    except BaseException:
        feed.attach(None)
        raise


def _write_to(peer: SocketPeer) -> Write:
    async def write(_seq: int, data: bytes) -> None:
        await peer.write(data)

    return write


async def _feed_closing(events: Coroutine[Any, Any, None]) -> None:
    try:
        await events
    except FeedClosedError as exc:
        raise Closing(*_FEED_CLOSE[exc.reason]) from exc


def _kick_when_closed(feed: Feed, peer: SocketPeer) -> None:
    """Close as soon as the hub closes the feed, even while a send to a stuck client hangs:
    the feed's close kicks the peer, which ends the socket's tasks (no task waits for it)."""
    feed.on_close = lambda reason: peer.kick(*_FEED_CLOSE[reason])
    peer.kicked.add_done_callback(lambda _: _detach(feed))
    if feed.close_reason is not None:
        peer.kick(*_FEED_CLOSE[feed.close_reason])


def _detach(feed: Feed) -> None:
    feed.attach(None)
    feed.on_queued = None


# --------------------------------------------------------------------------- agents


async def agent_socket(ws: WebSocket) -> None:
    svc = _services(ws)
    await ws.accept()
    svc.metrics.sockets.labels("agent").inc()
    svc.socket_opened()
    try:
        await _serve_agent(svc, ws)
    except WebSocketDisconnect:
        pass
    except Closing as closing:
        await close_quietly(ws, closing.code, closing.reason)
    finally:
        svc.socket_closed()
        svc.metrics.sockets.labels("agent").dec()


async def _serve_agent(svc: Services, ws: WebSocket) -> None:
    since = _since(ws)
    try:
        principal = await _authenticate(svc, ws)
        team = _team(ws)
        battle = await _battle(svc, ws)
    except ArenaError as error:
        code = CloseCode.UNAUTHORIZED if isinstance(error, Unauthorized) else None
        code = CloseCode.NOT_FOUND if isinstance(error, NotFound) else code
        await _fail(ws, error, code)
        return
    if svc.draining:
        raise Closing(CloseCode.GOING_AWAY, DRAIN_REASON)
    agent_id = principal.agent_id
    peer = SocketPeer(ws, svc.settings.node_id, svc.settings.limits)
    async with svc.hub.watch(battle.id, queue_size=svc.settings.limits.spectator_queue) as feed:
        # The feed is attached before the join: every event after the join's point reaches it.
        joined = await svc.gateway.join(battle, agent_id, team, peer)
        try:
            if not joined.ok:
                await _fail(ws, joined.as_error())
                return
            assert joined.before_seq is not None and joined.position is not None
            token, expires_at = await _session_for(svc, principal, battle.id)
            view = await svc.views.view(battle.id, at_least_seq=joined.before_seq)
            welcome = Welcome(
                battle=msgspec.to_builtins(view.resource),
                you=AgentIdentity(agent_id, joined.position, joined.team_id),
                session_token=token,
                session_expires_at=expires_at,
                last_seq=joined.before_seq,
            )
            await peer.write(encode(welcome))
            log.info(
                "agent attached battle=%s agent=%s peer=%s", battle.room_code, agent_id, peer.id
            )
            _kick_when_closed(feed, peer)
            limits = svc.settings.limits
            await peer.serve(
                _read_agent(svc, battle, peer, agent_id, limits.max_content_chars),
                _pump_events(
                    peer,
                    feed,
                    joined.before_seq if since is None else since,
                    replay=since is not None or joined.replay,
                ),
            )
        finally:
            if joined.ok:
                await svc.gateway.detach(battle, agent_id, peer)


async def _session_for(svc: Services, principal: Principal, battle_id: str) -> tuple[str, int]:
    """The welcome's session token and expiry (ms): the one the agent connected with while it
    has more than half its lifetime left (a reconnect writes nothing), else a new one."""
    session = principal.session
    ttl_ms = svc.settings.timings.session_ttl_s * 1000
    if session is not None and session.expires_at_ms - _now_ms() > ttl_ms / 2:
        return session.token, session.expires_at_ms
    return await svc.sessions.create(principal.agent_id, {"battleId": battle_id})


def _answer_frames(peer: SocketPeer, call: Awaitable[Answer], ref: str | None) -> None:
    """Send the call's answer (ack or error) when it comes; the reader goes on meanwhile."""

    async def answer() -> None:
        result = await call
        if result.ok:
            peer.send(encode(Ack(ref=ref, seq=result.seq)))
        else:
            error = ErrorFrame(code=result.error_code, message=result.message, ref=ref)
            peer.send(encode(error))

    peer.spawn(answer())


async def _read_agent(
    svc: Services, battle: Battle, peer: SocketPeer, agent_id: str, max_chars: int
) -> None:
    gateway = svc.gateway
    while True:
        frame = await next_frame(peer, agent_frame_decoder)
        call: AnyCall
        match frame:
            case PingFrame(t=t):
                peer.send(encode(Pong(t=t)))
                continue
            case TurnFrame(turn_number=number, content=content, ref=ref):
                text = clean_text(content)
                if len(text) > max_chars:
                    peer.error(ErrorCode.TOO_LARGE, f"content is over {max_chars} characters", ref)
                    continue
                call = TurnCall(
                    agent_id=agent_id, peer=peer.id, turn_number=number, content=text, ref=ref
                )
            case VoteFrame(target_agent_id=target, idempotency_key=key, ref=ref):
                if _bad_key(peer, key, ref):
                    continue
                call = VoteCall(
                    agent_id=agent_id,
                    peer=peer.id,
                    target_agent_id=target,
                    idempotency_key=key,
                    ref=ref,
                )
            case LeaveFrame(ref=ref):
                call = LeaveCall(agent_id=agent_id, peer=peer.id, ref=ref)
            case AuthFrame():
                peer.strike(ErrorCode.BAD_MESSAGE, "already authenticated")
                continue
        _answer_frames(peer, gateway.perform(battle, call, peer), getattr(frame, "ref", None))


# --------------------------------------------------------------------------- spectators


async def spectator_socket(ws: WebSocket) -> None:
    svc = _services(ws)
    await ws.accept()
    svc.metrics.sockets.labels("spectator").inc()
    svc.socket_opened()
    try:
        await _serve_spectator(svc, ws)
    except WebSocketDisconnect:
        pass
    except Closing as closing:
        if closing.code == CloseCode.SLOW_CONSUMER:
            svc.metrics.slow_consumers.inc()
        await close_quietly(ws, closing.code, closing.reason)
    finally:
        svc.socket_closed()
        svc.metrics.sockets.labels("spectator").dec()


async def _serve_spectator(svc: Services, ws: WebSocket) -> None:
    since = _since(ws)
    try:
        battle = await _battle(svc, ws)
    except ArenaError as error:
        await _fail(ws, error, CloseCode.NOT_FOUND)
        return
    if svc.draining:
        raise Closing(CloseCode.GOING_AWAY, DRAIN_REASON)
    limits = svc.settings.limits
    if svc.spectators.local[battle.id] >= limits.spectators_per_battle:
        await _fail(ws, error_for(ErrorCode.BATTLE_FULL, "spectator limit reached for this battle"))
        return
    svc.spectators.enter(battle.id)
    try:
        await _watch_battle(svc, ws, battle, since)
    finally:
        svc.spectators.leave(battle.id)


async def _watch_battle(svc: Services, ws: WebSocket, battle: Battle, since: int | None) -> None:
    limits = svc.settings.limits
    peer = SocketPeer(ws, svc.settings.node_id, limits)
    async with svc.hub.watch(battle.id, queue_size=limits.spectator_queue) as feed:
        replay = True
        if since is None:
            since, replay = await _send_snapshot(svc, peer, battle.id, time.monotonic())
        _kick_when_closed(feed, peer)
        await peer.serve(
            _read_spectator(svc, battle, peer),
            _pump_events(peer, feed, since, replay=replay),
        )


async def _send_snapshot(
    svc: Services, peer: SocketPeer, battle_id: str, attached_at: float
) -> tuple[int, bool]:
    """Write the battle's (shared) snapshot; its lastSeq, and whether a replay from it must
    follow. A function of its own so the socket's long-lived frame keeps no view alive."""
    view = await svc.views.view(battle_id)
    await peer.write(view.snapshot)
    return view.last_seq, not _view_is_current(svc, view, attached_at)


def _view_is_current(svc: Services, view: BattleView, attached_at: float) -> bool:
    """Whether every event after the view's lastSeq will reach a feed attached at
    ``attached_at``: so when the view was read after it, or when this process runs the battle
    and has settled at the view's lastSeq (its next event will be published after now).
    Otherwise the snapshot is followed by a replay from its lastSeq, as with ``since``."""
    if view.read_after(attached_at):
        return True
    runner = svc.supervisor.live(view.battle_id)
    return runner is not None and runner.settled_seq == view.last_seq


async def _read_spectator(svc: Services, battle: Battle, peer: SocketPeer) -> None:
    while True:
        frame = await next_frame(peer, spectator_frame_decoder)
        match frame:
            case PingFrame(t=t):
                peer.send(encode(Pong(t=t)))
            case VoteFrame(target_agent_id=target, idempotency_key=key, ref=ref):
                if _bad_key(peer, key, ref):
                    continue
                call = VoteCall(
                    peer=peer.id,
                    target_agent_id=target,
                    idempotency_key=key,
                    connection_id=peer.id,
                    ref=ref,
                )
                _answer_frames(peer, svc.gateway.perform(battle, call, peer), ref)


routes = [
    WebSocketRoute("/ws/battles/{room_code}/agent", agent_socket),
    WebSocketRoute("/ws/battles/{room_code}/spectate", spectator_socket),
]
