"""Naming and checking the SQL tables that hold asset values (DuckDB, PostgreSQL).

Both database managers keep one table per asset and one catalog table that lists every stored
partition with its type:

- a DataFrame goes to a typed table: ``partition_key`` plus the frame's own columns;
- a plain value goes to ``(partition_key, value, updated_at)``, the value as JSON;
- the catalog ``flowstone_io_partitions`` has one row per stored (table, partition): its value
  type, the Arrow schema it was stored with (so it loads back exactly, pandas index included)
  and its row count. A partition with zero rows still exists, because its catalog row does.

A store writes the catalog row, deletes the partition's old rows and inserts the new ones in
one transaction, so readers see the old partition or the new one, never a mix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from flowstone.errors import InvalidIdentifierError, UnsupportedValueError
from flowstone.io.base import StorageKey

CATALOG_TABLE = "flowstone_io_partitions"
PARTITION_COLUMN = "partition_key"
#: The value type recorded in the catalog for a plain (JSON) value.
JSON_VALUE = "json"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# PostgreSQL cuts longer names to 63 bytes, which could make two columns one.
_MAX_COLUMN_BYTES = 63


def identifier(name: str, *, what: str) -> str:
    """``name`` if it is a plain SQL identifier, else :class:`InvalidIdentifierError`.

    Example:
        >>> identifier("daily_orders", what="table")
        'daily_orders'
    """
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InvalidIdentifierError(str(name), what=what)
    return name


def quote(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (valid in DuckDB and PostgreSQL)."""
    return '"' + name.replace('"', '""') + '"'


class TableNames:
    """Which table holds each asset: the asset's own name unless ``tables`` says otherwise.

    Every name is checked when it is first needed; names given in ``tables`` are checked when
    the manager is built.
    """

    def __init__(self, tables: Mapping[str, str] | None) -> None:
        self._tables = {asset: identifier(t, what="Table") for asset, t in (tables or {}).items()}

    def for_asset(self, asset: str) -> str:
        """The table name for ``asset``."""
        return self._tables.get(asset) or identifier(asset, what=f"Table for asset {asset!r}")


def frame_columns(key: StorageKey, schema: Any) -> list[str]:
    """The column names of a frame's Arrow schema, or a clear error when a table cannot
    hold them (a name used twice, too long, empty, or the reserved ``partition_key``)."""
    names = [field.name for field in schema]
    problem = None
    seen: set[str] = set()
    for name in names:
        if name == PARTITION_COLUMN:
            problem = f"a column is named {PARTITION_COLUMN!r}, which holds the partition"
        elif not name or "\x00" in name or len(name.encode()) > _MAX_COLUMN_BYTES:
            problem = f"column name {name!r} is empty, has a NUL or is longer than 63 bytes"
        elif name in seen:
            problem = f"column {name!r} appears twice"
        seen.add(name)
        if problem:
            raise UnsupportedValueError(
                f"Asset {key.asset!r} returned a table that a database table cannot hold: "
                f"{problem}. Rename the column(s).",
                asset=key.asset,
                partition=key.partition,
                value_type="table",
            )
    return names


def same_columns(existing: Sequence[tuple[str, str]], wanted: Sequence[tuple[str, str]]) -> bool:
    """Whether two column lists match by name and (case-insensitive) type, in order."""
    return [(n, t.lower()) for n, t in existing] == [(n, t.lower()) for n, t in wanted]
