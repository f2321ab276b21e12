"""DuckDB across processes: the file lock makes writers queue instead of failing."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flowstone.errors import IOManagerError
from flowstone.io import DuckDBIOManager, StorageKey


def _day_key(day: int) -> StorageKey:
    return StorageKey("events", dt.date(2025, 1, day), f"d:2025-01-{day:02d}")


def _write_partitions(database: str, days: list[int], barrier: Any, failures: Any) -> None:
    """Runs in a separate process: its own DuckDB instance, contending for the same file."""
    try:
        manager = DuckDBIOManager(database)
        frames = {day: pd.DataFrame({"day": [day] * 500, "n": range(500)}) for day in days}
        barrier.wait(timeout=120)  # every process is ready: now they all write at once
        for day, frame in frames.items():
            manager.store(_day_key(day), frame)
    except BaseException as exc:
        failures.put(f"{type(exc).__name__}: {exc}")
        raise


@pytest.mark.slow
def test_eight_partitions_from_four_processes(tmp_path: Path) -> None:
    database = str(tmp_path / "warehouse.duckdb")
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    failures = context.Queue()
    processes = [
        context.Process(target=_write_partitions, args=(database, [d, d + 4], barrier, failures))
        for d in range(1, 5)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    errors = [failures.get() for _ in range(failures.qsize())] if not failures.empty() else []
    assert errors == []
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    manager = DuckDBIOManager(database)
    for day in range(1, 9):
        assert manager.load(_day_key(day))["day"].tolist() == [day] * 500


def test_a_held_lock_fails_after_the_timeout_with_what_to_do(tmp_path: Path) -> None:
    import fcntl

    database = tmp_path / "warehouse.duckdb"
    manager = DuckDBIOManager(database, lock_timeout=0.05)
    with open(tmp_path / "warehouse.duckdb.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(IOManagerError, match="raise lock_timeout") as caught:
            manager.store(_day_key(1), pd.DataFrame({"n": [1]}))
    assert caught.value.asset == "events"
    manager.store(_day_key(1), pd.DataFrame({"n": [1]}))  # released: works again
    assert manager.exists(_day_key(1))


def test_nothing_is_created_by_reads(tmp_path: Path) -> None:
    manager = DuckDBIOManager(tmp_path / "w.duckdb")
    assert not manager.exists(_day_key(1))
    manager.delete(_day_key(1))
    assert not (tmp_path / "w.duckdb").exists()
