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
    snapshot_ttl_ms: int = 1_000  # a connecting socket may get a battle view this old
    shutdown_grace_s: float = 5.0
    # Failover: a lease lapses lease_ms after its holder's last renewal (renewed every third
    # of it); every node looks for lapsed leases every lease_scan_ms. Takeover after a kill -9
    # takes at most about lease_ms + lease_scan_ms + the log's load.
    lease_ms: int = 5_000
    lease_scan_ms: int = 1_000
    # A non-owner relaying an agent's input waits this long for an owner to answer (it
    # follows a takeover meanwhile) before answering not_owner.
    forward_timeout_ms: int = 15_000
    # SIGTERM: how long the node may take to hand its battles over and finish its commits.
    drain_timeout_s: float = 20.0


AI_PROVIDERS = ("heuristic", "anthropic", "openai")
DEFAULT_ANTHROPIC_MODEL = "claude-opus-4-6"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"


@dataclass(frozen=True, slots=True)
class AISettings:
    """Who judges and comments: the offline heuristic (default) or an LLM provider.

    ``provider`` is resolved at load time: ``ARENA_AI_PROVIDER`` when set; otherwise
    ``anthropic`` when ``ANTHROPIC_API_KEY`` is set, ``openai`` when ``ARENA_OPENAI_BASE_URL``
    is set, else ``heuristic``. Keys are ``Secret``: they never print.
    """

    provider: str = "heuristic"
    anthropic_api_key: Secret | None = None
    anthropic_model: str = DEFAULT_ANTHROPIC_MODEL
    anthropic_base_url: str = DEFAULT_ANTHROPIC_BASE_URL
    openai_base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1 (vLLM, Ollama)
    openai_api_key: Secret | None = None  # optional: local servers often need none
    openai_model: str | None = None
    max_concurrency: int = 8  # LLM calls in flight per process
    call_deadline_s: float = 30.0  # one call, retries and back-off included
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 6


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
    ai: AISettings = field(default_factory=AISettings)

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


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {raw!r}")
    return value


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = (env.get(name) or "").strip().rstrip("/")
    if not raw:
        return None
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL")
    return raw


def _secret(env: Mapping[str, str], name: str) -> Secret | None:
    raw = (env.get(name) or "").strip()
    return Secret(raw) if raw else None


def load_ai_settings(env: Mapping[str, str]) -> AISettings:
    defaults = AISettings()
    anthropic_key = _secret(env, "ANTHROPIC_API_KEY")
    openai_url = _url(env, "ARENA_OPENAI_BASE_URL")
    provider = (env.get("ARENA_AI_PROVIDER") or "").strip().lower()
    if not provider:
        provider = "anthropic" if anthropic_key else "openai" if openai_url else "heuristic"
    if provider not in AI_PROVIDERS:
        raise ConfigError(f"ARENA_AI_PROVIDER must be one of {', '.join(AI_PROVIDERS)}")
    openai_model = (env.get("ARENA_OPENAI_MODEL") or "").strip() or None
    if provider == "anthropic" and anthropic_key is None:
        raise ConfigError("ARENA_AI_PROVIDER=anthropic needs ANTHROPIC_API_KEY")
    if provider == "openai" and (openai_url is None or openai_model is None):
        raise ConfigError(
            "ARENA_AI_PROVIDER=openai needs ARENA_OPENAI_BASE_URL (e.g. http://127.0.0.1:8000/v1)"
            " and ARENA_OPENAI_MODEL"
        )
    max_concurrency = _int(env, "ARENA_AI_MAX_CONCURRENCY", defaults.max_concurrency)
    max_attempts = _int(env, "ARENA_AI_MAX_ATTEMPTS", defaults.max_attempts)
    if max_concurrency < 1 or max_attempts < 1:
        raise ConfigError("ARENA_AI_MAX_CONCURRENCY and ARENA_AI_MAX_ATTEMPTS must be >= 1")
    return AISettings(
        provider=provider,
        anthropic_api_key=anthropic_key,
        anthropic_model=(env.get("ARENA_ANTHROPIC_MODEL") or "").strip()
        or defaults.anthropic_model,
        anthropic_base_url=_url(env, "ARENA_ANTHROPIC_BASE_URL") or defaults.anthropic_base_url,
        openai_base_url=openai_url,
        openai_api_key=_secret(env, "ARENA_OPENAI_API_KEY"),
        openai_model=openai_model,
        max_concurrency=max_concurrency,
        call_deadline_s=_float(env, "ARENA_AI_DEADLINE_S", defaults.call_deadline_s),
        connect_timeout_s=_float(env, "ARENA_AI_CONNECT_TIMEOUT_S", defaults.connect_timeout_s),
        read_timeout_s=_float(env, "ARENA_AI_READ_TIMEOUT_S", defaults.read_timeout_s),
        max_attempts=max_attempts,
    )


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
        snapshot_ttl_ms=_int(env, "ARENA_SNAPSHOT_TTL_MS", _TIMINGS.snapshot_ttl_ms),
        lease_ms=_int(env, "ARENA_LEASE_MS", _TIMINGS.lease_ms),
        lease_scan_ms=_int(env, "ARENA_LEASE_SCAN_MS", _TIMINGS.lease_scan_ms),
        forward_timeout_ms=_int(env, "ARENA_FORWARD_TIMEOUT_MS", _TIMINGS.forward_timeout_ms),
        drain_timeout_s=_float(env, "ARENA_DRAIN_TIMEOUT_S", _TIMINGS.drain_timeout_s),
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
        ai=load_ai_settings(env),
    )
