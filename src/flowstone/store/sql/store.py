"""The SQL metadata store: :class:`SQLStore`, SQLAlchemy Core over SQLite or PostgreSQL, one schema
for both.

This module opens the store (engine, schema check, statements) and holds its hot writes: a run
with its pending steps, each status change with its lineage and audit. On SQLite they skip
SQLAlchemy's execution layer (:mod:`flowstone.store.direct`); a distributed worker's steps on
PostgreSQL go through a step session (:mod:`flowstone.store.sql.step_sessions`). The store's
other queries are in one module per concept, each a class the store inherits.

Speed: statements are built once per store and SQLAlchemy caches their compiled form, every
call is one ``engine.begin()``, and an upsert never reads first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from flowstone.errors import StoreError, StoreUnavailableError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
)
from flowstone.store import migrate
from flowstone.store.base import RunTransaction, StepClaim, T
from flowstone.store.direct import DirectWriter, prepare
from flowstone.store.direct_pg import PgConnection, PgSessions
from flowstone.store.schema import VERSION_TABLE, audit_log, lineage
from flowstone.store.sql.approvals import ApprovalQueries
from flowstone.store.sql.backfills import BackfillQueries
from flowstone.store.sql.engine import DEFAULT_BUSY_TIMEOUT_MS, create_engine
from flowstone.store.sql.errors import _detail, _identity_error, _wraps_errors
from flowstone.store.sql.lineage import LineageQueries
from flowstone.store.sql.reads import RunReads
from flowstone.store.sql.rows import (
    _MAT_COLUMNS,
    _RUN_COLUMNS,
    _audit_params,
    _edge_params,
    _mat_params,
    _run_params,
)
from flowstone.store.sql.schedules import ScheduleQueries
from flowstone.store.sql.step_sessions import _pg_error, _PgStatements
from flowstone.store.sql.transaction import _LOCK_RUN, _NO_FLUSH, _SQLRunTransaction

log = logging.getLogger("flowstone.store")

#: Rows a table must gain in one go before :meth:`SQLStore.refresh_statistics` analyzes it.
ANALYZE_MIN_ROWS = 500

#: Each named table that exists: the rows its statistics count (never analyzed: 0), and
#: whether this role may ANALYZE it; otherwise PostgreSQL skips it with a mere warning. Through
#: PostgreSQL 16 the table's owner and the database's owner may (superusers too: they have
#: every role); from 17, also a role with the MAINTAIN privilege (see _MAINTAIN).
_COUNTED_ROWS = (
    "SELECT name, greatest(reltuples, 0), pg_has_role(relowner, 'USAGE')"
    " OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()),"
    " 'USAGE'){maintain}"
    " FROM unnest(CAST(:names AS text[])) AS name JOIN pg_class ON oid = to_regclass(name)"
)
#: PostgreSQL 17's MAINTAIN privilege (the word is an error on older servers).
_MAINTAIN = " OR has_table_privilege(oid, 'MAINTAIN')"
#: How long an ANALYZE waits for its lock (a VACUUM or an index build holds it) before the
#: refresh gives up: the run it follows is committed already and must not wait on them. Above
#: PostgreSQL's deadlock_timeout (1 s by default), after which a waiting lock request cancels
#: an autovacuum that blocks it: that ANALYZE then gets its lock instead of giving up.
_ANALYZE_LOCK_TIMEOUT = sa.text("SET LOCAL lock_timeout = '3s'")


class SQLStore(RunReads, LineageQueries, ScheduleQueries, ApprovalQueries, BackfillQueries):
    """A :class:`~flowstone.store.MetadataStore` in SQLite or PostgreSQL.

    Opening a store checks the schema revision with one query. A database that is behind is
    upgraded (``auto_migrate=True``, the default) or refused with :class:`SchemaOutdatedError`.

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path/to/flowstone.db`` (folders are created),
            ``sqlite://`` (in memory, this process only), or
            ``postgresql+psycopg://user@host:5432/dbname``.
        auto_migrate: Upgrade an older schema on open instead of raising.
        busy_timeout_ms: SQLite only: how long a writer waits for another writer.
        engine_options: Extra :func:`sqlalchemy.create_engine` arguments (pool size,
            ``connect_args``...). The libpq settings among ``connect_args`` (``sslmode``,
            ``options``...) are also the distributed job queue's.

    Raises:
        StoreUnavailableError: the database cannot be opened; the message says why.
        SchemaOutdatedError: the schema is older than this FlowStone and ``auto_migrate`` is
            off, or newer than this FlowStone.

    Example::

        store = SQLStore("sqlite:///.flowstone/flowstone.db")
        store.save_materialization(record, lineage=edges, audit=[event])
    """

    def __init__(
        self,
        url: str,
        *,
        auto_migrate: bool = True,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        engine = create_engine(url, busy_timeout_ms=busy_timeout_ms, **dict(engine_options or {}))
        #: The driver arguments the engine connects with beyond its URL (``connect_args``):
        #: whatever else connects to the same database for the store (the job queue) uses them.
        self.connect_args: Mapping[str, Any] = dict((engine_options or {}).get("connect_args", {}))
        super().__init__(engine)
        try:
            self._ensure_schema(auto_migrate=auto_migrate)
        except BaseException:
            engine.dispose()
            raise
        self._build_statements()
        self._build_lineage_statements()
        self._build_schedule_statements()
        # SQLite's writes skip SQLAlchemy's execution layer: see flowstone.store.direct.
        self._direct: DirectWriter | None = None
        if self._dialect == "sqlite":
            self._direct = DirectWriter(engine, self._serial)
            mat_keys = [c.name for c in _MAT_COLUMNS]
            run_keys = [c.name for c in _RUN_COLUMNS]
            self._direct_upsert_mat = prepare(engine, self._upsert_mat, mat_keys)
            self._direct_upsert_run = prepare(engine, self._upsert_run, run_keys)
            self._direct_update_run = prepare(engine, self._update_run, run_keys)
            self._direct_insert_edge = prepare(
                engine, self._insert_edge, [c.name for c in lineage.c if c.name != "id"]
            )
            self._direct_insert_audit = prepare(
                engine, self._insert_audit, [c.name for c in audit_log.c if c.name != "id"]
            )
        #: Tables refresh_statistics warned it cannot analyze (once each).
        self._not_analyzed: set[str] = set()
        # A worker's steps skip it on PostgreSQL: see flowstone.store.direct_pg.
        self._pg: PgSessions | None = None
        if self._dialect == "postgresql":
            self._pg = PgSessions(engine, _pg_error)
            self._pgs = _PgStatements(self)

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    # --- runs ------------------------------------------------------------------------------
    @_wraps_errors("create the run")
    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        if self._direct is not None:
            with self._direct.transaction("create the run") as tx:
                tx.execute(self._direct_upsert_run, _run_params(run))
                if materializations:
                    params = [_mat_params(m) for m in materializations]
                    if tx.execute_many(self._direct_upsert_mat, params) != len(materializations):
                        raise _identity_error(materializations)
                if audit:
                    tx.execute_many(self._direct_insert_audit, [_audit_params(e) for e in audit])
            return
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._upsert_run, _run_params(run))
            if materializations:
                params = [_mat_params(m) for m in materializations]
                if self._dialect == "sqlite":
                    saved = conn.execute(self._upsert_mat, params).rowcount
                else:
                    # PostgreSQL batches run as one multi-row INSERT whose rowcount is unknown;
                    # the rows it returns tell what it wrote.
                    saved = len(conn.execute(self._upsert_mat_returning, params).all())
                if saved != len(materializations):
                    raise _identity_error(materializations)
            self._write_audit(conn, audit)

    @_wraps_errors("update the run")
    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        if self._direct is not None:
            with self._direct.transaction("update the run") as tx:
                tx.execute(self._direct_update_run, _run_params(run))
                if audit:
                    tx.execute_many(self._direct_insert_audit, [_audit_params(e) for e in audit])
            return
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._update_run, _run_params(run))
            self._write_audit(conn, audit)

    # --- materializations ------------------------------------------------------------------
    @_wraps_errors("save the materialization")
    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        if self._direct is not None:
            with self._direct.transaction("save the materialization") as tx:
                if tx.execute(self._direct_upsert_mat, _mat_params(record)) != 1:
                    raise _identity_error((record,))
                if lineage:
                    tx.execute_many(self._direct_insert_edge, [_edge_params(e) for e in lineage])
                if audit:
                    tx.execute_many(self._direct_insert_audit, [_audit_params(e) for e in audit])
            return
        bound = self._bound()
        if bound is not None:
            self._pgs.save(bound, record, lineage, audit)
            return
        with self._serial, self._engine.begin() as conn:
            if record.status == Status.RUNNING and self._dialect == "postgresql":
                # --- distributed execution: see _NO_FLUSH ---
                conn.execute(_NO_FLUSH)
            if conn.execute(self._upsert_mat, _mat_params(record)).rowcount != 1:
                raise _identity_error((record,))
            if lineage:
                conn.execute(self._insert_edge, [_edge_params(e) for e in lineage])
            self._write_audit(conn, audit)

    # --- audit -----------------------------------------------------------------------------
    @_wraps_errors("append to the audit log")
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._insert_audit, [_audit_params(e) for e in events])

    # --- run transactions (distributed execution) ------------------------------------------
    @_wraps_errors("update the run")
    def run_transaction(self, run_id: str, work: Callable[[RunTransaction], T]) -> T:
        # On SQLite, BEGIN IMMEDIATE already serializes every writer; PostgreSQL takes a
        # transaction-scoped advisory lock on the run id (the run row may not exist yet).
        bound = self._bound()
        if bound is not None:
            return self._pgs.run_transaction(bound, run_id, work)
        with self._serial, self._engine.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(_LOCK_RUN, {"run_id": run_id})
            return work(_SQLRunTransaction(self, conn, run_id))

    def refresh_statistics(self, grown: Mapping[str, int]) -> list[str]:
        """ANALYZE the tables that just grew by a large share (PostgreSQL; SQLite: nothing).

        PostgreSQL plans from statistics that autovacuum refreshes only after a while. A run
        that adds thousands of rows to a table whose statistics say it is nearly empty (a new
        database, or a queue that was drained) is otherwise worked through with plans made for
        an empty table: procrastinate's fetch then sorted every waiting job to take one (4 ms
        per fetch with 2,000 jobs waiting, growing with the queue), and a step's lookup went
        through another index than its own. PostgreSQL's advice after a bulk load is the same.

        Args:
            grown: Rows just added, by table name (in this store's search path).

        Returns:
            The tables analyzed: those that grew by at least ``ANALYZE_MIN_ROWS`` rows and a
            fifth of what their statistics counted, and that this role may analyze (a table
            it may not is named in a warning, once). A failure (an ANALYZE that waited three
            seconds for its lock, say) is logged, not raised, and leaves the other tables'
            analyses in place: the rows are committed, only the plans stay worse until
            autovacuum passes.
        """
        big = {name: rows for name, rows in grown.items() if rows >= ANALYZE_MIN_ROWS}
        if self._dialect != "postgresql" or not big:
            return []
        quote = self._engine.dialect.identifier_preparer.quote
        version = self._engine.dialect.server_version_info or (0,)
        counted_rows = sa.text(_COUNTED_ROWS.format(maintain=_MAINTAIN if version >= (17,) else ""))
        analyzed = []
        try:
            with self._serial, self._engine.begin() as conn:
                conn.execute(_ANALYZE_LOCK_TIMEOUT)
                for name, counted, may in conn.execute(counted_rows, {"names": list(big)}).all():
                    if big[name] < 0.2 * counted:
                        continue
                    if not may:
                        self._cannot_analyze(name, big[name])
                        continue
                    try:
                        # A savepoint each: one table's failure must not undo another's.
                        with conn.begin_nested():
                            conn.exec_driver_sql(f"ANALYZE {quote(name)}")
                    except sa.exc.SQLAlchemyError as exc:
                        log.warning("Could not ANALYZE %s: %s", name, _detail(exc))
                    else:
                        analyzed.append(name)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("Could not refresh the statistics of %s: %s", sorted(big), _detail(exc))
            return []
        return analyzed

    def _cannot_analyze(self, table: str, rows: int) -> None:
        if table in self._not_analyzed:
            return
        self._not_analyzed.add(table)
        log.warning(
            "Cannot ANALYZE %s after a run added %d rows to it: the database role may not (it "
            "owns neither the table nor the database), so its statistics wait for autovacuum "
            "and workers may read it slowly until then.",
            table,
            rows,
        )

    @_wraps_errors("save the materialization")
    def commit_attempt(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        superseded: Callable[[MaterializationRecord | None], BaseException],
    ) -> tuple[RunStatus | None, bool]:
        """In a worker's step session (:meth:`step_session`): save ``record``, an attempt's
        final record, if the attempt still owns its step (``running`` with its attempt
        number, or ``pending`` and never started), else raise ``superseded(current record)``;
        commit without taking the run's lock; then read the run's status and whether any of
        its steps is left unfinished. One round trip.

        For a step nothing waits on (a distributed worker's leaf): its outcome needs no lock,
        only closing the run does, which the caller does in a run transaction when nothing is
        left (see :meth:`_PgStatements.commit_attempt
        <flowstone.store.sql.step_sessions._PgStatements.commit_attempt>` for why the read
        sees every outcome committed before it).

        Raises:
            StoreError: no step session is open in this thread.
        """
        return self._pgs.commit_attempt(self._session(), record, lineage, audit, superseded)

    # --- step sessions (distributed workers) ------------------------------------------------
    @contextmanager
    def step_session(
        self,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        lock: str,
        claim: StepClaim | None = None,
    ) -> Iterator[tuple[MaterializationRecord | None, RunStatus | None, bool]]:
        """Hold the step lock named ``lock`` for the block, and read the step's record.

        For a distributed worker running one step. On PostgreSQL the block gets one connection
        of its own, bound to this thread: the step's reads and writes (its ``running`` record,
        its run transaction) go through it, pipelined (:mod:`flowstone.store.direct_pg`). The
        step lock is a session advisory lock on it, so two workers never run the same
        (asset, partition) at once, whatever runs they serve; a worker that dies releases it
        with its connection.

        With a ``claim``, a step that never ran is made ``running`` with it in the same round
        trip as the lock and the read.

        Yields:
            The run's record of the step (None if it has none), the run's status (None
            when the record or the run is missing), and whether the step was claimed.

        Raises:
            StoreError: the store is not PostgreSQL (distributed workers need it).
        """
        if self._pg is None:
            raise StoreError(
                "Step sessions are for distributed workers, whose metadata store is "
                f"PostgreSQL; this store is {self._dialect}."
            )
        with self._pg.session() as conn:
            yield self._pgs.lock_step(conn, lock, run_id, asset, partition_key, claim=claim)
            # Reached only when the block did not raise (on an error the session closes the
            # connection instead, and the lock ends with it), and when the commit that recorded
            # the step's outcome did not release the lock already.
            if conn.step_lock is not None:
                self._pgs.unlock_step(conn, conn.step_lock)

    @_wraps_errors("read the step")
    def find_in_run(
        self, run_id: str, steps: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MaterializationRecord]:
        """In a worker's step session (:meth:`step_session`): the run's records of ``steps``
        ((asset, encoded partition) pairs) that it has, in one statement."""
        return self._pgs.find_many(self._session(), run_id, steps)

    def _bound(self) -> PgConnection | None:
        """The connection of the step session open in this thread, if any."""
        return self._pg.bound() if self._pg is not None else None

    def _session(self) -> PgConnection:
        bound = self._bound()
        if bound is None:
            raise StoreError(
                "No step session is open in this thread: this is a distributed worker's "
                "call, made inside SQLStore.step_session()."
            )
        return bound

    def close(self) -> None:
        """Close every pooled connection."""
        if self._pg is not None:
            self._pg.close()
        self._read.dispose()  # on SQLite a second engine on the same pool: closes it too
        self._engine.dispose()

    # --- schema ----------------------------------------------------------------------------
    def _ensure_schema(self, *, auto_migrate: bool) -> None:
        revision = self._stamped_revision()
        if revision == migrate.HEAD_REVISION:
            return  # the usual case: one SELECT, Alembic never imported
        if revision is not None and not migrate.is_known_revision(revision):
            raise migrate.newer_schema_error(revision)
        if not auto_migrate:
            raise migrate.outdated_schema_error(revision)
        migrate.upgrade(self._engine)

    def _stamped_revision(self) -> str | None:
        version = sa.table(VERSION_TABLE, sa.column("version_num", sa.String))
        try:
            with self._read.connect() as conn:
                try:
                    found = conn.execute(sa.select(version.c.version_num).limit(1)).scalar()
                except sa.exc.DBAPIError:
                    # Usually "no such table": a new database. Anything else shows up again
                    # when we look for the table.
                    conn.rollback()
                    if sa.inspect(conn).has_table(VERSION_TABLE):
                        raise
                    return None
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailableError(
                f"Cannot open the metadata store at {self.url!r}: {_detail(exc)}. "
                + self._open_hint()
            ) from exc
        return None if found is None else str(found)

    def _open_hint(self) -> str:
        if self._dialect == "sqlite":
            return (
                "Check that the path is a SQLite database file (or does not exist yet) in a "
                "folder you can write to."
            )
        return (
            "Check that the database server is running and that the URL's host, port, user, "
            "password and database name are right."
        )
