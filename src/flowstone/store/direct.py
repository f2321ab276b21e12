"""SQLite's hot write path: prebuilt statements run straight on the sqlite3 connection.

Every materialization writes twice (``running``, then the final status with its lineage and
audit). Through SQLAlchemy's execution machinery each of those transactions costs several
hundred microseconds of Python on top of what SQLite itself needs, which is most of FlowStone's
per-asset overhead on the embedded store. The statements are still SQLAlchemy Core, built in
the ``sql`` package (the one place SQL is written); this module only compiles them once for the
SQLite dialect, converts parameters with the columns' own bind processors (so values are stored
exactly as SQLAlchemy stores them and read back through it), and executes them on the driver.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

from flowstone.errors import StoreError

Params = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement compiled for SQLite: its SQL text and how to build its parameter tuple."""

    sql: str
    names: tuple[str, ...]
    #: Values of the statement's own literals (e.g. the 0 and 1 of ``coalesce(max(seq), 0) + 1``).
    defaults: tuple[Any, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    def row(self, params: Params) -> tuple[Any, ...]:
        """The positional parameters for one execution."""
        values = (params.get(n, d) for n, d in zip(self.names, self.defaults, strict=True))
        return tuple(
            value if proc is None else proc(value)
            for value, proc in zip(values, self.processors, strict=True)
        )


def prepare(engine: sa.Engine, statement: sa.ClauseElement, keys: Sequence[str]) -> Prepared:
    """Compile ``statement`` once for ``engine``'s (SQLite) dialect.

    Args:
        keys: The parameter names every execution passes (an INSERT compiles a column list
            from them, as SQLAlchemy does per execution).
    """
    compiled = cast(
        "SQLCompiler", statement.compile(dialect=engine.dialect, column_keys=list(keys))
    )
    names = tuple(compiled.positiontup or ())
    binds = [compiled.binds[name] for name in names]
    return Prepared(
        compiled.string,
        names,
        tuple(bind.effective_value for bind in binds),
        # dialect_impl: the processors SQLAlchemy itself applies (a TypeDecorator's own
        # bind_processor wraps the generic type's, which on SQLite leaves datetimes to sqlite3
        # and so stores whole seconds without ".000000", unlike SQLAlchemy's own writes).
        tuple(
            bind.type.dialect_impl(engine.dialect).bind_processor(engine.dialect) for bind in binds
        ),
    )


class Transaction:
    """An open write transaction on one sqlite3 connection."""

    def __init__(self, cursor: sqlite3.Cursor, doing: str) -> None:
        self._cursor = cursor
        self._doing = doing

    def execute(self, prepared: Prepared, params: Params) -> int:
        """Run one statement; return the number of rows it changed."""
        self._cursor.execute(prepared.sql, self._row(prepared, params))
        return self._cursor.rowcount

    def execute_many(self, prepared: Prepared, rows: Sequence[Params]) -> int:
        """Run one statement per parameter mapping; return the rows changed in all."""
        self._cursor.executemany(prepared.sql, [self._row(prepared, p) for p in rows])
        return self._cursor.rowcount

    def _row(self, prepared: Prepared, params: Params) -> tuple[Any, ...]:
        try:
            return prepared.row(params)
        except (TypeError, ValueError) as exc:
            # A metadata or details value that JSON cannot hold: nothing is written.
            raise StoreError(
                f"The metadata store could not {self._doing}: a value cannot be stored "
                f"({exc}). Metadata and audit details must be JSON-compatible (str, numbers, "
                "bool, None, lists and dicts of them)."
            ) from exc


class DirectWriter:
    """Opens ``BEGIN IMMEDIATE`` transactions on connections from the engine's pool.

    Args:
        engine: A SQLite engine made by :func:`flowstone.store.sql.create_engine` (its
            connections are in autocommit mode, so this class owns BEGIN and COMMIT).
        serial: Held around each transaction (a lock when the pool is one shared connection).
    """

    def __init__(self, engine: sa.Engine, serial: AbstractContextManager[Any]) -> None:
        self._engine = engine
        self._serial = serial

    @contextmanager
    def transaction(self, doing: str) -> Iterator[Transaction]:
        """A write transaction: committed when the block ends, rolled back if it raises.

        Raises:
            StoreError: SQLite failed; the message says what FlowStone was doing.
        """
        with self._serial:
            connection = self._engine.raw_connection()
            try:
                driver: sqlite3.Connection = connection.driver_connection  # type: ignore[assignment]
                cursor = driver.cursor()
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    try:
                        yield Transaction(cursor, doing)
                    except BaseException:
                        driver.rollback()
                        raise
                    driver.commit()
                finally:
                    cursor.close()
            except sqlite3.Error as exc:
                raise StoreError(
                    f"The metadata store could not {doing}: {type(exc).__name__}: {exc}. "
                    "Check that the SQLite file is writable and not on a network drive."
                ) from exc
            finally:
                connection.close()
