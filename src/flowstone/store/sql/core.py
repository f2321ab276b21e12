"""The shared part of the SQL store: its engines and the statements every concept uses, built
once per store (SQLAlchemy caches their compiled form).

Each concept of :class:`~flowstone.store.sql.SQLStore` (reads, lineage, schedules, approvals,
backfills) is a class on top of :class:`SQLStoreCore`, and the store inherits them all: one
object, one set of statements, each concept's queries in a module of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from flowstone.records import AuditEvent
from flowstone.store.schema import audit_log, lineage, materializations, runs
from flowstone.store.sql.engine import _reader
from flowstone.store.sql.rows import _MAT_COLUMNS, _MAT_FIXED, _RUN_COLUMNS, _audit_params

#: Bound parameters per IN list: well under SQLite's limit of 32,766 per statement.
_IN_BATCH = 5_000


def _batches(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``values`` in slices of at most _IN_BATCH, one per statement."""
    for start in range(0, len(values), _IN_BATCH):
        yield values[start : start + _IN_BATCH]


class SQLStoreCore:
    """What every part of :class:`~flowstone.store.sql.SQLStore` shares: its engines, its
    dialect, the lock of an in-memory SQLite database, and the statements of runs,
    materializations, lineage and audit, built once for its dialect."""

    def __init__(self, engine: sa.Engine) -> None:
        self.url = engine.url.render_as_string(hide_password=True)
        self._engine = engine
        self._read = _reader(engine)
        self._dialect = engine.dialect.name
        # An in-memory SQLite database is one shared connection: calls take turns on it.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(engine.pool, sa.StaticPool) else nullcontext()
        )

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tools and tests; FlowStone itself goes through methods)."""
        return self._engine

    def _write_audit(self, conn: sa.Connection, audit: Sequence[AuditEvent]) -> None:
        """Append ``audit`` in the caller's transaction (events belong with the write that
        caused them)."""
        if audit:
            conn.execute(self._insert_audit, [_audit_params(e) for e in audit])

    def _text_order(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # Byte order, as Python sorts str, whatever the PostgreSQL database's collation.
        return column.collate("C") if self._dialect == "postgresql" else column

    # --- statements (built once; SQLAlchemy caches their compiled form) --------------------
    def _build_statements(self) -> None:
        m, r, e, a = materializations, runs, lineage, audit_log
        pg = self._dialect == "postgresql"

        def text_order(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
            # Byte order, as Python sorts str, whatever the PostgreSQL database's collation.
            return column.collate("C") if pg else column

        # Upserts. PostgreSQL fills seq from its identity column; on SQLite the INSERT computes
        # it, which is race-free because SQLite writers hold the write lock (BEGIN IMMEDIATE).
        # seq is never in the SET list, so a replaced record keeps its place in creation order.
        def upsert(table: sa.Table, update: Sequence[str], fixed: Sequence[str] = ()) -> sa.Insert:
            insert = postgresql.insert(table) if pg else sqlite.insert(table)
            if not pg:
                next_seq = sa.select(sa.func.coalesce(sa.func.max(table.c.seq), 0) + 1)
                insert = insert.values(seq=next_seq.scalar_subquery())
            # Columns in `fixed` are compared, not set: a row whose fixed columns differ is left
            # alone and the statement reports 0 rows, which the caller turns into an error.
            # Leaving them out of SET also spares SQLite from rewriting the indexes on them.
            same = [table.c[name] == insert.excluded[name] for name in fixed]
            return insert.on_conflict_do_update(
                index_elements=[table.c.id],
                set_={name: insert.excluded[name] for name in update},
                where=sa.and_(*same) if same else None,
            ).execution_options(preserve_rowcount=True)  # drivers may drop it for INSERTs

        self._upsert_mat = upsert(
            m,
            [c.name for c in _MAT_COLUMNS if c.name not in ("id", *_MAT_FIXED)],
            _MAT_FIXED,
        )
        self._upsert_mat_returning = self._upsert_mat.returning(m.c.id)
        self._upsert_run = upsert(r, [c.name for c in _RUN_COLUMNS if c.name != "id"])
        self._update_run = upsert(r, ["status", "completed_at"])
        self._insert_edge = e.insert()
        self._insert_audit = a.insert()

        # Point reads.
        newest_first = (m.c.created_at.desc(), m.c.seq.desc())
        self._get_run = sa.select(*_RUN_COLUMNS).where(r.c.id == sa.bindparam("id"))
        self._list_runs = (
            sa.select(*_RUN_COLUMNS)
            .order_by(r.c.created_at.desc(), r.c.seq.desc())
            .limit(sa.bindparam("limit", type_=sa.Integer))
        )
        self._get_mat = sa.select(*_MAT_COLUMNS).where(m.c.id == sa.bindparam("id"))
        same_key = (
            m.c.asset == sa.bindparam("asset"),
            m.c.partition_key == sa.bindparam("partition_key"),
        )
        self._latest_mat = (
            sa.select(*_MAT_COLUMNS).where(*same_key).order_by(*newest_first).limit(1)
        )
        self._latest_mat_with_status = self._latest_mat.where(m.c.status == sa.bindparam("status"))

        def latest_per_partition(*where: sa.ColumnElement[bool]) -> sa.Select[Any]:
            rank = sa.func.row_number().over(
                partition_by=(m.c.asset, m.c.partition_key), order_by=newest_first
            )
            ranked = sa.select(*_MAT_COLUMNS, rank.label("rank")).where(*where).subquery()
            return (
                sa.select(*(ranked.c[c.name] for c in _MAT_COLUMNS))
                .where(ranked.c.rank == 1)
                .order_by(text_order(ranked.c.asset), text_order(ranked.c.partition_key))
            )

        self._latest_per_partition = latest_per_partition()
        self._latest_per_partition_of = latest_per_partition(
            m.c.asset.in_(sa.bindparam("assets", expanding=True))
        )
        # Several partitions of one asset (the windows a partition mapping reads).
        of_keys = (
            m.c.asset == sa.bindparam("asset"),
            m.c.partition_key.in_(sa.bindparam("keys", expanding=True)),
        )
        self._latest_of_keys = latest_per_partition(*of_keys)
        self._latest_of_keys_with_status = latest_per_partition(
            *of_keys, m.c.status == sa.bindparam("status")
        )
