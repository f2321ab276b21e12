"""An I/O manager that keeps each asset in a PostgreSQL table.

Plain values are JSONB rows ``(partition_key, value, updated_at)``, upserted per partition.
DataFrames go to a real typed table (``partition_key`` plus the frame's columns, types mapped
from Arrow), written with ``COPY``: storing a partition deletes its old rows and copies the new
ones in one transaction. Layout and catalog: :mod:`flowstone.io.tables`.

Every query of this manager is in this module. It talks to PostgreSQL through psycopg 3 (for
``COPY``), with SQLAlchemy's connection pool, both imported on first use. Tables are created
on first use under a transaction-scoped advisory lock, because two transactions running
``CREATE TABLE IF NOT EXISTS`` at once can both try to create it and one fails.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from flowstone.errors import IOManagerError, TableSchemaError, ValueNotFoundError
from flowstone.io.base import StorageKey
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
from flowstone.io.pg_types import copy_csv, pg_columns, read_copy_csv
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

_JSON_COLUMNS = [("value", "jsonb"), ("updated_at", "timestamp with time zone")]
_COPY_CHUNK = 1 << 20


class PostgresIOManager:
    """Stores JSON values and DataFrames (pandas, polars, Arrow) in PostgreSQL tables.

    One table per asset, named after it (or as ``tables`` says), created on first use; a
    partition is replaced in one transaction, so 8 partitions written at once never conflict.
    JSONB keeps values, not formatting: object keys come back in JSONB's order.

    Install with ``pip install 'flowstone[postgres]'``.

    Args:
        url: ``postgresql+psycopg://user:password@host:5432/db`` (``postgresql://`` works too).
        schema: The schema for the tables (created if missing); default: the connection's
            ``search_path``.
        tables: Table names by asset name, for assets whose names are not SQL identifiers.
        engine_options: Passed to :func:`sqlalchemy.create_engine` (``pool_size``...).

    Example::

        io = fs.io.PostgresIOManager("postgresql+psycopg://app@db/warehouse", schema="assets")
        pipeline = fs.Pipeline(assets, io_managers={"warehouse": io})
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        tables: Mapping[str, str] | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = _psycopg_url(url)
        self.schema = None if schema is None else identifier(schema, what="Schema")
        self.tables = TableNames(tables)
        self._engine_options = dict(engine_options or {})
        self._engine: Any = None
        self._lock = threading.Lock()

    # --- the protocol ------------------------------------------------------------------------
    def store(self, key: StorageKey, value: Any) -> Mapping[str, Any] | None:
        name = self.tables.for_asset(key.asset)
        kind = frame_type(value)
        if kind is None:
            text = dump_json(key, value)
            with self._transaction(key) as cur:
                self._prepare(cur, key, name, _JSON_COLUMNS, None)
                self._catalog(cur, name=name, key=key, kind=JSON_VALUE, schema=None, rows=None)
                cur.execute(
                    self._sql(
                        "INSERT INTO {t} ({p}, value, updated_at) VALUES (%s, %s::jsonb, now()) "
                        "ON CONFLICT ({p}) DO UPDATE SET value = EXCLUDED.value, "
                        "updated_at = EXCLUDED.updated_at",
                        name,
                    ),
                    [key.partition_key, text],
                )
            data = text.encode()
            return {
                "table": self._display(name),
                "format": "jsonb",
                "bytes": len(data),
                "content_hash": content_hash(data),
            }
        table = to_arrow(key, value, kind)
        columns = pg_columns(key, table.schema, frame_columns(key, table.schema))
        payload = copy_csv(key, table)
        with self._transaction(key) as cur:
            self._prepare(cur, key, name, columns, table.schema)
            # The catalog row first: its row lock makes a second writer of the same partition
            # wait here, so its DELETE then sees (and removes) the rows this one copies.
            self._catalog(
                cur, name=name, key=key, kind=kind, schema=table.schema, rows=table.num_rows
            )
            cur.execute(self._sql("DELETE FROM {t} WHERE {p} = %s", name), [key.partition_key])
            names = ", ".join(quote(n) for n in (PARTITION_COLUMN, *table.schema.names))
            with cur.copy(self._sql(f"COPY {{t}} ({names}) FROM STDIN (FORMAT csv)", name)) as copy:
                view = memoryview(payload)
                for start in range(0, len(view), _COPY_CHUNK):
                    copy.write(view[start : start + _COPY_CHUNK])
        return {
            "table": self._display(name),
            "format": "postgres",
            "type": kind,
            "bytes": len(payload),
            "content_hash": content_hash(payload),
            **describe(table),
        }

    def load(self, key: StorageKey) -> Any:
        name = self.tables.for_asset(key.asset)
        with self._transaction(key) as cur:
            entry = self._entry(cur, name, key.partition_key)
            if entry is None:
                raise ValueNotFoundError(
                    f"No stored value for asset {key.asset!r} partition {key.partition_key!r} "
                    f"in {self._display(name)}. Materialize it first.",
                    asset=key.asset,
                    partition=key.partition,
                )
            kind, schema_text = entry
            if kind == JSON_VALUE:
                cur.execute(
                    self._sql("SELECT value::text FROM {t} WHERE {p} = %s", name),
                    [key.partition_key],
                )
                row = cur.fetchone()
                return json.loads(row[0])
            schema = schema_from_json(schema_text)
            # Text output of timestamptz follows the session time zone; UTC parses exactly.
            cur.execute("SET LOCAL TimeZone = 'UTC'")
            from psycopg import sql

            names = ", ".join(quote(n) for n in schema.names) or "NULL"
            query = self._sql(
                f"COPY (SELECT {names} FROM {{t}} WHERE {{p}} = {{key}}) TO STDOUT (FORMAT csv)",
                name,
                key=sql.Literal(key.partition_key),
            )
            chunks = []
            with cur.copy(query) as copy:
                chunks = [bytes(chunk) for chunk in copy]
        table = read_copy_csv(b"".join(chunks), schema)
        return from_arrow(table, load_type(key, kind))  # type: ignore[arg-type]

    def exists(self, key: StorageKey) -> bool:
        with self._transaction(key) as cur:
            return self._entry(cur, self.tables.for_asset(key.asset), key.partition_key) is not None

    def delete(self, key: StorageKey) -> None:
        name = self.tables.for_asset(key.asset)
        with self._transaction(key) as cur:
            if self._entry(cur, name, key.partition_key) is None:
                return
            cur.execute(self._sql("DELETE FROM {t} WHERE {p} = %s", name), [key.partition_key])
            cur.execute(
                self._sql("DELETE FROM {t} WHERE table_name = %s AND {p} = %s", CATALOG_TABLE),
                [name, key.partition_key],
            )

    def close(self) -> None:
        """Close the pooled connections (the manager reconnects if used again)."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    # --- connections -------------------------------------------------------------------------
    def _get_engine(self) -> Any:
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    import sqlalchemy as sa

                    options = {"pool_pre_ping": True, **self._engine_options}
                    self._engine = sa.create_engine(self.url, **options)
        return self._engine

    @contextlib.contextmanager
    def _transaction(self, key: StorageKey) -> Iterator[Any]:
        """A psycopg cursor in a transaction, committed on success; driver errors wrapped."""
        import psycopg
        import sqlalchemy as sa

        try:
            raw = self._get_engine().raw_connection()
        except sa.exc.SQLAlchemyError as exc:
            raise IOManagerError(
                f"Cannot connect to PostgreSQL for asset {key.asset!r}: "
                f"{str(exc).splitlines()[0]}. Check the URL and that the server is up.",
                asset=key.asset,
                partition=key.partition,
            ) from exc
        try:
            conn = raw.driver_connection
            try:
                with conn.cursor() as cur:
                    yield cur
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        except psycopg.Error as exc:
            raise IOManagerError(
                f"PostgreSQL failed for asset {key.asset!r} partition {key.partition_key!r}: "
                f"{str(exc).strip()}. Nothing was changed (the transaction rolled back).",
                asset=key.asset,
                partition=key.partition,
            ) from exc
        finally:
            raw.close()

    # --- tables ------------------------------------------------------------------------------
    def _prepare(
        self,
        cur: Any,
        key: StorageKey,
        name: str,
        columns: list[tuple[str, str]],
        frame_schema: Any,
    ) -> None:
        """Create the schema, catalog and asset table if missing; check the table's columns."""
        existing = self._columns(cur, name)
        if not existing or not self._columns(cur, CATALOG_TABLE):
            self._create(cur, name, columns, json_table=frame_schema is None)
            existing = self._columns(cur, name)
        if existing[:1] != [(PARTITION_COLUMN, "text")] or not same_columns(existing[1:], columns):
            raise TableSchemaError(
                asset=key.asset,
                partition=key.partition,
                table=self._display(name),
                expected=existing[1:],
                got=columns,
            )

    def _create(
        self, cur: Any, name: str, columns: list[tuple[str, str]], *, json_table: bool
    ) -> None:
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"flowstone.io:{self.schema}.{name}"]
        )
        if self.schema is not None:
            cur.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}", name))
        cur.execute(
            self._sql(
                "CREATE TABLE IF NOT EXISTS {t} (table_name text NOT NULL, {p} text NOT NULL, "
                "value_type text NOT NULL, arrow_schema text, rows bigint, "
                "updated_at timestamp with time zone NOT NULL, PRIMARY KEY (table_name, {p}))",
                CATALOG_TABLE,
            )
        )
        if json_table:
            ddl = (
                "CREATE TABLE IF NOT EXISTS {t} ({p} text PRIMARY KEY, value jsonb NOT NULL, "
                "updated_at timestamp with time zone NOT NULL DEFAULT now())"
            )
            cur.execute(self._sql(ddl, name))
            return
        body = ", ".join(f"{quote(column)} {kind}" for column, kind in columns)
        cur.execute(
            self._sql(f"CREATE TABLE IF NOT EXISTS {{t}} ({{p}} text NOT NULL, {body})", name)
        )
        import hashlib

        # Index names share the schema's namespace and 63 bytes: a hash keeps them unique.
        index = f"{name[:40]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}_partition"
        cur.execute(self._sql("CREATE INDEX IF NOT EXISTS {i} ON {t} ({p})", name, i=_ident(index)))

    def _columns(self, cur: Any, name: str) -> list[tuple[str, str]]:
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            [self._regclass(name)],
        )
        return [(str(column), str(kind)) for column, kind in cur.fetchall()]

    def _catalog(
        self, cur: Any, *, name: str, key: StorageKey, kind: str, schema: Any, rows: int | None
    ) -> None:
        cur.execute(
            self._sql(
                "INSERT INTO {t} (table_name, {p}, value_type, arrow_schema, rows, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (table_name, {p}) DO UPDATE SET "
                "value_type = EXCLUDED.value_type, arrow_schema = EXCLUDED.arrow_schema, "
                "rows = EXCLUDED.rows, updated_at = EXCLUDED.updated_at",
                CATALOG_TABLE,
            ),
            [
                name,
                key.partition_key,
                kind,
                None if schema is None else schema_to_json(schema),
                rows,
            ],
        )

    def _entry(self, cur: Any, name: str, partition_key: str) -> tuple[str, str] | None:
        """The catalog's (value type, Arrow schema) for a partition, or None."""
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", [self._regclass(CATALOG_TABLE)])
        if not cur.fetchone()[0]:
            return None
        cur.execute(
            self._sql(
                "SELECT value_type, arrow_schema FROM {t} WHERE table_name = %s AND {p} = %s",
                CATALOG_TABLE,
            ),
            [name, partition_key],
        )
        row = cur.fetchone()
        return None if row is None else (str(row[0]), row[1])

    # --- names -------------------------------------------------------------------------------
    def _sql(self, template: str, table: str, **more: Any) -> Any:
        """``template`` with ``{t}`` (the schema-qualified table), ``{s}`` and ``{p}`` quoted."""
        from psycopg import sql

        qualified = sql.Identifier(self.schema, table) if self.schema else sql.Identifier(table)
        return sql.SQL(template).format(
            t=qualified,
            s=sql.Identifier(self.schema or "public"),
            p=sql.Identifier(PARTITION_COLUMN),
            **more,
        )

    def _regclass(self, name: str) -> str:
        return f"{quote(self.schema)}.{quote(name)}" if self.schema else quote(name)

    def _display(self, name: str) -> str:
        return f"{self.schema}.{name}" if self.schema else name

    def __repr__(self) -> str:
        return f"PostgresIOManager(schema={self.schema!r})"


def _ident(name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(name)


def _psycopg_url(url: str) -> str:
    """``url`` with the psycopg 3 driver, which ``COPY`` needs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if not url.startswith("postgresql+psycopg://"):
        raise ValueError(
            f"PostgresIOManager needs a PostgreSQL URL with the psycopg driver, like "
            f"'postgresql+psycopg://user@host:5432/db'; got {url.partition(':')[0]!r}."
        )
    return url
