"""Alembic environment for FlowStone's metadata store.

Two ways in:

- :func:`flowstone.store.migrate.upgrade` (and ``SQLStore(auto_migrate=True)``) pass an open
  connection, already inside a transaction, as ``config.attributes["connection"]``; the whole
  upgrade then commits or rolls back with that transaction.
- A plain ``alembic`` command line with ``sqlalchemy.url`` set in its configuration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from flowstone.store.schema import VERSION_TABLE, metadata

# Any constant works; it only has to be the same in every FlowStone process.
_PG_MIGRATION_LOCK = 0x466C6F7753746F6E  # "FlowSton"


def _run(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes opening a fresh database at once must not both create the tables: the
        # second waits here, then finds the schema current and does nothing.
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
        )
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite alters tables by copying them; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "No database to migrate: pass a connection in config.attributes['connection'] or "
            "set sqlalchemy.url. The usual way is `flowstone db upgrade`."
        )
    # FlowStone's own engine: SQLite folders created, pragmas and write locking as in the store.
    from flowstone.store.sql import create_engine

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
