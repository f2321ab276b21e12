"""Approval requests (issue: approvals).

Revision ID: 0002
Revises: 0001
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

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "flowstone_approvals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("materialization_id", sa.String(32), nullable=False),
        sa.Column("asset", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("context", _json(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("requested_at", _ts(), nullable=False),
        sa.Column("timeout_at", _ts(), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
        sa.Column("decided_at", _ts(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("input", _json(), nullable=False),
        sa.ForeignKeyConstraint(
            ["materialization_id"],
            ["flowstone_materializations.id"],
            name=op.f("fk_flowstone_approvals_materialization_id"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flowstone_approvals")),
    )
    op.create_index(
        "ix_flowstone_approvals_status", "flowstone_approvals", ["status", "timeout_at"]
    )
    op.create_index(
        "ix_flowstone_approvals_asset", "flowstone_approvals", ["asset", "partition_key"]
    )
    op.create_index("ix_flowstone_approvals_run", "flowstone_approvals", ["run_id"])
    op.create_index(
        "ix_flowstone_approvals_materialization", "flowstone_approvals", ["materialization_id"]
    )


def downgrade() -> None:
    op.drop_table("flowstone_approvals")
