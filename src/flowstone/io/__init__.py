"""I/O managers: where asset values are stored and loaded from.

The protocol is four methods over a :class:`StorageKey`. Two implementations ship here: memory
(tests, throwaway runs) and local files (the embedded default, written atomically). A pipeline
names its managers, picks a default, and an asset or a call can choose another by name.

For real data (issue 7): :class:`ParquetIOManager` (DataFrames as Parquet on any fsspec URL),
:class:`ObjectStoreIOManager` (JSON values on any fsspec URL), :class:`PostgresIOManager` and
:class:`DuckDBIOManager` (a table per asset). They import pyarrow, fsspec, psycopg or duckdb only
when first used; install them with the extras ``flowstone[parquet]``, ``[polars]``, ``[s3]``,
``[postgres]``, ``[duckdb]``.
"""

from __future__ import annotations

from flowstone.io.base import IOManager, StorageKey

# --- I/O managers for real data (issue 7) ---
from flowstone.io.duckdb import DuckDBIOManager
from flowstone.io.filesystem import FilesystemIOManager
from flowstone.io.memory import MemoryIOManager
from flowstone.io.object_store import ObjectStoreIOManager
from flowstone.io.parquet import ParquetIOManager
from flowstone.io.postgres import PostgresIOManager

__all__ = [
    "DuckDBIOManager",
    "FilesystemIOManager",
    "IOManager",
    "MemoryIOManager",
    "ObjectStoreIOManager",
    "ParquetIOManager",
    "PostgresIOManager",
    "StorageKey",
]
