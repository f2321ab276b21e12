"""Schedules, sensors and their ticks (issue: schedules).

Revision ID: 0004
Revises: 0003
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

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _autoid() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flowstone_schedules",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("targets", _json(), nullable=False),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("partition", sa.String(255), nullable=False),
        sa.Column("with_upstream", sa.Boolean(), nullable=False),
        sa.Column("catch_up", sa.String(32), nullable=False),
        sa.Column("catch_up_limit", sa.Integer(), nullable=False),
        sa.Column("max_lateness_s", sa.Float(), nullable=True),
        sa.Column("dst_nonexistent", sa.String(32), nullable=False),
        sa.Column("dst_repeated", sa.String(32), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("cursor", _ts(), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("tags", _json(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_flowstone_schedules")),
    )
    op.create_table(
        "flowstone_sensors",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("last_tick_at", _ts(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_flowstone_sensors")),
    )
    op.create_table(
        "flowstone_ticks",
        sa.Column("id", _autoid(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("tick_time", _ts(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("run_ids", _json(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", _json(), nullable=False),
        sa.Column("recorded_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstone_ticks")),
        sa.UniqueConstraint(
            "kind", "name", "tick_time", name=op.f("uq_flowstone_ticks_kind_name_tick_time")
        ),
    )
    op.create_table(
        "flowstone_tick_runs",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("run_key", sa.Text(), nullable=True),
        sa.Column("claimed_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_flowstone_tick_runs")),
        sa.UniqueConstraint(
            "kind", "name", "run_key", name=op.f("uq_flowstone_tick_runs_kind_name_run_key")
        ),
    )


def downgrade() -> None:
    op.drop_table("flowstone_tick_runs")
    op.drop_table("flowstone_ticks")
    op.drop_table("flowstone_sensors")
    op.drop_table("flowstone_schedules")
