"""judge details, rating history, leaderboard fits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "leaderboard_entries",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("agent_id", sa.String(length=25), nullable=False),
        sa.Column("rating", sa.Float(), nullable=False),
        sa.Column("lower", sa.Float(), nullable=False),
        sa.Column("upper", sa.Float(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("battles", sa.Integer(), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_leaderboard_entries_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leaderboard_entries")),
        sa.UniqueConstraint("mode", "agent_id", name=op.f("uq_leaderboard_entries_mode_agent_id")),
    )
    with op.batch_alter_table("leaderboard_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_leaderboard_entries_mode_rank"), ["mode", "rank"], unique=False
        )

    op.create_table(
        "rating_changes",
        sa.Column("id", sa.String(length=25), nullable=False),
        sa.Column("agent_id", sa.String(length=25), nullable=False),
        sa.Column("battle_id", sa.String(length=25), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("before", sa.Float(), nullable=False),
        sa.Column("after", sa.Float(), nullable=False),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_rating_changes_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["battle_id"],
            ["battles.id"],
            name=op.f("fk_rating_changes_battle_id_battles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rating_changes")),
        sa.UniqueConstraint(
            "agent_id", "battle_id", name=op.f("uq_rating_changes_agent_id_battle_id")
        ),
    )
    with op.batch_alter_table("rating_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rating_changes_agent_id_created_at"),
            ["agent_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_rating_changes_battle_id"), ["battle_id"], unique=False
        )

    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("judge_details", sa.Text(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("battles", schema=None) as batch_op:
        batch_op.drop_column("judge_details")

    with op.batch_alter_table("rating_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rating_changes_battle_id"))
        batch_op.drop_index(batch_op.f("ix_rating_changes_agent_id_created_at"))

    op.drop_table("rating_changes")
    with op.batch_alter_table("leaderboard_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leaderboard_entries_mode_rank"))

    op.drop_table("leaderboard_entries")
