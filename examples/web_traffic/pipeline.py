"""Web traffic: hourly page views rolled up into days, a 7-day average, and a running total.

It shows partition mappings: each daily partition reads its 24 (23 or 25 on a daylight-saving
day) hourly partitions (`TimeWindowMapping`), a day compares itself with the 7 days before it
(`LastPartitions` through `ins=`), and an unpartitioned total reads every day
(`AllPartitions`). The hourly data is generated, so the example needs no files.
"""

from __future__ import annotations

import datetime as dt
import random

import flowstone as fs

ZONE = "Europe/Oslo"
HOURS = fs.HourlyPartitions(start="2025-03-20", end="2025-04-03", timezone=ZONE)
DAYS = fs.DailyPartitions(start="2025-03-20", end="2025-04-03", timezone=ZONE)


@fs.asset(partitioned_by=HOURS)
def page_views(ctx: fs.AssetContext) -> int:
    """Page views in one hour (generated: busier in the day, the same for the same hour)."""
    hour: dt.datetime = ctx.partition
    rng = random.Random(hour.isoformat())
    return int((200 if 8 <= hour.hour < 22 else 40) * rng.uniform(0.8, 1.2))


@fs.asset(partitioned_by=DAYS, partition_mappings={"page_views": fs.TimeWindowMapping()})
def daily_views(ctx: fs.AssetContext, page_views: dict[dt.datetime, int]) -> dict[str, int]:
    """A day's views, from the hours of that local day."""
    ctx.metadata["hours"] = len(page_views)
    return {"views": sum(page_views.values()), "hours": len(page_views)}


@fs.asset(
    partitioned_by=DAYS,
    ins={"last_week": fs.AssetIn("daily_views", fs.LastPartitions(7))},
)
def versus_last_week(
    daily_views: dict[str, int], last_week: dict[dt.date, dict[str, int]]
) -> float:
    """A day's views against the average of the 7 days up to it (fewer at the start)."""
    average = sum(day["views"] for day in last_week.values()) / len(last_week)
    return round(daily_views["views"] / average, 3)


@fs.asset(partition_mappings={"daily_views": fs.AllPartitions(allow_missing=True)})
def views_to_date(daily_views: dict[dt.date, dict[str, int]]) -> dict[str, object]:
    """Every day materialized so far, summed."""
    return {
        "days": len(daily_views),
        "views": sum(day["views"] for day in daily_views.values()),
    }


pipeline = fs.Pipeline([page_views, daily_views, versus_last_week, views_to_date])
