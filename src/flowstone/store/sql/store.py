"""The SQL metadata store: SQLAlchemy Core over SQLite or PostgreSQL, one schema for both.

Every query FlowStone runs against its metadata lives in this module.

SQLite notes. Many threads and processes write one file, and none of them may ever see
"database is locked". Two things make that hold:

- WAL journal (readers never block the writer) and a long ``busy_timeout`` (a writer waits for
  the lock instead of failing).
- Write transactions start with ``BEGIN IMMEDIATE``. A plain ``BEGIN`` takes no lock; when such a
  transaction later writes, it must upgrade from reader to writer, and if another connection
  wrote meanwhile SQLite returns SQLITE_BUSY at once, without waiting (waiting could deadlock).
  Python's ``sqlite3`` module emits that plain ``BEGIN`` itself, so it is switched off
  (``isolation_level = None``) and the engine emits its own, as in SQLAlchemy's recipe for the
  pysqlite driver ("Serializable isolation / Savepoints / Transactional DDL"). Reads go through
  a second engine on the same pool that emits no BEGIN: each read statement runs on its own
  and takes no write lock.

Speed: statements are built once per store and SQLAlchemy caches their compiled form, every
call is one ``engine.begin()``, and an upsert never reads first.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
    interrupted_run_event,
)
from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.errors import StoreError, StoreUnavailableError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
    utcnow,
)
from flowstone.schedule_records import (
    CatchUp,
    ScheduleRecord,
    SensorRecord,
    TickKind,
    TickLaunch,
    TickRecord,
    TickRun,
    TickStatus,
)
from flowstone.store import migrate
from flowstone.store.base import (
    RunTransaction,
    T,
    check_decision,
    check_run_member,
    clamp_depth,
)
from flowstone.store.direct import DirectWriter, prepare
from flowstone.store.direct_pg import (
    PgConnection,
    PgSessions,
    PgStatement,
    compile_pg,
    positional_dialect,
)
from flowstone.store.schema import (
    VERSION_TABLE,
    UTCDateTime,
    audit_log,
    lineage,
    materializations,
    runs,
)
from flowstone.store.schema import approvals as approvals_table
from flowstone.store.schema import backfill_partitions as backfill_partitions_table
from flowstone.store.schema import backfill_runs as backfill_runs_table
from flowstone.store.schema import backfills as backfills_table
from flowstone.store.schema import schedules as schedules_table
from flowstone.store.schema import sensors as sensors_table
from flowstone.store.schema import tick_runs as tick_runs_table
from flowstone.store.schema import ticks as ticks_table

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "SQLStore", "create_engine"]

#: How long a SQLite writer waits for another one to finish before giving up.
DEFAULT_BUSY_TIMEOUT_MS = 30_000

P = ParamSpec("P")
R = TypeVar("R")


# --- engines -------------------------------------------------------------------------------


def create_engine(
    url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, **engine_options: Any
) -> sa.Engine:
    """An engine set up the way the store needs it (used by the store and by migrations).

    For SQLite files the parent folders are created, and each connection gets WAL, a busy
    timeout, ``synchronous=NORMAL``, foreign keys, and ``BEGIN IMMEDIATE`` write transactions.
    An in-memory SQLite URL (``sqlite://``) shares one connection, so one process sees one
    database.

    Args:
        url: A SQLAlchemy URL, e.g. ``sqlite:///path/to/flowstone.db`` or
            ``postgresql+psycopg://user@host/db``.
        busy_timeout_ms: SQLite only: how long a writer waits for another writer.
        **engine_options: Passed to :func:`sqlalchemy.create_engine`.

    Raises:
        StoreUnavailableError: the URL is malformed, names an unknown database or a driver that
            is not installed, or the SQLite folder cannot be created.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreUnavailableError(
            f"{url!r} is not a database URL. Use e.g. 'sqlite:///.flowstone/flowstone.db' or "
            "'postgresql+psycopg://user@host:5432/dbname'."
        ) from exc
    shown = parsed.render_as_string(hide_password=True)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    options: dict[str, Any] = dict(engine_options)
    in_memory = is_sqlite and parsed.database in (None, "", ":memory:")
    if in_memory:
        # One shared connection: SQLAlchemy's default gives each thread its own, empty database.
        options.setdefault("poolclass", sa.StaticPool)
        options["connect_args"] = {"check_same_thread": False, **options.get("connect_args", {})}
    elif is_sqlite:
        _make_parent_folder(parsed, shown)
    try:
        engine = sa.create_engine(parsed, **options)
    except sa.exc.NoSuchModuleError as exc:
        raise StoreUnavailableError(
            f"Unknown database in store URL {shown!r}: FlowStone stores metadata in SQLite "
            "('sqlite:///path/to/flowstone.db') or PostgreSQL "
            "('postgresql+psycopg://user@host/dbname')."
        ) from exc
    except ImportError as exc:
        raise StoreUnavailableError(
            f"The database driver for {shown!r} is not installed ({exc}). For PostgreSQL, "
            "install it with `pip install 'flowstone[postgres]'`."
        ) from exc
    except (sa.exc.ArgumentError, TypeError) as exc:
        raise StoreUnavailableError(f"Cannot use store URL {shown!r}: {exc}") from exc
    if is_sqlite:
        _configure_sqlite(engine, busy_timeout_ms)
    return engine


def _make_parent_folder(url: sa.URL, shown: str) -> None:
    database = url.database or ""
    if database.startswith("file:") or url.query.get("uri"):
        return  # a SQLite URI filename; sqlite3 resolves it, we cannot
    parent = Path(database).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailableError(
            f"Cannot create the folder {str(parent)!r} for the SQLite metadata database of "
            f"store URL {shown!r}: {exc.strerror or exc}. Point the store at a path in a "
            "writable folder (FLOWSTONE_DATABASE_URL or FLOWSTONE_HOME)."
        ) from exc


def _configure_sqlite(engine: sa.Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Take transaction control away from sqlite3 (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first, so that switching to WAL waits for other connections too.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            _switch_to_wal(cursor, busy_timeout_ms)
            # Safe with WAL (a crash can lose the last commits, never corrupt), and commits
            # need no fsync.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    # SQLAlchemy's recipe emits BEGIN from a "begin" event listener. Any engine-level event
    # listener puts every statement on SQLAlchemy's slow, event-dispatching path (~100 us per
    # call), so this engine's dialect emits BEGIN IMMEDIATE itself, at the point where the
    # recipe's listener would run. Every transaction on this engine (the store's writes,
    # migrations, a user's own) is thus a write transaction; the store reads through a
    # second engine on the same pool whose dialect emits nothing (see _reader).
    engine.dialect.do_begin = _begin_immediate  # type: ignore[method-assign]


def _switch_to_wal(cursor: Any, busy_timeout_ms: int) -> None:
    """Put the database in WAL mode, waiting out other connections doing the same.

    On a new file two connections switching at once can get "database is locked" straight
    away: SQLite skips the busy handler where waiting could deadlock. Retrying with a short
    backoff, bounded by the busy timeout, turns that race into a wait.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _begin_immediate(dbapi_connection: Any) -> None:
    dbapi_connection.execute("BEGIN IMMEDIATE")


def _reader(engine: sa.Engine) -> sa.Engine:
    """An engine for reads: on SQLite, one that shares the pool but emits no BEGIN.

    Each read statement then runs in SQLite's autocommit mode and takes no write lock (in WAL
    mode it never waits for writers either).
    """
    if engine.dialect.name != "sqlite":
        return engine
    return sa.create_engine(engine.url, pool=engine.pool)


# --- errors --------------------------------------------------------------------------------


def _detail(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _store_error(exc: sa.exc.SQLAlchemyError, doing: str) -> StoreError:
    detail = _detail(exc)
    if isinstance(exc, sa.exc.IntegrityError):
        return StoreError(
            f"Could not {doing}: it conflicts with what the store holds ({detail}). Each "
            "(run, asset, partition) has one materialization, and a lineage edge must point "
            "at a materialization that is saved with it or before it."
        )
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailableError(
            f"Could not {doing}: the connection to the metadata database was lost ({detail}). "
            "Check that the database server is up, then retry."
        )
    if "database is locked" in detail:
        return StoreError(
            f"Could not {doing}: another process held the SQLite write lock longer than the "
            f"busy timeout ({detail}). Raise busy_timeout_ms, or use PostgreSQL for many "
            "concurrent writers."
        )
    return StoreError(f"Could not {doing}: {detail}")


def _identity_error(records: Sequence[MaterializationRecord]) -> StoreError:
    ids = ", ".join(r.id for r in records[:5]) + (", ..." if len(records) > 5 else "")
    return StoreError(
        f"Could not save materialization {ids}: a materialization with this id exists with a "
        "different run, asset, partition or created_at. Those are fixed by the first save; "
        "record a new materialization (a new id) instead."
    )


def _wraps_errors(
    doing: str,
) -> Callable[[Callable[Concatenate[SQLStore, P], R]], Callable[Concatenate[SQLStore, P], R]]:
    """Turn SQLAlchemy and driver errors into :class:`StoreError` at the store's boundary."""

    def decorate(
        method: Callable[Concatenate[SQLStore, P], R],
    ) -> Callable[Concatenate[SQLStore, P], R]:
        @functools.wraps(method)
        def wrapper(self: SQLStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(self, *args, **kwargs)
            except sa.exc.SQLAlchemyError as exc:
                raise _store_error(exc, doing) from exc

        return wrapper

    return decorate


# --- rows <-> records ----------------------------------------------------------------------

_MAT_COLUMNS = tuple(c for c in materializations.c if c.name != "seq")
# What a materialization is: fixed by its first save, compared (never updated) by later ones.
_MAT_FIXED = ("run_id", "asset", "partition_key", "created_at")
_RUN_COLUMNS = tuple(c for c in runs.c if c.name != "seq")
_AUDIT_COLUMNS = tuple(audit_log.c)


def _mat_params(r: MaterializationRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "run_id": r.run_id,
        "asset": r.asset,
        "partition_key": r.partition_key,
        "status": r.status.value,
        "attempt": r.attempt,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "completed_at": r.completed_at,
        "duration_ms": r.duration_ms,
        "error_type": r.error_type,
        "error_message": r.error_message,
        "error_traceback": r.error_traceback,
        "code_version": r.code_version,
        "io_manager": r.io_manager,
        "metadata": r.metadata,
    }


def _mat_record(row: Sequence[Any]) -> MaterializationRecord:
    (
        id_,
        run_id,
        asset,
        partition_key,
        status,
        attempt,
        created_at,
        started_at,
        completed_at,
        duration_ms,
        error_type,
        error_message,
        error_traceback,
        code_version,
        io_manager,
        metadata,
    ) = row[: len(_MAT_COLUMNS)]
    return MaterializationRecord(
        id=id_,
        run_id=run_id,
        asset=asset,
        partition_key=partition_key,
        status=Status(status),
        attempt=attempt,
        created_at=created_at,
        started_at=started_at,
        completed_at=completed_at,
        duration_ms=duration_ms,
        error_type=error_type,
        error_message=error_message,
        error_traceback=error_traceback,
        code_version=code_version,
        io_manager=io_manager,
        metadata=metadata if metadata is not None else {},
    )


def _run_params(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status.value,
        "targets": list(run.targets),
        "partition_key": run.partition_key,
        "created_at": run.created_at,
        "completed_at": run.completed_at,
        "tags": dict(run.tags),
    }


def _run_record(row: Sequence[Any]) -> RunRecord:
    id_, status, targets, partition_key, created_at, completed_at, tags = row
    return RunRecord(
        id=id_,
        status=RunStatus(status),
        targets=tuple(targets or ()),
        partition_key=partition_key,
        created_at=created_at,
        completed_at=completed_at,
        tags=tags if tags is not None else {},
    )


def _edge_params(e: LineageEdge) -> dict[str, Any]:
    return {
        "materialization_id": e.materialization_id,
        "run_id": e.run_id,
        "asset": e.asset,
        "partition_key": e.partition_key,
        "upstream_materialization_id": e.upstream_materialization_id,
        "upstream_asset": e.upstream_asset,
        "upstream_partition_key": e.upstream_partition_key,
        "consumed_at": e.consumed_at,
    }


def _audit_params(e: AuditEvent) -> dict[str, Any]:
    # The store numbers events; an id set by the caller is ignored, as in MemoryStore.
    return {
        "occurred_at": e.occurred_at,
        "actor": e.actor,
        "actor_type": e.actor_type,
        "action": e.action,
        "resource_type": e.resource_type,
        "resource_id": e.resource_id,
        "details": e.details,
        "correlation_id": e.correlation_id,
    }


def _audit_record(row: Sequence[Any]) -> AuditEvent:
    (
        id_,
        occurred_at,
        actor,
        actor_type,
        action,
        resource_type,
        resource_id,
        details,
        correlation_id,
    ) = row
    return AuditEvent(
        id=id_,
        occurred_at=occurred_at,
        actor=actor,
        actor_type=actor_type,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details if details is not None else {},
        correlation_id=correlation_id,
    )


# --- backfills: rows <-> records ------------------------------------------------------------

_BACKFILL_COLUMNS = tuple(c for c in backfills_table.c if c.name != "seq")
#: Bound parameters per IN list: well under SQLite's limit of 32,766 per statement.
_IN_BATCH = 5_000


def _batches(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _IN_BATCH):
        yield values[start : start + _IN_BATCH]


def _backfill_params(b: BackfillRecord) -> dict[str, Any]:
    return {
        "id": b.id,
        "status": b.status.value,
        "targets": list(b.targets),
        "with_upstream": b.with_upstream,
        "partition_set": b.partition_set,
        "total": b.total,
        "cursor": b.cursor,
        "counts": dict(b.counts),
        "parallel": b.parallel,
        "chunk_size": b.chunk_size,
        "force": b.force,
        "created_by": b.created_by,
        "created_at": b.created_at,
        "finished_at": b.finished_at,
        "owner": b.owner,
        "heartbeat_at": b.heartbeat_at,
    }


def _backfill_record(row: Any) -> BackfillRecord:
    m = row._mapping
    return BackfillRecord(
        id=m["id"],
        status=BackfillStatus(m["status"]),
        targets=tuple(m["targets"] or ()),
        with_upstream=bool(m["with_upstream"]),
        partition_set=m["partition_set"] or {},
        total=int(m["total"]),
        cursor=int(m["cursor"]),
        counts={str(k): int(v) for k, v in (m["counts"] or {}).items()},
        parallel=int(m["parallel"]),
        chunk_size=int(m["chunk_size"]),
        force=bool(m["force"]),
        created_by=m["created_by"],
        created_at=m["created_at"],
        finished_at=m["finished_at"],
        owner=m["owner"],
        heartbeat_at=m["heartbeat_at"],
    )


def _select_backfill(conn: sa.Connection, backfill_id: str) -> BackfillRecord | None:
    t = backfills_table
    row = conn.execute(sa.select(*_BACKFILL_COLUMNS).where(t.c.id == backfill_id)).first()
    return None if row is None else _backfill_record(row)


def _backfill_partition_params(p: BackfillPartition) -> dict[str, Any]:
    return {
        "backfill_id": p.backfill_id,
        "position": p.position,
        "partition_key": p.partition_key,
        "outcome": p.outcome.value,
        "asset": p.asset,
        "run_id": p.run_id,
        "materialization_id": p.materialization_id,
        "error_type": p.error_type,
        "error_message": p.error_message,
        "attempts": p.attempts,
        "updated_at": p.updated_at,
    }


def _backfill_partition_record(row: Any) -> BackfillPartition:
    m = row._mapping
    return BackfillPartition(
        backfill_id=m["backfill_id"],
        position=int(m["position"]),
        partition_key=m["partition_key"],
        outcome=PartitionOutcome(m["outcome"]),
        asset=m["asset"],
        run_id=m["run_id"],
        materialization_id=m["materialization_id"],
        error_type=m["error_type"],
        error_message=m["error_message"],
        attempts=int(m["attempts"]),
        updated_at=m["updated_at"],
    )


# --- the store -----------------------------------------------------------------------------


class SQLStore:
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
            ``connect_args``...).

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
        self.url = engine.url.render_as_string(hide_password=True)
        self._engine = engine
        self._read = _reader(engine)
        self._dialect = engine.dialect.name
        # An in-memory SQLite database is one shared connection: calls take turns on it.
        self._serial: AbstractContextManager[Any] = (
            threading.RLock() if isinstance(engine.pool, sa.StaticPool) else nullcontext()
        )
        try:
            self._ensure_schema(auto_migrate=auto_migrate)
        except BaseException:
            engine.dispose()
            raise
        self._build_statements()
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
        # A worker's steps skip it on PostgreSQL: see flowstone.store.direct_pg.
        self._pg: PgSessions | None = None
        if self._dialect == "postgresql":
            self._pg = PgSessions(engine, _pg_error)
            self._pgs = _PgStatements.build(self)

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tools and tests; FlowStone itself goes through methods)."""
        return self._engine

    def __repr__(self) -> str:
        return f"SQLStore({self.url!r})"

    def _write_audit(self, conn: sa.Connection, audit: Sequence[AuditEvent]) -> None:
        """Append ``audit`` in the caller's transaction (events belong with the write that
        caused them)."""
        if audit:
            conn.execute(self._insert_audit, [_audit_params(e) for e in audit])

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

    @_wraps_errors("read the run")
    def get_run(self, run_id: str) -> RunRecord | None:
        with self._serial, self._read.connect() as conn:
            row = conn.execute(self._get_run, {"id": run_id}).first()
        return None if row is None else _run_record(row)

    @_wraps_errors("list runs")
    def list_runs(self, *, limit: int = 50) -> list[RunRecord]:
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(self._list_runs, {"limit": limit}).all()
        return [_run_record(row) for row in rows]

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
        bound = self._pg.bound() if self._pg is not None else None
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

    @_wraps_errors("read the materialization")
    def get_materialization(self, materialization_id: str) -> MaterializationRecord | None:
        with self._serial, self._read.connect() as conn:
            row = conn.execute(self._get_mat, {"id": materialization_id}).first()
        return None if row is None else _mat_record(row)

    @_wraps_errors("read the latest materialization")
    def latest_materialization(
        self, asset: str, partition_key: str, *, status: Status | None = None
    ) -> MaterializationRecord | None:
        params: dict[str, Any] = {"asset": asset, "partition_key": partition_key}
        if status is None:
            stmt = self._latest_mat
        else:
            stmt = self._latest_mat_with_status
            params["status"] = status.value
        with self._serial, self._read.connect() as conn:
            row = conn.execute(stmt, params).first()
        return None if row is None else _mat_record(row)

    @_wraps_errors("list materializations")
    def list_materializations(
        self,
        *,
        asset: str | None = None,
        partition_key: str | None = None,
        run_id: str | None = None,
        status: Status | None = None,
        limit: int | None = 100,
    ) -> list[MaterializationRecord]:
        m = materializations
        stmt = sa.select(*_MAT_COLUMNS).order_by(m.c.created_at.desc(), m.c.seq.desc())
        if asset is not None:
            stmt = stmt.where(m.c.asset == asset)
        if partition_key is not None:
            stmt = stmt.where(m.c.partition_key == partition_key)
        if run_id is not None:
            stmt = stmt.where(m.c.run_id == run_id)
        if status is not None:
            stmt = stmt.where(m.c.status == status.value)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_mat_record(row) for row in rows]

    @_wraps_errors("list the latest materializations")
    def latest_per_partition(
        self, assets: Sequence[str] | None = None
    ) -> list[MaterializationRecord]:
        if assets is not None and not assets:
            return []
        stmt = self._latest_per_partition
        params: dict[str, Any] = {}
        if assets is not None:
            stmt = self._latest_per_partition_of
            params["assets"] = list(assets)
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt, params).all()
        return [_mat_record(row) for row in rows]

    # --- lineage ---------------------------------------------------------------------------
    @_wraps_errors("read upstream lineage")
    def upstream(self, materialization_id: str, *, depth: int = 10) -> list[LineageNode]:
        params = {"start": materialization_id, "limit": clamp_depth(depth)}
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(self._upstream, params).all()
        return [
            LineageNode(
                asset=asset,
                partition_key=partition_key,
                depth=level,
                materialization_id=mat_id,
                run_id=run_id,
                status=None if status is None else Status(status),
            )
            for mat_id, asset, partition_key, level, run_id, status in rows
        ]

    @_wraps_errors("read downstream lineage")
    def downstream(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        return self._downstream_nodes(self._downstream, asset, partition_key, depth)

    @_wraps_errors("read impact")
    def impact(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        return self._downstream_nodes(self._impact, asset, partition_key, depth)

    def _downstream_nodes(
        self, stmt: sa.Select[Any], asset: str, partition_key: str, depth: int
    ) -> list[LineageNode]:
        params = {"asset": asset, "partition_key": partition_key, "limit": clamp_depth(depth)}
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt, params).all()
        return [
            LineageNode(
                asset=row[0],
                partition_key=row[1],
                depth=row[2],
                materialization_id=row[3],
                run_id=row[4],
                status=Status(row[5]) if len(row) > 5 and row[5] is not None else None,
            )
            for row in rows
        ]

    # --- audit -----------------------------------------------------------------------------
    @_wraps_errors("append to the audit log")
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._insert_audit, [_audit_params(e) for e in events])

    @_wraps_errors("read the audit log")
    def list_audit(
        self,
        *,
        correlation_id: str | None = None,
        resource_id: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> list[AuditEvent]:
        a = audit_log
        stmt = sa.select(*_AUDIT_COLUMNS).order_by(a.c.id)
        if correlation_id is not None:
            stmt = stmt.where(a.c.correlation_id == correlation_id)
        if resource_id is not None:
            stmt = stmt.where(a.c.resource_id == resource_id)
        if action is not None:
            stmt = stmt.where(a.c.action == action)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_audit_record(row) for row in rows]

    # --- schedules and sensors --------------------------------------------------------------
    @_wraps_errors("save the schedule")
    def save_schedule(self, schedule: ScheduleRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._upsert_schedule, _schedule_params(schedule))
            self._write_audit(conn, audit)

    @_wraps_errors("read the schedule")
    def get_schedule(self, name: str) -> ScheduleRecord | None:
        t = schedules_table
        with self._serial, self._read.connect() as conn:
            row = conn.execute(sa.select(*t.c).where(t.c.name == name)).first()
        return None if row is None else _schedule_record(row)

    @_wraps_errors("list schedules")
    def list_schedules(self) -> list[ScheduleRecord]:
        t = schedules_table
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(sa.select(*t.c).order_by(self._text_order(t.c.name))).all()
        return [_schedule_record(row) for row in rows]

    @_wraps_errors("pause or resume the schedule")
    def set_schedule_paused(
        self,
        name: str,
        paused: bool,
        *,
        cursor: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        t = schedules_table
        values: dict[str, Any] = {"paused": paused, "updated_at": utcnow()}
        if cursor is not None:
            values["cursor"] = _later_cursor(t.c.cursor, cursor)
        with self._serial, self._engine.begin() as conn:
            if conn.execute(sa.update(t).where(t.c.name == name).values(values)).rowcount != 1:
                return False
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("delete the schedule")
    def delete_schedule(self, name: str, audit: Sequence[AuditEvent] = ()) -> bool:
        t = schedules_table
        with self._serial, self._engine.begin() as conn:
            if conn.execute(sa.delete(t).where(t.c.name == name)).rowcount != 1:
                return False
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("record the schedule's tick")
    def create_schedule_tick(
        self,
        tick: TickRecord,
        launch: TickLaunch | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        t = schedules_table
        try:
            with self._serial, self._engine.begin() as conn:
                self._insert_tick_with_runs(conn, tick, () if launch is None else (launch,))
                conn.execute(
                    sa.update(t)
                    .where(t.c.name == tick.name)
                    .values(cursor=_later_cursor(t.c.cursor, tick.tick_time))
                )
                self._write_audit(conn, audit)
        except _TickTaken:
            return False
        return True

    @_wraps_errors("save the sensor")
    def save_sensor(self, sensor: SensorRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._upsert_sensor, _sensor_params(sensor))
            self._write_audit(conn, audit)

    @_wraps_errors("read the sensor")
    def get_sensor(self, name: str) -> SensorRecord | None:
        t = sensors_table
        with self._serial, self._read.connect() as conn:
            row = conn.execute(sa.select(*t.c).where(t.c.name == name)).first()
        return None if row is None else _sensor_record(row)

    @_wraps_errors("list sensors")
    def list_sensors(self) -> list[SensorRecord]:
        t = sensors_table
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(sa.select(*t.c).order_by(self._text_order(t.c.name))).all()
        return [_sensor_record(row) for row in rows]

    @_wraps_errors("pause or resume the sensor")
    def set_sensor_paused(self, name: str, paused: bool, audit: Sequence[AuditEvent] = ()) -> bool:
        t = sensors_table
        stmt = sa.update(t).where(t.c.name == name).values(paused=paused, updated_at=utcnow())
        with self._serial, self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return False
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("record the sensor's tick")
    def create_sensor_tick(
        self,
        name: str,
        *,
        expected_version: int,
        polled_at: datetime,
        cursor: str | None,
        tick: TickRecord | None = None,
        launches: Sequence[TickLaunch] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        t = sensors_table
        # The version check comes first: on PostgreSQL the UPDATE locks the sensor's row, so
        # two schedulers applying polls of one sensor take turns, and the second finds the
        # version moved on.
        bump = (
            sa.update(t)
            .where(t.c.name == name, t.c.version == expected_version)
            .values(version=t.c.version + 1, cursor=cursor, last_tick_at=polled_at)
        )
        try:
            with self._serial, self._engine.begin() as conn:
                if conn.execute(bump).rowcount != 1:
                    raise _TickTaken
                if tick is not None:
                    self._insert_tick_with_runs(conn, tick, launches)
                self._write_audit(conn, audit)
        except _TickTaken:
            return False
        return True

    @_wraps_errors("read run keys")
    def seen_run_keys(self, sensor: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        t = tick_runs_table
        stmt = sa.select(t.c.run_key).where(
            t.c.kind == TickKind.SENSOR.value, t.c.name == sensor, t.c.run_key.in_(list(keys))
        )
        with self._serial, self._read.connect() as conn:
            return {row[0] for row in conn.execute(stmt)}

    @_wraps_errors("list ticks")
    def list_ticks(self, kind: TickKind, name: str, *, limit: int = 50) -> list[TickRecord]:
        t = ticks_table
        stmt = (
            sa.select(*t.c)
            .where(t.c.kind == kind.value, t.c.name == name)
            .order_by(t.c.tick_time.desc())
            .limit(limit)
        )
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_tick_record(row) for row in rows]

    @_wraps_errors("find orphaned tick runs")
    def orphaned_tick_runs(self, claimed_before: datetime) -> list[TickRun]:
        c, r, m = tick_runs_table, runs, materializations
        started = sa.exists().where(m.c.run_id == c.c.run_id, m.c.status != Status.PENDING.value)
        stmt = (
            sa.select(*c.c)
            .join(r, r.c.id == c.c.run_id)
            .where(
                r.c.status == RunStatus.RUNNING.value,
                c.c.claimed_at < claimed_before,
                ~started,
            )
            .order_by(c.c.claimed_at, c.c.run_id)
        )
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            TickRun(
                run_id=row[0], kind=TickKind(row[1]), name=row[2], run_key=row[3], claimed_at=row[4]
            )
            for row in rows
        ]

    @_wraps_errors("claim the tick's run")
    def claim_tick_run(self, run_id: str, *, expected: datetime, claimed_at: datetime) -> bool:
        c = tick_runs_table
        stmt = (
            sa.update(c)
            .where(c.c.run_id == run_id, c.c.claimed_at == expected)
            .values(claimed_at=claimed_at)
        )
        with self._serial, self._engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def _insert_tick_with_runs(
        self, conn: sa.Connection, tick: TickRecord, launches: Sequence[TickLaunch]
    ) -> None:
        """Insert a tick and its runs; raise _TickTaken if the tick or a run key exists."""
        if conn.execute(self._insert_tick, _tick_params(tick)).rowcount != 1:
            raise _TickTaken
        for launch in launches:
            conn.execute(self._upsert_run, _run_params(launch.run))
            if launch.materializations:
                params = [_mat_params(m) for m in launch.materializations]
                if self._dialect == "sqlite":
                    saved = conn.execute(self._upsert_mat, params).rowcount
                else:  # a multi-row INSERT's rowcount is unknown: count what it returns
                    saved = len(conn.execute(self._upsert_mat_returning, params).all())
                if saved != len(params):
                    raise _identity_error(launch.materializations)
            claim = {
                "run_id": launch.run.id,
                "kind": tick.kind.value,
                "name": tick.name,
                "run_key": launch.run_key,
                "claimed_at": tick.recorded_at,
            }
            if conn.execute(self._insert_tick_run, claim).rowcount != 1:
                raise _TickTaken

    def _text_order(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # Byte order, as Python sorts str, whatever the PostgreSQL database's collation.
        return column.collate("C") if self._dialect == "postgresql" else column

    def _build_schedule_statements(self) -> None:
        pg = self._dialect == "postgresql"

        def insert(table: sa.Table) -> Any:
            return postgresql.insert(table) if pg else sqlite.insert(table)

        def upsert(table: sa.Table, update: Sequence[str]) -> sa.Insert:
            stmt = insert(table)
            return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
                index_elements=[table.c.name],
                set_={name: stmt.excluded[name] for name in update},
            )

        kept = ("name", "paused", "cursor", "created_at")
        self._upsert_schedule = upsert(
            schedules_table, [c.name for c in schedules_table.c if c.name not in kept]
        )
        self._upsert_sensor = upsert(sensors_table, ["interval_s", "updated_at"])
        # DO NOTHING, not an IntegrityError: on PostgreSQL an error aborts the transaction.
        self._insert_tick = (
            insert(ticks_table)
            .on_conflict_do_nothing(index_elements=["kind", "name", "tick_time"])
            .execution_options(preserve_rowcount=True)
        )
        self._insert_tick_run = (
            insert(tick_runs_table)
            .on_conflict_do_nothing()
            .execution_options(preserve_rowcount=True)
        )

    # --- approvals ---------------------------------------------------------------------------
    # Not on the hot path (a request or decision is a person's pace), so these go through
    # SQLAlchemy on both databases rather than SQLite's direct writer.
    @_wraps_errors("store the approval request")
    def request_approval(
        self,
        approval: ApprovalRecord,
        materialization: MaterializationRecord,
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        with self._serial, self._engine.begin() as conn:
            if conn.execute(self._upsert_mat, _mat_params(materialization)).rowcount != 1:
                raise _identity_error((materialization,))
            conn.execute(approvals_table.insert(), _approval_params(approval))
            self._write_audit(conn, audit)

    @_wraps_errors("read the approval request")
    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        a = approvals_table
        stmt = sa.select(*a.c).where(a.c.id == approval_id)
        with self._serial, self._read.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _approval_record(row)

    @_wraps_errors("list approval requests")
    def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        asset: str | None = None,
        run_id: str | None = None,
        id_prefix: str | None = None,
        due_before: datetime | None = None,
        limit: int | None = 100,
    ) -> list[ApprovalRecord]:
        a = approvals_table
        stmt = sa.select(*a.c).order_by(a.c.requested_at, self._text_order(a.c.id))
        if status is not None:
            stmt = stmt.where(a.c.status == status.value)
        if asset is not None:
            stmt = stmt.where(a.c.asset == asset)
        if run_id is not None:
            stmt = stmt.where(a.c.run_id == run_id)
        if id_prefix is not None:
            # Not LIKE: SQLite's LIKE ignores case, and '%' or '_' would be wildcards.
            stmt = stmt.where(sa.func.substr(a.c.id, 1, len(id_prefix)) == id_prefix)
        if due_before is not None:
            stmt = stmt.where(a.c.timeout_at.is_not(None), a.c.timeout_at <= due_before)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_approval_record(row) for row in rows]

    @_wraps_errors("record the approval decision")
    def decide_approval(
        self,
        decided: ApprovalRecord,
        *,
        materialization: MaterializationRecord | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        check_decision(decided)
        a = approvals_table
        at = sa.bindparam("decided_at", decided.decided_at, type_=UTCDateTime)
        if decided.status == ApprovalStatus.EXPIRED:
            timing = sa.and_(a.c.timeout_at.is_not(None), a.c.timeout_at <= at)
        else:
            timing = sa.or_(a.c.timeout_at.is_(None), a.c.timeout_at > at)
        # The compare and set: of two concurrent decisions, the second matches no row.
        stmt = (
            sa.update(a)
            .where(a.c.id == decided.id, a.c.status == ApprovalStatus.PENDING.value, timing)
            .values(
                status=decided.status.value,
                decided_by=decided.decided_by,
                decided_at=at,
                reason=decided.reason,
                input=decided.input,
            )
            .execution_options(preserve_rowcount=True)
        )
        with self._serial, self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return False
            if (
                materialization is not None
                and conn.execute(self._upsert_mat, _mat_params(materialization)).rowcount != 1
            ):
                raise _identity_error((materialization,))
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("claim materializations")
    def claim_materializations(self, materialization_ids: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(materialization_ids))
        if not wanted:
            return []
        m = materializations
        claimable = (Status.PENDING.value, Status.WAITING_APPROVAL.value)
        stmt = (
            sa.update(m)
            .where(m.c.id.in_(wanted), m.c.status.in_(claimable))
            .values(status=Status.RUNNING.value)
            .returning(m.c.id)
        )
        with self._serial, self._engine.begin() as conn:
            claimed = set(conn.execute(stmt).scalars())
        return [mat_id for mat_id in wanted if mat_id in claimed]

    # --- backfills --------------------------------------------------------------------------
    @_wraps_errors("create the backfill")
    def create_backfill(self, backfill: BackfillRecord, audit: Sequence[AuditEvent] = ()) -> None:
        t = backfills_table
        insert = sa.insert(t).values(_backfill_params(backfill))
        if self._dialect == "sqlite":  # no identity columns: see schema.py
            next_seq = sa.select(sa.func.coalesce(sa.func.max(t.c.seq), 0) + 1).scalar_subquery()
            insert = insert.values(seq=next_seq)
        try:
            with self._serial, self._engine.begin() as conn:
                conn.execute(insert)
                self._write_audit(conn, audit)
        except sa.exc.IntegrityError as exc:
            raise StoreError(
                f"Could not create backfill {backfill.id}: a backfill with this id exists."
            ) from exc

    @_wraps_errors("read the backfill")
    def get_backfill(self, backfill_id: str) -> BackfillRecord | None:
        with self._serial, self._read.connect() as conn:
            return _select_backfill(conn, backfill_id)

    @_wraps_errors("list backfills")
    def list_backfills(self, *, limit: int | None = 50) -> list[BackfillRecord]:
        t = backfills_table
        stmt = sa.select(*_BACKFILL_COLUMNS).order_by(t.c.created_at.desc(), t.c.seq.desc())
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._serial, self._read.connect() as conn:
            return [_backfill_record(row) for row in conn.execute(stmt)]

    @_wraps_errors("claim the backfill")
    def claim_backfill(
        self,
        backfill_id: str,
        *,
        owner: str,
        expected_owner: str | None,
        now: datetime,
        audit: Sequence[AuditEvent] = (),
    ) -> BackfillRecord | None:
        t = backfills_table
        held = t.c.owner.is_(None) if expected_owner is None else t.c.owner == expected_owner
        stmt = (
            sa.update(t)
            .where(t.c.id == backfill_id, held)
            .values(
                owner=owner,
                heartbeat_at=now,
                status=BackfillStatus.RUNNING.value,
                finished_at=None,
            )
        )
        return self._update_backfill(backfill_id, stmt, audit)

    @_wraps_errors("record the backfill's heartbeat")
    def heartbeat_backfill(
        self, backfill_id: str, *, owner: str, now: datetime
    ) -> BackfillRecord | None:
        t = backfills_table
        stmt = sa.update(t).where(t.c.id == backfill_id, t.c.owner == owner)
        return self._update_backfill(backfill_id, stmt.values(heartbeat_at=now))

    @_wraps_errors("record the backfill's progress")
    def save_backfill_progress(
        self,
        backfill_id: str,
        *,
        owner: str,
        now: datetime,
        cursor: int,
        counts: Mapping[str, int],
        partitions: Sequence[BackfillPartition] = (),
        resolved: Sequence[int] = (),
    ) -> BackfillRecord | None:
        t, rows = backfills_table, backfill_partitions_table
        stmt = (
            sa.update(t)
            .where(t.c.id == backfill_id, t.c.owner == owner)
            .values(cursor=cursor, counts=dict(counts), heartbeat_at=now)
        )
        # Replaced rows are deleted and inserted again: one portable statement pair.
        positions = sorted({*resolved, *(row.position for row in partitions)})
        with self._serial, self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return None
            for batch in _batches(positions):
                conn.execute(
                    sa.delete(rows).where(
                        rows.c.backfill_id == backfill_id, rows.c.position.in_(batch)
                    )
                )
            if partitions:
                conn.execute(sa.insert(rows), [_backfill_partition_params(r) for r in partitions])
            return _select_backfill(conn, backfill_id)

    @_wraps_errors("finish the backfill")
    def finish_backfill(
        self,
        backfill_id: str,
        *,
        owner: str,
        status: BackfillStatus,
        now: datetime,
        audit: Sequence[AuditEvent] = (),
    ) -> BackfillRecord | None:
        t = backfills_table
        stmt = (
            sa.update(t)
            .where(t.c.id == backfill_id, t.c.owner == owner)
            .values(
                status=status.value,
                owner=None,
                heartbeat_at=now,
                finished_at=now if status.is_final else None,
            )
        )
        return self._update_backfill(backfill_id, stmt, audit)

    @_wraps_errors("cancel the backfill")
    def request_backfill_cancel(
        self, backfill_id: str, *, audit: Sequence[AuditEvent] = ()
    ) -> BackfillRecord | None:
        t = backfills_table
        stmt = (
            sa.update(t)
            .where(t.c.id == backfill_id, t.c.status == BackfillStatus.RUNNING.value)
            .values(status=BackfillStatus.CANCELING.value)
        )
        with self._serial, self._engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1 and audit:
                conn.execute(self._insert_audit, [_audit_params(e) for e in audit])
            return _select_backfill(conn, backfill_id)

    @_wraps_errors("create the backfill's run")
    def create_backfill_run(
        self,
        backfill_id: str,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        link = {"run_id": run.id, "backfill_id": backfill_id, "created_at": run.created_at}
        try:
            with self._serial, self._engine.begin() as conn:
                conn.execute(self._upsert_run, _run_params(run))
                conn.execute(sa.insert(backfill_runs_table), link)
                if materializations:
                    # As create_run: a row the upsert left alone is an identity conflict.
                    # SQLite runs the batch row by row (each row's seq is max + 1), so its
                    # rowcount is right; PostgreSQL's multi-row INSERT says it by RETURNING.
                    params = [_mat_params(m) for m in materializations]
                    if self._dialect == "sqlite":
                        saved = conn.execute(self._upsert_mat, params).rowcount
                    else:
                        saved = len(conn.execute(self._upsert_mat_returning, params).all())
                    if saved != len(materializations):
                        raise _identity_error(materializations)
                self._write_audit(conn, audit)
        except sa.exc.IntegrityError as exc:
            raise StoreError(
                f"Could not create run {run.id} of backfill {backfill_id}: there is no such "
                f"backfill, or the run is already linked to one ({_detail(exc)})."
            ) from exc

    @_wraps_errors("close the backfill's interrupted runs")
    def interrupt_backfill_runs(
        self, backfill_id: str, *, now: datetime, error_type: str, error_message: str
    ) -> list[str]:
        r, m, link = runs, materializations, backfill_runs_table
        stuck = (
            sa.select(r.c.id)
            .select_from(r.join(link, link.c.run_id == r.c.id))
            .where(link.c.backfill_id == backfill_id, r.c.status == RunStatus.RUNNING.value)
            .order_by(r.c.created_at, r.c.seq)
        )
        with self._serial, self._engine.begin() as conn:
            closed = list(conn.execute(stuck).scalars())
            for batch in _batches(closed):
                conn.execute(
                    sa.update(m)
                    .where(
                        m.c.run_id.in_(batch),
                        m.c.status.in_((Status.PENDING.value, Status.RUNNING.value)),
                    )
                    .values(
                        status=Status.FAILED.value,
                        completed_at=now,
                        error_type=error_type,
                        error_message=error_message,
                    )
                )
                conn.execute(
                    sa.update(r)
                    .where(r.c.id.in_(batch))
                    .values(status=RunStatus.FAILED.value, completed_at=now)
                )
            if closed:
                events = [interrupted_run_event(run_id, backfill_id, now) for run_id in closed]
                conn.execute(self._insert_audit, [_audit_params(e) for e in events])
        return closed

    @_wraps_errors("list the backfill's partitions")
    def list_backfill_partitions(
        self,
        backfill_id: str,
        *,
        outcome: PartitionOutcome | None = None,
        after: int = -1,
        limit: int | None = 100,
    ) -> list[BackfillPartition]:
        rows = backfill_partitions_table
        stmt = (
            sa.select(*rows.c)
            .where(rows.c.backfill_id == backfill_id, rows.c.position > after)
            .order_by(rows.c.position)
        )
        if outcome is not None:
            stmt = stmt.where(rows.c.outcome == outcome.value)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._serial, self._read.connect() as conn:
            return [_backfill_partition_record(row) for row in conn.execute(stmt)]

    @_wraps_errors("find successful partitions")
    def successful_partitions(
        self,
        assets: Sequence[str],
        partition_keys: Sequence[str],
        *,
        backfill_id: str | None = None,
    ) -> set[str]:
        wanted_assets = sorted(set(assets))
        if not wanted_assets or not partition_keys:
            return set()
        m, link = materializations, backfill_runs_table
        found: set[str] = set()
        with self._serial, self._read.connect() as conn:
            for batch in _batches(sorted(set(partition_keys))):
                # A key qualifies when each asset has a success: count the distinct assets.
                stmt = (
                    sa.select(m.c.partition_key)
                    .where(
                        m.c.asset.in_(wanted_assets),
                        m.c.partition_key.in_(batch),
                        m.c.status == Status.SUCCESS.value,
                    )
                    .group_by(m.c.partition_key)
                    .having(sa.func.count(sa.distinct(m.c.asset)) == len(wanted_assets))
                )
                if backfill_id is not None:
                    of_backfill = sa.select(link.c.run_id).where(link.c.backfill_id == backfill_id)
                    stmt = stmt.where(m.c.run_id.in_(of_backfill))
                found.update(conn.execute(stmt).scalars())
        return found

    def _update_backfill(
        self, backfill_id: str, stmt: sa.Update, audit: Sequence[AuditEvent] = ()
    ) -> BackfillRecord | None:
        """Run a conditional UPDATE; on a match, store the audit and return the new row."""
        with self._serial, self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return None
            self._write_audit(conn, audit)
            return _select_backfill(conn, backfill_id)

    # --- run transactions (distributed execution) ------------------------------------------
    @_wraps_errors("update the run")
    def run_transaction(self, run_id: str, work: Callable[[RunTransaction], T]) -> T:
        # On SQLite, BEGIN IMMEDIATE already serializes every writer; PostgreSQL takes a
        # transaction-scoped advisory lock on the run id (the run row may not exist yet).
        bound = self._pg.bound() if self._pg is not None else None
        if bound is not None:
            return self._pgs.run_transaction(bound, run_id, work)
        with self._serial, self._engine.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(_LOCK_RUN, {"run_id": run_id})
            return work(_SQLRunTransaction(self, conn, run_id))

    # --- step sessions (distributed workers) ------------------------------------------------
    @contextmanager
    def step_session(
        self, run_id: str, asset: str, partition_key: str, *, lock: str
    ) -> Iterator[tuple[MaterializationRecord | None, RunStatus | None]]:
        """Hold the step lock named ``lock`` for the block, and read the step's record.

        For a distributed worker running one step. On PostgreSQL the block gets one connection
        of its own, bound to this thread: the step's reads and writes (its ``running`` record,
        its run transaction) go through it, pipelined (:mod:`flowstone.store.direct_pg`). The
        step lock is a session advisory lock on it, so two workers never run the same
        (asset, partition) at once, whatever runs they serve; a worker that dies releases it
        with its connection. On SQLite (one machine; no distributed workers) there is no lock.

        Yields:
            The run's record of the step (None if it has none) and the run's status (None
            when the record or the run is missing).
        """
        if self._pg is None:
            found = self.list_materializations(
                run_id=run_id, asset=asset, partition_key=partition_key, limit=1
            )
            run = self.get_run(run_id) if found else None
            yield (found[0] if found else None), (run.status if run else None)
            return
        with self._pg.session() as conn:
            yield self._pgs.lock_step(conn, lock, run_id, asset, partition_key)
            # Reached only when the block did not raise (on an error the session closes the
            # connection instead, and the lock ends with it), and when the commit that recorded
            # the step's outcome did not release the lock already.
            if conn.step_lock is not None:
                self._pgs.unlock_step(conn, conn.step_lock)

    @_wraps_errors("read the step")
    def find_in_run(
        self, run_id: str, asset: str, partition_key: str
    ) -> MaterializationRecord | None:
        """The run's record of (asset, partition), or None (through the thread's step session
        on PostgreSQL, when one is open)."""
        bound = self._pg.bound() if self._pg is not None else None
        if bound is not None:
            return self._pgs.find(bound, run_id, asset, partition_key)
        params = {"run_id": run_id, "asset": asset, "partition_key": partition_key}
        with self._serial, self._read.connect() as conn:
            row = conn.execute(_FIND_IN_RUN, params).first()
        return None if row is None else _mat_record(row)

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

        self._upstream = self._upstream_statement(text_order)
        self._downstream = self._downstream_statement(text_order, with_status=False)
        self._impact = self._downstream_statement(text_order, with_status=True)
        self._build_schedule_statements()

    @staticmethod
    def _upstream_statement(
        text_order: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]],
    ) -> sa.Select[Any]:
        """Materializations read by ``:start``, transitively, each at its smallest depth."""
        e, m = lineage, materializations
        one = sa.literal_column("1", sa.Integer)
        walk = (
            sa.select(
                e.c.upstream_materialization_id.label("mat_id"),
                e.c.upstream_asset.label("asset"),
                e.c.upstream_partition_key.label("partition_key"),
                one.label("depth"),
            )
            .where(e.c.materialization_id == sa.bindparam("start"))
            .cte("upstream_walk", recursive=True)
        )
        step = e.alias("step")
        # UNION, not UNION ALL: a diamond reaches the same node twice at one depth.
        walk = walk.union(
            sa.select(
                step.c.upstream_materialization_id,
                step.c.upstream_asset,
                step.c.upstream_partition_key,
                walk.c.depth + 1,
            ).where(
                step.c.materialization_id == walk.c.mat_id,
                walk.c.depth < sa.bindparam("limit", type_=sa.Integer),
            )
        )
        nodes = (
            sa.select(
                walk.c.mat_id,
                walk.c.asset,
                walk.c.partition_key,
                sa.func.min(walk.c.depth).label("depth"),
            )
            .group_by(walk.c.mat_id, walk.c.asset, walk.c.partition_key)
            .subquery("nodes")
        )
        # An outer join: lineage may name an upstream materialization the store no longer has.
        return (
            sa.select(
                nodes.c.mat_id,
                nodes.c.asset,
                nodes.c.partition_key,
                nodes.c.depth,
                m.c.run_id,
                m.c.status,
            )
            .select_from(nodes.outerjoin(m, m.c.id == nodes.c.mat_id))
            .order_by(
                nodes.c.depth,
                text_order(nodes.c.asset),
                text_order(nodes.c.partition_key),
                text_order(nodes.c.mat_id),
            )
        )

    @staticmethod
    def _downstream_statement(
        text_order: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]],
        *,
        with_status: bool,
    ) -> sa.Select[Any]:
        """(asset, partition)s that consumed ``(:asset, :partition_key)``, transitively.

        Each appears once, at its smallest depth, with the newest materialization that consumed
        something one step closer to the start (the same answer as MemoryStore's walk).
        """
        e, m = lineage, materializations
        zero = sa.literal_column("0", sa.Integer)
        # Cast: PostgreSQL wants the two halves of a recursive query to agree on column types.
        start = sa.select(
            sa.cast(sa.bindparam("asset"), e.c.asset.type).label("asset"),
            sa.cast(sa.bindparam("partition_key"), e.c.partition_key.type).label("partition_key"),
            zero.label("depth"),
        ).cte("downstream_walk", recursive=True)
        step = e.alias("step")
        walk = start.union(
            sa.select(step.c.asset, step.c.partition_key, start.c.depth + 1).where(
                step.c.upstream_asset == start.c.asset,
                step.c.upstream_partition_key == start.c.partition_key,
                start.c.depth < sa.bindparam("limit", type_=sa.Integer),
            )
        )
        # Distance of each reached (asset, partition); the start itself is at 0.
        dist = (
            sa.select(walk.c.asset, walk.c.partition_key, sa.func.min(walk.c.depth).label("depth"))
            .group_by(walk.c.asset, walk.c.partition_key)
            .cte("distance")
        )
        node, via = dist.alias("node"), dist.alias("via")
        edge, consumer = e.alias("edge"), m.alias("consumer")
        rank = sa.func.row_number().over(
            partition_by=(node.c.asset, node.c.partition_key),
            order_by=(consumer.c.created_at.desc(), consumer.c.seq.desc()),
        )
        candidates = (
            sa.select(
                node.c.asset,
                node.c.partition_key,
                node.c.depth,
                edge.c.materialization_id,
                edge.c.run_id,
                rank.label("rank"),
            )
            .select_from(
                node.join(
                    edge,
                    sa.and_(
                        edge.c.asset == node.c.asset,
                        edge.c.partition_key == node.c.partition_key,
                    ),
                )
                .join(
                    via,
                    sa.and_(
                        via.c.asset == edge.c.upstream_asset,
                        via.c.partition_key == edge.c.upstream_partition_key,
                        via.c.depth == node.c.depth - 1,
                    ),
                )
                .join(consumer, consumer.c.id == edge.c.materialization_id)
            )
            .where(node.c.depth > 0)
            .subquery("candidates")
        )
        c = candidates.c
        columns: list[sa.ColumnElement[Any]] = [
            c.asset,
            c.partition_key,
            c.depth,
            c.materialization_id,
            c.run_id,
        ]
        if with_status:
            latest = m.alias("latest")
            columns.append(
                sa.select(latest.c.status)
                .where(latest.c.asset == c.asset, latest.c.partition_key == c.partition_key)
                .order_by(latest.c.created_at.desc(), latest.c.seq.desc())
                .limit(1)
                .scalar_subquery()
                .label("status")
            )
        return (
            sa.select(*columns)
            .where(c.rank == 1)
            .order_by(c.depth, text_order(c.asset), text_order(c.partition_key))
        )


# --- schedules and sensors: rows <-> records -------------------------------------------------


class _TickTaken(Exception):
    """Inside a tick's transaction: another scheduler got there first; roll back."""


def _later_cursor(column: sa.ColumnElement[Any], value: datetime) -> sa.ColumnElement[Any]:
    """SQL for "the cursor moved forward to value, never back"."""
    bound = sa.literal(value, UTCDateTime())
    return sa.case((sa.or_(column.is_(None), column < bound), bound), else_=column)


def _schedule_params(s: ScheduleRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "targets": list(s.targets),
        "cron": s.cron,
        "timezone": s.timezone,
        "partition": s.partition,
        "with_upstream": s.with_upstream,
        "catch_up": s.catch_up.value,
        "catch_up_limit": s.catch_up_limit,
        "max_lateness_s": s.max_lateness_s,
        "dst_nonexistent": s.dst_nonexistent,
        "dst_repeated": s.dst_repeated,
        "paused": s.paused,
        "cursor": s.cursor,
        "source": s.source,
        "tags": dict(s.tags),
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _schedule_record(row: Any) -> ScheduleRecord:
    m = row._mapping
    return ScheduleRecord(
        name=m["name"],
        targets=tuple(m["targets"] or ()),
        cron=m["cron"],
        timezone=m["timezone"],
        partition=m["partition"],
        with_upstream=bool(m["with_upstream"]),
        catch_up=CatchUp(m["catch_up"]),
        catch_up_limit=m["catch_up_limit"],
        max_lateness_s=m["max_lateness_s"],
        dst_nonexistent=m["dst_nonexistent"],
        dst_repeated=m["dst_repeated"],
        paused=bool(m["paused"]),
        cursor=m["cursor"],
        source=m["source"],
        tags=m["tags"] or {},
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _sensor_params(s: SensorRecord) -> dict[str, Any]:
    return {
        "name": s.name,
        "interval_s": s.interval_s,
        "paused": s.paused,
        "cursor": s.cursor,
        "version": s.version,
        "last_tick_at": s.last_tick_at,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _sensor_record(row: Any) -> SensorRecord:
    m = row._mapping
    return SensorRecord(
        name=m["name"],
        interval_s=m["interval_s"],
        paused=bool(m["paused"]),
        cursor=m["cursor"],
        version=m["version"],
        last_tick_at=m["last_tick_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def _tick_params(t: TickRecord) -> dict[str, Any]:
    return {
        "kind": t.kind.value,
        "name": t.name,
        "tick_time": t.tick_time,
        "status": t.status.value,
        "run_ids": list(t.run_ids),
        "reason": t.reason,
        "details": t.details,
        "recorded_at": t.recorded_at,
    }


def _tick_record(row: Any) -> TickRecord:
    m = row._mapping
    return TickRecord(
        id=m["id"],
        kind=TickKind(m["kind"]),
        name=m["name"],
        tick_time=m["tick_time"],
        status=TickStatus(m["status"]),
        run_ids=tuple(m["run_ids"] or ()),
        reason=m["reason"],
        details=m["details"] or {},
        recorded_at=m["recorded_at"],
    )


# --- approvals: rows <-> records -----------------------------------------------------------


def _approval_params(a: ApprovalRecord) -> dict[str, Any]:
    return {
        "id": a.id,
        "run_id": a.run_id,
        "materialization_id": a.materialization_id,
        "asset": a.asset,
        "partition_key": a.partition_key,
        "status": a.status.value,
        "message": a.message,
        "context": a.context,
        "attempt": a.attempt,
        "requested_at": a.requested_at,
        "timeout_at": a.timeout_at,
        "decided_by": a.decided_by,
        "decided_at": a.decided_at,
        "reason": a.reason,
        "input": a.input,
    }


def _approval_record(row: sa.Row[Any]) -> ApprovalRecord:
    values = row._mapping
    return ApprovalRecord(
        id=values["id"],
        run_id=values["run_id"],
        materialization_id=values["materialization_id"],
        asset=values["asset"],
        partition_key=values["partition_key"],
        status=ApprovalStatus(values["status"]),
        message=values["message"],
        context=values["context"] if values["context"] is not None else {},
        attempt=values["attempt"],
        requested_at=values["requested_at"],
        timeout_at=values["timeout_at"],
        decided_by=values["decided_by"],
        decided_at=values["decided_at"],
        reason=values["reason"],
        input=values["input"] if values["input"] is not None else {},
    )


# --- run transactions (distributed execution) ----------------------------------------------

#: Advisory lock namespace of FlowStone's run locks (the first key of the two-key form), so
#: they never collide with another application's advisory locks in the same database.
RUN_LOCK_NAMESPACE = 0x464C5354  # "FLST"
_LOCK_RUN = sa.select(
    sa.func.pg_advisory_xact_lock(
        sa.literal(RUN_LOCK_NAMESPACE, sa.Integer), sa.func.hashtext(sa.bindparam("run_id"))
    )
)
_RUN_MATS = (
    sa.select(*_MAT_COLUMNS)
    .where(materializations.c.run_id == sa.bindparam("run_id"))
    .order_by(materializations.c.created_at, materializations.c.seq)
)
_RUN_MATS_OF = _RUN_MATS.where(materializations.c.asset.in_(sa.bindparam("assets", expanding=True)))
#: Commit without waiting for the WAL flush (PostgreSQL's asynchronous commit), for writes that
#: are harmless to lose in a database crash: a step's ``running`` status (lost, the step reads
#: ``pending``, which every executor treats as not started), and a worker's final transaction,
#: which the job queue's durable acknowledgement follows at once (its flush covers everything
#: committed before it; a crash before it reverts both, and the stalled job is retried). A
#: lost commit is never half-applied: PostgreSQL replays its WAL in order.
_NO_FLUSH = sa.text("SET LOCAL synchronous_commit = off")
_FIND_IN_RUN = sa.select(*_MAT_COLUMNS).where(
    materializations.c.run_id == sa.bindparam("run_id"),
    materializations.c.asset == sa.bindparam("asset"),
    materializations.c.partition_key == sa.bindparam("partition_key"),
)
#: The statuses a step is in until it ends (the positive list lets the (run_id, status) index
#: answer with one probe per status, instead of reading every step of the run).
_UNFINISHED = [s.value for s in Status if not s.is_final]
_HAS_UNFINISHED = sa.select(
    sa.exists().where(
        materializations.c.run_id == sa.bindparam("run_id"),
        materializations.c.status.in_(_UNFINISHED),
    )
)


class _SQLRunTransaction:
    """A :class:`RunTransaction` on an open SQLAlchemy connection of a :class:`SQLStore`."""

    def __init__(self, store: SQLStore, conn: sa.Connection, run_id: str) -> None:
        self._store = store
        self._conn = conn
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def connection(self) -> Any:
        return self._conn.connection.driver_connection

    def get_run(self) -> RunRecord | None:
        row = self._conn.execute(self._store._get_run, {"id": self._run_id}).first()
        return None if row is None else _run_record(row)

    def run_status(self) -> RunStatus | None:
        found = self._conn.execute(_RUN_STATUS, {"id": self._run_id}).scalar()
        return None if found is None else RunStatus(found)

    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        check_run_member(self._run_id, run)
        for record in materializations:
            check_run_member(self._run_id, record)
        store, conn = self._store, self._conn
        conn.execute(store._upsert_run, _run_params(run))
        if materializations:
            params = [_mat_params(m) for m in materializations]
            if store._dialect == "sqlite":
                saved = conn.execute(store._upsert_mat, params).rowcount
            else:
                saved = len(conn.execute(store._upsert_mat_returning, params).all())
            if saved != len(materializations):
                raise _identity_error(materializations)
        self._audit(audit)

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        check_run_member(self._run_id, run)
        self._conn.execute(self._store._update_run, _run_params(run))
        self._audit(audit)

    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        check_run_member(self._run_id, record)
        if self._conn.execute(self._store._upsert_mat, _mat_params(record)).rowcount != 1:
            raise _identity_error((record,))
        if lineage:
            self._conn.execute(self._store._insert_edge, [_edge_params(e) for e in lineage])
        self._audit(audit)

    def materializations(self, assets: Sequence[str] | None = None) -> list[MaterializationRecord]:
        if assets is not None and not assets:
            return []
        params: dict[str, Any] = {"run_id": self._run_id}
        stmt = _RUN_MATS
        if assets is not None:
            stmt, params["assets"] = _RUN_MATS_OF, list(assets)
        return [_mat_record(row) for row in self._conn.execute(stmt, params).all()]

    def commit_without_flush(self) -> None:
        if self._store._dialect == "postgresql":
            self._conn.execute(_NO_FLUSH)

    def find(self, asset: str, partition_key: str) -> MaterializationRecord | None:
        params = {"run_id": self._run_id, "asset": asset, "partition_key": partition_key}
        row = self._conn.execute(_FIND_IN_RUN, params).first()
        return None if row is None else _mat_record(row)

    def has_unfinished(self) -> bool:
        return bool(self._conn.execute(_HAS_UNFINISHED, {"run_id": self._run_id}).scalar_one())

    def _audit(self, events: Sequence[AuditEvent]) -> None:
        if events:
            self._conn.execute(self._store._insert_audit, [_audit_params(e) for e in events])


# --- the direct PostgreSQL path of a worker's step (see flowstone.store.direct_pg) ----------

#: Advisory lock namespace of step locks: (asset, partition) being run by a worker.
STEP_LOCK_NAMESPACE = 0x464C5350  # "FLSP"
_STEP_KEY = sa.func.hashtext(sa.bindparam("step", type_=sa.Text))
_LOCK_STEP = sa.select(
    sa.func.pg_advisory_lock(sa.literal(STEP_LOCK_NAMESPACE, sa.Integer), _STEP_KEY)
)
_UNLOCK_STEP = sa.select(
    sa.func.pg_advisory_unlock(sa.literal(STEP_LOCK_NAMESPACE, sa.Integer), _STEP_KEY)
)
#: A step's record and its run's status, in one read.
_STEP_READ = (
    sa.select(*_MAT_COLUMNS, runs.c.status)
    .select_from(materializations.outerjoin(runs, runs.c.id == materializations.c.run_id))
    .where(
        materializations.c.run_id == sa.bindparam("run_id"),
        materializations.c.asset == sa.bindparam("asset"),
        materializations.c.partition_key == sa.bindparam("partition_key"),
    )
)
#: As _HAS_UNFINISHED, with the unfinished statuses as one array parameter (an IN list's
#: parameters are only known per execution, so it does not compile once).
_HAS_UNFINISHED_PG = sa.select(
    sa.exists().where(
        materializations.c.run_id == sa.bindparam("run_id"),
        materializations.c.status
        == sa.any_(sa.bindparam("unfinished", value=_UNFINISHED, type_=postgresql.ARRAY(sa.Text))),
    )
)
#: The run (all NULL when there is none) and its count of unfinished steps, in one row.
_RUN_STATUS = sa.select(runs.c.status).where(runs.c.id == sa.bindparam("id"))
#: A worker's per-step read: whether a step is left, and the run's status; the rest of the run
#: (its targets can be thousands of names, parsed from JSON for nothing) only when no step is
#: left, as the run is then closed in the same transaction.
_LEFT = _HAS_UNFINISHED_PG.scalar_subquery()
_RUN_STATUS_AND_UNFINISHED = sa.select(
    _LEFT,
    *(
        c if c.name in ("id", "status") else sa.case((~_LEFT, c)).label(c.name)
        for c in _RUN_COLUMNS
    ),
).select_from(
    sa.select(sa.literal(1).label("one"))
    .subquery()
    .outerjoin(runs, runs.c.id == sa.bindparam("run_id"))
)
_RUN_AND_UNFINISHED = sa.select(_HAS_UNFINISHED_PG.scalar_subquery(), *_RUN_COLUMNS).select_from(
    sa.select(sa.literal(1).label("one"))
    .subquery()
    .outerjoin(runs, runs.c.id == sa.bindparam("run_id"))
)
#: A step's final record, written only if the attempt still owns the step: ``running`` with
#: its attempt number, or ``pending`` and never started (its ``running`` write was lost). A
#: worker's fencing check is this condition, so it costs no read of its own.
_MAT_SET = [c.name for c in _MAT_COLUMNS if c.name not in ("id", *_MAT_FIXED)]
_SAVE_IF_OWNER = sa.update(materializations).where(
    materializations.c.id == sa.bindparam("owner_id"),
    *(materializations.c[name] == sa.bindparam(f"owner_{name}") for name in _MAT_FIXED),
    sa.or_(
        sa.and_(
            materializations.c.status == Status.RUNNING.value,
            materializations.c.attempt == sa.bindparam("owner_attempt"),
        ),
        sa.and_(
            materializations.c.status == Status.PENDING.value,
            materializations.c.started_at.is_(None),
        ),
    ),
)
_RUN_MATS_ANY = _RUN_MATS.where(
    materializations.c.asset == sa.any_(sa.bindparam("assets", type_=postgresql.ARRAY(sa.Text)))
)


def _pg_error(exc: Exception, doing: str) -> StoreError:
    """A psycopg error of the direct path, as :func:`_store_error` words SQLAlchemy's."""
    import psycopg

    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.IntegrityError):
        return _store_error(sa.exc.IntegrityError(None, None, exc), doing)
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailableError(
            f"Could not {doing}: the connection to the metadata database was lost ({detail}). "
            "Check that the database server is up, then retry."
        )
    return StoreError(f"Could not {doing}: {detail}")


class _PgStatements:
    """The store's statements compiled once for the direct path, and the writes made of them."""

    def __init__(self, store: SQLStore) -> None:
        dialect = positional_dialect(store.engine)

        def pg(stmt: sa.ClauseElement, keys: Sequence[str] | None = None) -> PgStatement:
            return compile_pg(dialect, stmt, keys)

        mat_keys = [c.name for c in _MAT_COLUMNS]
        self.upsert_mat = pg(store._upsert_mat, mat_keys)
        self.save_if_owner = pg(_SAVE_IF_OWNER, _MAT_SET)
        self.upsert_run = pg(store._upsert_run, [c.name for c in _RUN_COLUMNS])
        self.update_run = pg(store._update_run, [c.name for c in _RUN_COLUMNS])
        self.insert_edge = pg(store._insert_edge, [c.name for c in lineage.c if c.name != "id"])
        # No RETURNING: the direct path never reads the new event ids.
        self.insert_audit = pg(
            audit_log.insert().return_defaults(supplemental_cols=[]),
            [c.name for c in audit_log.c if c.name != "id"],
        )
        self.get_run = pg(store._get_run)
        self.find_one = pg(_FIND_IN_RUN)
        self.run_mats = pg(_RUN_MATS)
        self.run_mats_of = pg(_RUN_MATS_ANY)
        self.has_unfinished = pg(_HAS_UNFINISHED_PG)
        self.run_and_unfinished = pg(_RUN_AND_UNFINISHED)
        self.run_status_and_unfinished = pg(_RUN_STATUS_AND_UNFINISHED)
        self.lock_run = pg(_LOCK_RUN)
        self.take_step_lock = pg(_LOCK_STEP)
        self.release_step_lock = pg(_UNLOCK_STEP)
        self.step_read = pg(_STEP_READ)

    @classmethod
    def build(cls, store: SQLStore) -> _PgStatements:
        return cls(store)

    # --- writes, queued on a connection -------------------------------------------------
    def queue_materialization(
        self,
        conn: PgConnection,
        record: MaterializationRecord,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
    ) -> None:
        conn.queue(self.upsert_mat, _mat_params(record), doing="save the materialization", expect=1)
        if lineage:
            conn.queue(self.insert_edge, [_edge_params(e) for e in lineage], doing="save lineage")
        self.queue_audit(conn, audit)

    def queue_audit(self, conn: PgConnection, audit: Sequence[AuditEvent]) -> None:
        if audit:
            conn.queue(
                self.insert_audit,
                [_audit_params(e) for e in audit],
                doing="append to the audit log",
            )

    def save(
        self,
        conn: PgConnection,
        record: MaterializationRecord,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
    ) -> None:
        """``save_materialization`` outside a run transaction: one round trip, or none for a
        step's ``running`` record, which is posted (sent, its result read with the next round
        trip: see ``_NO_FLUSH`` for why it may be lost)."""
        if conn.superseded is not None:
            raise conn.superseded  # the step belongs to a newer attempt: write nothing more
        conn.command("BEGIN")
        self.queue_materialization(conn, record, lineage, audit)
        # An explicit COMMIT, executed as it arrives: a posted write is visible at once, not
        # when the next round trip syncs the pipeline.
        conn.command("COMMIT")
        if record.status == Status.RUNNING and not lineage and not audit:
            conn.post()
            return
        _send_or_roll_back(conn)

    # --- reads ------------------------------------------------------------------------------
    def find(
        self, conn: PgConnection, run_id: str, asset: str, partition_key: str
    ) -> MaterializationRecord | None:
        params = {"run_id": run_id, "asset": asset, "partition_key": partition_key}
        rows = conn.read(self.find_one, params, doing="read the materialization")
        return _mat_record(rows[0]) if rows else None

    def lock_step(
        self, conn: PgConnection, lock: str, run_id: str, asset: str, partition_key: str
    ) -> tuple[MaterializationRecord | None, RunStatus | None]:
        """Take the step lock (waiting for another worker holding it), then read the step's
        record and its run's status: one round trip, the read after the wait."""
        conn.queue(self.take_step_lock, {"step": lock}, doing="lock the step")
        params = {"run_id": run_id, "asset": asset, "partition_key": partition_key}
        rows = conn.read(self.step_read, params, doing="read the step")
        conn.step_lock, conn.step = lock, (run_id, asset, partition_key)
        if not rows:
            return None, None
        run_status = rows[0][len(_MAT_COLUMNS)]
        return _mat_record(rows[0]), None if run_status is None else RunStatus(run_status)

    def unlock_step(self, conn: PgConnection, lock: str) -> None:
        conn.read(self.release_step_lock, {"step": lock}, doing="unlock the step")
        conn.step_lock = None

    def run_transaction(
        self, conn: PgConnection, run_id: str, work: Callable[[RunTransaction], T]
    ) -> T:
        tx = _PgRunTransaction(self, conn, run_id)
        try:
            result = work(tx)
            conn.send_checks()  # a conditional write nothing read back yet: before the COMMIT
            conn.command("COMMIT")
            if tx.outcome_saved and conn.step_lock is not None:
                # The step's outcome is committed: nothing left to protect, and the lock goes
                # in the same round trip as the COMMIT.
                conn.queue(
                    self.release_step_lock, {"step": conn.step_lock}, doing="unlock the step"
                )
                conn.flush()
                conn.step_lock = None
            else:
                conn.flush()
        except BaseException:
            _roll_back(conn)
            raise
        return result


def _send_or_roll_back(conn: PgConnection) -> None:
    try:
        conn.flush()
    except BaseException:
        _roll_back(conn)
        raise


def _roll_back(conn: PgConnection) -> None:
    """End a failed transaction, leaving the connection usable (or closed: if the rollback
    fails, the connection is broken and its step session closes it)."""
    import psycopg

    conn.discard()
    if conn.driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with suppress(psycopg.Error):
            conn.driver.execute("ROLLBACK")


_UNREAD: Any = object()


class _PgRunTransaction:
    """A :class:`RunTransaction` on a step session's connection.

    Writes are queued and sent with the next read or the COMMIT (one round trip each). The run
    lock is the same advisory lock as :class:`_SQLRunTransaction`'s, taken first, so the two
    kinds of transactions take turns on a run. Within the transaction the run is read once, and
    the count of unfinished steps comes with that read (until the next write): after a step's
    final record, :func:`~flowstone.execution.scheduling.after_final` asks for both, so a
    step that makes nothing ready commits in two round trips: BEGIN, the run lock, its writes
    (the fencing check is the final write's condition: :meth:`save_attempt`) and the run's read
    in one, the COMMIT in the other.
    """

    def __init__(self, statements: _PgStatements, conn: PgConnection, run_id: str) -> None:
        self._s = statements
        self._conn = conn
        self._run_id = run_id
        self._run: RunRecord | None = _UNREAD
        self._unfinished: bool | None = None
        #: The step of the connection's step session got its outcome in this transaction.
        self.outcome_saved = False
        conn.command("BEGIN")
        conn.queue(statements.lock_run, {"run_id": run_id}, doing="lock the run")

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def connection(self) -> Any:
        # The job queue writes through it: what is queued goes first.
        self._conn.flush()
        self._unfinished = None  # the caller may change anything
        return self._conn.driver

    def _wrote(self) -> None:
        self._unfinished = None

    def get_run(self) -> RunRecord | None:
        if self._run is _UNREAD:
            (row,) = self._conn.read(
                self._s.run_and_unfinished, {"run_id": self._run_id}, doing="read the run"
            )
            self._unfinished = bool(row[0])
            self._run = None if row[1] is None else _run_record(row[1:])
        return self._run

    def run_status(self) -> RunStatus | None:
        if self._run is not _UNREAD:
            return None if self._run is None else self._run.status
        (row,) = self._conn.read(
            self._s.run_status_and_unfinished, {"run_id": self._run_id}, doing="read the run"
        )
        self._unfinished = bool(row[0])
        if row[1] is None:
            self._run = None
            return None
        if not self._unfinished:
            self._run = _run_record(row[1:])  # whole: the caller closes the run
        return RunStatus(row[2])

    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        check_run_member(self._run_id, run)
        for record in materializations:
            check_run_member(self._run_id, record)
        self._conn.queue(self._s.upsert_run, _run_params(run), doing="create the run")
        if materializations:
            self._conn.queue(
                self._s.upsert_mat,
                [_mat_params(m) for m in materializations],
                doing="create the run",
                expect=len(materializations),
            )
        self._s.queue_audit(self._conn, audit)
        self._run, self._unfinished = _UNREAD, None

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        check_run_member(self._run_id, run)
        self._conn.queue(self._s.update_run, _run_params(run), doing="update the run")
        self._s.queue_audit(self._conn, audit)
        self._run, self._unfinished = _UNREAD, None

    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        check_run_member(self._run_id, record)
        self._s.queue_materialization(self._conn, record, lineage, audit)
        self._saved(record)

    def _saved(self, record: MaterializationRecord) -> None:
        self._unfinished = None
        if (record.run_id, record.asset, record.partition_key) == self._conn.step and (
            # Final, or pending again after it ran: a retry is scheduled.
            record.status.is_final
            or (record.status == Status.PENDING and record.started_at is not None)
        ):
            self.outcome_saved = True

    def save_attempt(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        superseded: Callable[[MaterializationRecord | None], BaseException],
    ) -> None:
        """Save ``record``, the final record of its attempt, only if that attempt still owns
        the step (``running`` with its attempt number, or ``pending`` never started).

        The condition is checked when the write's result is read (with the next read, or
        before the COMMIT at the latest); when it fails, ``superseded(current record)`` is
        raised, nothing of the transaction is kept, and the step session writes nothing more.
        """
        check_run_member(self._run_id, record)
        params = _mat_params(record)
        params.update({f"owner_{name}": params[name] for name in ("id", *_MAT_FIXED)})
        params["owner_attempt"] = record.attempt

        def check(changed: int) -> None:
            if changed != 1:
                current = self.find(record.asset, record.partition_key)
                self._conn.superseded = error = superseded(current)
                raise error

        self._conn.queue(
            self._s.save_if_owner, params, doing="save the materialization", check=check
        )
        if lineage:
            self._conn.queue(
                self._s.insert_edge, [_edge_params(e) for e in lineage], doing="save lineage"
            )
        self._s.queue_audit(self._conn, audit)
        self._saved(record)

    def materializations(self, assets: Sequence[str] | None = None) -> list[MaterializationRecord]:
        if assets is not None and not assets:
            return []
        params: dict[str, Any] = {"run_id": self._run_id}
        stmt = self._s.run_mats
        if assets is not None:
            stmt, params["assets"] = self._s.run_mats_of, list(assets)
        rows = self._conn.read(stmt, params, doing="read the run's materializations")
        return [_mat_record(row) for row in rows]

    def commit_without_flush(self) -> None:
        """Nothing to do: a step session's connection never waits for the flush."""

    def find(self, asset: str, partition_key: str) -> MaterializationRecord | None:
        return self._s.find(self._conn, self._run_id, asset, partition_key)

    def has_unfinished(self) -> bool:
        if self._unfinished is None:
            rows = self._conn.read(
                self._s.has_unfinished, {"run_id": self._run_id}, doing="look for unfinished steps"
            )
            self._unfinished = bool(rows[0][0])
        return self._unfinished
