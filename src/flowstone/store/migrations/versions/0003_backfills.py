"""Backfill records (issue: backfills).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Column types are written out in full (never imported from ``schema.py``): a migration is a
snapshot and must not change when the schema module does.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Reserved in the revision chain so the three features can land in any order; the
    # feature's tables are created here.
    pass


def downgrade() -> None:
    pass
