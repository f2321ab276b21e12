"""Materialize three days of the sales pipeline on the embedded default (a SQLite file in
.flowstone/), then show what FlowStone recorded."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from pipeline import pipeline

from flowstone.partitions import decode_partition, partition_repr


def main() -> int:
    failed = False
    for day in (dt.date(2025, 1, 13), dt.date(2025, 1, 14), dt.date(2025, 1, 15)):
        run = pipeline.materialize_all("daily_report", partition=day)
        print(f"run {run.run_id[:8]} {day}: {run.status}")
        failed |= not run.ok
        if run.ok:
            print("   ", pipeline.load("daily_report", day))
        for record in run.failed:
            print(f"    {record.asset} failed: {record.error_type}: {record.error_message}")

    print("\nLatest materializations:")
    for record in pipeline.status():
        partition = partition_repr(decode_partition(record.partition_key))
        print(
            f"  {record.asset:<14} {partition:<11} {record.status:<8} "
            f"{record.duration_ms or 0:7.2f} ms  {record.metadata}"
        )

    print("\nWhat fed daily_report for 2025-01-15:")
    for node in pipeline.upstream_lineage("daily_report", dt.date(2025, 1, 15)):
        partition = partition_repr(decode_partition(node.partition_key))
        print(
            f"  {'  ' * node.depth}{node.asset} [{partition}] run {node.run_id and node.run_id[:8]}"
        )
    print(f"\nMetadata store: {pipeline.store}")
    pipeline.close()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
