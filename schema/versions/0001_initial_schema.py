"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("display_name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("api_key_hash", sa.String(length=60), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("rating", sa.Float(), nullable=False),
        sa.Column("wins", sa.Integer(), nullable=False),
        sa.Column("losses", sa.Integer(), nullable=False),
        sa.Column("draws", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("api_key_hash", name=op.f("uq_agents_api_key_hash")),
        sa.UniqueConstraint("api_key_id", name=op.f("uq_agents_api_key_id")),
        sa.UniqueConstraint("name", name=op.f("uq_agents_name")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agents_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_agents_is_active"), ["is_active"], unique=False)
        batch_op.create_index(batch_op.f("ix_agents_rating"), ["rating"], unique=False)

    op.create_table(
        "battles",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("room_code", sa.String(length=10), nullable=False),
        sa.Column("topic", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("max_participants", sa.Integer(), nullable=False),
        sa.Column("turn_duration_ms", sa.Integer(), nullable=False),
        sa.Column("max_turns", sa.Integer(), nullable=False),
        sa.Column("current_turn", sa.Integer(), nullable=False),
        sa.Column("start_delay_ms", sa.Integer(), nullable=False),
        sa.Column("vote_duration_ms", sa.Integer(), nullable=False),
        sa.Column("enable_judge", sa.Boolean(), nullable=False),
        sa.Column("enable_commentator", sa.Boolean(), nullable=False),
        sa.Column("enable_tts", sa.Boolean(), nullable=False),
        sa.Column("created_by_id", sa.String(length=25), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("winner_id", sa.String(length=25), nullable=True),
        sa.Column("winning_team_id", sa.String(length=50), nullable=True),
        sa.Column("judge_reasoning", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.String(length=200), nullable=True),
        sa.CheckConstraint(
            "mode IN ('HEAD_TO_HEAD', 'TEAM', 'FREE_FOR_ALL')", name=op.f("ck_battles_mode")
        ),
        sa.CheckConstraint(
            "status IN ('LOBBY', 'STARTING', 'IN_PROGRESS', 'VOTING', 'JUDGING', "
            "'COMPLETED', 'CANCELLED')",
            name=op.f("ck_battles_status"),
        ),
        sa.CheckConstraint("current_turn >= 0", name=op.f("ck_battles_current_turn")),
        sa.CheckConstraint(
            "max_participants BETWEEN 2 AND 10", name=op.f("ck_battles_max_participants")
        ),
        sa.CheckConstraint("max_turns BETWEEN 1 AND 200", name=op.f("ck_battles_max_turns")),
        sa.CheckConstraint("turn_duration_ms > 0", name=op.f("ck_battles_turn_duration")),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["agents.id"],
            name=op.f("fk_battles_created_by_id_agents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["winner_id"],
            ["agents.id"],
            name=op.f("fk_battles_winner_id_agents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battles")),
        sa.UniqueConstraint("room_code", name=op.f("uq_battles_room_code")),
    )
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_battles_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_battles_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_battles_status_created_at"), ["status", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_battles_winner_id"), ["winner_id"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=25), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_sessions_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_sessions_session_id")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "agent_feedback",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("from_agent_id", sa.String(length=25), nullable=False),
        sa.Column("to_agent_id", sa.String(length=25), nullable=False),
        sa.Column("battle_id", sa.String(length=25), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("from_agent_id <> to_agent_id", name=op.f("ck_agent_feedback_not_self")),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_agent_feedback_rating")),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_agent_feedback_battle_id_battles"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["from_agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_feedback_from_agent_id_agents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["to_agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_feedback_to_agent_id_agents"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_feedback")),
        sa.UniqueConstraint(
            "from_agent_id",
            "to_agent_id",
            "battle_id",
            name=op.f("uq_agent_feedback_from_agent_id_to_agent_id_battle_id"),
        ),
    )
    with op.batch_alter_table("agent_feedback", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agent_feedback_battle_id"), ["battle_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_agent_feedback_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_agent_feedback_from_agent_id"), ["from_agent_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_agent_feedback_to_agent_id"), ["to_agent_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_agent_feedback_to_agent_id_rating"),
            ["to_agent_id", "rating"],
            unique=False,
        )

    op.create_table(
        "battle_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("battle_id", sa.String(length=25), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_battle_events_battle_id_battles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battle_events")),
        sa.UniqueConstraint("battle_id", "seq", name=op.f("uq_battle_events_battle_id_seq")),
    )
    op.create_table(
        "battle_participants",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("battle_id", sa.String(length=25), nullable=False),
        sa.Column("agent_id", sa.String(length=25), nullable=False),
        sa.Column("team_id", sa.String(length=50), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_battle_participants_agent_id_agents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_battle_participants_battle_id_battles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battle_participants")),
        sa.UniqueConstraint(
            "battle_id", "agent_id", name=op.f("uq_battle_participants_battle_id_agent_id")
        ),
    )
    with op.batch_alter_table("battle_participants", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_battle_participants_agent_id"), ["agent_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_battle_participants_battle_id"), ["battle_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_battle_participants_battle_id_position"),
            ["battle_id", "position"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_battle_participants_team_id"), ["team_id"], unique=False
        )

    op.create_table(
        "battle_turns",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("battle_id", sa.String(length=25), nullable=False),
        sa.Column("agent_id", sa.String(length=25), nullable=False),
        sa.Column("turn_number", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("audio_url", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("commentary", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_battle_turns_agent_id_agents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_battle_turns_battle_id_battles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_battle_turns")),
        sa.UniqueConstraint(
            "battle_id", "turn_number", name=op.f("uq_battle_turns_battle_id_turn_number")
        ),
    )
    with op.batch_alter_table("battle_turns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_battle_turns_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_battle_turns_battle_id"), ["battle_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_battle_turns_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "votes",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("battle_id", sa.String(length=25), nullable=False),
        sa.Column("voter_id", sa.String(length=25), nullable=True),
        sa.Column("target_agent_id", sa.String(length=25), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_votes_battle_id_battles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_agent_id"],
            ["agents.id"],
            name=op.f("fk_votes_target_agent_id_agents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["voter_id"], ["agents.id"], name=op.f("fk_votes_voter_id_agents"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_votes")),
        sa.UniqueConstraint("battle_id", "voter_id", name=op.f("uq_votes_battle_id_voter_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_votes_idempotency_key")),
    )
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_votes_battle_id"), ["battle_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_votes_target_agent_id"), ["target_agent_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_votes_voter_id"), ["voter_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_votes_voter_id"))
        batch_op.drop_index(batch_op.f("ix_votes_target_agent_id"))
        batch_op.drop_index(batch_op.f("ix_votes_battle_id"))

    op.drop_table("votes")
    with op.batch_alter_table("battle_turns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_battle_turns_created_at"))
        batch_op.drop_index(batch_op.f("ix_battle_turns_battle_id"))
        batch_op.drop_index(batch_op.f("ix_battle_turns_agent_id"))

    op.drop_table("battle_turns")
    with op.batch_alter_table("battle_participants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_battle_participants_team_id"))
        batch_op.drop_index(batch_op.f("ix_battle_participants_battle_id_position"))
        batch_op.drop_index(batch_op.f("ix_battle_participants_battle_id"))
        batch_op.drop_index(batch_op.f("ix_battle_participants_agent_id"))

    op.drop_table("battle_participants")
    op.drop_table("battle_events")
    with op.batch_alter_table("agent_feedback", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agent_feedback_to_agent_id_rating"))
        batch_op.drop_index(batch_op.f("ix_agent_feedback_to_agent_id"))
        batch_op.drop_index(batch_op.f("ix_agent_feedback_from_agent_id"))
        batch_op.drop_index(batch_op.f("ix_agent_feedback_created_at"))
        batch_op.drop_index(batch_op.f("ix_agent_feedback_battle_id"))

    op.drop_table("agent_feedback")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_expires_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_agent_id"))

    op.drop_table("sessions")
    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_battles_winner_id"))
        batch_op.drop_index(batch_op.f("ix_battles_status_created_at"))
        batch_op.drop_index(batch_op.f("ix_battles_status"))
        batch_op.drop_index(batch_op.f("ix_battles_created_at"))

    op.drop_table("battles")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agents_rating"))
        batch_op.drop_index(batch_op.f("ix_agents_is_active"))
        batch_op.drop_index(batch_op.f("ix_agents_created_at"))

    op.drop_table("agents")
