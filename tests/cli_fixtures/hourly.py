"""Partition mappings: hourly clicks -> daily clicks (TimeWindowMapping), for January 2025."""

from __future__ import annotations

import datetime as dt

import flowstone as fs

HOURS = fs.HourlyPartitions(start="2025-01-01", end="2025-02-01")
DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")


@fs.asset(partitioned_by=HOURS)
def clicks(ctx: fs.AssetContext) -> int:
    hour = ctx.partition
    assert isinstance(hour, dt.datetime)
    return hour.hour


@fs.asset(partitioned_by=DAYS, partition_mappings={"clicks": fs.TimeWindowMapping()})
def daily_clicks(clicks: dict[dt.datetime, int]) -> int:
    return sum(clicks.values())


pipeline = fs.Pipeline([clicks, daily_clicks])
