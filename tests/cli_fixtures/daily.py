"""Daily partitions: events -> daily_total, for January 2025."""

from __future__ import annotations

import datetime as dt

import flowstone as fs

JANUARY = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")


@fs.asset(partitioned_by=JANUARY)
def events(ctx: fs.AssetContext) -> list[int]:
    day = ctx.partition
    assert isinstance(day, dt.date)
    return [day.day, 2 * day.day]


@fs.asset(partitioned_by=JANUARY)
def daily_total(events: list[int]) -> int:
    return sum(events)


pipeline = fs.Pipeline([events, daily_total])
