"""Roll two weeks of hourly page views into days with backfills, on the embedded default (a
SQLite file in .flowstone/), then show what the days read."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).parent))

from pipeline import ZONE, pipeline

from flowstone.partitions import decode_partition, partition_repr


def main() -> int:
    # Hours, then days from their hours, then each day against the week before it: every
    # backfill reads what the one before stored.
    for asset in ("page_views", "daily_views", "versus_last_week"):
        result = pipeline.backfill(asset, partitions="all")
        print(f"backfill {asset}: {result.backfill.success} partitions in {result.elapsed_s:.2f} s")
        if not result.ok:
            for failure in result.failures:
                print(f"  {failure.partition_key}: {failure.error_type}: {failure.error_message}")
            return 1
    pipeline.materialize("views_to_date").raise_for_status()
    print("to date:", pipeline.load("views_to_date"))

    for day in (dt.date(2025, 3, 29), dt.date(2025, 3, 30), dt.date(2025, 3, 31)):
        views = pipeline.load("daily_views", day)
        ratio = pipeline.load("versus_last_week", day)
        print(f"{day}: {views['views']:>5} views in {views['hours']} hours, x{ratio} the week")

    sunday = dt.date(2025, 3, 30)  # the clocks go forward in Oslo: a 23-hour day
    [record] = pipeline.history("daily_views", sunday, limit=1)
    hours = pipeline.store.upstream(record.id, depth=1)
    local = [decode_partition(n.partition_key).astimezone(ZoneInfo(ZONE)) for n in hours]
    shown = [partition_repr(hour) for hour in local]
    print(f"daily_views {sunday} read {len(hours)} hourly partitions: {shown[0]} .. {shown[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
