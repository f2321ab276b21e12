"""The table I/O managers (DuckDB, PostgreSQL): one suite over both.

PostgreSQL runs in a schema of its own per test, dropped after; it is skipped when no server
answers, except on CI (CI=true), where that fails.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest

from flowstone.errors import (
    InvalidIdentifierError,
    IOManagerError,
    TableSchemaError,
    UnsupportedValueError,
    ValueNotFoundError,
)
from flowstone.io import DuckDBIOManager, PostgresIOManager, StorageKey
from io_frames import FRAME_KINDS, assert_same, pandas_frame, sample
from test_store_contract import POSTGRES_URL, require_postgres

KEY = StorageKey("orders", "eu", "s:eu")
Factory = Callable[..., Any]


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """The name of a schema that does not exist yet; dropped (with its tables) after."""
    require_postgres()
    import psycopg

    name = f"flowstone_io_{uuid.uuid4().hex[:12]}"
    url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    yield name
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Builds managers of one kind over one database, with extra options."""
    if request.param == "duckdb":
        database = tmp_path / "warehouse.duckdb"
        yield lambda **options: DuckDBIOManager(database, **options)
        return
    schema = request.getfixturevalue("pg_schema")
    built: list[PostgresIOManager] = []

    def factory(**options: Any) -> PostgresIOManager:
        built.append(PostgresIOManager(POSTGRES_URL, schema=schema, **options))
        return built[-1]

    yield factory
    for manager in built:
        manager.close()


@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_frames_round_trip_as_stored(make: Factory, kind: str) -> None:
    manager = make()
    assert not manager.exists(KEY)
    meta = manager.store(KEY, sample(kind))
    assert meta["rows"] == 3 and meta["type"] == kind
    assert meta["content_hash"].startswith("sha256:")
    assert manager.exists(KEY)
    assert_same(sample(kind), manager.load(KEY))


def test_frames_load_as_the_declared_type(make: Factory) -> None:
    manager = make()
    manager.store(KEY, pandas_frame())
    loaded = manager.load(StorageKey("orders", "eu", "s:eu", type_hint=pl.DataFrame))
    assert isinstance(loaded, pl.DataFrame)
    assert loaded["id"].to_list() == [1, 2, 3]
    assert loaded["name"].to_list() == ['a,"b"\nc', None, ""]


def test_json_values_round_trip(make: Factory) -> None:
    manager = make()
    config = StorageKey("config", None, "n:")
    meta = manager.store(config, {"limits": [1, 2.5], "name": "ü", "none": None})
    assert meta["bytes"] > 0 and meta["content_hash"].startswith("sha256:")
    assert manager.load(config) == {"limits": [1, 2.5], "name": "ü", "none": None}
    manager.store(config, ["replaced"])
    assert manager.load(config) == ["replaced"]
    manager.delete(config)
    assert not manager.exists(config)


def test_storing_a_partition_replaces_only_its_rows(make: Factory) -> None:
    manager = make()
    us = StorageKey("orders", "us", "s:us")
    manager.store(KEY, pd.DataFrame({"n": [1, 2, 3]}))
    manager.store(us, pd.DataFrame({"n": [10]}))
    manager.store(KEY, pd.DataFrame({"n": [4]}))
    assert manager.load(KEY)["n"].tolist() == [4]
    assert manager.load(us)["n"].tolist() == [10]
    manager.delete(KEY)
    assert not manager.exists(KEY)
    assert manager.load(us)["n"].tolist() == [10]
    with pytest.raises(ValueNotFoundError, match="Materialize it first"):
        manager.load(KEY)
    manager.delete(KEY)  # deleting nothing is fine


def test_an_empty_frame_is_a_stored_partition(make: Factory) -> None:
    manager = make()
    # A categorical column comes back with the categories its rows use: none, here.
    empty = pandas_frame().drop(columns="region").iloc[:0]
    manager.store(KEY, empty)
    assert manager.exists(KEY)
    assert_same(empty, manager.load(KEY))


def test_other_columns_are_refused_and_the_partition_kept(make: Factory) -> None:
    manager = make()
    manager.store(KEY, pd.DataFrame({"n": [1]}))
    with pytest.raises(TableSchemaError, match="Every partition of an asset shares one table"):
        manager.store(KEY, pd.DataFrame({"n": ["text"]}))
    with pytest.raises(TableSchemaError):
        manager.store(KEY, {"not": "a frame"})
    assert manager.load(KEY)["n"].tolist() == [1]


def test_frames_a_table_cannot_hold_are_refused(make: Factory) -> None:
    manager = make()
    with pytest.raises(UnsupportedValueError, match="partition_key"):
        manager.store(KEY, pd.DataFrame({"partition_key": [1]}))
    with pytest.raises(UnsupportedValueError, match="JSON cannot store"):
        manager.store(KEY, {"when": dt.date(2025, 1, 1)})
    assert not manager.exists(KEY)


def test_table_names_are_identifiers(make: Factory) -> None:
    manager = make(tables={"daily-orders": "daily_orders"})
    key = StorageKey("daily-orders", None, "n:")
    manager.store(key, pd.DataFrame({"n": [1]}))
    assert manager.load(key)["n"].tolist() == [1]
    with pytest.raises(InvalidIdentifierError, match="tables="):
        manager.store(StorageKey("bad-name", None, "n:"), {"a": 1})
    with pytest.raises(InvalidIdentifierError):
        make(tables={"x": 'x"; DROP TABLE y; --'})


def test_eight_partitions_in_parallel(make: Factory) -> None:
    """The first writes race to create the table; none may fail, none may be lost."""
    manager = make()
    barrier = threading.Barrier(8)

    def write(day: int) -> None:
        key = StorageKey("events", dt.date(2025, 1, day), f"d:2025-01-0{day}")
        frame = pd.DataFrame({"day": [day] * 1000, "n": range(1000)})
        barrier.wait()
        manager.store(key, frame)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(1, 9)))
    for day in range(1, 9):
        loaded = manager.load(StorageKey("events", dt.date(2025, 1, day), f"d:2025-01-0{day}"))
        assert loaded["day"].tolist() == [day] * 1000


def test_a_failed_write_leaves_the_previous_partition(
    make: Factory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The write fails after the old rows were deleted: the transaction restores them."""
    manager = make()
    manager.store(KEY, pd.DataFrame({"n": [1, 2]}))
    if isinstance(manager, PostgresIOManager):
        # A NUL character is refused by PostgreSQL text, half-way through COPY.
        bad = pd.DataFrame({"n": ["ok", "nul\x00"]})
        manager.store(StorageKey("texts", None, "n:"), pd.DataFrame({"n": ["old"]}))
        with pytest.raises(IOManagerError, match="rolled back"):
            manager.store(StorageKey("texts", None, "n:"), bad)
        assert manager.load(StorageKey("texts", None, "n:"))["n"].tolist() == ["old"]
        return
    import duckdb

    connect = duckdb.connect

    class FailingInsert:
        def __init__(self, con: Any) -> None:
            self._con = con

        def execute(self, query: str, *args: Any) -> Any:
            if query.startswith("INSERT INTO") and "flowstone_incoming" in query:
                raise duckdb.IOException("disk full")
            return self._con.execute(query, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._con, name)

    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: FailingInsert(connect(*a, **k)))
    with pytest.raises(IOManagerError, match="disk full"):
        manager.store(KEY, pd.DataFrame({"n": [3]}))
    monkeypatch.undo()
    assert manager.load(KEY)["n"].tolist() == [1, 2]
