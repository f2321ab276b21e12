"""An index on (run_id, status) of materializations: "does this run have a step left?".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

A run ends when none of its steps is unfinished. The distributed workers ask that after every
step, inside the run's lock; with only the (run_id, asset, partition_key) index the question
read every row of the run (2,000 heap fetches for a 2,000-step run). With this index it is one
index probe.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_flowstone_materializations_run_status",
        "flowstone_materializations",
        ["run_id", "status"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_flowstone_materializations_run_status", table_name="flowstone_materializations"
    )
