"""Run transactions of the SQL store (distributed execution): a run's writes and reads in one
transaction, serialized per run (SQLite's write lock, or a PostgreSQL advisory lock on the run),
and the statements they share with the store and the direct PostgreSQL path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from flowstone.records import (
    AuditEvent,
    LineageEdge,
    MaterializationRecord,
    RunRecord,
    RunStatus,
)
from flowstone.store.base import check_run_member
from flowstone.store.schema import UNFINISHED, materializations, runs
from flowstone.store.sql.core import SQLStoreCore
from flowstone.store.sql.errors import _identity_error
from flowstone.store.sql.rows import (
    _MAT_COLUMNS,
    _audit_params,
    _edge_params,
    _mat_params,
    _mat_record,
    _run_params,
    _run_record,
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
#: The run's lock in shared mode: waits for a run transaction in progress, not for other
#: holders of the shared lock.
_LOCK_RUN_SHARED = sa.select(
    sa.func.pg_advisory_xact_lock_shared(
        sa.literal(RUN_LOCK_NAMESPACE, sa.Integer), sa.func.hashtext(sa.bindparam("run_id"))
    )
)
_RUN_MATS = (
    sa.select(*_MAT_COLUMNS)
    .where(materializations.c.run_id == sa.bindparam("run_id"))
    .order_by(materializations.c.created_at, materializations.c.seq)
)
_RUN_MATS_OF = _RUN_MATS.where(materializations.c.asset.in_(sa.bindparam("assets", expanding=True)))
#: Commit without waiting for the WAL flush (PostgreSQL's asynchronous commit), for a write that
#: is harmless to lose in a database crash: a step's ``running`` status (lost, the step reads
#: ``pending``, which every executor treats as not started). A lost commit is never
#: half-applied: PostgreSQL replays its WAL in order. (A worker's step session sets the same
#: for its whole connection: see flowstone.store.direct_pg.)
_NO_FLUSH = sa.text("SET LOCAL synchronous_commit = off")
_FIND_IN_RUN = sa.select(*_MAT_COLUMNS).where(
    materializations.c.run_id == sa.bindparam("run_id"),
    materializations.c.asset == sa.bindparam("asset"),
    materializations.c.partition_key == sa.bindparam("partition_key"),
)
#: The run's records of many steps in one PostgreSQL statement: the (asset, partition key)
#: pairs as two arrays, each looked up on its own (with statistics, through the step's unique
#: index). The lookup is a LATERAL subquery with an OFFSET, which PostgreSQL does not merge
#: into a join: a join could be planned as a scan of the whole run (thousands of steps) for a
#: few wanted ones.
_WANTED = (
    sa.func.unnest(
        sa.bindparam("assets", type_=postgresql.ARRAY(sa.Text)),
        sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text)),
    )
    .table_valued("asset", "partition_key")
    .render_derived(with_types=False)
    .alias("wanted")
)
_ONE_WANTED = (
    sa.select(*_MAT_COLUMNS)
    .where(
        materializations.c.run_id == sa.bindparam("run_id"),
        materializations.c.asset == _WANTED.c.asset,
        materializations.c.partition_key == _WANTED.c.partition_key,
    )
    .offset(0)
    .lateral("found")
)
_FIND_MANY_PG = sa.select(*(_ONE_WANTED.c[c.name] for c in _MAT_COLUMNS)).select_from(
    _WANTED.join(_ONE_WANTED, sa.true())
)
#: Whether a step of the run is not finished: one probe of the partial index of unfinished
#: steps (its condition is the index's, word for word: see schema.UNFINISHED).
_HAS_UNFINISHED = sa.select(
    sa.exists().where(materializations.c.run_id == sa.bindparam("run_id"), UNFINISHED)
)

#: The run's status alone (a worker's per-step read: :meth:`RunTransaction.run_status`).
_RUN_STATUS = sa.select(runs.c.status).where(runs.c.id == sa.bindparam("id"))


def find_many_params(run_id: str, steps: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The parameters of _FIND_MANY_PG for ``steps``."""
    return {
        "run_id": run_id,
        "assets": [asset for asset, _ in steps],
        "keys": [key for _, key in steps],
    }


class _SQLRunTransaction:
    """A :class:`RunTransaction` on an open SQLAlchemy connection of a
    :class:`~flowstone.store.sql.SQLStore`."""

    def __init__(self, store: SQLStoreCore, conn: sa.Connection, run_id: str) -> None:
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

    def find(self, asset: str, partition_key: str) -> MaterializationRecord | None:
        params = {"run_id": self._run_id, "asset": asset, "partition_key": partition_key}
        row = self._conn.execute(_FIND_IN_RUN, params).first()
        return None if row is None else _mat_record(row)

    def find_many(
        self, steps: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MaterializationRecord]:
        if not steps:
            return {}
        if self._store._dialect != "postgresql":
            # In-process, nothing to save by batching: SQLite used only the run_id part of the
            # index for an IN list of pairs, testing every step of the run against it.
            found = ((step, self.find(*step)) for step in steps)
            return {step: record for step, record in found if record is not None}
        rows = self._conn.execute(_FIND_MANY_PG, find_many_params(self._run_id, steps)).all()
        records = (_mat_record(row) for row in rows)
        return {(record.asset, record.partition_key): record for record in records}

    def has_unfinished(self) -> bool:
        return bool(self._conn.execute(_HAS_UNFINISHED, {"run_id": self._run_id}).scalar_one())

    def _audit(self, events: Sequence[AuditEvent]) -> None:
        if events:
            self._conn.execute(self._store._insert_audit, [_audit_params(e) for e in events])
