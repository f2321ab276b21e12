"""Initial schema: runs, materializations, lineage, audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Column types are written out in full (never imported from ``schema.py``): a migration is a
snapshot and must not change when the schema module does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
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
        "flowstone_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("targets", _json(), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("tags", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstone_runs")),
        sa.UniqueConstraint("seq", name=op.f("uq_flowstone_runs_seq")),
    )
    op.create_index("ix_flowstone_runs_created", "flowstone_runs", ["created_at", "seq"])

    op.create_table(
        "flowstone_materializations",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("started_at", _ts(), nullable=True),
        sa.Column("completed_at", _ts(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error_type", sa.String(255), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        sa.Column("code_version", sa.String(255), nullable=True),
        sa.Column("io_manager", sa.String(255), nullable=True),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstone_materializations")),
        sa.UniqueConstraint(
            "run_id",
            "asset",
            "partition_key",
            name=op.f("uq_flowstone_materializations_run_id_asset_partition_key"),
        ),
        sa.UniqueConstraint("seq", name=op.f("uq_flowstone_materializations_seq")),
    )
    op.create_index(
        "ix_flowstone_materializations_latest",
        "flowstone_materializations",
        ["asset", "partition_key", "created_at", "seq"],
    )
    op.create_index(
        "ix_flowstone_materializations_status", "flowstone_materializations", ["status"]
    )

    op.create_table(
        "flowstone_lineage",
        sa.Column("id", _autoid(), autoincrement=True, nullable=False),
        sa.Column("materialization_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=False),
        sa.Column("upstream_materialization_id", sa.String(32), nullable=False),
        sa.Column("upstream_asset", sa.String(255), nullable=False),
        sa.Column("upstream_partition_key", sa.Text(), nullable=False),
        sa.Column("consumed_at", _ts(), nullable=False),
        sa.ForeignKeyConstraint(
            ["materialization_id"],
            ["flowstone_materializations.id"],
            name=op.f("fk_flowstone_lineage_materialization_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstone_lineage")),
    )
    op.create_index(
        "ix_flowstone_lineage_materialization", "flowstone_lineage", ["materialization_id"]
    )
    op.create_index(
        "ix_flowstone_lineage_upstream_materialization",
        "flowstone_lineage",
        ["upstream_materialization_id"],
    )
    op.create_index(
        "ix_flowstone_lineage_upstream",
        "flowstone_lineage",
        ["upstream_asset", "upstream_partition_key"],
    )
    op.create_index(
        "ix_flowstone_lineage_downstream", "flowstone_lineage", ["asset", "partition_key"]
    )

    op.create_table(
        "flowstone_audit_log",
        sa.Column("id", _autoid(), autoincrement=True, nullable=False),
        sa.Column("occurred_at", _ts(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("actor_type", sa.String(32), nullable=False),
        sa.Column("action", sa.String(255), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(255), nullable=False),
        sa.Column("details", _json(), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstone_audit_log")),
    )
    op.create_index("ix_flowstone_audit_log_correlation", "flowstone_audit_log", ["correlation_id"])
    op.create_index(
        "ix_flowstone_audit_log_resource", "flowstone_audit_log", ["resource_id", "resource_type"]
    )
    op.create_index("ix_flowstone_audit_log_action", "flowstone_audit_log", ["action"])


def downgrade() -> None:
    op.drop_table("flowstone_audit_log")
    op.drop_table("flowstone_lineage")
    op.drop_table("flowstone_materializations")
    op.drop_table("flowstone_runs")
