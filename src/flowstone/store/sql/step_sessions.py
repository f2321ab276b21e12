"""The direct PostgreSQL path of a worker's step (see :mod:`flowstone.store.direct_pg`): the
step lock, the statements compiled once for psycopg, and the run transaction on a step session's
connection, whose writes are queued and sent with the next read or the COMMIT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from flowstone.errors import OutcomeCommittedError, StoreError, StoreUnavailableError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
)
from flowstone.store.base import RunTransaction, StepClaim, T, check_run_member
from flowstone.store.direct_pg import PgConnection, PgStatement, compile_pg, positional_dialect
from flowstone.store.schema import audit_log, lineage, materializations, runs
from flowstone.store.sql.core import SQLStoreCore
from flowstone.store.sql.errors import _store_error
from flowstone.store.sql.rows import (
    _MAT_COLUMNS,
    _MAT_FIXED,
    _RUN_COLUMNS,
    _audit_params,
    _edge_params,
    _mat_params,
    _mat_record,
    _run_params,
    _run_record,
)
from flowstone.store.sql.transaction import (
    _FIND_IN_RUN,
    _FIND_MANY_PG,
    _HAS_UNFINISHED,
    _LOCK_RUN,
    _LOCK_RUN_SHARED,
    _RUN_MATS,
    find_many_params,
)

# --- the direct PostgreSQL path of a worker's step (see flowstone.store.direct_pg) ----------

#: Advisory lock namespace of step locks: (asset, partition) being run by a worker.
STEP_LOCK_NAMESPACE = 0x464C5350  # "FLSP"
_STEP_KEY = sa.func.hashtext(sa.bindparam("step", type_=sa.Text))
_LOCK_STEP = sa.select(
    sa.func.pg_advisory_lock(sa.literal(STEP_LOCK_NAMESPACE, sa.Integer), _STEP_KEY)
)
_UNLOCK_STEP = sa.select(
    sa.func.pg_advisory_unlock(sa.literal(STEP_LOCK_NAMESPACE, sa.Integer), _STEP_KEY)
)
#: A step's record and its run's status, in one read.
_STEP_READ = (
    sa.select(*_MAT_COLUMNS, runs.c.status)
    .select_from(materializations.outerjoin(runs, runs.c.id == materializations.c.run_id))
    .where(
        materializations.c.run_id == sa.bindparam("run_id"),
        materializations.c.asset == sa.bindparam("asset"),
        materializations.c.partition_key == sa.bindparam("partition_key"),
    )
)
#: What a claim writes besides the status: StepClaim's fields, each a column of the step.
_CLAIMED = tuple(field.name for field in dataclasses.fields(StepClaim))
#: A step that never ran, made ``running`` (see StepClaim); a step in any other state is left
#: as it is, for the worker to decide from its record. Returns the step's id when it claimed.
_CLAIM = (
    sa.update(materializations)
    .where(
        materializations.c.run_id == sa.bindparam("run_id"),
        materializations.c.asset == sa.bindparam("asset"),
        materializations.c.partition_key == sa.bindparam("partition_key"),
        materializations.c.status == Status.PENDING.value,
        materializations.c.started_at.is_(None),
    )
    .values(
        status=Status.RUNNING.value,
        **{
            name: sa.bindparam(f"claim_{name}", type_=materializations.c[name].type)
            for name in _CLAIMED
        },
    )
    .returning(materializations.c.id)
)
#: One row holding "a step left?", computed once (OFFSET 0 keeps PostgreSQL from inlining the
#: subquery, which would evaluate it again wherever it is referenced), joined to the run (all
#: NULL when there is none).
_LEFT_ROW = sa.select(_HAS_UNFINISHED.scalar_subquery().label("left")).offset(0).subquery()
_LEFT = _LEFT_ROW.c.left
_WITH_RUN = _LEFT_ROW.outerjoin(runs, runs.c.id == sa.bindparam("run_id"))
#: A worker's per-step read: whether a step is left, and the run's status; the rest of the run
#: (its targets can be thousands of names, parsed from JSON for nothing) only when no step is
#: left, as the run is then closed in the same transaction.
_RUN_STATUS_AND_UNFINISHED = sa.select(
    _LEFT,
    *(
        c if c.name in ("id", "status") else sa.case((~_LEFT, c)).label(c.name)
        for c in _RUN_COLUMNS
    ),
).select_from(_WITH_RUN)
#: The run and whether a step of it is left, in one row.
_RUN_AND_UNFINISHED = sa.select(_LEFT, *_RUN_COLUMNS).select_from(_WITH_RUN)
#: A step's final record, written only if the attempt still owns the step: ``running`` with
#: its attempt number, or ``pending`` and never started (its ``running`` write was lost). A
#: worker's fencing check is this condition, so it costs no read of its own.
_MAT_SET = [c.name for c in _MAT_COLUMNS if c.name not in ("id", *_MAT_FIXED)]
_SAVE_IF_OWNER = sa.update(materializations).where(
    materializations.c.id == sa.bindparam("owner_id"),
    *(materializations.c[name] == sa.bindparam(f"owner_{name}") for name in _MAT_FIXED),
    sa.or_(
        sa.and_(
            materializations.c.status == Status.RUNNING.value,
            materializations.c.attempt == sa.bindparam("owner_attempt"),
        ),
        sa.and_(
            materializations.c.status == Status.PENDING.value,
            materializations.c.started_at.is_(None),
        ),
    ),
)
#: A step's final record saved *or the whole transaction refused*: the same fencing
#: condition as _SAVE_IF_OWNER, made to fail the statement (and so abort the transaction) when
#: the attempt no longer owns the step, because the COMMIT is sent with it, before its result
#: is read (see _PgStatements.commit_attempt). Plain SQL has no RAISE: the refusal is a cast
#: that cannot succeed, whose message says why.
ATTEMPT_REFUSED = "flowstone: this attempt no longer owns its step"
_SAVED = (
    _SAVE_IF_OWNER.values(
        {name: sa.bindparam(name, type_=materializations.c[name].type) for name in _MAT_SET}
    )
    .returning(materializations.c.id)
    .cte("saved")
)
_SAVE_OR_REFUSE = sa.select(
    sa.cast(
        sa.case(
            (sa.func.count() == 1, sa.literal_column("'1'")),
            else_=sa.literal_column(f"'{ATTEMPT_REFUSED}'"),
        ),
        sa.Integer,
    )
).select_from(_SAVED)
_RUN_MATS_ANY = _RUN_MATS.where(
    materializations.c.asset == sa.any_(sa.bindparam("assets", type_=postgresql.ARRAY(sa.Text)))
)


def _pg_error(exc: Exception, doing: str) -> StoreError:
    """A psycopg error of the direct path, as :func:`_store_error` words SQLAlchemy's."""
    import psycopg

    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, psycopg.IntegrityError):
        return _store_error(sa.exc.IntegrityError(None, None, exc), doing)
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailableError(
            f"Could not {doing}: the connection to the metadata database was lost ({detail}). "
            "Check that the database server is up, then retry."
        )
    return StoreError(f"Could not {doing}: {detail}")


class _PgStatements:
    """The store's statements compiled once for the direct path, and the writes made of them."""

    def __init__(self, store: SQLStoreCore) -> None:
        dialect = positional_dialect(store.engine)

        def pg(stmt: sa.ClauseElement, keys: Sequence[str] | None = None) -> PgStatement:
            return compile_pg(dialect, stmt, keys)

        mat_keys = [c.name for c in _MAT_COLUMNS]
        self.upsert_mat = pg(store._upsert_mat, mat_keys)
        self.save_if_owner = pg(_SAVE_IF_OWNER, _MAT_SET)
        self.save_or_refuse = pg(_SAVE_OR_REFUSE)
        self.upsert_run = pg(store._upsert_run, [c.name for c in _RUN_COLUMNS])
        self.update_run = pg(store._update_run, [c.name for c in _RUN_COLUMNS])
        self.insert_edge = pg(store._insert_edge, [c.name for c in lineage.c if c.name != "id"])
        # No RETURNING: the direct path never reads the new event ids.
        self.insert_audit = pg(
            audit_log.insert().return_defaults(supplemental_cols=[]),
            [c.name for c in audit_log.c if c.name != "id"],
        )
        self.find_one = pg(_FIND_IN_RUN)
        self.find_many_in_run = pg(_FIND_MANY_PG)
        self.run_mats = pg(_RUN_MATS)
        self.run_mats_of = pg(_RUN_MATS_ANY)
        self.has_unfinished = pg(_HAS_UNFINISHED)
        self.run_and_unfinished = pg(_RUN_AND_UNFINISHED)
        self.run_status_and_unfinished = pg(_RUN_STATUS_AND_UNFINISHED)
        self.lock_run = pg(_LOCK_RUN)
        self.lock_run_shared = pg(_LOCK_RUN_SHARED)
        self.take_step_lock = pg(_LOCK_STEP)
        self.release_step_lock = pg(_UNLOCK_STEP)
        self.step_read = pg(_STEP_READ)
        self.claim = pg(_CLAIM)

    # --- writes, queued on a connection -------------------------------------------------
    def queue_materialization(
        self,
        conn: PgConnection,
        record: MaterializationRecord,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
    ) -> None:
        conn.queue(self.upsert_mat, _mat_params(record), doing="save the materialization", expect=1)
        self.queue_lineage_and_audit(conn, lineage, audit)

    def queue_lineage_and_audit(
        self, conn: PgConnection, lineage: Sequence[LineageEdge], audit: Sequence[AuditEvent]
    ) -> None:
        """What comes with a materialization's record: its lineage edges and audit events."""
        if lineage:
            conn.queue(self.insert_edge, [_edge_params(e) for e in lineage], doing="save lineage")
        self.queue_audit(conn, audit)

    def queue_audit(self, conn: PgConnection, audit: Sequence[AuditEvent]) -> None:
        if audit:
            conn.queue(
                self.insert_audit,
                [_audit_params(e) for e in audit],
                doing="append to the audit log",
            )

    def save(
        self,
        conn: PgConnection,
        record: MaterializationRecord,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
    ) -> None:
        """``save_materialization`` outside a run transaction: one round trip (a step's
        ``running`` record when it was not claimed: a step that ran before)."""
        if conn.superseded is not None:
            raise conn.superseded  # the step belongs to a newer attempt: write nothing more
        conn.command("BEGIN")
        self.queue_materialization(conn, record, lineage, audit)
        conn.command("COMMIT")
        _send_or_roll_back(conn)

    # --- reads ------------------------------------------------------------------------------
    def find_many(
        self, conn: PgConnection, run_id: str, steps: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MaterializationRecord]:
        """The run's records of ``steps`` it has, in one round trip."""
        if not steps:
            return {}
        rows = conn.read(
            self.find_many_in_run,
            find_many_params(run_id, steps),
            doing="read the materializations",
        )
        records = (_mat_record(row) for row in rows)
        return {(record.asset, record.partition_key): record for record in records}

    def find(
        self, conn: PgConnection, run_id: str, asset: str, partition_key: str
    ) -> MaterializationRecord | None:
        params = {"run_id": run_id, "asset": asset, "partition_key": partition_key}
        rows = conn.read(self.find_one, params, doing="read the materialization")
        return _mat_record(rows[0]) if rows else None

    def lock_step(
        self,
        conn: PgConnection,
        lock: str,
        run_id: str,
        asset: str,
        partition_key: str,
        *,
        claim: StepClaim | None,
    ) -> tuple[MaterializationRecord | None, RunStatus | None, bool]:
        """Take the step lock (waiting for another worker holding it), claim the step if it
        never ran, then read the step's record and its run's status: one round trip, each
        statement after the wait, committed together at its end (the claim is visible at
        once). Returns the record, the run's status, and whether this call claimed it."""
        conn.queue(self.take_step_lock, {"step": lock}, doing="lock the step")
        params: dict[str, Any] = {"run_id": run_id, "asset": asset, "partition_key": partition_key}
        reads: list[tuple[PgStatement, Mapping[str, Any]]] = []
        if claim is not None:  # before the read, which then sees it
            claimed = {f"claim_{name}": getattr(claim, name) for name in _CLAIMED}
            reads.append((self.claim, {**params, **claimed}))
        reads.append((self.step_read, params))
        *claim_rows, rows = conn.reads(reads, doing="read the step")
        conn.step_lock, conn.step = lock, (run_id, asset, partition_key)
        if not rows:
            return None, None, False
        run_status = rows[0][len(_MAT_COLUMNS)]
        status = None if run_status is None else RunStatus(run_status)
        return _mat_record(rows[0]), status, bool(claim_rows and claim_rows[0])

    def unlock_step(self, conn: PgConnection, lock: str) -> None:
        conn.read(self.release_step_lock, {"step": lock}, doing="unlock the step")
        conn.step_lock = None

    def commit_attempt(
        self,
        conn: PgConnection,
        record: MaterializationRecord,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        superseded: Callable[[MaterializationRecord | None], BaseException],
    ) -> tuple[RunStatus | None, bool]:
        """Save ``record`` (a final record) if its attempt still owns the step, and commit it,
        without the run's lock; then read the run's status and whether a step is left.

        One round trip: BEGIN, the refusing save, lineage, audit, COMMIT; then the run's lock
        in shared mode and the read, and the step lock's release. The read comes after the
        COMMIT, so of two leaves finishing at once the later read sees both; the shared lock
        makes it wait for a run transaction in progress (another step's outcome, recorded
        under the run's lock, that read this one as unfinished), so that one is seen too,
        while leaves never wait for each other. A refused save fails its statement, so
        PostgreSQL skips everything after it up to the round trip's end, the COMMIT
        included; then ``superseded(current record)`` is raised and the session writes
        nothing more. An error after the COMMIT raises :class:`OutcomeCommittedError`.
        """
        if conn.superseded is not None:
            raise conn.superseded
        conn.command("BEGIN")
        conn.queue(self.save_or_refuse, _owner_params(record), doing="save the materialization")
        self.queue_lineage_and_audit(conn, lineage, audit)
        conn.command("COMMIT")
        # Its own statement, before the read: a statement's snapshot is taken before it runs.
        conn.queue(self.lock_run_shared, {"run_id": record.run_id}, doing="lock the run")
        reads: list[tuple[PgStatement, Mapping[str, Any]]] = [
            (self.run_status_and_unfinished, {"run_id": record.run_id})
        ]
        lock = conn.step_lock
        unlock = lock is not None and conn.step == (
            record.run_id,
            record.asset,
            record.partition_key,
        )
        if unlock:
            reads.append((self.release_step_lock, {"step": lock}))
        try:
            rows = conn.reads(reads, doing="save the materialization")[0]
        except StoreError as exc:
            import psycopg

            # The explicit transaction failed (INERROR), or the statements after its COMMIT
            # did, in a transaction of their own that the round trip's end rolled back (IDLE).
            driver = conn.driver
            committed = (
                not driver.closed
                and driver.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            )
            _roll_back(conn)
            if committed:
                raise OutcomeCommittedError(
                    f"The outcome of {record.asset!r} {record.partition_key!r} (attempt "
                    f"{record.attempt}) is saved, but reading whether its run is done failed: "
                    f"{exc}"
                ) from exc
            if not _refused(exc.__cause__):
                raise
            current = self.find(conn, record.run_id, record.asset, record.partition_key)
            conn.superseded = error = superseded(current)
            raise error from None
        if unlock:
            conn.step_lock = None
        (row,) = rows
        status = row[_STATUS_AT]
        return (None if status is None else RunStatus(status)), bool(row[0])

    def run_transaction(
        self, conn: PgConnection, run_id: str, work: Callable[[RunTransaction], T]
    ) -> T:
        tx = _PgRunTransaction(self, conn, run_id)
        try:
            result = work(tx)
            conn.send_checks()  # a conditional write nothing read back yet: before the COMMIT
            conn.command("COMMIT")
            if tx.outcome_saved and conn.step_lock is not None:
                # The step's outcome is committed: nothing left to protect, and the lock goes
                # in the same round trip as the COMMIT.
                conn.queue(
                    self.release_step_lock, {"step": conn.step_lock}, doing="unlock the step"
                )
                conn.flush()
                conn.step_lock = None
            else:
                conn.flush()
        except BaseException:
            _roll_back(conn)
            raise
        return result


#: Where the run's status is in a row of _RUN_STATUS_AND_UNFINISHED (after "a step left").
_STATUS_AT = 1 + [c.name for c in _RUN_COLUMNS].index("status")


def _owner_params(record: MaterializationRecord) -> dict[str, Any]:
    """The parameters of _SAVE_IF_OWNER and _SAVE_OR_REFUSE for ``record``."""
    params = _mat_params(record)
    params.update({f"owner_{name}": params[name] for name in ("id", *_MAT_FIXED)})
    params["owner_attempt"] = record.attempt
    return params


def _refused(error: BaseException | None) -> bool:
    """Whether ``error`` is _SAVE_OR_REFUSE refusing a save."""
    import psycopg

    return isinstance(error, psycopg.errors.InvalidTextRepresentation) and (
        ATTEMPT_REFUSED in str(error)
    )


def _send_or_roll_back(conn: PgConnection) -> None:
    try:
        conn.flush()
    except BaseException:
        _roll_back(conn)
        raise


def _roll_back(conn: PgConnection) -> None:
    """End a failed transaction, leaving the connection usable (or closed: if the rollback
    fails, the connection is broken and its step session closes it)."""
    import psycopg

    conn.discard()
    if conn.driver.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with suppress(psycopg.Error):
            conn.driver.execute("ROLLBACK")


_UNREAD: Any = object()


class _PgRunTransaction:
    """A :class:`RunTransaction` on a step session's connection.

    Writes are queued and sent with the next read or the COMMIT (one round trip each). The run
    lock is the same advisory lock as :class:`_SQLRunTransaction`'s, taken first, so the two
    kinds of transactions take turns on a run. Within the transaction the run is read once, and
    whether a step of it is unfinished comes with that read (until the next write): after a step's
    final record, :func:`~flowstone.execution.scheduling.after_final` asks for both: BEGIN,
    the run lock, its writes (the fencing check is the final write's condition:
    :meth:`save_attempt`) and the run's read go in one round trip; then one read of the
    children that may be ready, and one of their other dependencies; then the COMMIT.
    """

    def __init__(self, statements: _PgStatements, conn: PgConnection, run_id: str) -> None:
        self._s = statements
        self._conn = conn
        self._run_id = run_id
        self._run: RunRecord | None = _UNREAD
        self._unfinished: bool | None = None
        #: The step of the connection's step session got its outcome in this transaction.
        self.outcome_saved = False
        conn.command("BEGIN")
        conn.queue(statements.lock_run, {"run_id": run_id}, doing="lock the run")

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def connection(self) -> Any:
        # The job queue writes through it: what is queued goes first.
        self._conn.flush()
        self._unfinished = None  # the caller may change anything
        return self._conn.driver

    def get_run(self) -> RunRecord | None:
        if self._run is _UNREAD:
            (row,) = self._conn.read(
                self._s.run_and_unfinished, {"run_id": self._run_id}, doing="read the run"
            )
            self._unfinished = bool(row[0])
            self._run = None if row[1] is None else _run_record(row[1:])
        return self._run

    def run_status(self) -> RunStatus | None:
        if self._run is not _UNREAD:
            return None if self._run is None else self._run.status
        (row,) = self._conn.read(
            self._s.run_status_and_unfinished, {"run_id": self._run_id}, doing="read the run"
        )
        self._unfinished = bool(row[0])
        if row[1] is None:
            self._run = None
            return None
        if not self._unfinished:
            self._run = _run_record(row[1:])  # whole: the caller closes the run
        return RunStatus(row[_STATUS_AT])

    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        check_run_member(self._run_id, run)
        for record in materializations:
            check_run_member(self._run_id, record)
        self._conn.queue(self._s.upsert_run, _run_params(run), doing="create the run")
        if materializations:
            self._conn.queue(
                self._s.upsert_mat,
                [_mat_params(m) for m in materializations],
                doing="create the run",
                expect=len(materializations),
            )
        self._s.queue_audit(self._conn, audit)
        self._run, self._unfinished = _UNREAD, None

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        check_run_member(self._run_id, run)
        self._conn.queue(self._s.update_run, _run_params(run), doing="update the run")
        self._s.queue_audit(self._conn, audit)
        self._run, self._unfinished = _UNREAD, None

    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        check_run_member(self._run_id, record)
        self._s.queue_materialization(self._conn, record, lineage, audit)
        self._saved(record)

    def _saved(self, record: MaterializationRecord) -> None:
        self._unfinished = None
        if (record.run_id, record.asset, record.partition_key) == self._conn.step and (
            # Final, or pending again after it ran: a retry is scheduled.
            record.status.is_final
            or (record.status == Status.PENDING and record.started_at is not None)
        ):
            self.outcome_saved = True

    def save_attempt(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        superseded: Callable[[MaterializationRecord | None], BaseException],
    ) -> None:
        """Save ``record``, the final record of its attempt, only if that attempt still owns
        the step (``running`` with its attempt number, or ``pending`` never started).

        The condition is checked when the write's result is read (with the next read, or
        before the COMMIT at the latest); when it fails, ``superseded(current record)`` is
        raised, nothing of the transaction is kept, and the step session writes nothing more.
        """
        check_run_member(self._run_id, record)
        params = _owner_params(record)

        def check(changed: int) -> None:
            if changed != 1:
                current = self.find(record.asset, record.partition_key)
                self._conn.superseded = error = superseded(current)
                raise error

        self._conn.queue(
            self._s.save_if_owner, params, doing="save the materialization", check=check
        )
        self._s.queue_lineage_and_audit(self._conn, lineage, audit)
        self._saved(record)

    def materializations(self, assets: Sequence[str] | None = None) -> list[MaterializationRecord]:
        if assets is not None and not assets:
            return []
        params: dict[str, Any] = {"run_id": self._run_id}
        stmt = self._s.run_mats
        if assets is not None:
            stmt, params["assets"] = self._s.run_mats_of, list(assets)
        rows = self._conn.read(stmt, params, doing="read the run's materializations")
        return [_mat_record(row) for row in rows]

    def find(self, asset: str, partition_key: str) -> MaterializationRecord | None:
        return self._s.find(self._conn, self._run_id, asset, partition_key)

    def find_many(
        self, steps: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MaterializationRecord]:
        return self._s.find_many(self._conn, self._run_id, steps)

    def has_unfinished(self) -> bool:
        if self._unfinished is None:
            rows = self._conn.read(
                self._s.has_unfinished, {"run_id": self._run_id}, doing="look for unfinished steps"
            )
            self._unfinished = bool(rows[0][0])
        return self._unfinished
