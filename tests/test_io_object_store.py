"""Plain values on fsspec filesystems, and the S3 path against a local S3 server (moto)."""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flowstone.errors import UnsupportedValueError, ValueNotFoundError
from flowstone.io import ObjectStoreIOManager, ParquetIOManager, StorageKey
from io_frames import assert_same, pandas_frame

KEY = StorageKey("orders", "eu", "s:eu")


@pytest.fixture(params=["file-url", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file-url":
        return (tmp_path / "values").as_uri()
    return f"memory://flowstone-test-{uuid.uuid4().hex[:8]}/values"


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_round_trip(root: str, serializer: Any) -> None:
    manager = ObjectStoreIOManager(root, serializer=serializer)
    assert not manager.exists(KEY)
    meta = manager.store(KEY, {"rows": [1, 2, 3], "name": "ü"})
    assert manager.load(KEY) == {"rows": [1, 2, 3], "name": "ü"}
    assert meta is not None and meta["format"] == serializer
    assert meta["uri"].endswith(f"/values/orders/s%3Aeu.{serializer}")
    manager.delete(KEY)
    assert not manager.exists(KEY)
    with pytest.raises(ValueNotFoundError, match="Materialize it first"):
        manager.load(KEY)


def test_json_is_the_default_and_the_hash_is_of_the_stored_bytes(tmp_path: Path) -> None:
    manager = ObjectStoreIOManager(tmp_path.as_uri())
    meta = manager.store(KEY, [1, 2])
    data = Path(manager.path(KEY)).read_bytes()
    assert data == b"[1,2]"
    assert meta == {
        "uri": f"file://{manager.path(KEY)}",
        "bytes": 5,
        "content_hash": "sha256:" + hashlib.sha256(b"[1,2]").hexdigest(),
        "format": "json",
    }


def test_a_value_json_cannot_store_leaves_the_previous_one(root: str) -> None:
    manager = ObjectStoreIOManager(root)
    manager.store(KEY, {"version": 1})
    with pytest.raises(UnsupportedValueError, match="serializer='pickle'"):
        manager.store(KEY, {"version": object()})
    with pytest.raises(UnsupportedValueError, match="JSON cannot store"):
        manager.store(KEY, {"version": float("nan")})
    assert manager.load(KEY) == {"version": 1}


def test_serializer_is_validated() -> None:
    with pytest.raises(ValueError, match="serializer"):
        ObjectStoreIOManager("memory://x", serializer="yaml")  # type: ignore[arg-type]


# --- S3, against moto's server on 127.0.0.1 ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A bucket on a local S3-compatible server; yields the fsspec storage options."""
    from moto.server import ThreadedMotoServer

    # Fake credentials, so nothing can reach (or bill) a real account.
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        options = {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "key": "testing",
            "secret": "testing",
            "skip_instance_cache": True,
        }
        import s3fs

        s3fs.S3FileSystem(**options).mkdir("flowstone-test")
        yield options
    finally:
        server.stop()


def test_s3_round_trips_values_and_frames(s3: dict[str, Any]) -> None:
    values = ObjectStoreIOManager("s3://flowstone-test/values", storage_options=s3)
    values.store(KEY, {"n": 1})
    assert values.load(KEY) == {"n": 1}
    assert values.exists(KEY)

    tables = ParquetIOManager("s3://flowstone-test/tables", storage_options=s3)
    meta = tables.store(KEY, pandas_frame())
    assert meta is not None and meta["uri"] == "s3://flowstone-test/tables/orders/s%3Aeu.parquet"
    assert_same(pandas_frame(), tables.load(KEY))
    # Overwrite, then read back the new partition only.
    tables.store(KEY, pd.DataFrame({"n": [2]}))
    assert tables.load(KEY)["n"].tolist() == [2]
    tables.delete(KEY)
    assert not tables.exists(KEY)
    with pytest.raises(ValueNotFoundError):
        tables.load(KEY)
    import s3fs

    listing = s3fs.S3FileSystem(**s3).find("flowstone-test")
    assert listing == ["flowstone-test/values/orders/s%3Aeu.json"]
