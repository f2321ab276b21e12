"""An in-memory metadata store: the same answers as the SQL store, for tests and throwaway runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
    interrupted_run_event,
)
from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.errors import StoreError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
    utcnow,
)
from flowstone.schedule_records import (
    ScheduleRecord,
    SensorRecord,
    TickKind,
    TickLaunch,
    TickRecord,
    TickRun,
)
from flowstone.store.base import (
    RunTransaction,
    T,
    check_decision,
    check_run_member,
    clamp_depth,
)


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
        # --- backfills ---
        self._backfills: dict[str, BackfillRecord] = {}
        self._backfill_runs: dict[str, list[str]] = {}  # backfill id -> run ids, in order
        self._backfill_partitions: dict[str, dict[int, BackfillPartition]] = {}
        # --- approvals ---
        self._approvals: dict[str, ApprovalRecord] = {}
        # --- schedules and sensors ---
        self._schedules: dict[str, ScheduleRecord] = {}
        self._sensors: dict[str, SensorRecord] = {}
        self._ticks: dict[tuple[TickKind, str, datetime], TickRecord] = {}
        self._tick_runs: dict[str, TickRun] = {}

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

    def latest_materializations(
        self, asset: str, partition_keys: Sequence[str], *, status: Status | None = None
    ) -> dict[str, MaterializationRecord]:
        # One pass over the records (one list_materializations per key scanned them all).
        wanted = set(partition_keys)
        found: dict[str, MaterializationRecord] = {}
        with self._lock:
            for r in self._mats.values():
                if r.asset != asset or r.partition_key not in wanted:
                    continue
                if status is not None and r.status != status:
                    continue
                best = found.get(r.partition_key)
                newer = (r.created_at, self._order[r.id])
                if best is None or newer > (best.created_at, self._order[best.id]):
                    found[r.partition_key] = r
        return found

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

    # --- schedules and sensors --------------------------------------------------------------
    def save_schedule(self, schedule: ScheduleRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._lock:
            old = self._schedules.get(schedule.name)
            if old is not None:
                schedule = replace(
                    schedule, paused=old.paused, cursor=old.cursor, created_at=old.created_at
                )
            self._schedules[schedule.name] = schedule
            self._append(audit)

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        with self._lock:
            return self._schedules.get(name)

    def list_schedules(self) -> list[ScheduleRecord]:
        with self._lock:
            return [self._schedules[name] for name in sorted(self._schedules)]

    def set_schedule_paused(
        self,
        name: str,
        paused: bool,
        *,
        cursor: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        with self._lock:
            old = self._schedules.get(name)
            if old is None:
                return False
            self._schedules[name] = replace(
                old, paused=paused, cursor=_later(old.cursor, cursor), updated_at=utcnow()
            )
            self._append(audit)
            return True

    def delete_schedule(self, name: str, audit: Sequence[AuditEvent] = ()) -> bool:
        with self._lock:
            if self._schedules.pop(name, None) is None:
                return False
            self._append(audit)
            return True

    def create_schedule_tick(
        self,
        tick: TickRecord,
        launch: TickLaunch | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        with self._lock:
            key = (tick.kind, tick.name, tick.tick_time)
            if key in self._ticks:
                return False
            launches = () if launch is None else (launch,)
            self._launch(tick, launches)
            old = self._schedules.get(tick.name)
            if old is not None:
                self._schedules[tick.name] = replace(old, cursor=_later(old.cursor, tick.tick_time))
            self._append(audit)
            return True

    def save_sensor(self, sensor: SensorRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._lock:
            old = self._sensors.get(sensor.name)
            if old is not None:
                sensor = replace(old, interval_s=sensor.interval_s, updated_at=sensor.updated_at)
            self._sensors[sensor.name] = sensor
            self._append(audit)

    def get_sensor(self, name: str) -> SensorRecord | None:
        with self._lock:
            return self._sensors.get(name)

    def list_sensors(self) -> list[SensorRecord]:
        with self._lock:
            return [self._sensors[name] for name in sorted(self._sensors)]

    def set_sensor_paused(self, name: str, paused: bool, audit: Sequence[AuditEvent] = ()) -> bool:
        with self._lock:
            old = self._sensors.get(name)
            if old is None:
                return False
            self._sensors[name] = replace(old, paused=paused, updated_at=utcnow())
            self._append(audit)
            return True

    def create_sensor_tick(
        self,
        name: str,
        *,
        expected_version: int,
        polled_at: datetime,
        cursor: str | None,
        tick: TickRecord | None = None,
        launches: Sequence[TickLaunch] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        with self._lock:
            old = self._sensors.get(name)
            if old is None or old.version != expected_version:
                return False
            keys = [launch.run_key for launch in launches if launch.run_key is not None]
            if len(set(keys)) != len(keys) or self._seen(name, keys):
                return False
            if tick is not None and (tick.kind, tick.name, tick.tick_time) in self._ticks:
                return False
            if tick is not None:
                self._launch(tick, launches)
            self._sensors[name] = replace(
                old, cursor=cursor, version=old.version + 1, last_tick_at=polled_at
            )
            self._append(audit)
            return True

    def seen_run_keys(self, sensor: str, keys: Sequence[str]) -> set[str]:
        with self._lock:
            return self._seen(sensor, keys)

    def list_ticks(self, kind: TickKind, name: str, *, limit: int = 50) -> list[TickRecord]:
        with self._lock:
            ticks = [t for (k, n, _), t in self._ticks.items() if k == kind and n == name]
        ticks.sort(key=lambda t: t.tick_time, reverse=True)
        return ticks[:limit]

    def orphaned_tick_runs(self, claimed_before: datetime) -> list[TickRun]:
        with self._lock:
            found = []
            for claim in self._tick_runs.values():
                run = self._runs.get(claim.run_id)
                if claim.claimed_at >= claimed_before or run is None:
                    continue
                if run.status != RunStatus.RUNNING:
                    continue
                if all(
                    m.status == Status.PENDING
                    for m in self._mats.values()
                    if m.run_id == claim.run_id
                ):
                    found.append(claim)
        return sorted(found, key=lambda c: (c.claimed_at, c.run_id))

    def claim_tick_run(self, run_id: str, *, expected: datetime, claimed_at: datetime) -> bool:
        with self._lock:
            claim = self._tick_runs.get(run_id)
            if claim is None or claim.claimed_at != expected:
                return False
            self._tick_runs[run_id] = replace(claim, claimed_at=claimed_at)
            return True

    def _launch(self, tick: TickRecord, launches: Sequence[TickLaunch]) -> None:
        """Store a tick with its runs (the lock is held)."""
        for launch in launches:
            self._check(launch.materializations, ())
        numbered = replace(tick, id=len(self._ticks) + 1)
        self._ticks[(tick.kind, tick.name, tick.tick_time)] = numbered
        for launch in launches:
            run = launch.run
            self._run_order.setdefault(run.id, len(self._run_order))
            self._runs[run.id] = run
            for record in launch.materializations:
                self._put(record)
            self._tick_runs[run.id] = TickRun(
                run_id=run.id,
                kind=tick.kind,
                name=tick.name,
                run_key=launch.run_key,
                claimed_at=tick.recorded_at,
            )

    def _seen(self, sensor: str, keys: Sequence[str]) -> set[str]:
        wanted = set(keys)
        return {
            c.run_key
            for c in self._tick_runs.values()
            if c.kind == TickKind.SENSOR and c.name == sensor and c.run_key in wanted
        }

    # --- approvals ---------------------------------------------------------------------------
    def request_approval(
        self,
        approval: ApprovalRecord,
        materialization: MaterializationRecord,
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        with self._lock:
            if approval.id in self._approvals:
                raise StoreError(
                    f"Could not store approval request {approval.id}: one with this id exists. "
                    "Each request gets a new id."
                )
            self._check((materialization,), ())
            self._put(materialization)
            self._approvals[approval.id] = approval
            self._append(audit)

    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        with self._lock:
            return self._approvals.get(approval_id)

    def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        asset: str | None = None,
        run_id: str | None = None,
        id_prefix: str | None = None,
        due_before: datetime | None = None,
        limit: int | None = 100,
    ) -> list[ApprovalRecord]:
        with self._lock:
            found = [
                a
                for a in self._approvals.values()
                if (status is None or a.status == status)
                and (asset is None or a.asset == asset)
                and (run_id is None or a.run_id == run_id)
                and (id_prefix is None or a.id.startswith(id_prefix))
                and (
                    due_before is None or (a.timeout_at is not None and a.timeout_at <= due_before)
                )
            ]
        found.sort(key=lambda a: (a.requested_at, a.id))
        return found if limit is None else found[:limit]

    def decide_approval(
        self,
        decided: ApprovalRecord,
        *,
        materialization: MaterializationRecord | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        check_decision(decided)
        with self._lock:
            current = self._approvals.get(decided.id)
            if current is None or current.status != ApprovalStatus.PENDING:
                return False
            # The same conditions as the SQL store's WHERE clause (NULLs compare as false).
            at, due_at = decided.decided_at, current.timeout_at
            if decided.status == ApprovalStatus.EXPIRED:
                allowed = due_at is not None and at is not None and due_at <= at
            else:
                allowed = due_at is None or (at is not None and due_at > at)
            if not allowed:
                return False
            if materialization is not None:
                self._check((materialization,), ())
                self._put(materialization)
            self._approvals[decided.id] = replace(
                current,
                status=decided.status,
                decided_by=decided.decided_by,
                decided_at=decided.decided_at,
                reason=decided.reason,
                input=decided.input,
            )
            self._append(audit)
            return True

    def claim_materializations(self, materialization_ids: Sequence[str]) -> list[str]:
        claimable = (Status.PENDING, Status.WAITING_APPROVAL)
        claimed: list[str] = []
        with self._lock:
            for mat_id in dict.fromkeys(materialization_ids):
                record = self._mats.get(mat_id)
                if record is not None and record.status in claimable:
                    self._mats[mat_id] = replace(record, status=Status.RUNNING)
                    claimed.append(mat_id)
        return claimed

    # --- backfills --------------------------------------------------------------------------
    def create_backfill(self, backfill: BackfillRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._lock:
            if backfill.id in self._backfills:
                raise StoreError(
                    f"Could not create backfill {backfill.id}: a backfill with this id exists."
                )
            self._backfills[backfill.id] = backfill
            self._backfill_runs[backfill.id] = []
            self._backfill_partitions[backfill.id] = {}
            self._append(audit)

    def get_backfill(self, backfill_id: str) -> BackfillRecord | None:
        with self._lock:
            return self._backfills.get(backfill_id)

    def list_backfills(self, *, limit: int | None = 50) -> list[BackfillRecord]:
        with self._lock:
            # Dicts keep insertion order, which stands in for creation order on ties.
            ordered = sorted(
                enumerate(self._backfills.values()),
                key=lambda item: (item[1].created_at, item[0]),
                reverse=True,
            )
        found = [b for _, b in ordered]
        return found if limit is None else found[:limit]

    def claim_backfill(
        self,
        backfill_id: str,
        *,
        owner: str,
        expected_owner: str | None,
        now: datetime,
        audit: Sequence[AuditEvent] = (),
    ) -> BackfillRecord | None:
        with self._lock:
            current = self._backfills.get(backfill_id)
            if current is None or current.owner != expected_owner:
                return None
            claimed = replace(
                current,
                owner=owner,
                heartbeat_at=now,
                status=BackfillStatus.RUNNING,
                finished_at=None,
            )
            self._backfills[backfill_id] = claimed
            self._append(audit)
            return claimed

    def heartbeat_backfill(
        self, backfill_id: str, *, owner: str, now: datetime
    ) -> BackfillRecord | None:
        with self._lock:
            current = self._owned_backfill(backfill_id, owner)
            if current is None:
                return None
            self._backfills[backfill_id] = current = replace(current, heartbeat_at=now)
            return current

    def save_backfill_progress(
        self,
        backfill_id: str,
        *,
        owner: str,
        now: datetime,
        cursor: int,
        counts: Mapping[str, int],
        partitions: Sequence[BackfillPartition] = (),
        resolved: Sequence[int] = (),
    ) -> BackfillRecord | None:
        with self._lock:
            current = self._owned_backfill(backfill_id, owner)
            if current is None:
                return None
            rows = self._backfill_partitions[backfill_id]
            for position in resolved:
                rows.pop(position, None)
            for row in partitions:
                rows[row.position] = row
            self._backfills[backfill_id] = current = replace(
                current, cursor=cursor, counts=dict(counts), heartbeat_at=now
            )
            return current

    def finish_backfill(
        self,
        backfill_id: str,
        *,
        owner: str,
        status: BackfillStatus,
        now: datetime,
        audit: Sequence[AuditEvent] = (),
    ) -> BackfillRecord | None:
        with self._lock:
            current = self._owned_backfill(backfill_id, owner)
            if current is None:
                return None
            self._backfills[backfill_id] = current = replace(
                current,
                status=status,
                owner=None,
                heartbeat_at=now,
                finished_at=now if status.is_final else None,
            )
            self._append(audit)
            return current

    def request_backfill_cancel(
        self, backfill_id: str, *, audit: Sequence[AuditEvent] = ()
    ) -> BackfillRecord | None:
        with self._lock:
            current = self._backfills.get(backfill_id)
            if current is None or current.status != BackfillStatus.RUNNING:
                return current
            self._backfills[backfill_id] = current = replace(
                current, status=BackfillStatus.CANCELING
            )
            self._append(audit)
            return current

    def create_backfill_run(
        self,
        backfill_id: str,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        with self._lock:
            self._check(materializations, ())
            if backfill_id not in self._backfills:
                raise StoreError(
                    f"Could not create run {run.id}: no backfill {backfill_id} to link it to."
                )
            if any(run.id in ids for ids in self._backfill_runs.values()):
                raise StoreError(
                    f"Could not create run {run.id}: it is already linked to a backfill."
                )
            self._run_order.setdefault(run.id, len(self._run_order))
            self._runs[run.id] = run
            for record in materializations:
                self._put(record)
            self._backfill_runs[backfill_id].append(run.id)
            self._append(audit)

    def list_backfill_runs(self, backfill_id: str) -> list[RunRecord]:
        with self._lock:
            return [self._runs[run_id] for run_id in self._backfill_runs.get(backfill_id, ())]

    def interrupt_backfill_runs(
        self, backfill_id: str, *, now: datetime, error_type: str, error_message: str
    ) -> list[str]:
        open_statuses = (Status.PENDING, Status.RUNNING)
        with self._lock:
            closed = [
                run_id
                for run_id in self._backfill_runs.get(backfill_id, ())
                if self._runs[run_id].status == RunStatus.RUNNING
            ]
            wanted = set(closed)
            for record in list(self._mats.values()):
                if record.run_id in wanted and record.status in open_statuses:
                    self._mats[record.id] = replace(
                        record,
                        status=Status.FAILED,
                        completed_at=now,
                        error_type=error_type,
                        error_message=error_message,
                    )
            for run_id in closed:
                self._runs[run_id] = replace(
                    self._runs[run_id], status=RunStatus.FAILED, completed_at=now
                )
            self._append([interrupted_run_event(run_id, backfill_id, now) for run_id in closed])
        return closed

    def list_backfill_partitions(
        self,
        backfill_id: str,
        *,
        outcome: PartitionOutcome | None = None,
        after: int = -1,
        limit: int | None = 100,
    ) -> list[BackfillPartition]:
        with self._lock:
            rows = [
                row
                for position, row in self._backfill_partitions.get(backfill_id, {}).items()
                if position > after and (outcome is None or row.outcome == outcome)
            ]
        rows.sort(key=lambda row: row.position)
        return rows if limit is None else rows[:limit]

    def successful_partitions(
        self,
        assets: Sequence[str],
        partition_keys: Sequence[str],
        *,
        backfill_id: str | None = None,
    ) -> set[str]:
        wanted_assets, wanted_keys = set(assets), set(partition_keys)
        if not wanted_assets or not wanted_keys:
            return set()
        with self._lock:
            runs = None if backfill_id is None else set(self._backfill_runs.get(backfill_id, ()))
            found: set[tuple[str, str]] = set()
            unsure = False
            # The latest record settles most pairs; only a pair whose latest did not succeed
            # may hide an older success, and one scan then settles all of those.
            for asset in wanted_assets:
                for key in wanted_keys:
                    latest_id = self._latest.get((asset, key))
                    if latest_id is None:
                        continue
                    latest = self._mats[latest_id]
                    if latest.status == Status.SUCCESS and (runs is None or latest.run_id in runs):
                        found.add((asset, key))
                    else:
                        unsure = True
            if unsure:
                found.update(
                    (r.asset, r.partition_key)
                    for r in self._mats.values()
                    if r.status == Status.SUCCESS
                    and r.asset in wanted_assets
                    and r.partition_key in wanted_keys
                    and (runs is None or r.run_id in runs)
                )
        return {key for key in wanted_keys if all((asset, key) in found for asset in wanted_assets)}

    def _owned_backfill(self, backfill_id: str, owner: str) -> BackfillRecord | None:
        current = self._backfills.get(backfill_id)
        return current if current is not None and current.owner == owner else None

    # --- run transactions (distributed execution) ------------------------------------------
    def run_transaction(self, run_id: str, work: Callable[[RunTransaction], T]) -> T:
        with self._lock:
            # Undo by restoring a copy: the in-memory store has no journal, and it serves tests
            # and small runs, where copying its indexes costs little.
            saved = _snapshot(self)
            try:
                return work(_MemoryRunTransaction(self, run_id))
            except BaseException:
                for name, value in saved.items():
                    setattr(self, name, value)
                raise

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


def _later(current: datetime | None, candidate: datetime | None) -> datetime | None:
    """A cursor moved forward to ``candidate``, never back."""
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


# --- run transactions (distributed execution) ----------------------------------------------
def _snapshot(store: MemoryStore) -> dict[str, Any]:
    """A copy of the store's state deep enough that restoring it undoes any write."""
    return {name: _copy(value, 2) for name, value in vars(store).items() if name != "_lock"}


def _copy(value: Any, levels: int) -> Any:
    # Records are frozen: only the containers holding them need copying.
    if levels == 0:
        return value
    if isinstance(value, dict):
        return {k: _copy(v, levels - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v, levels - 1) for v in value]
    if isinstance(value, set):
        return set(value)
    return value


class _MemoryRunTransaction:
    """A :class:`RunTransaction` on a :class:`MemoryStore` whose lock the caller holds."""

    def __init__(self, store: MemoryStore, run_id: str) -> None:
        self._store = store
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def connection(self) -> Any:
        return None

    def get_run(self) -> RunRecord | None:
        return self._store._runs.get(self._run_id)

    def run_status(self) -> RunStatus | None:
        run = self._store._runs.get(self._run_id)
        return None if run is None else run.status

    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        store = self._store
        check_run_member(self._run_id, run)
        for record in materializations:
            check_run_member(self._run_id, record)
        store._check(materializations, ())
        store._run_order.setdefault(run.id, len(store._run_order))
        store._runs[run.id] = run
        for record in materializations:
            store._put(record)
        store._append(audit)

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        store = self._store
        check_run_member(self._run_id, run)
        current = store._runs.get(run.id)
        if current is None:
            store._run_order[run.id] = len(store._run_order)
        else:
            run = replace(current, status=run.status, completed_at=run.completed_at)
        store._runs[run.id] = run
        store._append(audit)

    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        store = self._store
        check_run_member(self._run_id, record)
        store._check((record,), lineage)
        store._put(record)
        for edge in lineage:
            store._edges.append(edge)
            store._edges_by_mat.setdefault(edge.materialization_id, []).append(edge)
            key = (edge.upstream_asset, edge.upstream_partition_key)
            store._edges_by_upstream.setdefault(key, []).append(edge)
        store._append(audit)

    def materializations(self, assets: Sequence[str] | None = None) -> list[MaterializationRecord]:
        store = self._store
        wanted = None if assets is None else set(assets)
        found = [
            r
            for r in store._mats.values()
            if r.run_id == self._run_id and (wanted is None or r.asset in wanted)
        ]
        return sorted(found, key=lambda r: (r.created_at, store._order[r.id]))

    def find(self, asset: str, partition_key: str) -> MaterializationRecord | None:
        found = self._store._by_run_key.get((self._run_id, asset, partition_key))
        return None if found is None else self._store._mats[found]

    def find_many(
        self, steps: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MaterializationRecord]:
        found = ((step, self.find(*step)) for step in steps)
        return {step: record for step, record in found if record is not None}

    def has_unfinished(self) -> bool:
        return any(
            r.run_id == self._run_id and not r.status.is_final for r in self._store._mats.values()
        )
