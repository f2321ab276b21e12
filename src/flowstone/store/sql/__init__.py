"""The SQL metadata store: SQLAlchemy Core over SQLite or PostgreSQL, one schema for both.

Every query FlowStone runs against its metadata lives in this package, one module per concept:

- :mod:`~flowstone.store.sql.store`: :class:`SQLStore` itself: opening (engine, schema check,
  statements), the hot writes (SQLite's direct path), run transactions and step sessions.
- :mod:`~flowstone.store.sql.engine`: engines set up for SQLite (WAL, busy timeout,
  ``BEGIN IMMEDIATE``) or PostgreSQL.
- :mod:`~flowstone.store.sql.errors`: driver errors worded as :class:`StoreError` at the boundary.
- :mod:`~flowstone.store.sql.rows`: rows <-> records.
- :mod:`~flowstone.store.sql.core`: the engines and statements every concept shares.
- :mod:`~flowstone.store.sql.reads`, :mod:`~flowstone.store.sql.lineage`,
  :mod:`~flowstone.store.sql.schedules`, :mod:`~flowstone.store.sql.approvals`,
  :mod:`~flowstone.store.sql.backfills`: each concept's queries, a class the store inherits.
- :mod:`~flowstone.store.sql.transaction`: run transactions on a SQLAlchemy connection.
- :mod:`~flowstone.store.sql.step_sessions`: the direct PostgreSQL path of a worker's step
  (the step lock, statements compiled for psycopg, its run transaction).
"""

from __future__ import annotations

from flowstone.store.sql.engine import DEFAULT_BUSY_TIMEOUT_MS as DEFAULT_BUSY_TIMEOUT_MS
from flowstone.store.sql.engine import create_engine as create_engine
from flowstone.store.sql.rows import _mat_params as _mat_params
from flowstone.store.sql.step_sessions import STEP_LOCK_NAMESPACE as STEP_LOCK_NAMESPACE
from flowstone.store.sql.store import SQLStore as SQLStore
from flowstone.store.sql.transaction import RUN_LOCK_NAMESPACE as RUN_LOCK_NAMESPACE

__all__ = ["DEFAULT_BUSY_TIMEOUT_MS", "SQLStore", "create_engine"]
