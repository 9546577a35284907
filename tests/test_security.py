"""Security properties of the real app over real sockets, in both configurations.

What is checked, and where it is stored or logged:

* API keys exist in clear only in the one response that issues them: the database holds a
  bcrypt (cost 12) hash, and neither the database, Redis nor the logs ever hold the key or its
  secret part.
* Session tokens (``st_…``) are accepted on HTTP only while well-signed, unexpired, signed with
  this server's secret, and still on record (a key rotation revokes them).
* Registrations are rate-limited per client address, before anything is stored.
* Production mode refuses to start without a proper ``ARENA_SECRET``.
* ``/healthz`` says which backend failed.
* Rejected requests leave stored rows untouched.

Once-found bugs stay pinned: the WebSocket protocol's DEBUG log must not hold the Authorization
header (logs are redacted), a Session row must not be enough to rebuild its token (it keeps a
digest of the signature), and a verify racing a revocation must not re-cache the session.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import bcrypt
import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from arena_rt.auth import (
    KEY_ID_LENGTH,
    KEY_PREFIX,
    SessionClaims,
    SessionSigner,
    new_session_claims,
)
from arena_rt.config import MIN_SECRET_LENGTH, Settings, load_settings
from arena_rt.errors import ConfigError, Unauthorized
from arena_rt.store.db import make_engine, make_sessionmaker
from arena_rt.store.migrate import upgrade
from arena_rt.store.models import Session
from arena_rt.store.sessions import REDIS_PREFIX, SessionStore
from tests.clients import agent_path, connect
from tests.conftest import PG_ADMIN, REDIS_URL, embedded_env, postgres_env
from tests.helpers_http import auth, create_battle, register
from tests.support import (
    TEST_SECRET,
    free_port,
    run_server,
    settings_for,
    spawn_server,
    unique,
)

BCRYPT_COST_12_PREFIX = "$2b$12$"
# Loggers of the test's own HTTP and WebSocket clients: not the server's logs.
CLIENT_LOGGERS = ("httpx", "httpcore", "websockets.client", "hpack")
SERVER_LOGGERS = ("arena_rt", "uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy")


# --------------------------------------------------------------------------- helpers


def secret_part(key: str) -> str:
    """What follows ``ak_<keyId>_``: the part of a key that must never be stored."""
    assert key.startswith(KEY_PREFIX)
    return key[len(KEY_PREFIX) + KEY_ID_LENGTH + 1 :]


def token_signature_part(token: str) -> str:
    return token.rsplit(".", 1)[1]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def forged(payload: str, signature: bytes) -> str:
    return f"st_{b64(payload.encode())}.{b64(signature)}"


NEEDLE = 16  # 16 base64 characters: 96 bits, never found by accident


def windows(secret: str) -> list[str]:
    """Every NEEDLE-long piece of a secret: a truncated log line leaks a piece, not the whole."""
    return [secret[i : i + NEEDLE] for i in range(len(secret) - NEEDLE + 1)]


def needles_for_key(key: str) -> list[str]:
    return [key, *windows(secret_part(key))]


def needles_for_token(token: str) -> list[str]:
    return [token, *windows(token_signature_part(token))]


def as_text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


async def dump_database(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    """Every non-NULL value of every column of every table, as ``(table, column, text)``."""

    def layout(conn: Connection) -> dict[str, list[str]]:
        inspector = sa.inspect(conn)
        return {
            table: [column["name"] for column in inspector.get_columns(table)]
            for table in inspector.get_table_names()
        }

    found: list[tuple[str, str, str]] = []
    async with engine.connect() as conn:
        tables = await conn.run_sync(layout)
        assert {"agents", "sessions", "battles"} <= set(tables), tables
        for table, columns in tables.items():
            whole = sa.table(table, *(sa.column(c) for c in columns))
            rows = await conn.execute(whole.select())
            for row in rows:
                for column, value in zip(columns, row, strict=True):
                    if value is not None:
                        found.append((table, column, as_text(value)))
    return found


async def dump_redis(redis: Redis) -> list[str]:
    """Every key name in Redis, and the value of every string key."""
    found: list[str] = []
    async for raw_key in redis.scan_iter(count=1000):
        found.append(as_text(raw_key))
        if as_text(await redis.type(raw_key)) == "string":
            value = await redis.get(raw_key)
            if value is not None:
                found.append(as_text(value))
    return found


def assert_absent(needles: Iterable[str], haystack: Iterable[str], where: str) -> None:
    texts = list(haystack)
    for needle in needles:
        assert len(needle) >= NEEDLE, needle  # a short needle would match by accident
        hits = [t[:120] for t in texts if needle in t]
        assert not hits, f"{needle[:12]}… found in {where}: {hits[:3]}"


def server_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = []
    for record in caplog.records:
        if record.name.startswith(CLIENT_LOGGERS):
            continue
        lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")
    return lines


def capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in SERVER_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)


async def agent_row(engine: AsyncEngine, agent_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            (await conn.execute(sa.text("SELECT * FROM agents WHERE id = :id"), {"id": agent_id}))
            .mappings()
            .one()
        )
    return dict(row)


async def count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


async def welcome_token(base_url: str, client: httpx.AsyncClient, key: str, *, frame: bool) -> str:
    """A real ``sessionToken`` from the agent socket's ``welcome`` (header or ``auth`` frame)."""
    room = (await create_battle(client, key))["roomCode"]
    headers = None if frame else auth(key)
    async with connect(base_url, agent_path(room), headers=headers) as socket:
        if frame:
            await socket.send({"type": "auth", "token": key})
        welcome = await socket.wait_type("welcome")
    token: str = welcome["sessionToken"]
    assert token.startswith("st_")
    return token


async def post_battle(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/battles", json={"topic": "token check"}, headers=auth(token))


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized", response.text


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A second engine on the app's own database: what an attacker with a dump would see."""
    db = make_engine(settings.database_url, pool_size=2)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis | None]:
    if settings.redis_url is None:
        yield None
        return
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def store(settings: Settings, engine: AsyncEngine, redis: Redis | None) -> SessionStore:
    """A SessionStore exactly like the app's: same database, same Redis, same secret."""
    return SessionStore(
        make_sessionmaker(engine),
        SessionSigner(settings.secret.reveal()),
        settings.timings.session_ttl_s,
        redis,
    )


# --------------------------------------------------------------------------- keys at rest


@dataclass
class Exercised:
    """Keys and tokens that went through the server, and the needles to look for."""

    first: dict[str, Any]
    second: dict[str, Any]
    old_key: str
    new_key: str
    old_hash: str
    needles: list[str]


async def exercise_keys_and_tokens(
    client: httpx.AsyncClient, base_url: str, engine: AsyncEngine
) -> Exercised:
    """Register, use, rotate, fail with a wrong key, and get and use real session tokens."""
    first, second = await register(client), await register(client)
    old_key = first["apiKey"]
    await create_battle(client, old_key)  # used once, so also cached by the verifier
    old_hash = (await agent_row(engine, first["id"]))["api_key_hash"]
    rotated = await client.post(f"/api/agents/{first['id']}/keys", headers=auth(old_key))
    assert rotated.status_code == 201, rotated.text
    new_key = rotated.json()["apiKey"]
    # A wrong secret under a real key id goes down the bcrypt path.
    wrong_key = f"{KEY_PREFIX}{first['keyId']}_{secrets.token_urlsafe(32)}"
    assert_unauthorized(await post_battle(client, wrong_key))
    assert_unauthorized(await post_battle(client, old_key))
    # Real session tokens, from the agent socket, with the key in a header and in a frame.
    token_a = await welcome_token(base_url, client, new_key, frame=False)
    token_b = await welcome_token(base_url, client, second["apiKey"], frame=True)
    for token in (token_a, token_b):
        assert (await post_battle(client, token)).status_code == 201
    keys = [old_key, new_key, second["apiKey"], wrong_key]
    needles = [n for k in keys for n in needles_for_key(k)]
    needles += [n for t in (token_a, token_b) for n in needles_for_token(t)]
    return Exercised(first, second, old_key, new_key, old_hash, needles)


async def test_no_plaintext_key_or_token_in_database_or_redis(
    client: httpx.AsyncClient, base_url: str, engine: AsyncEngine, redis: Redis | None
) -> None:
    done = await exercise_keys_and_tokens(client, base_url, engine)

    # The database: every value of every column of every table.
    values = [v for _, _, v in await dump_database(engine)]
    assert any(done.first["id"] == v for v in values)  # the dump does see the app's rows
    assert_absent(done.needles, values, "the database")
    assert_absent([done.old_hash], values, "the database (old hash after rotation)")

    # The stored hashes: bcrypt, cost 12, matching the current key only.
    for agent_id, key, stale in (
        (done.first["id"], done.new_key, done.old_key),
        (done.second["id"], done.second["apiKey"], None),
    ):
        row = await agent_row(engine, agent_id)
        stored: str = row["api_key_hash"]
        assert stored.startswith(BCRYPT_COST_12_PREFIX), stored[:7]
        assert bcrypt.checkpw(key.encode(), stored.encode())
        assert row["api_key_id"] == key[len(KEY_PREFIX) : len(KEY_PREFIX) + KEY_ID_LENGTH]
        if stale is not None:
            assert not bcrypt.checkpw(stale.encode(), stored.encode())

    # Redis (production): session records name the session and the agent, nothing more.
    if redis is not None:
        entries = await dump_redis(redis)
        assert any(e.startswith(REDIS_PREFIX) for e in entries)
        assert_absent(done.needles, entries, "Redis")


async def test_app_logs_hold_no_key_or_token(
    client: httpx.AsyncClient,
    base_url: str,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Everything the server logs, at DEBUG (arena_rt, SQLAlchemy, access log, asyncio …),
    except the WebSocket protocol's own DEBUG tracing (see the next test): uvicorn.error is
    kept at INFO, the level it runs at in production."""
    capture_everything(caplog)
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    done = await exercise_keys_and_tokens(client, base_url, engine)
    lines = server_log_lines(caplog)
    # The capture works: it saw the registration, the access log and the SQL.
    assert any(f"keyId={done.first['keyId']}" in line for line in lines), lines[-20:]
    assert any(line.startswith("uvicorn.access") for line in lines), "no access log"
    assert any(line.startswith("sqlalchemy.engine") for line in lines), "no SQL log"
    assert_absent(done.needles, lines, "the server's logs")


async def test_websocket_debug_logs_hold_no_key_or_token(
    client: httpx.AsyncClient,
    base_url: str,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    capture_everything(caplog)
    done = await exercise_keys_and_tokens(client, base_url, engine)
    lines = server_log_lines(caplog)
    assert any(line.startswith("uvicorn.error < TEXT") for line in lines), "no frame log"
    assert_absent(done.needles, lines, "the server's logs")


@pytest.mark.parametrize(
    "level",
    [
        "INFO",
        "DEBUG",
    ],
)
async def test_cli_server_log_holds_no_key_or_token(tmp_path: Path, level: str) -> None:
    """The same through ``arena-rt serve`` and its own logging set-up."""
    log_path = tmp_path / "server.log"
    env = {**embedded_env(tmp_path / "data"), "ARENA_LOG_LEVEL": level}
    with spawn_server(env, log_path) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            agent = await register(http)
            key = agent["apiKey"]
            rotated = await http.post(f"/api/agents/{agent['id']}/keys", headers=auth(key))
            assert rotated.status_code == 201, rotated.text
            new_key = rotated.json()["apiKey"]
            tokens = [
                await welcome_token(base, http, new_key, frame=True),
                await welcome_token(base, http, new_key, frame=False),
            ]
            for token in tokens:
                assert (await post_battle(http, token)).status_code == 201
    text = log_path.read_text()
    assert f"keyId={agent['keyId']}" in text  # the log is really being written
    needles = [*needles_for_key(key), *needles_for_key(new_key)]
    needles += [n for t in tokens for n in needles_for_token(t)]
    assert_absent(needles, text.splitlines(), "the serve process's log")


def test_embedded_secret_file_is_private(tmp_path: Path) -> None:
    settings = settings_for(embedded_env(tmp_path))
    secret_file = tmp_path / ".arena_rt_secret"
    assert secret_file.read_text().strip() == settings.secret.reveal()
    assert stat.S_IMODE(secret_file.stat().st_mode) & 0o077 == 0, oct(secret_file.stat().st_mode)
    assert len(settings.secret.reveal()) >= MIN_SECRET_LENGTH
    assert settings.secret.reveal() not in repr(settings)
    # The same directory gives the same secret: tokens survive a restart.
    assert settings_for(embedded_env(tmp_path)).secret.reveal() == settings.secret.reveal()


# --------------------------------------------------------------------------- session tokens


def test_session_signer_accepts_only_its_own_unexpired_untampered_tokens() -> None:
    signer = SessionSigner(TEST_SECRET)
    now = time.time()
    claims = SessionClaims("sess-1", "agent-1", int(now) + 60)
    token, signature_hex = signer.sign(claims)
    assert signer.verify(token) == claims
    assert bytes.fromhex(signature_hex) == unb64(token_signature_part(token))

    payload_b64, sig_b64 = token.removeprefix("st_").split(".")
    payload = unb64(payload_b64).decode()
    signature = unb64(sig_b64)
    other_agent = payload.replace("agent-1", "agent-2")
    later = payload.replace(str(claims.expires_at), str(claims.expires_at + 86_400))
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    rejected = {
        "payload names another agent": forged(other_agent, signature),
        "payload extends the expiry": forged(later, signature),
        "signature flipped": forged(payload, flipped),
        "signature truncated": forged(payload, signature[:-1]),
        "signature empty": f"st_{payload_b64}.",
        "other secret": SessionSigner(TEST_SECRET + "!").sign(claims)[0],
        "no prefix": token.removeprefix("st_"),
        "two dots": token + ".x",
        "not base64": f"st_{payload_b64}.***",
        "api-key shaped": "ak_0123456789abcdef_" + sig_b64,
        "empty": "",
    }
    for why, bad in rejected.items():
        with pytest.raises(Unauthorized):
            signer.verify(bad)
            pytest.fail(f"accepted a token with {why}")
    # Well-signed but expired, judged at and after the expiry instant.
    with pytest.raises(Unauthorized, match="expired"):
        signer.verify(token, now=claims.expires_at)
    expired_token, _ = signer.sign(replace(claims, expires_at=int(now) - 1))
    with pytest.raises(Unauthorized, match="expired"):
        signer.verify(expired_token)
    # The key is derived from the whole secret.
    assert SessionSigner(TEST_SECRET).sign(claims)[0] == token
    assert SessionSigner(TEST_SECRET[:-1] + "y").sign(claims)[0] != token


async def insert_session(store_engine: AsyncEngine, claims: SessionClaims, signature: str) -> None:
    """A Session row for hand-made claims, as SessionStore.create would write it."""
    async with make_sessionmaker(store_engine)() as session:
        session.add(
            Session(
                session_id=claims.session_id,
                agent_id=claims.agent_id,
                data="{}",
                signature=signature,
                expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
            )
        )
        await session.commit()


async def test_session_tokens_on_http_valid_tampered_expired_foreign_revoked(
    client: httpx.AsyncClient,
    settings: Settings,
    engine: AsyncEngine,
    store: SessionStore,
) -> None:
    agent, other = await register(client), await register(client)
    signer = SessionSigner(settings.secret.reveal())

    token, _ = await store.create(agent["id"], {"purpose": "test"})
    created = await post_battle(client, token)
    assert created.status_code == 201, created.text
    claims = signer.verify(token)

    # Tampered payload (claims another agent) and tampered signature.
    payload = unb64(token.removeprefix("st_").split(".")[0]).decode()
    signature = unb64(token_signature_part(token))
    assert_unauthorized(
        await post_battle(client, forged(payload.replace(agent["id"], other["id"]), signature))
    )
    assert_unauthorized(
        await post_battle(client, forged(payload, bytes([signature[-1] ^ 0x40]) + signature[1:]))
    )
    assert_unauthorized(await post_battle(client, token[:-2]))

    # Expired: the session is on record, the signature is right, only the time is past.
    expired = SessionClaims(secrets.token_urlsafe(18), agent["id"], int(time.time()) - 5)
    expired_token, expired_sig = signer.sign(expired)
    await insert_session(engine, expired, expired_sig)
    assert_unauthorized(await post_battle(client, expired_token))

    # Signed with another secret, for a session that is on record.
    foreign_token, _ = SessionSigner("another-secret-" + "z" * 40).sign(claims)
    assert_unauthorized(await post_battle(client, foreign_token))

    # Well-signed and unexpired, but never recorded: the signature alone is not enough.
    unknown, _ = signer.sign(new_session_claims(agent["id"], 600))
    assert_unauthorized(await post_battle(client, unknown))

    # A session token cannot rotate the key.
    by_token = await client.post(f"/api/agents/{agent['id']}/keys", headers=auth(token))
    assert by_token.status_code == 403, by_token.text

    # Revoked: rotating the key voids every session of the agent, on every process.
    other_token, _ = await store.create(other["id"])
    rotated = await client.post(f"/api/agents/{agent['id']}/keys", headers=auth(agent["apiKey"]))
    assert rotated.status_code == 201, rotated.text
    assert_unauthorized(await post_battle(client, token))
    assert (
        await count(engine, "SELECT count(*) FROM sessions WHERE agent_id = :a", a=agent["id"]) == 0
    )
    # Only that agent's sessions: the other agent's token still works, and so do new ones.
    assert (await post_battle(client, other_token)).status_code == 201
    fresh, _ = await store.create(agent["id"])
    assert (await post_battle(client, fresh)).status_code == 201


async def test_database_rows_do_not_rebuild_a_usable_session_token(
    client: httpx.AsyncClient, engine: AsyncEngine, store: SessionStore
) -> None:
    agent = await register(client)
    await store.create(agent["id"])
    async with engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    sa.select(Session.__table__).where(Session.__table__.c.agent_id == agent["id"])
                )
            )
            .mappings()
            .one()
        )
    expires = row["expires_at"]
    if expires.tzinfo is None:  # SQLite keeps no zone
        expires = expires.replace(tzinfo=UTC)
    payload = f"{row['session_id']}.{row['agent_id']}.{int(expires.timestamp())}"
    rebuilt = forged(payload, bytes.fromhex(row["signature"]))
    assert (await post_battle(client, rebuilt)).status_code == 401


async def test_revocation_is_not_undone_by_a_concurrent_verify(
    settings: Settings, engine: AsyncEngine, store: SessionStore, client: httpx.AsyncClient
) -> None:
    if settings.redis_url is None:
        pytest.skip("the Redis session cache exists in production mode only")
    agent = await register(client)
    token, _ = await store.create(agent["id"])
    signer = SessionSigner(settings.secret.reveal())
    other_redis = Redis.from_url(settings.redis_url)
    # Another server process: its own Redis connection, the same database and secret.
    other_process = SessionStore(
        make_sessionmaker(engine), signer, settings.timings.session_ttl_s, other_redis
    )
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await store.revoke_agent(session, agent["id"])  # as rotate_key does, mid-transaction
            await other_process.verify(token)  # a request on another process, before commit
        with pytest.raises(Unauthorized):
            await other_process.verify(token)
    finally:
        await other_redis.delete(REDIS_PREFIX + signer.verify(token).session_id)
        await other_redis.aclose()


# --------------------------------------------------------------------------- rate limit


async def test_registration_rate_limit_per_address_stores_nothing(tmp_path: Path) -> None:
    env = {"ARENA_DATA_DIR": str(tmp_path), "ARENA_REGISTRATIONS_PER_MINUTE": "3"}
    settings = settings_for(env)
    names = [unique("rl-") for _ in range(5)]
    async with run_server(settings) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        for name in names[:3]:
            await register(http, name)
        for name in names[3:]:
            refused = await http.post("/api/agents", json={"name": name, "displayName": "x"})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limited"
            assert "apiKey" not in refused.json()
        # Not even a malformed body gets past the limit (it is checked before any work).
        assert (await http.post("/api/agents", content=b"{")).status_code == 429
        # Reads are not limited.
        assert (await http.get("/api/leaderboard")).status_code == 200
    db = make_engine(settings.database_url)
    try:
        assert await count(db, "SELECT count(*) FROM agents") == 3
        stored = await count(
            db,
            "SELECT count(*) FROM agents WHERE name IN (:a, :b)",
            a=names[3],
            b=names[4],
        )
        assert stored == 0
    finally:
        await db.dispose()


# --------------------------------------------------------------------------- secret required


def test_production_without_a_proper_secret_is_refused(migrated_pg: str) -> None:
    for env in (
        {"DATABASE_URL": migrated_pg},
        {"REDIS_URL": REDIS_URL},
        {"DATABASE_URL": migrated_pg, "REDIS_URL": REDIS_URL, "ARENA_SECRET": ""},
    ):
        with pytest.raises(ConfigError, match="ARENA_SECRET"):
            load_settings(env)
    short = "s" * (MIN_SECRET_LENGTH - 1)
    with pytest.raises(ConfigError, match="ARENA_SECRET") as refused:
        load_settings({"DATABASE_URL": migrated_pg, "ARENA_SECRET": short})
    assert short not in str(refused.value)  # the refusal does not echo the secret
    # Exactly the minimum is fine.
    ok = load_settings({"DATABASE_URL": migrated_pg, "ARENA_SECRET": "s" * MIN_SECRET_LENGTH})
    assert ok.secret.reveal() == "s" * MIN_SECRET_LENGTH and not ok.embedded


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARENA_", "DATABASE_URL"))}
    clean.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "arena_rt.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,  # refusing takes a second; a server that starts would hang here
        check=False,
    )


def test_cli_serve_without_a_secret_exits_with_the_reason(migrated_pg: str) -> None:
    port = str(free_port())
    missing = run_cli({"DATABASE_URL": migrated_pg}, "serve", "--port", port)
    assert missing.returncode != 0
    assert "ARENA_SECRET" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr
    short = "q" * (MIN_SECRET_LENGTH - 1)
    too_short = run_cli(
        {"DATABASE_URL": migrated_pg, "ARENA_SECRET": short}, "serve", "--port", port
    )
    assert too_short.returncode != 0
    assert "ARENA_SECRET" in too_short.stderr and str(MIN_SECRET_LENGTH) in too_short.stderr
    assert short not in too_short.stderr + too_short.stdout


# --------------------------------------------------------------------------- health


async def test_healthz_names_the_bus_when_redis_is_unreachable(migrated_pg: str) -> None:
    """With Redis on a closed port the server still starts (the bus keeps retrying) and
    /healthz answers 503 naming the bus, while the database is fine."""
    env = {
        "DATABASE_URL": migrated_pg,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "ARENA_SECRET": TEST_SECRET,
    }
    async with (
        run_server(settings_for(env)) as base,
        httpx.AsyncClient(base_url=base, timeout=15) as http,
    ):
        health = await http.get("/healthz")
    assert health.status_code == 503, health.text
    body = health.json()
    assert body["error"]["code"] == "unavailable"
    assert "bus" in body["error"]["message"] and "database" not in body["error"]["message"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["bus"].startswith("failed")


@pytest.fixture
async def scratch_pg() -> AsyncIterator[str]:
    """A Postgres database of this test's own, migrated, dropped (forcibly) afterwards."""
    name = f"arena_sec_{os.getpid()}_{secrets.token_hex(3)}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url += "/" + name
    try:
        db = make_engine(url)
        await upgrade(db)
        await db.dispose()
        yield url
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_healthz_names_the_database_when_it_goes_away(scratch_pg: str) -> None:
    settings = settings_for(postgres_env(scratch_pg))
    name = scratch_pg.rsplit("/", 1)[1]
    async with run_server(settings) as base, httpx.AsyncClient(base_url=base, timeout=15) as http:
        healthy = await http.get("/healthz")
        assert healthy.status_code == 200, healthy.text
        await pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        health = await http.get("/healthz")
        assert health.status_code == 503, health.text
        body = health.json()
        assert body["error"]["code"] == "unavailable"
        assert "database" in body["error"]["message"] and "bus" not in body["error"]["message"]
        assert body["checks"]["database"].startswith("failed")
        assert body["checks"]["bus"] == "ok"
        # Requests that need the database fail cleanly instead of hanging.
        refused = await http.get("/api/leaderboard")
        assert refused.status_code >= 500, refused.text


# --------------------------------------------------------------------------- stored data


async def test_rejected_requests_leave_stored_rows_intact(
    client: httpx.AsyncClient, engine: AsyncEngine, store: SessionStore
) -> None:
    agent, other = await register(client), await register(client)
    key = agent["apiKey"]
    before = await agent_row(engine, agent["id"])
    agents_before = await count(engine, "SELECT count(*) FROM agents")

    # The same name again, with another display name and description: 409, nothing changes.
    again = await client.post(
        "/api/agents",
        json={"name": agent["name"], "displayName": "Hijacker", "description": "mine now"},
    )
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "duplicate"
    assert "apiKey" not in again.json()
    # Invalid registrations store nothing.
    for body in (
        {"name": "NO CAPS", "displayName": "x"},
        {"name": unique("ok-"), "displayName": ""},
        {"name": unique("ok-"), "displayName": "x", "apiKeyHash": "$2b$12$" + "a" * 53},
    ):
        assert (await client.post("/api/agents", json=body)).status_code == 400
    assert (await client.post("/api/agents", content=b'{"name": "half')).status_code == 400

    # Rotations that must not happen: wrong key, another agent's key, a session token, none.
    session_token, _ = await store.create(agent["id"])
    wrong = f"{KEY_PREFIX}{agent['keyId']}_{secrets.token_urlsafe(32)}"
    path = f"/api/agents/{agent['id']}/keys"
    for headers, status in (
        (auth(wrong), 401),
        (auth(other["apiKey"]), 403),
        (auth(session_token), 403),
        ({}, 401),
    ):
        refused = await client.post(path, headers=headers)
        assert refused.status_code == status, (headers, refused.text)
        assert "apiKey" not in refused.json()
    # Bad battle requests store no battle for the agent.
    battles_before = await count(
        engine, "SELECT count(*) FROM battles WHERE created_by_id = :a", a=agent["id"]
    )
    assert (
        await client.post("/api/battles", json={"topic": ""}, headers=auth(key))
    ).status_code == 400
    assert (
        await client.post("/api/battles", json={"topic": "x"}, headers=auth(wrong))
    ).status_code == 401

    assert await agent_row(engine, agent["id"]) == before
    assert await count(engine, "SELECT count(*) FROM agents") == agents_before
    assert (
        await count(engine, "SELECT count(*) FROM battles WHERE created_by_id = :a", a=agent["id"])
        == battles_before
    )
    # The session survived the refused rotations, and the original key still works.
    assert (await post_battle(client, session_token)).status_code == 201
    await create_battle(client, key)
