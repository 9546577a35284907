"""Settings, read once from the environment. No configuration means the embedded default.

Embedded default: a SQLite file (``./arena_rt.db``) and the in-process bus; the server creates
its tables itself and keeps a generated HMAC secret next to the database. Production: set
``DATABASE_URL=postgresql+asyncpg://…`` and ``REDIS_URL=redis://…`` and ``ARENA_SECRET``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from arena_rt.errors import ConfigError

DEFAULT_SQLITE_FILE = "arena_rt.db"
MIN_SECRET_LENGTH = 32


class Secret:
    """A value that never prints itself (logs, reprs, tracebacks)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int = 64 * 1024
    max_content_chars: int = 8_000
    messages_per_second: float = 20.0
    message_burst: int = 40
    abuse_strikes: int = 10  # bad frames before a 1008 close
    spectators_per_battle: int = 5_000  # soft cap, per process
    spectator_queue: int = 256  # frames buffered per spectator before 4008
    registrations_per_minute: int = 10
    votes_per_minute: int = 30
    auth_timeout_s: float = 5.0
    key_cache_size: int = 10_000
    key_cache_ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Timings:
    lobby_timeout_ms: int = 600_000
    reconnect_grace_ms: int = 30_000
    judge_timeout_ms: int = 30_000
    commentary_timeout_ms: int = 10_000
    session_ttl_s: int = 24 * 3600
    shutdown_grace_s: float = 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    redis_url: str | None
    secret: Secret
    embedded: bool
    data_dir: Path
    log_level: str = "INFO"
    node_id: str = field(default_factory=lambda: secrets.token_hex(4))
    limits: Limits = field(default_factory=Limits)
    timings: Timings = field(default_factory=Timings)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_LIMITS = Limits()
_TIMINGS = Timings()


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _embedded_secret(data_dir: Path) -> Secret:
    """Embedded mode keeps a generated secret beside its database so tokens survive restarts."""
    path = data_dir / ".arena_rt_secret"
    if path.exists():
        return Secret(path.read_text().strip())
    value = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(value)
    return Secret(value)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    data_dir = Path(env.get("ARENA_DATA_DIR") or ".").resolve()
    database_url = (
        env.get("DATABASE_URL") or f"sqlite+aiosqlite:///{data_dir / DEFAULT_SQLITE_FILE}"
    )
    redis_url = env.get("REDIS_URL") or None
    embedded = database_url.startswith("sqlite") and redis_url is None
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+asyncpg://" + database_url.removeprefix("postgresql://")
    if not database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ConfigError("DATABASE_URL must be postgresql+asyncpg://… or sqlite+aiosqlite:///…")

    raw_secret = env.get("ARENA_SECRET", "")
    if raw_secret:
        if len(raw_secret) < MIN_SECRET_LENGTH:
            raise ConfigError(f"ARENA_SECRET must be at least {MIN_SECRET_LENGTH} characters")
        secret = Secret(raw_secret)
    elif embedded:
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = _embedded_secret(data_dir)
    else:
        raise ConfigError(
            "ARENA_SECRET is not set. Production mode (DATABASE_URL or REDIS_URL set) needs a "
            f"secret of at least {MIN_SECRET_LENGTH} characters to sign session tokens, e.g. "
            "ARENA_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
        )

    limits = Limits(
        max_frame_bytes=_int(env, "ARENA_MAX_FRAME_BYTES", _LIMITS.max_frame_bytes),
        max_content_chars=_int(env, "ARENA_MAX_CONTENT_CHARS", _LIMITS.max_content_chars),
        spectators_per_battle=_int(
            env, "ARENA_SPECTATORS_PER_BATTLE", _LIMITS.spectators_per_battle
        ),
        spectator_queue=_int(env, "ARENA_SPECTATOR_QUEUE", _LIMITS.spectator_queue),
        registrations_per_minute=_int(
            env, "ARENA_REGISTRATIONS_PER_MINUTE", _LIMITS.registrations_per_minute
        ),
    )
    timings = Timings(
        reconnect_grace_ms=_int(env, "ARENA_RECONNECT_GRACE_MS", _TIMINGS.reconnect_grace_ms),
        judge_timeout_ms=_int(env, "ARENA_JUDGE_TIMEOUT_MS", _TIMINGS.judge_timeout_ms),
        session_ttl_s=_int(env, "ARENA_SESSION_TTL_S", _TIMINGS.session_ttl_s),
    )
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        secret=secret,
        embedded=embedded,
        data_dir=data_dir,
        log_level=env.get("ARENA_LOG_LEVEL", "INFO").upper(),
        node_id=env.get("ARENA_NODE_ID") or secrets.token_hex(4),
        limits=limits,
        timings=timings,
    )
