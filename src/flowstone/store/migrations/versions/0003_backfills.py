"""Backfill records (issue: backfills).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Column types are written out in full (never imported from ``schema.py``): a migration is a
snapshot and must not change when the schema module does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flowstone_backfills",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("targets", _json(), nullable=False),
        sa.Column("with_upstream", sa.Boolean(), nullable=False),
        sa.Column("partition_set", _json(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("counts", _json(), nullable=False),
        sa.Column("parallel", sa.Integer(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("heartbeat_at", _ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstone_backfills")),
        sa.UniqueConstraint("seq", name=op.f("uq_flowstone_backfills_seq")),
    )
    op.create_index("ix_flowstone_backfills_created", "flowstone_backfills", ["created_at", "seq"])

    op.create_table(
        "flowstone_backfill_runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("backfill_id", sa.String(32), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["backfill_id"],
            ["flowstone_backfills.id"],
            name=op.f("fk_flowstone_backfill_runs_backfill_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_flowstone_backfill_runs")),
    )
    op.create_index(
        "ix_flowstone_backfill_runs_backfill", "flowstone_backfill_runs", ["backfill_id"]
    )

    op.create_table(
        "flowstone_backfill_partitions",
        sa.Column("backfill_id", sa.String(32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(255), nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("materialization_id", sa.String(32), nullable=True),
        sa.Column("error_type", sa.String(255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["backfill_id"],
            ["flowstone_backfills.id"],
            name=op.f("fk_flowstone_backfill_partitions_backfill_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "backfill_id", "position", name=op.f("pk_flowstone_backfill_partitions")
        ),
    )


def downgrade() -> None:
    op.drop_table("flowstone_backfill_partitions")
    op.drop_table("flowstone_backfill_runs")
    op.drop_table("flowstone_backfills")
