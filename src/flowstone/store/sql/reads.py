"""The SQL store's reads of runs, materializations and the audit log (their writes, with SQLite's
direct path, are in :mod:`flowstone.store.sql.store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from flowstone.records import AuditEvent, MaterializationRecord, RunRecord, Status
from flowstone.store.schema import audit_log, materializations
from flowstone.store.sql.core import SQLStoreCore, _batches
from flowstone.store.sql.errors import _wraps_errors
from flowstone.store.sql.rows import (
    _AUDIT_COLUMNS,
    _MAT_COLUMNS,
    _audit_record,
    _mat_record,
    _run_record,
)


class RunReads(SQLStoreCore):
    """Reads of runs, materializations and the audit log."""

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

    @_wraps_errors("read the latest materializations")
    def latest_materializations(
        self, asset: str, partition_keys: Sequence[str], *, status: Status | None = None
    ) -> dict[str, MaterializationRecord]:
        keys = list(dict.fromkeys(partition_keys))
        params: dict[str, Any] = {"asset": asset}
        stmt = self._latest_of_keys
        if status is not None:
            stmt, params["status"] = self._latest_of_keys_with_status, status.value
        found: dict[str, MaterializationRecord] = {}
        with self._serial, self._read.connect() as conn:
            for batch in _batches(keys):
                params["keys"] = batch
                for row in conn.execute(stmt, params).all():
                    record = _mat_record(row)
                    found[record.partition_key] = record
        return found

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

    # --- audit -----------------------------------------------------------------------------

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
