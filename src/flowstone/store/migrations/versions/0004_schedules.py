"""Schedules, sensors and their ticks (issue: schedules).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

Column types are written out in full (never imported from ``schema.py``): a migration is a
snapshot and must not change when the schema module does.
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Reserved in the revision chain so the three features can land in any order; the
    # feature's tables are created here.
    pass


def downgrade() -> None:
    pass
