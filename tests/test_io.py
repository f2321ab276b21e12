from __future__ import annotations

import os
from pathlib import Path

import pytest

import flowstone as fs
from flowstone.errors import IOManagerError, ValueNotFoundError

KEY = fs.StorageKey("orders", "s:eu/../x", "s:eu/../x")


@pytest.mark.parametrize("kind", ["memory", "json", "pickle"])
def test_round_trip_exists_delete(kind: str, tmp_path: Path) -> None:
    manager: fs.IOManager
    if kind == "memory":
        manager = fs.MemoryIOManager()
    else:
        manager = fs.FilesystemIOManager(tmp_path, serializer=kind)  # type: ignore[arg-type]
    assert not manager.exists(KEY)
    with pytest.raises(ValueNotFoundError):
        manager.load(KEY)
    manager.store(KEY, {"rows": [1, 2, 3]})
    assert manager.exists(KEY)
    assert manager.load(KEY) == {"rows": [1, 2, 3]}
    manager.delete(KEY)
    assert not manager.exists(KEY)
    manager.delete(KEY)  # deleting nothing is fine


def test_partition_keys_never_escape_the_asset_folder(tmp_path: Path) -> None:
    manager = fs.FilesystemIOManager(tmp_path)
    path = manager.path(KEY)
    assert path.parent == tmp_path / "orders"
    manager.store(KEY, 1)
    assert [p.name for p in (tmp_path / "orders").iterdir()] == [path.name]


def test_long_partition_keys_are_hashed(tmp_path: Path) -> None:
    manager = fs.FilesystemIOManager(tmp_path)
    key = fs.StorageKey("a", "x" * 500, "s:" + "x" * 500)
    assert len(manager.path(key).name) < 100
    manager.store(key, "v")
    assert manager.load(key) == "v"


def test_failed_serialization_keeps_the_previous_value(tmp_path: Path) -> None:
    manager = fs.FilesystemIOManager(tmp_path)
    manager.store(KEY, {"version": 1})
    with pytest.raises(IOManagerError, match="JSON cannot store"):
        manager.store(KEY, {"version": object()})
    assert manager.load(KEY) == {"version": 1}
    assert [p.name for p in (tmp_path / "orders").iterdir()] == [manager.path(KEY).name]


def test_crash_during_write_keeps_the_previous_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = fs.FilesystemIOManager(tmp_path)
    manager.store(KEY, "old")

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(IOManagerError, match="disk full"):
        manager.store(KEY, "new")
    monkeypatch.undo()
    assert manager.load(KEY) == "old"
    assert not [p for p in (tmp_path / "orders").iterdir() if p.name.startswith(".tmp-")]


def test_serializer_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="serializer"):
        fs.FilesystemIOManager(tmp_path, serializer="yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [(1, 2), {1: "a"}, {"rows": [(1, "x")]}])
def test_json_refuses_values_that_would_not_read_back_equal(value: object, tmp_path: Path) -> None:
    manager = fs.FilesystemIOManager(tmp_path)
    with pytest.raises(IOManagerError, match="read back equal"):
        manager.store(KEY, value)
    assert not manager.exists(KEY)
