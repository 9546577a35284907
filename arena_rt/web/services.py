"""Everything the app owns for its lifetime, built in the lifespan and torn down after it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from arena_rt.ai.factory import build_intelligence, close_intelligence
from arena_rt.auth import KeyVerifier, SessionClaims, SessionSigner, parse_key_id
from arena_rt.battle.clock import RealClock
from arena_rt.battle.committer import Committer
from arena_rt.battle.ownership import LocalOwnership, Ownership, RedisOwnership
from arena_rt.battle.runner import RunnerDeps
from arena_rt.battle.supervisor import Supervisor
from arena_rt.bus import Bus, from_url
from arena_rt.bus.hub import Hub
from arena_rt.cluster.gateway import Gateway
from arena_rt.cluster.relay import Relay, relay_key
from arena_rt.config import Settings
from arena_rt.errors import Unauthorized
from arena_rt.metrics import Metrics
from arena_rt.ratelimit import KeyedLimiter
from arena_rt.spectators import SpectatorCounts
from arena_rt.store import agents, events
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.group_statement import GroupStatementWriter
from arena_rt.store.migrate import ensure_schema
from arena_rt.store.sessions import SessionStore
from arena_rt.web.views import BattleViews

log = logging.getLogger("arena_rt")

COMMIT_WRITERS = 2  # group transactions in flight at once, each on its own connection
SOCKET_CLOSE_WAIT_S = 5.0  # a drain waits this long for its sockets' 1001 closes to go out


@dataclass(frozen=True, slots=True)
class PresentedSession:
    """The session token a request authenticated with (a socket may hand it back)."""

    token: str
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Principal:
    agent_id: str
    via: str  # "key" or "session"
    session: PresentedSession | None = None


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    db: async_sessionmaker[AsyncSession]
    redis: Redis | None
    bus: Bus
    hub: Hub
    keys: KeyVerifier
    sessions: SessionStore
    metrics: Metrics
    registrations: KeyedLimiter
    vote_limiter: KeyedLimiter
    supervisor: Supervisor
    spectators: SpectatorCounts  # spectator sockets (not agents'), per battle and node
    views: BattleViews  # what connecting sockets need, read once per battle and shared
    gateway: Gateway  # a session's calls, to the battle's runner wherever it runs
    draining: bool = False  # SIGTERM: new sockets are turned away (1001), battles handed over
    open_sockets: int = 0  # agent and spectator sockets being served (the drain waits for 0)
    no_sockets: asyncio.Event = field(default_factory=asyncio.Event)

    def socket_opened(self) -> None:
        self.open_sockets += 1
        self.no_sockets.clear()

    def socket_closed(self) -> None:
        self.open_sockets -= 1
        if not self.open_sockets:
            self.no_sockets.set()

    async def authenticate(self, token: str | None) -> Principal:
        """An agent from an API key or a session token; Unauthorized otherwise."""
        if not token:
            raise Unauthorized("missing credentials: Authorization: Bearer <apiKey or token>")
        if token.startswith("st_"):
            claims: SessionClaims = await self.sessions.verify(token)
            presented = PresentedSession(token, claims.expires_at * 1000)
            return Principal(claims.agent_id, "session", presented)
        key_id = parse_key_id(token)
        if key_id is None:
            raise Unauthorized("malformed API key")
        async with self.db() as session:
            agent = await agents.agent_by_key_id(session, key_id)
        if agent is None or not await self.keys.verify(token, agent.api_key_hash):
            raise Unauthorized("invalid API key")
        return Principal(agent.id, "key")

    async def drain(self) -> None:
        """Hand this node's battles over and close its sockets with 1001, before the server
        stops: new sockets are turned away, every runner finishes what it has queued (its
        commits land), each lease is released for a peer to claim at once, then every socket
        is told to reconnect. Bounded by ``ARENA_DRAIN_TIMEOUT_S``."""
        self.draining = True
        started = time.monotonic()
        handed = await self.supervisor.drain(self.settings.timings.drain_timeout_s)
        await self.hub.stop()  # every feed closes: its socket gets 1001 and the drain reason
        if self.open_sockets:  # the closes are sent by each socket's own task
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SOCKET_CLOSE_WAIT_S):
                    await self.no_sockets.wait()
        log.info(
            "drain finished in %.2f s: %d battle(s) handed over, sockets closed 1001",
            time.monotonic() - started,
            handed,
        )

    async def check_database(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))


@asynccontextmanager
async def open_services(settings: Settings, metrics: Metrics) -> AsyncIterator[Services]:
    engine = make_engine(settings.database_url, application_name=f"arena-{settings.node_id}")
    db = make_sessionmaker(engine)
    await ensure_schema(engine, create=settings.is_sqlite)
    if settings.embedded:
        log.info("embedded mode: data in %s, in-process bus", engine.url.database)
    # Sessions, leases, spectator counts: a bounded pool that waits rather than failing under
    # load, named (CLIENT LIST shows the node), and retrying a command (twice at most) on a
    # connection Redis closed meanwhile (idle timeout, restart, failover), on a fresh one.
    redis = (
        Redis.from_pool(
            BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=32,
                timeout=5,
                client_name=f"arena-{settings.node_id}:pool",
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
                health_check_interval=30,
            )
        )
        if settings.redis_url
        else None
    )
    # Named connections (CLIENT LIST shows which node holds them).
    bus = (
        from_url(settings.redis_url, client_name=f"arena-{settings.node_id}")
        if redis
        else from_url(None)
    )
    # The committer's own connections: a wave of reads (spectators connecting, pages) must not
    # take the pooled connections the turns of every live battle are waiting to commit on.
    # (SQLite has one writer at a time whatever the pool: one engine there.)
    commit_engine = (
        engine
        if settings.is_sqlite
        else make_engine(
            settings.database_url,
            pool_size=COMMIT_WRITERS,
            max_overflow=0,
            application_name=f"arena-{settings.node_id}-commit",
        )
    )
    committer = Committer(
        make_sessionmaker(commit_engine),
        metrics,
        writers=COMMIT_WRITERS,
        statement=(
            None
            if settings.is_sqlite
            else GroupStatementWriter(
                settings.database_url, application_name=f"arena-{settings.node_id}-commit"
            )
        ),
    )
    ownership: Ownership = (
        RedisOwnership(redis, settings.node_id, settings.timings.lease_ms)
        if redis is not None
        else LocalOwnership(settings.node_id, _heartbeat_file(engine))
    )
    relay = (
        Relay(settings.redis_url, settings.node_id, relay_key(settings.secret.reveal()))
        if settings.redis_url
        else None
    )
    judge, commentator = build_intelligence(settings, metrics)  # heuristic or an LLM provider
    deps = RunnerDeps(
        committer=committer,
        bus=bus,
        clock=RealClock(),
        judge=judge,
        commentator=commentator,
        metrics=metrics,
        commentary_timeout_s=settings.timings.commentary_timeout_ms / 1000,
    )
    supervisor = Supervisor(db, deps, ownership, settings.timings)
    services = Services(
        settings=settings,
        engine=engine,
        db=db,
        redis=redis,
        bus=bus,
        hub=Hub(bus, functools.partial(events.read_after, db)),
        keys=KeyVerifier(
            cache_size=settings.limits.key_cache_size, ttl_s=settings.limits.key_cache_ttl_s
        ),
        sessions=SessionStore(
            db, SessionSigner(settings.secret.reveal()), settings.timings.session_ttl_s, redis
        ),
        metrics=metrics,
        registrations=KeyedLimiter(settings.limits.registrations_per_minute),
        vote_limiter=KeyedLimiter(settings.limits.votes_per_minute),
        supervisor=supervisor,
        spectators=SpectatorCounts(settings.node_id, redis),
        views=BattleViews(db, metrics, ttl_s=settings.timings.snapshot_ttl_ms / 1000),
        gateway=Gateway(supervisor, relay, deps.clock, settings.timings.forward_timeout_ms),
    )
    try:
        await bus.start()
        await services.hub.start()
        await services.spectators.start()
        await committer.start()
        if relay is not None:
            await relay.start()
        await services.supervisor.start()
        yield services
    finally:
        await services.supervisor.stop()
        await services.gateway.stop()
        if relay is not None:
            await relay.stop()
        await services.spectators.stop()
        await close_intelligence(judge, commentator)  # the LLM provider's HTTP client
        await committer.stop()
        await services.hub.stop()
        await bus.stop()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()
        if commit_engine is not engine:
            await commit_engine.dispose()


def _heartbeat_file(engine: AsyncEngine) -> Path | None:
    """Beside the embedded database: how a restart learns how long it was down."""
    database = engine.url.database
    if engine.url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database).with_name(Path(database).name + ".alive")
