"""A pipeline with a schedule and a sensor declared in code, for the schedule commands."""

from __future__ import annotations

import flowstone as fs
from flowstone.schedules import RunRequest

DAYS = fs.DailyPartitions(start="2025-01-01")


@fs.asset
def ping() -> int:
    return 1


@fs.asset(partitioned_by=DAYS)
def daily(ctx: fs.AssetContext) -> str:
    return str(ctx.partition)


pipeline = fs.Pipeline([ping, daily])
pipeline.schedule(
    "nightly", "daily", cron="30 2 * * *", timezone="Europe/Oslo", partition="previous_day"
)


@pipeline.sensor("pinger", interval=1)
def pinger(cursor: str | None) -> tuple[list[RunRequest], str]:
    # One run, ever: the cursor remembers it was requested.
    return ([] if cursor else [RunRequest("ping", run_key="first")]), "done"
