"""Rows <-> records: the parameters each record is written with, and the record each row reads
back as (runs, materializations, lineage, audit, backfills, schedules, sensors, ticks,
approvals). Pure functions, shared by the store, its run transactions and the direct paths, so
every path writes identical rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
)
from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
)
from flowstone.schedule_records import (
    CatchUp,
    ScheduleRecord,
    SensorRecord,
    TickKind,
    TickRecord,
    TickStatus,
)
from flowstone.store.schema import audit_log, materializations, runs
from flowstone.store.schema import backfills as backfills_table

# --- rows <-> records ----------------------------------------------------------------------

_MAT_COLUMNS = tuple(c for c in materializations.c if c.name != "seq")
# What a materialization is: fixed by its first save, compared (never updated) by later ones.
_MAT_FIXED = ("run_id", "asset", "partition_key", "created_at")
_RUN_COLUMNS = tuple(c for c in runs.c if c.name != "seq")
_AUDIT_COLUMNS = tuple(audit_log.c)


def _mat_params(r: MaterializationRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "run_id": r.run_id,
        "asset": r.asset,
        "partition_key": r.partition_key,
        "status": r.status.value,
        "attempt": r.attempt,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "completed_at": r.completed_at,
        "duration_ms": r.duration_ms,
        "error_type": r.error_type,
        "error_message": r.error_message,
        "error_traceback": r.error_traceback,
        "code_version": r.code_version,
        "io_manager": r.io_manager,
        "metadata": r.metadata,
    }


def _mat_record(row: Sequence[Any]) -> MaterializationRecord:
    (
        id_,
        run_id,
        asset,
        partition_key,
        status,
        attempt,
        created_at,
        started_at,
        completed_at,
        duration_ms,
        error_type,
        error_message,
        error_traceback,
        code_version,
        io_manager,
        metadata,
    ) = row[: len(_MAT_COLUMNS)]
    return MaterializationRecord(
        id=id_,
        run_id=run_id,
        asset=asset,
        partition_key=partition_key,
        status=Status(status),
        attempt=attempt,
        created_at=created_at,
        started_at=started_at,
        completed_at=completed_at,
        duration_ms=duration_ms,
        error_type=error_type,
        error_message=error_message,
        error_traceback=error_traceback,
        code_version=code_version,
        io_manager=io_manager,
        metadata=metadata if metadata is not None else {},
    )


def _run_params(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status.value,
        "targets": list(run.targets),
        "partition_key": run.partition_key,
        "created_at": run.created_at,
        "completed_at": run.completed_at,
        "tags": dict(run.tags),
    }


def _run_record(row: Sequence[Any]) -> RunRecord:
    id_, status, targets, partition_key, created_at, completed_at, tags = row
    return RunRecord(
        id=id_,
        status=RunStatus(status),
        targets=tuple(targets or ()),
        partition_key=partition_key,
        created_at=created_at,
        completed_at=completed_at,
        tags=tags if tags is not None else {},
    )


def _edge_params(e: LineageEdge) -> dict[str, Any]:
    return {
        "materialization_id": e.materialization_id,
        "run_id": e.run_id,
        "asset": e.asset,
        "partition_key": e.partition_key,
        "upstream_materialization_id": e.upstream_materialization_id,
        "upstream_asset": e.upstream_asset,
        "upstream_partition_key": e.upstream_partition_key,
        "consumed_at": e.consumed_at,
    }


def _audit_params(e: AuditEvent) -> dict[str, Any]:
    # The store numbers events; an id set by the caller is ignored, as in MemoryStore.
    return {
        "occurred_at": e.occurred_at,
        "actor": e.actor,
        "actor_type": e.actor_type,
        "action": e.action,
        "resource_type": e.resource_type,
        "resource_id": e.resource_id,
        "details": e.details,
        "correlation_id": e.correlation_id,
    }


def _audit_record(row: Sequence[Any]) -> AuditEvent:
    (
        id_,
        occurred_at,
        actor,
        actor_type,
        action,
        resource_type,
        resource_id,
        details,
        correlation_id,
    ) = row
    return AuditEvent(
        id=id_,
        occurred_at=occurred_at,
        actor=actor,
        actor_type=actor_type,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details if details is not None else {},
        correlation_id=correlation_id,
    )


# --- backfills: rows <-> records ------------------------------------------------------------

_BACKFILL_COLUMNS = tuple(c for c in backfills_table.c if c.name != "seq")


def _backfill_params(b: BackfillRecord) -> dict[str, Any]:
    return {
        "id": b.id,
        "status": b.status.value,
        "targets": list(b.targets),
        "with_upstream": b.with_upstream,
        "partition_set": b.partition_set,
        "total": b.total,
        "cursor": b.cursor,
        "counts": dict(b.counts),
        "parallel": b.parallel,
        "chunk_size": b.chunk_size,
        "force": b.force,
        "created_by": b.created_by,
        "created_at": b.created_at,
        "finished_at": b.finished_at,
        "owner": b.owner,
        "heartbeat_at": b.heartbeat_at,
    }


def _backfill_record(row: Any) -> BackfillRecord:
    m = row._mapping
    return BackfillRecord(
        id=m["id"],
        status=BackfillStatus(m["status"]),
        targets=tuple(m["targets"] or ()),
        with_upstream=bool(m["with_upstream"]),
        partition_set=m["partition_set"] or {},
        total=int(m["total"]),
        cursor=int(m["cursor"]),
        counts={str(k): int(v) for k, v in (m["counts"] or {}).items()},
        parallel=int(m["parallel"]),
        chunk_size=int(m["chunk_size"]),
        force=bool(m["force"]),
        created_by=m["created_by"],
        created_at=m["created_at"],
        finished_at=m["finished_at"],
        owner=m["owner"],
        heartbeat_at=m["heartbeat_at"],
    )


def _backfill_partition_params(p: BackfillPartition) -> dict[str, Any]:
    return {
        "backfill_id": p.backfill_id,
        "position": p.position,
        "partition_key": p.partition_key,
        "outcome": p.outcome.value,
        "asset": p.asset,
        "run_id": p.run_id,
        "materialization_id": p.materialization_id,
        "error_type": p.error_type,
        "error_message": p.error_message,
        "attempts": p.attempts,
        "updated_at": p.updated_at,
    }


def _backfill_partition_record(row: Any) -> BackfillPartition:
    m = row._mapping
    return BackfillPartition(
        backfill_id=m["backfill_id"],
        position=int(m["position"]),
        partition_key=m["partition_key"],
        outcome=PartitionOutcome(m["outcome"]),
        asset=m["asset"],
        run_id=m["run_id"],
        materialization_id=m["materialization_id"],
        error_type=m["error_type"],
        error_message=m["error_message"],
        attempts=int(m["attempts"]),
        updated_at=m["updated_at"],
    )


# --- schedules and sensors: rows <-> records -------------------------------------------------


def _schedule_params(s: ScheduleRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "targets": list(s.targets),
        "cron": s.cron,
        "timezone": s.timezone,
        "partition": s.partition,
        "with_upstream": s.with_upstream,
        "catch_up": s.catch_up.value,
        "catch_up_limit": s.catch_up_limit,
        "max_lateness_s": s.max_lateness_s,
        "dst_nonexistent": s.dst_nonexistent,
        "dst_repeated": s.dst_repeated,
        "paused": s.paused,
        "cursor": s.cursor,
        "source": s.source,
        "tags": dict(s.tags),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _schedule_record(row: Any) -> ScheduleRecord:
    m = row._mapping
    return ScheduleRecord(
        name=m["name"],
        targets=tuple(m["targets"] or ()),
        cron=m["cron"],
        timezone=m["timezone"],
        partition=m["partition"],
        with_upstream=bool(m["with_upstream"]),
        catch_up=CatchUp(m["catch_up"]),
        catch_up_limit=m["catch_up_limit"],
        max_lateness_s=m["max_lateness_s"],
        dst_nonexistent=m["dst_nonexistent"],
        dst_repeated=m["dst_repeated"],
        paused=bool(m["paused"]),
        cursor=m["cursor"],
        source=m["source"],
        tags=m["tags"] or {},
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _sensor_params(s: SensorRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "interval_s": s.interval_s,
        "paused": s.paused,
        "cursor": s.cursor,
        "version": s.version,
        "last_tick_at": s.last_tick_at,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _sensor_record(row: Any) -> SensorRecord:
    m = row._mapping
    return SensorRecord(
        name=m["name"],
        interval_s=m["interval_s"],
        paused=bool(m["paused"]),
        cursor=m["cursor"],
        version=m["version"],
        last_tick_at=m["last_tick_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _tick_params(t: TickRecord) -> dict[str, Any]:
    return {
        "kind": t.kind.value,
        "name": t.name,
        "tick_time": t.tick_time,
        "status": t.status.value,
        "run_ids": list(t.run_ids),
        "reason": t.reason,
        "details": t.details,
        "recorded_at": t.recorded_at,
    }


def _tick_record(row: Any) -> TickRecord:
    m = row._mapping
    return TickRecord(
        id=m["id"],
        kind=TickKind(m["kind"]),
        name=m["name"],
        tick_time=m["tick_time"],
        status=TickStatus(m["status"]),
        run_ids=tuple(m["run_ids"] or ()),
        reason=m["reason"],
        details=m["details"] or {},
        recorded_at=m["recorded_at"],
    )


# --- approvals: rows <-> records -----------------------------------------------------------


def _approval_params(a: ApprovalRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "run_id": a.run_id,
        "materialization_id": a.materialization_id,
        "asset": a.asset,
        "partition_key": a.partition_key,
        "status": a.status.value,
        "message": a.message,
        "context": a.context,
        "attempt": a.attempt,
        "requested_at": a.requested_at,
        "timeout_at": a.timeout_at,
        "decided_by": a.decided_by,
        "decided_at": a.decided_at,
        "reason": a.reason,
        "input": a.input,
    }


def _approval_record(row: sa.Row[Any]) -> ApprovalRecord:
    values = row._mapping
    return ApprovalRecord(
        id=values["id"],
        run_id=values["run_id"],
        materialization_id=values["materialization_id"],
        asset=values["asset"],
        partition_key=values["partition_key"],
        status=ApprovalStatus(values["status"]),
        message=values["message"],
        context=values["context"] if values["context"] is not None else {},
        attempt=values["attempt"],
        requested_at=values["requested_at"],
        timeout_at=values["timeout_at"],
        decided_by=values["decided_by"],
        decided_at=values["decided_at"],
        reason=values["reason"],
        input=values["input"] if values["input"] is not None else {},
    )
