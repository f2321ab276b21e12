"""Replace the (run_id, status) index of materializations by a partial index of unfinished steps.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06

"Has this run a step left?" is asked after every distributed step. Revision 0005 answered it
with an index on (run_id, status), which also held every finished step, so:

- each probe stepped over the run's finished steps (heap fetches until a vacuum);
- a step's own lookup by (run_id, asset, partition_key) could be planned through it while the
  table's statistics were fresh (a new database's first big run): it then read every step of
  the run, for each step (a 2,000-step run: 0.4 ms per lookup at half way, growing).

The partial index holds only unfinished steps: the probe touches one entry, a finished step
leaves the index's scope (and costs no entry when written), and no lookup of a step by its key
can use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Written out rather than imported: a migration stays as it was when later code changes.
_UNFINISHED = sa.text("status IN ('pending', 'running', 'waiting_approval')")


def upgrade() -> None:
    op.drop_index(
        "ix_flowstone_materializations_run_status", table_name="flowstone_materializations"
    )
    op.create_index(
        "ix_flowstone_materializations_unfinished",
        "flowstone_materializations",
        ["run_id"],
        postgresql_where=_UNFINISHED,
        sqlite_where=_UNFINISHED,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_flowstone_materializations_unfinished", table_name="flowstone_materializations"
    )
    op.create_index(
        "ix_flowstone_materializations_run_status",
        "flowstone_materializations",
        ["run_id", "status"],
    )
