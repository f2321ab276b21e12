"""What the Parquet I/O manager costs over plain pyarrow.parquet, for 1-million-row DataFrames.

A benchmark, not a test: it asserts nothing about time, it prints a table. For each partition
it writes then reads one pandas DataFrame of ``--rows`` rows two ways, in the same process, on
the same disk, alternating which goes first:

- plain: ``pq.write_table(pa.Table.from_pandas(df), path)`` and
  ``pq.read_table(path).to_pandas()``;
- FlowStone: ``ParquetIOManager.store(key, df)`` and ``.load(key)``, which also write to a
  temporary file, fsync it and rename it into place, hash the file (sha256) and describe it.

Both use pyarrow's defaults (snappy). The table shows the best of ``--repeat`` rounds.

    python bench/bench_parquet.py                 # 1,000,000 rows, 4 partitions, best of 3
    python bench/bench_parquet.py --quick         # 100,000 rows: a smoke run
    python bench/bench_parquet.py --no-fsync      # the manager's cost without the fsync
    python bench/bench_parquet.py --json out.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flowstone.io import ParquetIOManager, StorageKey


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """Typical fact-table columns: ids, amounts, a low-cardinality string, times, flags."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-01-01T00:00:00", "us")
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "customer": rng.integers(0, 50_000, rows),
            "amount": rng.normal(100.0, 25.0, rows),
            "country": rng.choice(["no", "se", "dk", "fi", "de", "fr", "us"], rows),
            "at": start + rng.integers(0, 86_400_000_000, rows).astype("timedelta64[us]"),
            "paid": rng.random(rows) < 0.9,
        }
    )


def plain_write(df: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(df), path)


def plain_read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run(rows: int, partitions: int, repeat: int, fsync: bool) -> dict[str, Any]:
    frames = [make_frame(rows, seed) for seed in range(partitions)]
    best: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="flowstone-bench-") as tmp:
        root = Path(tmp)
        manager = ParquetIOManager(root / "flowstone")
        (root / "plain").mkdir()
        if not fsync:
            os.fsync = lambda fd: None  # type: ignore[assignment]  # measure without it
        for round_no in range(repeat):
            totals = dict.fromkeys(("plain_write", "plain_read", "fs_write", "fs_read"), 0.0)
            for index, df in enumerate(frames):
                day = dt.date(2025, 1, 1) + dt.timedelta(days=index)
                key = StorageKey("orders", day, f"d:{day.isoformat()}")
                path = root / "plain" / f"{day}.parquet"
                steps = [
                    ("plain_write", lambda df=df, path=path: plain_write(df, path)),
                    ("fs_write", lambda df=df, key=key: manager.store(key, df)),
                    ("plain_read", lambda path=path: plain_read(path)),
                    ("fs_read", lambda key=key: manager.load(key)),
                ]
                if (round_no + index) % 2:  # alternate who goes first: caches, allocator
                    steps = [steps[1], steps[0], steps[3], steps[2]]
                for name, step in steps:
                    seconds, _ = timed(step)
                    totals[name] += seconds
            for name, seconds in totals.items():
                best.setdefault(name, []).append(seconds)
        sizes = {
            "plain_bytes": sum(p.stat().st_size for p in (root / "plain").iterdir()),
            "flowstone_bytes": sum(p.stat().st_size for p in (root / "flowstone").rglob("*.*")),
        }
    return {"rounds": best, **sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 rows, 2 partitions")
    parser.add_argument("--no-fsync", action="store_true", help="skip the manager's fsync")
    parser.add_argument("--json", metavar="FILE", help="also write every timing here")
    args = parser.parse_args()
    rows, partitions = (100_000, 2) if args.quick else (args.rows, args.partitions)
    result = run(rows, partitions, args.repeat, fsync=not args.no_fsync)
    best = {name: min(values) for name, values in result["rounds"].items()}
    print(f"{rows:,} rows x {partitions} partitions, best of {args.repeat}")
    print(f"{'':8}{'plain s':>10}{'flowstone s':>13}{'overhead':>10}")
    for op in ("write", "read"):
        plain, ours = best[f"plain_{op}"], best[f"fs_{op}"]
        print(f"{op:8}{plain:10.3f}{ours:13.3f}{(ours / plain - 1) * 100:9.1f}%")
    plain = best["plain_write"] + best["plain_read"]
    ours = best["fs_write"] + best["fs_read"]
    print(f"{'total':8}{plain:10.3f}{ours:13.3f}{(ours / plain - 1) * 100:9.1f}%")
    print(f"file bytes: plain {result['plain_bytes']:,}, flowstone {result['flowstone_bytes']:,}")
    if args.json:
        info = {"python": platform.python_version(), "pyarrow": pa.__version__, "rows": rows}
        Path(args.json).write_text(json.dumps({**info, **result}, indent=2))


if __name__ == "__main__":
    main()
