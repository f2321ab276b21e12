"""Benchmark: a backfill of 365 daily partitions of one trivial asset.

FlowStone runs ``pipeline.backfill("x", partitions="all")`` on a new store each repetition
(in memory, and a new SQLite file), with 1 and 4 threads. Where ``import dagster`` works, the
same run measures Dagster's fastest way to do it: one run over the partition range
(``BackfillPolicy.single_run()`` and the partition-range tags, which records one
materialization per partition), on an ephemeral instance and on a SQLite (``local_temp``) one.
Its other way, one run per partition, is much slower (``--dagster-loop`` adds it).

Not a test: nothing is asserted about time. Each run is checked to have succeeded with 365
materializations. The table shows the best of ``--repeat`` (FlowStone) and
``--dagster-repeat`` (Dagster) repetitions; setup (building the pipeline, opening and
migrating the store, a warm-up materialization) is outside the timing, for both.

Usage::

    .venv/bin/python bench/bench_backfill.py                 # FlowStone only (no Dagster)
    /tmp/bench-venv/bin/python bench/bench_backfill.py       # with Dagster, if installed
    python bench/bench_backfill.py --repeat 5 --json backfill.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import flowstone as fs

START, END = dt.date(2025, 1, 1), dt.date(2026, 1, 1)
DAYS = (END - START).days  # 365
DAGSTER_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


# --- FlowStone -------------------------------------------------------------------------------
@contextmanager
def flowstone_pipeline(store: str) -> Iterator[fs.Pipeline]:
    """A new pipeline on a new store, opened and warmed up outside the timing."""
    tmp = tempfile.mkdtemp(prefix="flowstone-backfill-bench-")
    url = "memory" if store == "memory" else f"sqlite:///{tmp}/flowstone.db"

    @fs.asset(partitioned_by=fs.DailyPartitions(START, END))
    def x(ctx: fs.AssetContext) -> int:
        return ctx.partition.toordinal()

    @fs.asset
    def bench_warmup() -> int:
        return 1

    pipeline = fs.Pipeline([x, bench_warmup], store=url, default_io_manager="memory")
    try:
        pipeline.materialize("bench_warmup").raise_for_status()
        yield pipeline
    finally:
        pipeline.close()
        shutil.rmtree(tmp, ignore_errors=True)


def flowstone_once(store: str, parallel: int) -> float:
    with flowstone_pipeline(store) as pipeline:
        gc.collect()
        start = time.perf_counter()
        result = pipeline.backfill("x", partitions="all", parallel=parallel)
        elapsed = time.perf_counter() - start
        result.raise_for_status()
        assert result.backfill.success == DAYS, result.backfill
        assert pipeline.load("x", END - dt.timedelta(days=1)) == (END - dt.timedelta(1)).toordinal()
    return elapsed


# --- Dagster ---------------------------------------------------------------------------------
def dagster_available() -> bool:
    return importlib.util.find_spec("dagster") is not None


@contextmanager
def dagster_instance(store: str) -> Iterator[Any]:
    import dagster as dg

    tmp = tempfile.mkdtemp(prefix="dagster-backfill-bench-")
    try:
        if store == "memory":
            instance = dg.DagsterInstance.ephemeral(tempdir=tmp)
        else:
            instance = dg.DagsterInstance.local_temp(
                tempdir=tmp, overrides={"telemetry": {"enabled": False}}
            )

        @dg.asset(name="bench_warmup")
        def warmup() -> int:
            return 1

        dg.materialize(
            [warmup],
            instance=instance,
            resources={"io_manager": dg.mem_io_manager},
            run_config=DAGSTER_QUIET,
        )
        try:
            yield instance
        finally:
            instance.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dagster_asset(single_run: bool) -> Any:
    import warnings

    import dagster as dg

    daily = dg.DailyPartitionsDefinition(start_date=START.isoformat(), end_date=END.isoformat())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backfill_policy is "beta" in Dagster 1.x

        # Unannotated `context`: Dagster would resolve a string annotation and fail.
        @dg.asset(
            name="x",
            partitions_def=daily,
            backfill_policy=dg.BackfillPolicy.single_run() if single_run else None,
        )
        def x(context):  # type: ignore[no-untyped-def]
            if single_run:
                return {k: dt.date.fromisoformat(k).toordinal() for k in context.partition_keys}
            return dt.date.fromisoformat(context.partition_key).toordinal()

    return x


def dagster_once(store: str, how: str) -> float:
    import dagster as dg

    asset = dagster_asset(single_run=how == "range")
    options = {"resources": {"io_manager": dg.mem_io_manager}, "run_config": DAGSTER_QUIET}
    with dagster_instance(store) as instance:
        gc.collect()
        start = time.perf_counter()
        if how == "range":
            last = (END - dt.timedelta(days=1)).isoformat()
            dg.materialize(
                [asset],
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": START.isoformat(),
                    "dagster/asset_partition_range_end": last,
                },
                **options,
            )
        else:
            for n in range(DAYS):
                key = (START + dt.timedelta(days=n)).isoformat()
                dg.materialize([asset], instance=instance, partition_key=key, **options)
        elapsed = time.perf_counter() - start
        found = instance.fetch_materializations(dg.AssetKey("x"), limit=DAYS + 1).records
        assert len(found) == DAYS, len(found)
    return elapsed


# --- running ---------------------------------------------------------------------------------
def best_of(repeat: int, once: Callable[[], float]) -> float:
    return min(once() for _ in range(repeat))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="FlowStone repetitions (best of)")
    parser.add_argument("--dagster-repeat", type=int, default=1, help="Dagster repetitions")
    parser.add_argument("--no-dagster", action="store_true", help="skip Dagster")
    parser.add_argument(
        "--dagster-loop", action="store_true", help="also one Dagster run per partition (slow)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the timings as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    for store in ("memory", "sqlite"):
        for parallel in (1, 4):
            seconds = best_of(args.repeat, lambda s=store, p=parallel: flowstone_once(s, p))
            rows.append(
                {"tool": "flowstone", "store": store, "how": f"parallel={parallel}", "s": seconds}
            )
    if args.no_dagster:
        print("dagster: skipped (--no-dagster)")
    elif not dagster_available():
        print("dagster not installed (pip install dagster, in another venv, to compare)")
    else:
        hows = ["range", "loop"] if args.dagster_loop else ["range"]
        for store in ("memory", "sqlite"):
            for how in hows:
                seconds = best_of(args.dagster_repeat, lambda s=store, h=how: dagster_once(s, h))
                rows.append({"tool": "dagster", "store": store, "how": how, "s": seconds})
    print_table(rows)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"partitions": DAYS, "python": platform.python_version(), "rows": rows}, out)
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    fastest_dagster = {
        store: min(
            (r["s"] for r in rows if r["tool"] == "dagster" and r["store"] == store), default=None
        )
        for store in ("memory", "sqlite")
    }
    print(f"\n{DAYS} daily partitions of one trivial asset (best times)\n")
    print(f"{'tool':<10}{'store':<8}{'how':<12}{'seconds':>9}{'ms/part':>9}{'dagster/this':>14}")
    for row in rows:
        dagster = fastest_dagster[row["store"]]
        ratio = f"{dagster / row['s']:.0f}x" if dagster and row["tool"] == "flowstone" else ""
        print(
            f"{row['tool']:<10}{row['store']:<8}{row['how']:<12}{row['s']:>9.3f}"
            f"{row['s'] * 1000 / DAYS:>9.2f}{ratio:>14}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
