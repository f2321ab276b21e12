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
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from flowstone.errors import StoreError, StoreUnavailableError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
)
from flowstone.store import migrate
from flowstone.store.base import clamp_depth
from flowstone.store.direct import DirectWriter, prepare
from flowstone.store.schema import (
    VERSION_TABLE,
    audit_log,
    lineage,
    materializations,
    runs,
)

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
            cursor.execute("PRAGMA journal_mode = WAL")
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

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (for tools and tests; FlowStone itself goes through methods)."""
        return self._engine

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
            if audit:
                conn.execute(self._insert_audit, [_audit_params(e) for e in audit])

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
            if audit:
                conn.execute(self._insert_audit, [_audit_params(e) for e in audit])

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
        with self._serial, self._engine.begin() as conn:
            if conn.execute(self._upsert_mat, _mat_params(record)).rowcount != 1:
                raise _identity_error((record,))
            if lineage:
                conn.execute(self._insert_edge, [_edge_params(e) for e in lineage])
            if audit:
                conn.execute(self._insert_audit, [_audit_params(e) for e in audit])

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

    def close(self) -> None:
        """Close every pooled connection."""
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
