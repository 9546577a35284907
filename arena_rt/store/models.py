"""The MoltArena schema (MOLTARENA_SCHEMA.md) as SQLAlchemy 2 models, plus the event log.

Constraint and index names are explicit so migrations are stable across PostgreSQL and SQLite
and tests can find them by introspection. Where the schema lists both a unique constraint and a
composite index on the same columns, the unique constraint's index serves the lookups; a second
identical index would only slow writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from arena_rt.ids import new_id
from arena_rt.protocol import Mode, Status

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

INITIAL_RATING = 1200.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores no zone; we put it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _in(column: str, values: Any) -> str:
    quoted = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _pk() -> Mapped[str]:
    return mapped_column(String(25), primary_key=True, default=new_id)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, default=utcnow, nullable=False)


def _updated() -> Mapped[datetime]:
    return mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, nullable=False)


def _agent_fk(nullable: bool = False) -> Mapped[Any]:
    return mapped_column(
        String(25), ForeignKey("agents.id", ondelete="RESTRICT"), nullable=nullable
    )


def _battle_fk() -> Mapped[str]:
    return mapped_column(String(25), ForeignKey("battles.id", ondelete="CASCADE"), nullable=False)


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        UniqueConstraint("name"),
        UniqueConstraint("api_key_hash"),
        UniqueConstraint("api_key_id"),
        Index(None, "is_active"),
        Index(None, "created_at"),
        Index(None, "rating"),
    )

    id: Mapped[str] = _pk()
    name: Mapped[str] = mapped_column(String(40), nullable=False)
    display_name: Mapped[str] = mapped_column(String(100), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    # bcrypt hash of the API key (cost 12); the key itself is never stored.
    api_key_hash: Mapped[str] = mapped_column(String(60), nullable=False)
    # Non-secret prefix of the key: finds the agent with one indexed lookup, then one hash check.
    api_key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    rating: Mapped[float] = mapped_column(Float, default=INITIAL_RATING, nullable=False)
    wins: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    losses: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    draws: Mapped[int] = mapped_column(Integer, default=0, nullable=False)


class Battle(Base):
    __tablename__ = "battles"
    __table_args__ = (
        UniqueConstraint("room_code"),
        Index(None, "status"),
        Index(None, "created_at"),
        Index(None, "status", "created_at"),
        Index(None, "winner_id"),
        CheckConstraint(_in("status", Status), name="status"),
        CheckConstraint(_in("mode", Mode), name="mode"),
        CheckConstraint("max_participants BETWEEN 2 AND 10", name="max_participants"),
        CheckConstraint("max_turns BETWEEN 1 AND 200", name="max_turns"),
        CheckConstraint("turn_duration_ms > 0", name="turn_duration"),
        CheckConstraint("current_turn >= 0", name="current_turn"),
    )

    id: Mapped[str] = _pk()
    room_code: Mapped[str] = mapped_column(String(10), nullable=False)
    topic: Mapped[str] = mapped_column(String(500), nullable=False)
    status: Mapped[str] = mapped_column(String(16), default=Status.LOBBY.value, nullable=False)
    mode: Mapped[str] = mapped_column(String(16), default=Mode.HEAD_TO_HEAD.value, nullable=False)
    max_participants: Mapped[int] = mapped_column(Integer, default=2, nullable=False)
    turn_duration_ms: Mapped[int] = mapped_column(Integer, default=30_000, nullable=False)
    max_turns: Mapped[int] = mapped_column(Integer, default=10, nullable=False)
    current_turn: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    start_delay_ms: Mapped[int] = mapped_column(Integer, default=10_000, nullable=False)
    vote_duration_ms: Mapped[int] = mapped_column(Integer, default=30_000, nullable=False)
    enable_judge: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    enable_commentator: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    enable_tts: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    created_by_id: Mapped[str | None] = _agent_fk(nullable=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    winner_id: Mapped[str | None] = _agent_fk(nullable=True)
    winning_team_id: Mapped[str | None] = mapped_column(String(50))
    judge_reasoning: Mapped[str | None] = mapped_column(Text)
    # An AI judge's raw judgments (both presentation orders), scores and usage, as JSON.
    judge_details: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(String(200))


class BattleParticipant(Base):
    __tablename__ = "battle_participants"
    __table_args__ = (
        # Also the [battleId, agentId] composite index for participant lookup.
        UniqueConstraint("battle_id", "agent_id"),
        Index(None, "battle_id"),
        Index(None, "agent_id"),
        Index(None, "team_id"),
        Index(None, "battle_id", "position"),
    )

    id: Mapped[str] = _pk()
    battle_id: Mapped[str] = _battle_fk()
    agent_id: Mapped[str] = _agent_fk()
    team_id: Mapped[str | None] = mapped_column(String(50))
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    joined_at: Mapped[datetime] = _created()
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class BattleTurn(Base):
    __tablename__ = "battle_turns"
    __table_args__ = (
        # Also the [battleId, turnNumber] composite index for the turn sequence.
        UniqueConstraint("battle_id", "turn_number"),
        Index(None, "battle_id"),
        Index(None, "agent_id"),
        Index(None, "created_at"),
    )

    id: Mapped[str] = _pk()
    battle_id: Mapped[str] = _battle_fk()
    agent_id: Mapped[str] = _agent_fk()
    turn_number: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)  # sanitized with nh3
    audio_url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = _created()
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    commentary: Mapped[str | None] = mapped_column(Text)


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (
        # Also the [battleId, voterId] composite index for vote lookup. NULL voters (the
        # audience) are distinct, so any number of audience votes fit.
        UniqueConstraint("battle_id", "voter_id"),
        UniqueConstraint("idempotency_key"),
        Index(None, "battle_id"),
        Index(None, "voter_id"),
        Index(None, "target_agent_id"),
    )

    id: Mapped[str] = _pk()
    battle_id: Mapped[str] = _battle_fk()
    voter_id: Mapped[str | None] = _agent_fk(nullable=True)
    target_agent_id: Mapped[str] = _agent_fk()
    idempotency_key: Mapped[str] = mapped_column(String(200), nullable=False)
    created_at: Mapped[datetime] = _created()


class AgentFeedback(Base):
    __tablename__ = "agent_feedback"
    __table_args__ = (
        UniqueConstraint("from_agent_id", "to_agent_id", "battle_id"),
        Index(None, "from_agent_id"),
        Index(None, "to_agent_id"),
        Index(None, "battle_id"),
        Index(None, "created_at"),
        Index(None, "to_agent_id", "rating"),
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating"),
        CheckConstraint("from_agent_id <> to_agent_id", name="not_self"),
    )

    id: Mapped[str] = _pk()
    from_agent_id: Mapped[str] = _agent_fk()
    to_agent_id: Mapped[str] = _agent_fk()
    # Battle context is optional; feedback outlives a deleted battle.
    battle_id: Mapped[str | None] = mapped_column(
        String(25), ForeignKey("battles.id", ondelete="SET NULL")
    )
    rating: Mapped[int] = mapped_column(Integer, nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)  # sanitized with nh3
    created_at: Mapped[datetime] = _created()


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("session_id"),
        Index(None, "agent_id"),
        Index(None, "expires_at"),
    )

    id: Mapped[str] = _pk()
    session_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # Sessions are disposable: deleting an agent removes them instead of being blocked.
    agent_id: Mapped[str] = mapped_column(
        String(25), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False
    )
    data: Mapped[str] = mapped_column(Text, nullable=False, default="{}")
    signature: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _updated()


class BattleEvent(Base):
    """The append-only log: one row per event, gap-free ``seq`` per battle.

    ``payload`` holds the exact JSON bytes clients receive, so /events and resume serve the
    stored text without decoding and re-encoding it.
    """

    __tablename__ = "battle_events"
    __table_args__ = (UniqueConstraint("battle_id", "seq"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    battle_id: Mapped[str] = _battle_fk()
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()


class RatingChange(Base):
    """An agent's rating history: one row per rated battle."""

    __tablename__ = "rating_changes"
    __table_args__ = (
        UniqueConstraint("agent_id", "battle_id"),
        Index(None, "agent_id", "created_at"),
        Index(None, "battle_id"),
    )

    id: Mapped[str] = _pk()
    agent_id: Mapped[str] = mapped_column(
        String(25), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False
    )
    battle_id: Mapped[str] = _battle_fk()
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    before: Mapped[float] = mapped_column(Float, nullable=False)
    after: Mapped[float] = mapped_column(Float, nullable=False)
    outcome: Mapped[str] = mapped_column(String(8), nullable=False)  # win | loss | draw
    created_at: Mapped[datetime] = _created()


class LeaderboardEntry(Base):
    """The last batch Bradley-Terry fit (``arena-rt ratings``), per mode ("ALL" = global)."""

    __tablename__ = "leaderboard_entries"
    __table_args__ = (
        UniqueConstraint("mode", "agent_id"),
        Index(None, "mode", "rank"),
    )

    id: Mapped[str] = _pk()
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    agent_id: Mapped[str] = mapped_column(
        String(25), ForeignKey("agents.id", ondelete="CASCADE"), nullable=False
    )
    rating: Mapped[float] = mapped_column(Float, nullable=False)
    lower: Mapped[float] = mapped_column(Float, nullable=False)
    upper: Mapped[float] = mapped_column(Float, nullable=False)
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    battles: Mapped[int] = mapped_column(Integer, nullable=False)
    fitted_at: Mapped[datetime] = _created()
