"""An in-memory metadata store: the same answers as the SQL store, for tests and throwaway runs."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from flowstone.errors import StoreError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    Status,
)
from flowstone.store.base import clamp_depth


class MemoryStore:
    """A :class:`~flowstone.store.MetadataStore` held in process memory.

    Thread-safe; lost when the process ends. Use it in tests::

        pipeline = fs.Pipeline(assets, store="memory")
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, RunRecord] = {}
        self._mats: dict[str, MaterializationRecord] = {}
        # Insertion order stands in for creation order: ids are random, created_at may tie.
        self._order: dict[str, int] = {}
        self._latest: dict[tuple[str, str], str] = {}
        # (run, asset, partition) -> id: one materialization each, as the SQL schema enforces.
        self._by_run_key: dict[tuple[str, str, str], str] = {}
        self._run_order: dict[str, int] = {}
        self._edges: list[LineageEdge] = []
        self._edges_by_mat: dict[str, list[LineageEdge]] = {}
        self._edges_by_upstream: dict[tuple[str, str], list[LineageEdge]] = {}
        self._audit: list[AuditEvent] = []

    # --- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        with self._lock:
            # Check everything before changing anything: the call is atomic, as in SQL.
            self._check(materializations, ())
            self._run_order.setdefault(run.id, len(self._run_order))
            self._runs[run.id] = run
            for record in materializations:
                self._put(record)
            self._append(audit)

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._lock:
            current = self._runs.get(run.id)
            if current is None:
                self._run_order[run.id] = len(self._run_order)
            else:
                run = replace(current, status=run.status, completed_at=run.completed_at)
            self._runs[run.id] = run
            self._append(audit)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._runs.get(run_id)

    def list_runs(self, *, limit: int = 50) -> list[RunRecord]:
        with self._lock:
            runs = sorted(
                self._runs.values(),
                key=lambda r: (r.created_at, self._run_order[r.id]),
                reverse=True,
            )
        return runs[:limit]

    # --- materializations ------------------------------------------------------------------
    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        with self._lock:
            self._check((record,), lineage)
            self._put(record)
            for edge in lineage:
                self._edges.append(edge)
                self._edges_by_mat.setdefault(edge.materialization_id, []).append(edge)
                key = (edge.upstream_asset, edge.upstream_partition_key)
                self._edges_by_upstream.setdefault(key, []).append(edge)
            self._append(audit)

    def get_materialization(self, materialization_id: str) -> MaterializationRecord | None:
        with self._lock:
            return self._mats.get(materialization_id)

    def latest_materialization(
        self, asset: str, partition_key: str, *, status: Status | None = None
    ) -> MaterializationRecord | None:
        with self._lock:
            if status is None:
                latest = self._latest.get((asset, partition_key))
                return None if latest is None else self._mats[latest]
        found = self.list_materializations(
            asset=asset, partition_key=partition_key, status=status, limit=1
        )
        return found[0] if found else None

    def list_materializations(
        self,
        *,
        asset: str | None = None,
        partition_key: str | None = None,
        run_id: str | None = None,
        status: Status | None = None,
        limit: int | None = 100,
    ) -> list[MaterializationRecord]:
        with self._lock:
            records = [
                r
                for r in self._mats.values()
                if (asset is None or r.asset == asset)
                and (partition_key is None or r.partition_key == partition_key)
                and (run_id is None or r.run_id == run_id)
                and (status is None or r.status == status)
            ]
            records.sort(key=lambda r: (r.created_at, self._order[r.id]), reverse=True)
        return records if limit is None else records[:limit]

    def latest_per_partition(
        self, assets: Sequence[str] | None = None
    ) -> list[MaterializationRecord]:
        wanted = None if assets is None else set(assets)
        with self._lock:
            records = [
                self._mats[mat_id]
                for (asset, _), mat_id in self._latest.items()
                if wanted is None or asset in wanted
            ]
        return sorted(records, key=lambda r: (r.asset, r.partition_key))

    # --- lineage ---------------------------------------------------------------------------
    def upstream(self, materialization_id: str, *, depth: int = 10) -> list[LineageNode]:
        limit = clamp_depth(depth)
        nodes: list[LineageNode] = []
        seen: set[str] = set()
        frontier = [materialization_id]
        with self._lock:
            for level in range(1, limit + 1):
                next_frontier: list[str] = []
                for mat_id in frontier:
                    for edge in self._edges_by_mat.get(mat_id, ()):
                        up_id = edge.upstream_materialization_id
                        if up_id in seen:
                            continue
                        seen.add(up_id)
                        up = self._mats.get(up_id)
                        nodes.append(
                            LineageNode(
                                asset=edge.upstream_asset,
                                partition_key=edge.upstream_partition_key,
                                depth=level,
                                materialization_id=up_id,
                                run_id=None if up is None else up.run_id,
                                status=None if up is None else up.status,
                            )
                        )
                        next_frontier.append(up_id)
                frontier = next_frontier
        # The id breaks ties between two materializations of one (asset, partition).
        return sorted(
            nodes, key=lambda n: (n.depth, n.asset, n.partition_key, n.materialization_id or "")
        )

    def downstream(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        limit = clamp_depth(depth)
        found: dict[tuple[str, str], LineageNode] = {}
        frontier = [(asset, partition_key)]
        with self._lock:
            for level in range(1, limit + 1):
                next_frontier: list[tuple[str, str]] = []
                for key in frontier:
                    for edge in self._edges_by_upstream.get(key, ()):
                        dep = (edge.asset, edge.partition_key)
                        if dep == (asset, partition_key):
                            continue
                        current = found.get(dep)
                        if current is None:
                            next_frontier.append(dep)
                        elif current.depth < level or not self._newer(
                            edge.materialization_id, current.materialization_id
                        ):
                            continue
                        found[dep] = LineageNode(
                            asset=edge.asset,
                            partition_key=edge.partition_key,
                            depth=level if current is None else current.depth,
                            materialization_id=edge.materialization_id,
                            run_id=edge.run_id,
                        )
                frontier = next_frontier
        return sorted(found.values(), key=lambda n: (n.depth, n.asset, n.partition_key))

    def impact(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        nodes = self.downstream(asset, partition_key, depth=depth)
        with self._lock:
            return [
                replace(n, status=self._mats[self._latest[(n.asset, n.partition_key)]].status)
                for n in nodes
            ]

    # --- audit -----------------------------------------------------------------------------
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._lock:
            self._append(events)

    def list_audit(
        self,
        *,
        correlation_id: str | None = None,
        resource_id: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> list[AuditEvent]:
        with self._lock:
            events = [
                e
                for e in self._audit
                if (correlation_id is None or e.correlation_id == correlation_id)
                and (resource_id is None or e.resource_id == resource_id)
                and (action is None or e.action == action)
            ]
        return events if limit is None else events[:limit]

    def close(self) -> None:
        """Nothing to release; kept for the protocol."""

    # --- internals (callers hold the lock) -------------------------------------------------
    def _check(
        self, records: Sequence[MaterializationRecord], lineage: Sequence[LineageEdge]
    ) -> None:
        """Raise StoreError where the SQL store's constraints would reject the write."""
        claimed: dict[tuple[str, str, str], str] = {}
        for record in records:
            old = self._mats.get(record.id)
            if old is not None and (
                old.run_id,
                old.asset,
                old.partition_key,
                old.created_at,
            ) != (record.run_id, record.asset, record.partition_key, record.created_at):
                raise StoreError(
                    f"Could not save materialization {record.id}: a materialization with this "
                    "id exists with a different run, asset, partition or created_at. Those are "
                    "fixed by the first save; record a new materialization (a new id) instead."
                )
            key = (record.run_id, record.asset, record.partition_key)
            holder = claimed.get(key, self._by_run_key.get(key, record.id))
            if holder != record.id:
                raise StoreError(
                    f"Could not save materialization {record.id}: run {record.run_id} already "
                    f"has materialization {holder} of {record.asset!r} for partition "
                    f"{record.partition_key!r}. Each (run, asset, partition) has one "
                    "materialization."
                )
            claimed[key] = record.id
        saved = {r.id for r in records}
        for edge in lineage:
            if edge.materialization_id not in self._mats and edge.materialization_id not in saved:
                raise StoreError(
                    f"Could not save lineage: edge from {edge.materialization_id} names no "
                    "saved materialization. A lineage edge must point at a materialization "
                    "that is saved with it or before it."
                )

    def _put(self, record: MaterializationRecord) -> None:
        # _check has run: an existing id keeps its run, asset, partition and created_at, so
        # its place in creation order and in _latest stay right.
        if record.id not in self._mats:
            self._order[record.id] = len(self._order)
            self._by_run_key[(record.run_id, record.asset, record.partition_key)] = record.id
            key = (record.asset, record.partition_key)
            current = self._latest.get(key)
            if current is None or self._mats[current].created_at <= record.created_at:
                self._latest[key] = record.id
        self._mats[record.id] = record

    def _append(self, events: Sequence[AuditEvent]) -> None:
        for event in events:
            self._audit.append(replace(event, id=len(self._audit) + 1))

    def _newer(self, candidate: str, current: str | None) -> bool:
        if current is None:
            return True
        a, b = self._mats[candidate], self._mats[current]
        return (a.created_at, self._order[a.id]) > (b.created_at, self._order[b.id])
