"""Engines set up the way the store needs them, on SQLite or PostgreSQL (used by the store and by
migrations).

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
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from flowstone.errors import StoreUnavailableError

#: How long a SQLite writer waits for another one to finish before giving up.
DEFAULT_BUSY_TIMEOUT_MS = 30_000


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
