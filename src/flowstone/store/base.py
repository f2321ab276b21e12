"""The metadata store protocol: everything FlowStone records goes through these methods.

Two implementations ship: :class:`~flowstone.store.sql.SQLStore` (SQLAlchemy Core over SQLite
or PostgreSQL, one schema managed by Alembic) and :class:`~flowstone.store.memory.MemoryStore`
(for tests). One contract suite (``tests/test_store_contract.py``) runs over both, so the answers
are the same everywhere.

Writes that belong together are one call (a status change with its lineage edges and audit
events), so a store can make them one transaction and a crash never leaves half of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from flowstone.records import (
    AuditEvent,
    LineageEdge,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    Status,
)

#: Lineage queries never walk further than this, whatever depth is asked for.
MAX_LINEAGE_DEPTH = 100


@runtime_checkable
class MetadataStore(Protocol):
    """Where FlowStone records runs, materializations, lineage and the audit log."""

    # --- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """Insert a run with its planned (usually ``pending``) materializations, atomically.

        The materializations are saved as by :meth:`save_materialization` (same rules); if one
        is rejected, nothing of the call is stored.
        """
        ...

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        """Replace a run's status and completion time (a run not stored yet is inserted)."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        ...

    def list_runs(self, *, limit: int = 50) -> list[RunRecord]:
        """Runs, newest first (newest ``created_at``; ties: the later created first)."""
        ...

    # --- materializations ------------------------------------------------------------------
    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """Insert or replace (by id) a materialization, with its lineage and audit, atomically.

        A materialization's run, asset, partition and ``created_at`` are fixed by its first
        save; each (run, asset, partition) has one materialization; each lineage edge's
        ``materialization_id`` must be this record or one saved before. A call breaking
        these raises :class:`~flowstone.errors.StoreError` and stores nothing.
        """
        ...

    def get_materialization(self, materialization_id: str) -> MaterializationRecord | None:
        """The materialization with this id, or None."""
        ...

    def latest_materialization(
        self, asset: str, partition_key: str, *, status: Status | None = None
    ) -> MaterializationRecord | None:
        """The most recently created materialization of (asset, partition), optionally of one
        status. "Most recent" is newest ``created_at``, ties broken by save order."""
        ...

    def list_materializations(
        self,
        *,
        asset: str | None = None,
        partition_key: str | None = None,
        run_id: str | None = None,
        status: Status | None = None,
        limit: int | None = 100,
    ) -> list[MaterializationRecord]:
        """Materializations matching every filter given, newest first."""
        ...

    def latest_per_partition(
        self, assets: Sequence[str] | None = None
    ) -> list[MaterializationRecord]:
        """For each (asset, partition) ever recorded, its most recent materialization.

        Ordered by asset, then partition.
        """
        ...

    # --- lineage ---------------------------------------------------------------------------
    def upstream(self, materialization_id: str, *, depth: int = 10) -> list[LineageNode]:
        """The exact materializations that fed this one, transitively, up to ``depth`` steps.

        Each node carries the upstream materialization's id, run and status (None when the
        store does not hold it); ordered by depth, then asset, then partition, then id.
        """
        ...

    def downstream(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        """The (asset, partition)s that consumed this one, transitively, up to ``depth`` steps.

        Each (asset, partition) appears once, at its smallest depth, with the latest
        materialization that consumed it. Ordered by depth, then asset, then partition.
        """
        ...

    def impact(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        """:meth:`downstream`, with each node's ``status`` set to the latest status of that
        (asset, partition), whichever run produced it."""
        ...

    # --- audit -----------------------------------------------------------------------------
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events to the audit log. The store numbers them (``id``), in order."""
        ...

    def list_audit(
        self,
        *,
        correlation_id: str | None = None,
        resource_id: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> list[AuditEvent]:
        """Audit events matching every filter given, oldest first."""
        ...

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...


def clamp_depth(depth: int) -> int:
    """Bound a requested lineage depth to ``1..MAX_LINEAGE_DEPTH``."""
    return max(1, min(int(depth), MAX_LINEAGE_DEPTH))
