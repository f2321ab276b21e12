"""Schema migrations for the SQL metadata store, run programmatically through Alembic.

The migration scripts ship inside the package (``flowstone/store/migrations``), so an installed
FlowStone can upgrade any database it opens; no ``alembic.ini`` is needed. Alembic records the
revision in ``flowstone_alembic_version``, not the default ``alembic_version``, so a user's own
Alembic history in the same database is left alone.

Alembic is imported only inside these functions: opening an up-to-date store never loads it.

Example::

    from flowstone.store import migrate

    migrate.upgrade("sqlite:///.flowstone/flowstone.db")
    assert migrate.current_revision("sqlite:///.flowstone/flowstone.db") == migrate.HEAD_REVISION
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from flowstone.errors import SchemaOutdatedError, StoreError, StoreUnavailableError
from flowstone.store.schema import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config

#: The newest revision in ``migrations/versions``: the schema this code reads and writes.
#: A test checks it against Alembic's head, so forgetting to bump it fails the build.
HEAD_REVISION = "0006"

#: Where the Alembic environment and revision scripts live.
SCRIPT_LOCATION = Path(__file__).with_name("migrations")

Target = str | sa.Engine | sa.Connection


def upgrade(url_or_engine: Target, revision: str = "head") -> None:
    """Bring a database's schema up to ``revision`` (default: the newest), in one transaction.

    Safe to run while other FlowStone processes use the database, and from several processes
    at once: on SQLite the upgrade holds the write lock, on PostgreSQL an advisory lock.

    Args:
        url_or_engine: A store URL, an engine, or a connection (used as is; if it is already in
            a transaction, the caller commits).
        revision: An Alembic revision id, or ``"head"``.

    Raises:
        StoreUnavailableError: the database cannot be opened.
        SchemaOutdatedError: the database has a revision this FlowStone does not know (it was
            upgraded by a newer FlowStone).
    """
    from alembic import command

    try:
        with _connect(url_or_engine) as conn:
            stamped = _read_revision(conn)
            if stamped is not None and not is_known_revision(stamped):
                raise newer_schema_error(stamped)
            command.upgrade(_config(conn), revision)
    except sa.exc.SQLAlchemyError as exc:
        raise _migration_error(exc, f"upgrade the metadata database to {revision!r}") from exc


def downgrade(url_or_engine: Target, revision: str) -> None:
    """Take a database's schema back to ``revision`` (``"base"``: drop every FlowStone table).

    Meant for development and for undoing a failed deployment; the data in dropped tables and
    columns is lost.
    """
    from alembic import command

    try:
        with _connect(url_or_engine) as conn:
            command.downgrade(_config(conn), revision)
    except sa.exc.SQLAlchemyError as exc:
        raise _migration_error(exc, f"downgrade the metadata database to {revision!r}") from exc


def current_revision(url_or_engine: Target) -> str | None:
    """The revision a database is at, or None for a database FlowStone never migrated."""
    try:
        with _connect(url_or_engine) as conn:
            return _read_revision(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise _migration_error(exc, "read the schema revision") from exc


def is_known_revision(revision: str) -> bool:
    """True if ``revision`` is one of the revisions shipped with this FlowStone."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(SCRIPT_LOCATION))
    return any(rev.revision == revision for rev in script.walk_revisions())


def newer_schema_error(revision: str) -> SchemaOutdatedError:
    """The error for a database migrated by a newer FlowStone than this one."""
    return SchemaOutdatedError(
        f"The metadata database is at schema revision {revision!r}, which this version of "
        f"FlowStone does not know (it expects {HEAD_REVISION!r}): a newer FlowStone has "
        "upgraded it. Upgrade FlowStone (`pip install -U flowstone`) on this machine, or point "
        "it at another database."
    )


def outdated_schema_error(revision: str | None) -> SchemaOutdatedError:
    """The error for a database whose schema is older than this FlowStone's."""
    at = "has no FlowStone tables yet" if revision is None else f"is at revision {revision!r}"
    return SchemaOutdatedError(
        f"The metadata database {at}; this version of FlowStone needs revision "
        f"{HEAD_REVISION!r}. Run `flowstone db upgrade` (or `flowstone.store.migrate.upgrade"
        "(url)`), or open the store with auto_migrate=True."
    )


def _migration_error(exc: sa.exc.SQLAlchemyError, doing: str) -> StoreError:
    orig = getattr(exc, "orig", None)
    detail = (str(orig if orig is not None else exc).strip().splitlines() or [""])[0]
    if isinstance(exc, sa.exc.OperationalError):
        return StoreUnavailableError(
            f"Could not {doing}: {detail}. Check that the database is reachable and writable."
        )
    return StoreError(f"Could not {doing}: {detail}")


def _config(conn: sa.Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = conn
    return config


def _read_revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    revision = context.get_current_revision()
    return None if revision is None else str(revision)


@contextmanager
def _connect(target: Target) -> Iterator[sa.Connection]:
    """A connection inside a transaction that commits on success."""
    if isinstance(target, sa.Connection):
        if target.in_transaction():
            yield target
        else:
            with target.begin():
                yield target
        return
    if isinstance(target, str):
        # The store's engine factory: it creates SQLite folders and takes SQLite's write lock
        # at BEGIN, which keeps a migration from racing other writers.
        from flowstone.store.sql import create_engine

        engine = create_engine(target)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()
        return
    with target.begin() as conn:
        yield conn
