"""A columnar I/O manager: one Parquet file per asset and partition, on any fsspec filesystem."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flowstone.errors import UnsupportedValueError, ValueNotFoundError
from flowstone.io.base import StorageKey
from flowstone.io.frames import (
    content_hash,
    describe,
    from_arrow,
    load_type,
    require_frame,
    stored_type,
    to_arrow,
)
from flowstone.io.location import DEFAULT_TEMPLATE, Location


class ParquetIOManager:
    """Stores pandas and polars DataFrames, polars LazyFrames and Arrow tables as Parquet.

    One file per partition, at ``root/<asset>/<partition>.parquet`` by default. The file is
    written in full first, then put in place whole (see :mod:`flowstone.io.location`): a
    failed write, or a value Parquet cannot hold, leaves the previous partition intact.

    A value loads back as the type the reading asset's parameter declares
    (``def report(orders: pl.DataFrame)``), else as the type it was stored as: the file
    remembers it in its schema metadata. A pandas index survives the round trip.

    Each store returns the file's ``uri``, ``bytes``, ``content_hash`` (sha256 of the file),
    ``rows``, ``columns``, ``schema`` and ``type``; FlowStone records them on the
    materialization (``flowstone history --json``).

    Args:
        root: Any fsspec URL or a local path (``"s3://bucket/tables"`` needs
            ``flowstone[s3]``).
        path_template: Where a value goes under ``root`` (fields ``{asset}``,
            ``{partition}``, ``{partition_value}``, ``{ext}``); default
            ``"{asset}/{partition}.{ext}"``.
        storage_options: Passed to fsspec (credentials, ``endpoint_url``...).
        compression: Parquet compression codec (``"snappy"``, ``"zstd"``, ``"none"``...).
        write_options: More keyword arguments for ``pyarrow.parquet.write_table``.

    Example::

        @fs.asset(io_manager="parquet")
        def orders() -> pd.DataFrame:
            return pd.DataFrame({"id": [1, 2], "amount": [9.5, 3.0]})

        pipeline = fs.Pipeline(
            [orders], io_managers={"parquet": fs.io.ParquetIOManager("data/tables")}
        )
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        path_template: str = DEFAULT_TEMPLATE,
        storage_options: Mapping[str, Any] | None = None,
        compression: str = "snappy",
        write_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.location = Location(
            root, template=path_template, ext="parquet", storage_options=storage_options
        )
        self.compression = compression
        self.write_options = dict(write_options or {})

    def path(self, key: StorageKey) -> str:
        """The path (within the filesystem) of ``key``'s Parquet file."""
        return self.location.path(key)

    def store(self, key: StorageKey, value: Any) -> Mapping[str, Any] | None:
        kind = require_frame(key, value, "ParquetIOManager")
        table = to_arrow(key, value, kind)  # first: it explains a missing pyarrow
        path = self.location.path(key)
        if self.location.is_local:
            # pyarrow writes the temporary file itself: no copy of the file through memory.
            size, digest = self.location.write_local(
                key, path, lambda tmp: self._write(key, value, table, tmp)
            )
        else:
            # Object stores take the file in one PUT, so it is built in memory first.
            data = self._write(key, value, table, None)
            self.location.write(key, path, data)
            size, digest = data.size, content_hash(data)
        return {
            "uri": self.location.url(path),
            "format": "parquet",
            "type": kind,
            "bytes": size,
            "content_hash": digest,
            **describe(table),
        }

    def _write(self, key: StorageKey, value: Any, table: Any, tmp: str | None) -> Any:
        """Write ``table`` as Parquet to the file ``tmp``, or to a buffer that is returned.

        A table Parquet rejects half-way raises before anything is put in place.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            sink = pa.BufferOutputStream() if tmp is None else pa.OSFile(tmp, "wb")
            with sink:
                pq.write_table(table, sink, compression=self.compression, **self.write_options)
                return sink.getvalue() if tmp is None else None
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise UnsupportedValueError(
                f"Parquet cannot store the {type(value).__name__} returned by asset "
                f"{key.asset!r}: {exc}. Cast the column to a type Parquet has.",
                asset=key.asset,
                partition=key.partition,
                value_type=type(value).__name__,
            ) from exc

    def load(self, key: StorageKey) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.location.path(key)
        if self.location.is_local:
            # pyarrow reads a local file itself, in parallel, without a copy through fsspec.
            from pyarrow import fs as pafs

            try:
                table = pq.read_table(path, filesystem=pafs.LocalFileSystem())
            except FileNotFoundError:
                raise ValueNotFoundError(
                    f"No stored value for asset {key.asset!r} partition "
                    f"{key.partition_key!r} (looked for {path}). Materialize it first.",
                    asset=key.asset,
                    partition=key.partition,
                ) from None
        else:
            table = pq.read_table(pa.BufferReader(self.location.read(key, path)))
        return from_arrow(table, load_type(key, stored_type(table.schema)))

    def exists(self, key: StorageKey) -> bool:
        return self.location.exists(self.location.path(key))

    def delete(self, key: StorageKey) -> None:
        self.location.delete(self.location.path(key))

    def __repr__(self) -> str:
        return f"ParquetIOManager({self.location.root!r})"
