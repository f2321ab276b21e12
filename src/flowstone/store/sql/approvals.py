"""The SQL store's approval gates: requests, compare-and-set decisions, and claiming the
materializations a decision lets run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.records import AuditEvent, MaterializationRecord, Status
from flowstone.store.base import check_decision
from flowstone.store.schema import UTCDateTime, materializations
from flowstone.store.schema import approvals as approvals_table
from flowstone.store.sql.core import SQLStoreCore
from flowstone.store.sql.errors import _identity_error, _wraps_errors
from flowstone.store.sql.rows import _approval_params, _approval_record, _mat_params


class ApprovalQueries(SQLStoreCore):
    """Approval requests and decisions, and the claim of materializations waiting to run."""

    # --- approvals ---------------------------------------------------------------------------
    # Not on the hot path (a request or decision is a person's pace), so these go through
    # SQLAlchemy on both databases rather than SQLite's direct writer.
    @_wraps_errors("store the approval request")
    def request_approval(
        self,
        approval: ApprovalRecord,
        materialization: MaterializationRecord,
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        with self._serial, self._engine.begin() as conn:
            if conn.execute(self._upsert_mat, _mat_params(materialization)).rowcount != 1:
                raise _identity_error((materialization,))
            conn.execute(approvals_table.insert(), _approval_params(approval))
            self._write_audit(conn, audit)

    @_wraps_errors("read the approval request")
    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        a = approvals_table
        stmt = sa.select(*a.c).where(a.c.id == approval_id)
        with self._serial, self._read.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _approval_record(row)

    @_wraps_errors("list approval requests")
    def list_approvals(
        self,
        *,
        status: ApprovalStatus | None = None,
        asset: str | None = None,
        run_id: str | None = None,
        id_prefix: str | None = None,
        due_before: datetime | None = None,
        limit: int | None = 100,
    ) -> list[ApprovalRecord]:
        a = approvals_table
        stmt = sa.select(*a.c).order_by(a.c.requested_at, self._text_order(a.c.id))
        if status is not None:
            stmt = stmt.where(a.c.status == status.value)
        if asset is not None:
            stmt = stmt.where(a.c.asset == asset)
        if run_id is not None:
            stmt = stmt.where(a.c.run_id == run_id)
        if id_prefix is not None:
            # Not LIKE: SQLite's LIKE ignores case, and '%' or '_' would be wildcards.
            stmt = stmt.where(sa.func.substr(a.c.id, 1, len(id_prefix)) == id_prefix)
        if due_before is not None:
            stmt = stmt.where(a.c.timeout_at.is_not(None), a.c.timeout_at <= due_before)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_approval_record(row) for row in rows]

    @_wraps_errors("record the approval decision")
    def decide_approval(
        self,
        decided: ApprovalRecord,
        *,
        materialization: MaterializationRecord | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        check_decision(decided)
        a = approvals_table
        at = sa.bindparam("decided_at", decided.decided_at, type_=UTCDateTime)
        if decided.status == ApprovalStatus.EXPIRED:
            timing = sa.and_(a.c.timeout_at.is_not(None), a.c.timeout_at <= at)
        else:
            timing = sa.or_(a.c.timeout_at.is_(None), a.c.timeout_at > at)
        # The compare and set: of two concurrent decisions, the second matches no row.
        stmt = (
            sa.update(a)
            .where(a.c.id == decided.id, a.c.status == ApprovalStatus.PENDING.value, timing)
            .values(
                status=decided.status.value,
                decided_by=decided.decided_by,
                decided_at=at,
                reason=decided.reason,
                input=decided.input,
            )
            .execution_options(preserve_rowcount=True)
        )
        with self._serial, self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return False
            if (
                materialization is not None
                and conn.execute(self._upsert_mat, _mat_params(materialization)).rowcount != 1
            ):
                raise _identity_error((materialization,))
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("claim materializations")
    def claim_materializations(self, materialization_ids: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(materialization_ids))
        if not wanted:
            return []
        m = materializations
        claimable = (Status.PENDING.value, Status.WAITING_APPROVAL.value)
        stmt = (
            sa.update(m)
            .where(m.c.id.in_(wanted), m.c.status.in_(claimable))
            .values(status=Status.RUNNING.value)
            .returning(m.c.id)
        )
        with self._serial, self._engine.begin() as conn:
            claimed = set(conn.execute(stmt).scalars())
        return [mat_id for mat_id in wanted if mat_id in claimed]
