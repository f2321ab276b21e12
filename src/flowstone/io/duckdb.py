"""An I/O manager that keeps each asset in a table of a DuckDB file.

DuckDB lets one process at a time open a file for writing; a second one fails with
"Could not set lock on file". So every operation here takes an exclusive lock on a sidecar
file (``<database>.lock``) first, opens the database, does its work in one transaction and
closes it. Threads of one process and separate processes (workers, a CLI, a notebook going
through this manager) therefore queue instead of failing, and parallel partitions never see
the error.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flowstone.errors import IOManagerError, TableSchemaError, ValueNotFoundError
from flowstone.io.base import StorageKey
from flowstone.io.filelock import file_lock
from flowstone.io.frames import (
    content_hash,
    describe,
    frame_type,
    from_arrow,
    load_type,
    schema_from_json,
    schema_to_json,
    to_arrow,
)
from flowstone.io.serialization import dump_json
from flowstone.io.tables import (
    CATALOG_TABLE,
    JSON_VALUE,
    PARTITION_COLUMN,
    TableNames,
    frame_columns,
    identifier,
    quote,
    same_columns,
)

_JSON_COLUMNS = [("value", "VARCHAR"), ("updated_at", "TIMESTAMP WITH TIME ZONE")]


class DuckDBIOManager:
    """Stores DataFrames (pandas, polars, Arrow) and JSON values in a DuckDB file.

    Each asset gets a table (named after it, or as ``tables`` says) with a ``partition_key``
    column; storing a partition replaces exactly its rows in one transaction. Plain values go
    to ``(partition_key, value, updated_at)`` as JSON text. Values load back as the type the
    reading asset declares, else as stored (see :mod:`flowstone.io.tables`).

    Install with ``pip install 'flowstone[duckdb]'``.

    Args:
        database: The DuckDB file (created on first store).
        schema: The DuckDB schema for the tables (created if missing).
        tables: Table names by asset name, for assets whose names are not SQL identifiers
            (``{"daily-orders": "daily_orders"}``).
        lock_timeout: Seconds to wait for another process's lock before failing.

    Example::

        io = fs.io.DuckDBIOManager("warehouse.duckdb")
        pipeline = fs.Pipeline(assets, io_managers={"duckdb": io})
        # later: duckdb.connect("warehouse.duckdb").sql("SELECT * FROM daily_orders")
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        schema: str = "main",
        tables: Mapping[str, str] | None = None,
        lock_timeout: float = 60.0,
    ) -> None:
        self.database = Path(database)
        self.schema = identifier(schema, what="Schema")
        self.tables = TableNames(tables)
        self.lock_timeout = lock_timeout
        # Serializes this process's threads before they contend for the file lock.
        self._thread_lock = threading.Lock()

    # --- the protocol ------------------------------------------------------------------------
    def store(self, key: StorageKey, value: Any) -> Mapping[str, Any] | None:
        kind = frame_type(value)
        table_name = self.tables.for_asset(key.asset)
        if kind is None:
            text = dump_json(key, value)
            with self._transaction(key) as con:
                self._prepare(con, key, table_name, _JSON_COLUMNS, json_table=True)
                self._catalog(
                    con, key=key, table_name=table_name, kind=JSON_VALUE, schema=None, rows=None
                )
                con.execute(
                    f"INSERT OR REPLACE INTO {self._qualified(table_name)} "
                    "VALUES (?, ?, current_timestamp)",
                    [key.partition_key, text],
                ).fetchall()
            data = text.encode()
            return {
                "table": self._display(table_name),
                "bytes": len(data),
                "content_hash": content_hash(data),
                "format": "json",
            }
        table = to_arrow(key, value, kind)
        frame_columns(key, table.schema)
        with self._transaction(key) as con:
            con.register("flowstone_incoming", table)
            try:
                wanted = [
                    (str(row[0]), str(row[1]))
                    for row in con.execute("DESCRIBE SELECT * FROM flowstone_incoming").fetchall()
                ]
                self._prepare(con, key, table_name, wanted, json_table=False)
                self._catalog(
                    con,
                    key=key,
                    table_name=table_name,
                    kind=kind,
                    schema=table.schema,
                    rows=table.num_rows,
                )
                target = self._qualified(table_name)
                con.execute(
                    f"DELETE FROM {target} WHERE {PARTITION_COLUMN} = ?", [key.partition_key]
                ).fetchall()
                con.execute(
                    f"INSERT INTO {target} SELECT ?, * FROM flowstone_incoming",
                    [key.partition_key],
                ).fetchall()
            finally:
                con.unregister("flowstone_incoming")
        return {
            "table": self._display(table_name),
            "format": "duckdb",
            "type": kind,
            "content_hash": _arrow_hash(table),
            **describe(table),
        }

    def load(self, key: StorageKey) -> Any:
        table_name = self.tables.for_asset(key.asset)
        with self._transaction(key) as con:
            entry = self._entry(con, table_name, key.partition_key)
            if entry is None:
                raise self._not_found(key, table_name)
            kind, schema_text = entry
            target = self._qualified(table_name)
            if kind == JSON_VALUE:
                row = con.execute(
                    f"SELECT value FROM {target} WHERE {PARTITION_COLUMN} = ?",
                    [key.partition_key],
                ).fetchall()
                return json.loads(row[0][0])
            result = con.sql(
                f"SELECT * EXCLUDE ({PARTITION_COLUMN}) FROM {target} WHERE {PARTITION_COLUMN} = ?",
                params=[key.partition_key],
            ).to_arrow_table()
        table = _restore(result, schema_from_json(schema_text))
        return from_arrow(table, load_type(key, kind))  # type: ignore[arg-type]

    def exists(self, key: StorageKey) -> bool:
        if not self.database.exists():
            return False
        with self._transaction(key) as con:
            found = self._entry(con, self.tables.for_asset(key.asset), key.partition_key)
        return found is not None

    def delete(self, key: StorageKey) -> None:
        if not self.database.exists():
            return
        table_name = self.tables.for_asset(key.asset)
        with self._transaction(key) as con:
            if self._entry(con, table_name, key.partition_key) is None:
                return
            con.execute(
                f"DELETE FROM {self._qualified(table_name)} WHERE {PARTITION_COLUMN} = ?",
                [key.partition_key],
            ).fetchall()
            con.execute(
                f"DELETE FROM {self._qualified(CATALOG_TABLE)} "
                f"WHERE table_name = ? AND {PARTITION_COLUMN} = ?",
                [table_name, key.partition_key],
            ).fetchall()

    # --- SQL ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self, key: StorageKey) -> Iterator[Any]:
        """A connection in a transaction, under the file lock; DuckDB errors wrapped."""
        try:
            import duckdb
        except ImportError as exc:
            raise IOManagerError(
                "DuckDBIOManager needs duckdb: pip install 'flowstone[duckdb]'.",
                asset=key.asset,
                partition=key.partition,
            ) from exc
        with self._thread_lock, file_lock(key, self._lock_path(), self.lock_timeout):
            try:
                self.database.parent.mkdir(parents=True, exist_ok=True)
                con = duckdb.connect(str(self.database))
                try:
                    con.execute("BEGIN TRANSACTION").fetchall()
                    try:
                        yield con
                    except BaseException:
                        with contextlib.suppress(duckdb.Error):  # keep the first error
                            con.execute("ROLLBACK").fetchall()
                        raise
                    con.execute("COMMIT").fetchall()
                finally:
                    con.close()
            except duckdb.Error as exc:
                raise IOManagerError(
                    f"DuckDB failed for asset {key.asset!r} partition {key.partition_key!r} in "
                    f"{self.database}: {exc}. Nothing was changed (the transaction rolled back).",
                    asset=key.asset,
                    partition=key.partition,
                ) from exc

    def _prepare(
        self,
        con: Any,
        key: StorageKey,
        table_name: str,
        columns: list[tuple[str, str]],
        *,
        json_table: bool,
    ) -> None:
        """Create the schema, catalog and asset table if missing; check the table's columns."""
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema)}").fetchall()
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {self._qualified(CATALOG_TABLE)} ("
            f"table_name VARCHAR NOT NULL, {PARTITION_COLUMN} VARCHAR NOT NULL, "
            "value_type VARCHAR NOT NULL, arrow_schema VARCHAR, rows BIGINT, "
            "updated_at TIMESTAMP WITH TIME ZONE NOT NULL, "
            f"PRIMARY KEY (table_name, {PARTITION_COLUMN}))"
        ).fetchall()
        existing = [
            (str(name), str(kind))
            for name, kind in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [self.schema, table_name],
            ).fetchall()
        ]
        target = self._qualified(table_name)
        if not existing:
            if json_table:
                con.execute(
                    f"CREATE TABLE {target} ({PARTITION_COLUMN} VARCHAR PRIMARY KEY, "
                    "value VARCHAR NOT NULL, updated_at TIMESTAMP WITH TIME ZONE NOT NULL)"
                ).fetchall()
            else:
                con.execute(
                    f"CREATE TABLE {target} AS SELECT CAST(NULL AS VARCHAR) AS "
                    f"{PARTITION_COLUMN}, * FROM flowstone_incoming LIMIT 0"
                ).fetchall()
            return
        if existing[:1] != [(PARTITION_COLUMN, "VARCHAR")] or not same_columns(
            existing[1:], columns
        ):
            raise TableSchemaError(
                asset=key.asset,
                partition=key.partition,
                table=self._display(table_name),
                expected=existing[1:],
                got=columns,
            )

    def _catalog(
        self,
        con: Any,
        *,
        key: StorageKey,
        table_name: str,
        kind: str,
        schema: Any,
        rows: int | None,
    ) -> None:
        con.execute(
            f"INSERT OR REPLACE INTO {self._qualified(CATALOG_TABLE)} "
            "VALUES (?, ?, ?, ?, ?, current_timestamp)",
            [
                table_name,
                key.partition_key,
                kind,
                None if schema is None else schema_to_json(schema),
                rows,
            ],
        ).fetchall()

    def _entry(self, con: Any, table_name: str, partition_key: str) -> tuple[str, str] | None:
        """The catalog's (value type, Arrow schema) for a partition, or None."""
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [self.schema, CATALOG_TABLE],
        ).fetchall()[0][0]
        if not exists:
            return None
        rows = con.execute(
            f"SELECT value_type, arrow_schema FROM {self._qualified(CATALOG_TABLE)} "
            f"WHERE table_name = ? AND {PARTITION_COLUMN} = ?",
            [table_name, partition_key],
        ).fetchall()
        return (str(rows[0][0]), rows[0][1]) if rows else None

    # --- helpers -----------------------------------------------------------------------------
    def _qualified(self, table_name: str) -> str:
        return f"{quote(self.schema)}.{quote(table_name)}"

    def _display(self, table_name: str) -> str:
        return f"{self.database}:{self.schema}.{table_name}"

    def _lock_path(self) -> Path:
        return self.database.with_name(self.database.name + ".lock")

    def _not_found(self, key: StorageKey, table_name: str) -> ValueNotFoundError:
        return ValueNotFoundError(
            f"No stored value for asset {key.asset!r} partition {key.partition_key!r} in "
            f"{self._display(table_name)}. Materialize it first.",
            asset=key.asset,
            partition=key.partition,
        )

    def __repr__(self) -> str:
        return f"DuckDBIOManager({str(self.database)!r}, schema={self.schema!r})"


def _restore(table: Any, schema: Any) -> Any:
    """``table`` with the stored Arrow types and metadata (pandas index, exact types)."""
    import pyarrow as pa

    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        # DuckDB gave a type Arrow cannot cast back (rare): keep its types, restore metadata.
        return table.replace_schema_metadata(schema.metadata)


def _arrow_hash(table: Any) -> str:
    """sha256 of the table's Arrow IPC stream: what was written, independent of DuckDB."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return content_hash(sink.getvalue())
