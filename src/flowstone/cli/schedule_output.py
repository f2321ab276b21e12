"""How the schedule commands show schedules, sensors and ticks: text tables and JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from flowstone.cli import output
from flowstone.records import utcnow
from flowstone.schedule_records import ScheduleRecord, SensorRecord, TickRecord
from flowstone.schedules import CronTimes


def tick_table(ticks: Sequence[TickRecord]) -> str:
    """One row per tick: its local time, status, runs, partition and why."""
    rows = [
        (
            str(t.details.get("local_time") or output.human_time(t.tick_time)),
            t.status.value,
            ",".join(output.short_id(r) for r in t.run_ids) or output.NONE,
            output.human_partition(t.details.get("partition_key")),
            output.first_line(t.reason, 100) or output.NONE,
        )
        for t in ticks
    ]
    headers = ("tick", "status", "runs", "partition", "why")
    return output.table(headers, rows) if rows else "No ticks yet.\n"


def tick_dict(t: TickRecord) -> dict[str, Any]:
    """A tick as JSON-ready data."""
    return {
        "kind": t.kind.value,
        "name": t.name,
        "tick_time": output.iso(t.tick_time),
        "status": t.status.value,
        "run_ids": list(t.run_ids),
        "reason": t.reason,
        "details": t.details,
        "recorded_at": output.iso(t.recorded_at),
    }


def schedule_dict(r: ScheduleRecord, last: TickRecord | None) -> dict[str, Any]:
    """A schedule (with its last tick) as JSON-ready data."""
    return {
        "name": r.name,
        "assets": list(r.targets),
        "cron": r.cron,
        "timezone": r.timezone,
        "partition": r.partition,
        "with_upstream": r.with_upstream,
        "catch_up": r.catch_up.value,
        "catch_up_limit": r.catch_up_limit,
        "max_lateness_s": r.max_lateness_s,
        "dst_nonexistent": r.dst_nonexistent,
        "dst_repeated": r.dst_repeated,
        "paused": r.paused,
        "cursor": output.iso(r.cursor),
        "next_tick": None if r.paused else output.iso(next_time(r)),
        "source": r.source,
        "last_tick": None if last is None else tick_dict(last),
    }


def sensor_dict(s: SensorRecord, last: TickRecord | None, declared: bool) -> dict[str, Any]:
    """A sensor (with its last tick) as JSON-ready data."""
    return {
        "name": s.name,
        "interval_s": s.interval_s,
        "paused": s.paused,
        "cursor": s.cursor,
        "last_poll": output.iso(s.last_tick_at),
        "in_pipeline": declared,
        "last_tick": None if last is None else tick_dict(last),
    }


def tick_summary(tick: TickRecord | None) -> str:
    """``launched 2025-01-02T02:30:00+01:00 (why)``, or ``-``."""
    if tick is None:
        return output.NONE
    when = str(tick.details.get("local_time") or output.human_time(tick.tick_time))
    why = f" ({output.first_line(tick.reason, 60)})" if tick.reason else ""
    return f"{tick.status.value} {when}{why}"


def next_time(record: ScheduleRecord) -> datetime | None:
    """The schedule's next tick after now (within 400 days), or None."""
    times = CronTimes(
        record.cron,
        record.timezone,
        nonexistent=record.dst_nonexistent,
        repeated=record.dst_repeated,
        owner=record.name,
    )
    now = utcnow()
    return next(iter(times.between(now, now + timedelta(days=400))), None)


def next_text(record: ScheduleRecord) -> str:
    """``next tick <time>``, or ``never ticks``."""
    upcoming = next_time(record)
    return "never ticks" if upcoming is None else f"next tick {upcoming.isoformat()}"
