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

import importlib
from typing import TYPE_CHECKING, Any

from flowstone.io.base import IOManager, StorageKey
from flowstone.io.filesystem import FilesystemIOManager
from flowstone.io.memory import MemoryIOManager

if TYPE_CHECKING:  # for type checkers only: at run time they load on first access, below
    from flowstone.io.duckdb import DuckDBIOManager
    from flowstone.io.object_store import ObjectStoreIOManager
    from flowstone.io.parquet import ParquetIOManager
    from flowstone.io.postgres import PostgresIOManager

# The managers for real data load on first access (PEP 562), so `import flowstone` does not pay
# for modules that most pipelines never use.
_LAZY = {
    "DuckDBIOManager": "flowstone.io.duckdb",
    "ObjectStoreIOManager": "flowstone.io.object_store",
    "ParquetIOManager": "flowstone.io.parquet",
    "PostgresIOManager": "flowstone.io.postgres",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowstone.io' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
