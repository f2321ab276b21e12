"""Evaluating one schedule: which ticks are due, what to do with each, recording each once.

The schedule's cursor (the last tick handled, stored on its row) is where evaluation starts, so
a tick is never evaluated twice by one scheduler, a changed cron never reaches back before it,
and after downtime every tick between the cursor and now gets a decision (run, skipped or
missed; see :mod:`flowstone.schedules.catchup`). Each decision is one
``create_schedule_tick`` call: the tick, its run and the cursor move in one transaction, and the
unique (schedule, tick time) key makes a second scheduler's attempt a no-op.
"""

from __future__ import annotations

import traceback
from concurrent import futures as cf
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from flowstone.errors import FlowStoneError
from flowstone.partitions import Partition
from flowstone.pipeline import Pipeline
from flowstone.planner import RunPlan
from flowstone.records import AuditEvent, RunResult, run_event
from flowstone.schedule_records import ScheduleRecord, TickKind, TickLaunch, TickRecord, TickStatus
from flowstone.scheduler.launch import Launcher, new_launch
from flowstone.schedules import (
    BUILTIN_PARTITIONS,
    CODE_PARTITION,
    CatchUpPolicy,
    CronTimes,
    PartitionFn,
    TickDecision,
)
from flowstone.telemetry import Telemetry


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """A tick this scheduler recorded, and the executions of the runs it launched (each
    result is None when another scheduler claimed the run)."""

    tick: TickRecord
    runs: tuple[cf.Future[RunResult | None], ...] = ()


def evaluate_schedule(
    pipeline: Pipeline,
    launcher: Launcher,
    telemetry: Telemetry,
    record: ScheduleRecord,
    now: datetime,
    *,
    grace_s: float,
) -> list[TickOutcome]:
    """Record (and launch) every tick of ``record`` due at ``now``; return those this call
    recorded (a tick another scheduler recorded first is left out)."""
    times = CronTimes(
        record.cron,
        record.timezone,
        nonexistent=record.dst_nonexistent,
        repeated=record.dst_repeated,
        owner=record.name,
    )
    policy = CatchUpPolicy(record.catch_up, record.catch_up_limit, record.max_lateness_s)
    start = record.cursor or record.created_at
    outcomes = []
    for decision in policy.decide(times.between(start, now), now, grace_s):
        outcome = _record(pipeline, launcher, record, decision)
        if outcome is not None:
            outcomes.append(outcome)
            tick = outcome.tick
            telemetry.emit(
                "schedule.tick",
                {
                    "schedule": record.name,
                    "tick_time": tick.tick_time.isoformat(),
                    "status": tick.status.value,
                    "run_id": tick.run_ids[0] if tick.run_ids else None,
                    "reason": tick.reason,
                },
                {"lateness_s": decision.lateness_s},
            )
    return outcomes


def partition_function(pipeline: Pipeline, record: ScheduleRecord) -> PartitionFn | str:
    """The function that turns a tick time into a partition, or why there is none."""
    if record.partition == CODE_PARTITION:
        definition = pipeline.schedules.get(record.name)
        if definition is None:
            return (
                f"its partition function is defined in code, and this pipeline declares no "
                f"schedule {record.name!r}: run the scheduler with the pipeline that declares "
                "it, or remove the schedule (`flowstone schedule remove`)"
            )
        return definition.partition_fn
    builtin = BUILTIN_PARTITIONS.get(record.partition)
    if builtin is None:
        return (
            f"unknown partition strategy {record.partition!r}; use one of "
            f"{sorted(BUILTIN_PARTITIONS)}"
        )
    return builtin


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    details: dict[str, Any]


def _record(
    pipeline: Pipeline, launcher: Launcher, record: ScheduleRecord, decision: TickDecision
) -> TickOutcome | None:
    local = decision.time
    tick = TickRecord(
        kind=TickKind.SCHEDULE,
        name=record.name,
        tick_time=local.astimezone(UTC),
        status=decision.status,
        reason=decision.reason,
        details={
            "local_time": local.isoformat(),
            "lateness_s": round(decision.lateness_s, 3),
            **decision.details,
        },
        recorded_at=launcher.now(),
    )
    store = pipeline.store
    if decision.status != TickStatus.LAUNCHED:
        stored = store.create_schedule_tick(tick, None, [tick_event(tick)])
        return TickOutcome(tick) if stored else None
    prepared = _prepare(pipeline, record, local)
    if isinstance(prepared, _Failure):
        tick = replace(
            tick,
            status=TickStatus.FAILED,
            reason=prepared.reason,
            details={**tick.details, **prepared.details},
        )
        stored = store.create_schedule_tick(tick, None, [tick_event(tick)])
        return TickOutcome(tick) if stored else None
    launch, plan = prepared
    run = launch.run
    tick = replace(
        tick, run_ids=(run.id,), details={**tick.details, "partition_key": run.partition_key}
    )
    if not store.create_schedule_tick(
        tick, launch, [tick_event(tick, run.id), run_event("run.started", run)]
    ):
        return None  # another scheduler recorded this tick first
    return TickOutcome(tick, (launcher.submit(plan, run, tick.recorded_at),))


def _prepare(
    pipeline: Pipeline, record: ScheduleRecord, local: datetime
) -> tuple[TickLaunch, RunPlan] | _Failure:
    """The run for one tick, or why there can be none."""
    fn = partition_function(pipeline, record)
    if isinstance(fn, str):
        return _Failure(fn, {})
    try:
        partition: Partition = fn(local)
    except Exception as exc:
        return _Failure(
            f"the partition function raised {type(exc).__name__}: {exc}",
            {"error_type": type(exc).__name__, "traceback": traceback.format_exc()},
        )
    tags = {**record.tags, "flowstone/schedule": record.name, "flowstone/tick": local.isoformat()}
    try:
        return new_launch(
            pipeline, record.targets, partition, with_upstream=record.with_upstream, tags=tags
        )
    except FlowStoneError as exc:  # an asset no longer in the pipeline, a bad partition...
        return _Failure(str(exc), {"error_type": type(exc).__name__})


def tick_event(tick: TickRecord, run_id: str | None = None) -> AuditEvent:
    """The audit event of a recorded tick: ``schedule.tick.launched``, ``sensor.tick.failed``..."""
    return AuditEvent(
        action=f"{tick.kind.value}.tick.{tick.status.value}",
        resource_type=tick.kind.value,
        resource_id=tick.name,
        details={"tick_time": tick.tick_time.isoformat(), "reason": tick.reason},
        correlation_id=run_id,
    )
