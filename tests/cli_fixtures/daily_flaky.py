"""A daily asset that fails on the days listed in $FLAKY_DAYS (comma-separated day numbers)."""

from __future__ import annotations

import datetime as dt
import os

import flowstone as fs

JANUARY = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")


@fs.asset(partitioned_by=JANUARY)
def readings(ctx: fs.AssetContext) -> int:
    day = ctx.partition
    assert isinstance(day, dt.date)
    if str(day.day) in os.environ.get("FLAKY_DAYS", "").split(","):
        raise ConnectionError(f"sensor offline on {day}")
    return day.day


@fs.asset
def lookup() -> int:
    return 1


pipeline = fs.Pipeline([readings, lookup])
