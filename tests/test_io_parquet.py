"""The Parquet I/O manager: round trips per type and location, atomic writes, metadata."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flowstone.errors import IOManagerError, UnsupportedValueError, ValueNotFoundError
from flowstone.io import ParquetIOManager, StorageKey
from io_frames import FRAME_KINDS, assert_same, pandas_frame, polars_frame, sample

KEY = StorageKey("orders", "eu", "s:eu")


@pytest.fixture(params=["path", "file-url", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A local folder, the same as a file:// URL, and an in-memory fsspec filesystem."""
    if request.param == "path":
        return str(tmp_path / "tables")
    if request.param == "file-url":
        return (tmp_path / "tables").as_uri()
    return f"memory://flowstone-test-{uuid.uuid4().hex[:8]}/tables"


@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_round_trip_loads_the_type_that_was_stored(kind: str, root: str) -> None:
    manager = ParquetIOManager(root)
    assert not manager.exists(KEY)
    manager.store(KEY, sample(kind))
    assert manager.exists(KEY)
    assert_same(sample(kind), manager.load(KEY))
    manager.delete(KEY)
    assert not manager.exists(KEY)
    with pytest.raises(ValueNotFoundError, match="Materialize it first"):
        manager.load(KEY)
    manager.delete(KEY)  # deleting nothing is fine


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (pl.DataFrame, pl.DataFrame),
        (pl.LazyFrame, pl.LazyFrame),
        (pa.Table, pa.Table),
        (pd.DataFrame, pd.DataFrame),
        (list, pd.DataFrame),
        ("pl.DataFrame", pd.DataFrame),
    ],
)
def test_loads_as_the_type_the_reader_declares(hint: Any, expected: type, tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path)
    manager.store(KEY, pd.DataFrame({"n": [1, 2]}))
    loaded = manager.load(StorageKey(KEY.asset, KEY.partition, KEY.partition_key, type_hint=hint))
    assert isinstance(loaded, expected)
    frame = pl.DataFrame(loaded.collect() if isinstance(loaded, pl.LazyFrame) else loaded)
    assert frame["n"].to_list() == [1, 2]


def test_metadata_describes_the_stored_file(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path)
    meta = manager.store(KEY, polars_frame())
    assert meta is not None
    path = Path(manager.path(KEY))
    data = path.read_bytes()
    assert meta["uri"] == f"file://{path}"  # fsspec form: reads back with fsspec.open
    assert meta["bytes"] == len(data)
    assert meta["content_hash"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert meta["rows"] == 3 and meta["columns"] == 6
    assert [c["name"] for c in meta["schema"]] == ["id", "amount", "name", "paid", "at", "day"]
    assert meta["schema"][4]["type"] == "timestamp[us, tz=UTC]"
    assert meta["type"] == "polars" and meta["format"] == "parquet"


def test_files_are_plain_parquet_that_pyarrow_reads(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path)
    manager.store(KEY, pandas_frame())
    table = pq.read_table(manager.path(KEY))
    pd.testing.assert_frame_equal(table.to_pandas(), pandas_frame())


def test_a_file_written_by_plain_pyarrow_loads_as_pandas(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path)
    path = Path(manager.path(KEY))
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(pandas_frame()), path)
    assert_same(pandas_frame(), manager.load(KEY))


def test_each_partition_has_its_own_file(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path)
    us = StorageKey("orders", "us", "s:us")
    manager.store(KEY, pd.DataFrame({"n": [1]}))
    manager.store(us, pd.DataFrame({"n": [2]}))
    assert manager.load(KEY)["n"].tolist() == [1]
    assert manager.load(us)["n"].tolist() == [2]
    assert sorted(p.name for p in (tmp_path / "orders").iterdir()) == [
        "s%3Aeu.parquet",
        "s%3Aus.parquet",
    ]


def test_a_value_parquet_cannot_hold_leaves_the_previous_partition(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path)
    manager.store(KEY, pd.DataFrame({"n": [1]}))
    with pytest.raises(UnsupportedValueError, match="Arrow cannot convert") as caught:
        manager.store(KEY, pd.DataFrame({"n": [1, "two"]}))
    assert caught.value.asset == "orders"
    assert manager.load(KEY)["n"].tolist() == [1]
    assert [p.name for p in (tmp_path / "orders").iterdir()] == ["s%3Aeu.parquet"]


def test_a_crash_during_the_write_leaves_the_previous_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = ParquetIOManager(tmp_path)
    manager.store(KEY, pd.DataFrame({"n": [1]}))

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(IOManagerError, match="disk full"):
        manager.store(KEY, pd.DataFrame({"n": [2]}))
    monkeypatch.undo()
    assert manager.load(KEY)["n"].tolist() == [1]
    assert [p.name for p in (tmp_path / "orders").iterdir()] == ["s%3Aeu.parquet"]


def test_non_frames_get_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedValueError, match="io_manager='filesystem'") as caught:
        ParquetIOManager(tmp_path).store(KEY, {"n": 1})
    assert caught.value.value_type == "dict"
    assert not (tmp_path / "orders").exists()


def test_path_templates(tmp_path: Path) -> None:
    manager = ParquetIOManager(tmp_path, path_template="{asset}/day={partition_value}/data.{ext}")
    import datetime as dt

    key = StorageKey("daily", dt.date(2025, 1, 15), "d:2025-01-15")
    manager.store(key, pd.DataFrame({"n": [1]}))
    assert (tmp_path / "daily" / "day=2025-01-15" / "data.parquet").is_file()
    # A partition value cannot climb out of the root.
    evil = StorageKey("daily", "../../x", "s:../../x")
    assert manager.path(evil).startswith(str(tmp_path / "daily") + "/day=..%2F..%2Fx")
    dots = StorageKey("daily", "..", "s:..")
    assert "/day=../" not in manager.path(dots) and "/../" not in manager.path(dots)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{asset}.{ext}", "must contain"),
        ("{partition}.{ext}", "must contain"),
        ("{asset}/{partiton}.{ext}", "unknown fields"),
        ("{asset}/{partition", "Invalid path template"),
        ("{asset}/{partition!r}", "plain fields"),
    ],
)
def test_bad_templates_are_rejected_when_built(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ParquetIOManager("memory://x", path_template=template)


def test_unknown_protocols_fail_with_what_to_install() -> None:
    manager = ParquetIOManager("nosuchproto://bucket/x")
    with pytest.raises(IOManagerError, match="Install the extra"):
        manager.store(KEY, pd.DataFrame({"n": [1]}))
