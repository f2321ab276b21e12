"""The SQL store's backfills: records, the owner's claim and heartbeat (compare-and-set updates),
progress by partition, and the runs a backfill launches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
    interrupted_run_event,
)
from flowstone.errors import StoreError
from flowstone.records import AuditEvent, MaterializationRecord, RunRecord, RunStatus, Status
from flowstone.store.schema import backfill_partitions as backfill_partitions_table
from flowstone.store.schema import backfill_runs as backfill_runs_table
from flowstone.store.schema import backfills as backfills_table
from flowstone.store.schema import materializations, runs
from flowstone.store.sql.core import SQLStoreCore, _batches
from flowstone.store.sql.errors import _detail, _identity_error, _wraps_errors
from flowstone.store.sql.rows import (
    _BACKFILL_COLUMNS,
    _RUN_COLUMNS,
    _audit_params,
    _backfill_params,
    _backfill_partition_params,
    _backfill_partition_record,
    _backfill_record,
    _mat_params,
    _run_params,
    _run_record,
)


def _select_backfill(conn: sa.Connection, backfill_id: str) -> BackfillRecord | None:
    t = backfills_table
    row = conn.execute(sa.select(*_BACKFILL_COLUMNS).where(t.c.id == backfill_id)).first()
    return None if row is None else _backfill_record(row)


class BackfillQueries(SQLStoreCore):
    """Backfills: their records, ownership (claim, heartbeat, finish), progress and runs."""

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

    @_wraps_errors("list the backfill's runs")
    def list_backfill_runs(self, backfill_id: str) -> list[RunRecord]:
        link = backfill_runs_table
        query = (
            sa.select(*_RUN_COLUMNS)
            .select_from(runs.join(link, link.c.run_id == runs.c.id))
            .where(link.c.backfill_id == backfill_id)
            .order_by(runs.c.created_at, runs.c.seq)
        )
        with self._serial, self._read.connect() as conn:
            return [_run_record(row) for row in conn.execute(query).all()]

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
