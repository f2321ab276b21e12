"""PostgreSQL's hot path: a worker's step, run on one psycopg connection, pipelined.

A distributed worker's step used to cost about seventeen round trips through SQLAlchemy (the step's
record, the run, ``running``, then a run transaction: BEGIN, the run lock, the fencing read, the
final record, its audit, the run twice, the count of unfinished steps, COMMIT), each one a checkout
from the pool and several hundred microseconds of Python. Here a step keeps one connection for its
whole duration (a *step session*, bound to the worker's thread) and sends what belongs together in
one psycopg pipeline: writes are queued and go out with the next read or the COMMIT. A success of
a step that never ran, of an asset without dependents, costs two round trips (and one more for the
records of its dependencies that are steps of its run, if any): the step lock, the claim that makes
it ``running`` and the step's read; then its outcome's transaction committed with the read of what
is left in its run (``SQLStore.commit_attempt``; the fencing check is the final write's own
condition). A step that ran before is not claimed and writes its ``running`` record in a round trip
of its own, committed before anything else of the step is written (an approval request, on another
connection, must not be overwritten by it).

The statements are still the Core statements of :mod:`flowstone.store.sql` (the one place SQL is
written; the step session's own are in :mod:`flowstone.store.sql.step_sessions`), compiled once
for the psycopg dialect; parameters go through the columns' own bind processors and rows through
their result processors, so rows are identical to what SQLAlchemy writes and reads (a test holds
the two paths to that).

Step sessions run with ``synchronous_commit = off`` (set once per connection): everything a
worker writes during a job is made durable by the job queue's acknowledgement, which commits
(and flushes the WAL) right after; a database crash before it reverts both, and the job is
retried. See ``_NO_FLUSH`` in :mod:`flowstone.store.sql.transaction`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from flowstone.errors import StoreError

if TYPE_CHECKING:  # annotations only: psycopg is imported with the first PostgreSQL store
    import psycopg

Params = Mapping[str, Any]
Processor = Callable[[Any], Any] | None
#: Turns a driver error into the store's error, given what the store was doing.
ErrorMap = Callable[["psycopg.Error", str], StoreError]

#: Connections kept idle for step sessions; more concurrent steps open more, closed on return.
MAX_IDLE = 16


@dataclass(frozen=True, slots=True)
class PgStatement:
    """A statement compiled for psycopg: its SQL, how to bind its parameters and read its rows."""

    sql: str
    names: tuple[str, ...]
    defaults: tuple[Any, ...]
    binders: tuple[Processor, ...]
    readers: tuple[Processor, ...]

    def params(self, values: Params) -> tuple[Any, ...]:
        """The positional parameters for one execution."""
        out = []
        for name, default, bind in zip(self.names, self.defaults, self.binders, strict=True):
            value = values.get(name, default)
            out.append(value if bind is None else bind(value))
        return tuple(out)

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        """A result row as SQLAlchemy would hand it back."""
        return tuple(
            value if read is None else read(value)
            for value, read in zip(raw, self.readers, strict=False)
        )


def compile_pg(
    dialect: sa.Dialect, statement: sa.ClauseElement, keys: Sequence[str] | None = None
) -> PgStatement:
    """Compile ``statement`` once, positionally, for psycopg.

    Args:
        dialect: A psycopg dialect with ``paramstyle="format"`` (``%s`` placeholders).
        keys: For an INSERT: the parameter names every execution passes (its column list).
    """
    compiled = cast(
        "SQLCompiler",
        statement.compile(dialect=dialect, column_keys=None if keys is None else list(keys)),
    )
    names = tuple(compiled.positiontup or ())
    binds = [compiled.binds[name] for name in names]
    readers: list[Processor] = []
    for column in compiled._result_columns:
        impl = column[3].dialect_impl(dialect)
        if isinstance(column[3], sa.Numeric | sa.Float):
            # Its processor needs the column's type code (unknown until executed), and only
            # converts Decimal and float into each other: psycopg already hands back the
            # column's own Python type.
            readers.append(None)
            continue
        readers.append(impl.result_processor(dialect, None))
    return PgStatement(
        compiled.string,
        names,
        tuple(bind.effective_value for bind in binds),
        tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
        tuple(readers),
    )


def positional_dialect(engine: sa.Engine) -> sa.Dialect:
    """A dialect like ``engine``'s that compiles ``%s`` placeholders (psycopg's positional
    style, so a statement's parameters are a tuple built without dict lookups by psycopg)."""
    make: Callable[..., sa.Dialect] = type(engine.dialect)
    return make(paramstyle="format")


@dataclass(slots=True)
class _Queued:
    statement: PgStatement
    rows: list[tuple[Any, ...]]
    #: Rows the statement must change (an upsert that changed none hit a record of another
    #: identity), or None to accept any count.
    expect: int | None
    doing: str
    #: Called with the rows the statement changed, once its result is read (a condition the
    #: rest of the transaction depends on: it may raise).
    check: Callable[[int], None] | None = None
    cursor: psycopg.Cursor[Any] | None = None


class PgConnection:
    """One psycopg connection (autocommit; transactions are explicit) with a statement queue.

    Writes are queued; :meth:`read` and :meth:`flush` send the queue and the read in one
    pipeline, so they cost one round trip together.
    """

    def __init__(self, connection: psycopg.Connection[Any], on_error: ErrorMap) -> None:
        self.driver = connection
        self._queue: list[_Queued] = []
        self._on_error = on_error
        #: The step lock this connection holds, and its step (run id, asset, partition key):
        #: released with the commit that records the step's outcome (see SQLStore.step_session).
        self.step_lock: str | None = None
        self.step: tuple[str, str, str] | None = None
        #: Set when the session's attempt was found superseded: it writes nothing more.
        self.superseded: BaseException | None = None

    def queue(
        self,
        statement: PgStatement,
        params: Params | Sequence[Params],
        *,
        doing: str,
        expect: int | None = None,
        check: Callable[[int], None] | None = None,
    ) -> None:
        """Add a statement (one execution per mapping when given a sequence) to the queue.

        Args:
            expect: The rows it must change (an upsert that changed none hit a record of
                another identity), or None to accept any count.
            check: Called with the rows it changed once its result is read; it may raise. A
                queue holding a check is sent before a COMMIT (see :meth:`send_checks`).
        """
        many = params if isinstance(params, Sequence) else [params]
        try:
            rows = [statement.params(p) for p in many]
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"The metadata store could not {doing}: a value cannot be stored ({exc}). "
                "Metadata and audit details must be JSON-compatible (str, numbers, bool, None, "
                "lists and dicts of them)."
            ) from exc
        if rows:
            self._queue.append(_Queued(statement, rows, expect, doing, check))

    def command(self, sql: str) -> None:
        """Queue a parameterless command (BEGIN, COMMIT, SET LOCAL ...)."""
        self._queue.append(_Queued(PgStatement(sql, (), (), (), ()), [()], None, "run " + sql))

    def read(self, statement: PgStatement, params: Params, *, doing: str) -> list[tuple[Any, ...]]:
        """Send the queue and ``statement``; return its rows (through the result processors)."""
        return self.reads([(statement, params)], doing=doing)[0]

    def reads(
        self, reads: Sequence[tuple[PgStatement, Params]], *, doing: str
    ) -> list[list[tuple[Any, ...]]]:
        """Send the queue and ``reads`` in one round trip; return the rows of each read."""
        start = len(self._queue)
        for statement, params in reads:
            self.queue(statement, params, doing=doing)
        items = self._queue[start:]
        self._send()
        return [
            [item.statement.row(raw) for raw in item.cursor.fetchall()]
            for item in items
            if item.cursor is not None
        ]

    def flush(self) -> None:
        """Send the queued statements (one round trip), if any."""
        if self._queue:
            self._send()

    def send_checks(self) -> None:
        """Send the queue if a statement in it has a check: what follows (a COMMIT) must only
        be sent once the check passed."""
        if any(item.check is not None for item in self._queue):
            self._send()

    def discard(self) -> None:
        """Forget the queue (the transaction is being rolled back)."""
        self._queue.clear()

    def _send(self) -> None:
        """Send the queue in one pipeline and read every result (one round trip); the first
        error is raised (psycopg logs, and does not raise, one more from leaving the pipeline)."""
        import psycopg

        queued, self._queue = self._queue, []
        try:
            with self.driver.pipeline():
                for item in queued:
                    item.cursor = cursor = self.driver.cursor()
                    if len(item.rows) == 1:
                        cursor.execute(item.statement.sql, item.rows[0], prepare=True)
                    else:
                        cursor.executemany(item.statement.sql, item.rows)
        except psycopg.Error as exc:
            raise self._on_error(exc, queued[-1].doing) from exc
        for item in queued:
            assert item.cursor is not None
            if item.expect is not None and item.cursor.rowcount != item.expect:
                raise StoreError(
                    f"The metadata store could not {item.doing}: a record with the same id "
                    "belongs to another run, asset, partition or creation time. Ids are "
                    "unique: create a new record instead of reusing an id."
                )
            if item.check is not None:
                item.check(item.cursor.rowcount)


class PgSessions:
    """Connections for step sessions, and which one is bound to the calling thread."""

    def __init__(self, engine: sa.Engine, on_error: ErrorMap) -> None:
        self._engine = engine
        self._on_error = on_error
        self._idle: list[tuple[Any, PgConnection]] = []
        self._guard = threading.Lock()
        self._local = threading.local()

    def bound(self) -> PgConnection | None:
        """The connection of the step session running in this thread, if any."""
        found: PgConnection | None = getattr(self._local, "connection", None)
        return found

    @contextmanager
    def session(self) -> Iterator[PgConnection]:
        """Bind a connection to this thread until the block ends.

        A connection that ends the block in a transaction or broken is closed, never reused:
        whatever it held (a session advisory lock, an open transaction) dies with it.
        """
        if self.bound() is not None:
            raise StoreError("A step session is already open in this thread.")
        fairy, connection = self._checkout()
        self._local.connection = connection
        clean = False
        try:
            yield connection
            clean = True
        finally:
            self._local.connection = None
            self._checkin(fairy, connection, clean)

    def close(self) -> None:
        """Close the idle connections."""
        with self._guard:
            idle, self._idle = self._idle, []
        for fairy, _ in idle:
            fairy.invalidate()

    def _checkout(self) -> tuple[Any, PgConnection]:
        import psycopg

        with self._guard:
            if self._idle:
                return self._idle.pop()
        # A connection of the engine's pool (its connect arguments, its JSON adapters), kept
        # out of the pool while idle here, so a step pays no checkout and no reset.
        try:
            fairy = self._engine.raw_connection()
            driver = cast("psycopg.Connection[Any]", fairy.driver_connection)
            driver.autocommit = True
            driver.execute("SET synchronous_commit = off")
        except psycopg.Error as exc:
            raise self._on_error(exc, "open a connection") from exc
        return fairy, PgConnection(driver, self._on_error)

    def _checkin(self, fairy: Any, connection: PgConnection, clean: bool) -> None:
        import psycopg

        driver = connection.driver
        # Every path of a step sends what it queued or rolls back: a queue left over is a bug,
        # and its writes are dropped with the connection rather than sent late.
        idle = (
            clean
            and not connection._queue
            and not driver.closed
            and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        if idle:
            with self._guard:
                if len(self._idle) < MAX_IDLE:
                    connection.step_lock = connection.step = connection.superseded = None
                    self._idle.append((fairy, connection))
                    return
        fairy.invalidate()  # closes it: its locks and any open transaction end with it
