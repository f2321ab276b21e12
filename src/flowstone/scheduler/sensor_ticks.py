"""Polling one sensor: call it with its stored cursor, launch what it asks for, record the poll.

The poll's result (new cursor, tick, runs, run keys) is stored in one call that succeeds only
if the sensor's version is still the one read before polling: when two schedulers poll the
same sensor at once, one result is applied and the other is dropped, so its runs are never
launched twice. A run key this sensor launched before is skipped. A sensor that raises (or
returns something that is not run requests) gets a ``failed`` tick with the traceback; its
cursor stays, and the scheduler goes on.

Polls that ask for nothing move the cursor but record no tick: a sensor polled every 30 seconds
would otherwise bury its history in empty rows. ``flowstone sensor list`` shows the last poll.
"""

from __future__ import annotations

import time
import traceback
from datetime import datetime, timedelta
from typing import Any

from flowstone.errors import FlowStoneError
from flowstone.pipeline import Pipeline
from flowstone.planner import RunPlan
from flowstone.records import AuditEvent, run_event
from flowstone.schedule_records import SensorRecord, TickKind, TickLaunch, TickRecord, TickStatus
from flowstone.scheduler.launch import Launcher, new_launch
from flowstone.scheduler.schedule_ticks import TickOutcome, tick_event
from flowstone.schedules import RunRequest, sensor_output
from flowstone.telemetry import Telemetry


def sensor_due(state: SensorRecord, now: datetime) -> bool:
    """Whether the sensor's interval has passed since its last poll."""
    if state.paused:
        return False
    return state.last_tick_at is None or now >= state.last_tick_at + timedelta(
        seconds=state.interval_s
    )


def poll_sensor(
    pipeline: Pipeline,
    launcher: Launcher,
    telemetry: Telemetry,
    state: SensorRecord,
    now: datetime,
) -> TickOutcome | None:
    """Poll one due sensor and apply the result; None when nothing was recorded (an empty
    poll, or another scheduler applied its poll first)."""
    clock = time.perf_counter()
    cursor = state.cursor
    entries: list[dict[str, Any]] = []
    launches: list[tuple[TickLaunch, RunPlan]] = []
    reason: str | None = None
    details: dict[str, Any] = {}
    definition = pipeline.sensors.get(state.name)
    if definition is None:
        reason = (
            f"this pipeline declares no sensor {state.name!r}: run the scheduler with the "
            "pipeline that declares it"
        )
    else:
        try:
            requests, cursor = sensor_output(definition.fn(state.cursor), state.cursor)
        except Exception as exc:
            cursor = state.cursor
            reason = f"the sensor raised {type(exc).__name__}: {exc}"
            details = {"error_type": type(exc).__name__, "traceback": traceback.format_exc()}
        else:
            entries, launches = _requests(pipeline, state, requests)
    failed = [e for e in entries if e["outcome"] == "failed"]
    if reason is None and failed:
        reason = f"{len(failed)} of {len(entries)} run requests failed: {failed[0]['reason']}"
    if reason is not None:
        status = TickStatus.FAILED
    elif launches:
        status = TickStatus.LAUNCHED
    elif entries:
        status = TickStatus.SKIPPED
        reason = "every run key was launched before"
    else:
        status = None
    tick = None
    audit: list[AuditEvent] = []
    if status is not None:
        tick = TickRecord(
            kind=TickKind.SENSOR,
            name=state.name,
            tick_time=now,
            status=status,
            run_ids=tuple(launch.run.id for launch, _ in launches),
            reason=reason,
            details={**details, "requests": entries, "cursor": cursor},
            recorded_at=launcher.now(),
        )
        audit = [
            tick_event(tick),
            *(run_event("run.started", launch.run) for launch, _ in launches),
        ]
    applied = pipeline.store.create_sensor_tick(
        state.name,
        expected_version=state.version,
        polled_at=now,
        cursor=cursor,
        tick=tick,
        launches=[launch for launch, _ in launches],
        audit=audit,
    )
    telemetry.emit(
        "sensor.tick",
        {
            "sensor": state.name,
            "status": None if status is None else status.value,
            "applied": applied,
            "launched": len(launches) if applied else 0,
            "reason": reason,
        },
        {"duration_ms": (time.perf_counter() - clock) * 1000.0},
    )
    if not applied or tick is None:
        return None
    futures = [launcher.submit(plan, launch.run, tick.recorded_at) for launch, plan in launches]
    return TickOutcome(tick, tuple(futures))


def _requests(
    pipeline: Pipeline, state: SensorRecord, requests: list[RunRequest]
) -> tuple[list[dict[str, Any]], list[tuple[TickLaunch, RunPlan]]]:
    """Each request's outcome (for the tick's details) and the runs to launch."""
    keys = [r.run_key for r in requests if r.run_key is not None]
    seen = pipeline.store.seen_run_keys(state.name, keys) if keys else set()
    entries: list[dict[str, Any]] = []
    launches: list[tuple[TickLaunch, RunPlan]] = []
    for request in requests:
        entry: dict[str, Any] = {"assets": list(request.assets), "run_key": request.run_key}
        entries.append(entry)
        if request.run_key is not None and request.run_key in seen:
            entry.update(outcome="skipped", reason="run key launched before")
            continue
        tags = {**request.tags, "flowstone/sensor": state.name}
        if request.run_key is not None:
            tags["flowstone/run_key"] = request.run_key
        try:
            launch, plan = new_launch(
                pipeline,
                request.assets,
                request.partition,
                with_upstream=request.with_upstream,
                tags=tags,
                run_key=request.run_key,
            )
        except FlowStoneError as exc:
            entry.update(outcome="failed", reason=str(exc), error_type=type(exc).__name__)
            continue
        if request.run_key is not None:
            seen.add(request.run_key)  # the same key twice in one poll launches once
        entry.update(
            outcome="launched", run_id=launch.run.id, partition_key=launch.run.partition_key
        )
        launches.append((launch, plan))
    return entries, launches
