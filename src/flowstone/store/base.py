"""The metadata store protocol: everything FlowStone records goes through these methods.

Two implementations ship: :class:`~flowstone.store.sql.SQLStore` (SQLAlchemy Core over SQLite
or PostgreSQL, one schema managed by Alembic) and :class:`~flowstone.store.memory.MemoryStore`
(for tests). One contract suite (``tests/test_store_contract.py``) runs over both, so the answers
are the same everywhere.

Writes that belong together are one call (a status change with its lineage edges and audit
events), so a store can make them one transaction and a crash never leaves half of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.errors import StoreError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
)

if TYPE_CHECKING:  # annotations only: these records load with the features that use them
    from flowstone.backfill_records import (
        BackfillPartition,
        BackfillRecord,
        BackfillStatus,
        PartitionOutcome,
    )
    from flowstone.schedule_records import (
        ScheduleRecord,
        SensorRecord,
        TickKind,
        TickLaunch,
        TickRecord,
        TickRun,
    )

#: Lineage queries never walk further than this, whatever depth is asked for.
MAX_LINEAGE_DEPTH = 100

T = TypeVar("T")


@runtime_checkable
class MetadataStore(Protocol):
    """Where FlowStone records runs, materializations, lineage and the audit log."""

    # --- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """Insert a run with its planned (usually ``pending``) materializations, atomically.

        The materializations are saved as by :meth:`save_materialization` (same rules); if one
        is rejected, nothing of the call is stored.
        """
        ...

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        """Replace a run's status and completion time (a run not stored yet is inserted)."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        ...

    def list_runs(self, *, limit: int = 50) -> list[RunRecord]:
        """Runs, newest first (newest ``created_at``; ties: the later created first)."""
        ...

    # --- materializations ------------------------------------------------------------------
    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """Insert or replace (by id) a materialization, with its lineage and audit, atomically.

        A materialization's run, asset, partition and ``created_at`` are fixed by its first
        save; each (run, asset, partition) has one materialization; each lineage edge's
        ``materialization_id`` must be this record or one saved before. A call breaking
        these raises :class:`~flowstone.errors.StoreError` and stores nothing.
        """
        ...

    def get_materialization(self, materialization_id: str) -> MaterializationRecord | None:
        """The materialization with this id, or None."""
        ...

    def latest_materialization(
        self, asset: str, partition_key: str, *, status: Status | None = None
    ) -> MaterializationRecord | None:
        """The most recently created materialization of (asset, partition), optionally of one
        status. "Most recent" is newest ``created_at``, ties broken by save order."""
        ...

    def list_materializations(
        self,
        *,
        asset: str | None = None,
        partition_key: str | None = None,
        run_id: str | None = None,
        status: Status | None = None,
        limit: int | None = 100,
    ) -> list[MaterializationRecord]:
        """Materializations matching every filter given, newest first."""
        ...

    def latest_materializations(
        self, asset: str, partition_keys: Sequence[str], *, status: Status | None = None
    ) -> dict[str, MaterializationRecord]:
        """:meth:`latest_materialization` of many partitions of one asset, in one query: by
        partition key, for the keys that have one."""
        ...

    def latest_per_partition(
        self, assets: Sequence[str] | None = None
    ) -> list[MaterializationRecord]:
        """For each (asset, partition) ever recorded, its most recent materialization.

        Ordered by asset, then partition.
        """
        ...

    # --- lineage ---------------------------------------------------------------------------
    def upstream(self, materialization_id: str, *, depth: int = 10) -> list[LineageNode]:
        """The exact materializations that fed this one, transitively, up to ``depth`` steps.

        Each node carries the upstream materialization's id, run and status (None when the
        store does not hold it); ordered by depth, then asset, then partition, then id.
        """
        ...

    def downstream(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        """The (asset, partition)s that consumed this one, transitively, up to ``depth`` steps.

        Each (asset, partition) appears once, at its smallest depth, with the latest
        materialization that consumed it. Ordered by depth, then asset, then partition.
        """
        ...

    def impact(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        """:meth:`downstream`, with each node's ``status`` set to the latest status of that
        (asset, partition), whichever run produced it."""
        ...

    # --- audit -----------------------------------------------------------------------------
    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        """Append events to the audit log. The store numbers them (``id``), in order."""
        ...

    def list_audit(
        self,
        *,
        correlation_id: str | None = None,
        resource_id: str | None = None,
        action: str | None = None,
        limit: int | None = 100,
    ) -> list[AuditEvent]:
        """Audit events matching every filter given, oldest first."""
        ...

    # --- backfills --------------------------------------------------------------------------
    def create_backfill(self, backfill: BackfillRecord, audit: Sequence[AuditEvent] = ()) -> None:
        """Insert a new backfill (its id must be new) with its audit events, atomically."""
        ...

    def get_backfill(self, backfill_id: str) -> BackfillRecord | None:
        """The backfill with this id, or None."""
        ...

    def list_backfills(self, *, limit: int | None = 50) -> list[BackfillRecord]:
        """Backfills, newest first (newest ``created_at``; ties: the later created first)."""
        ...

    def claim_backfill(
        self,
        backfill_id: str,
        *,
        owner: str,
        expected_owner: str | None,
        now: datetime,
        audit: Sequence[AuditEvent] = (),
    ) -> BackfillRecord | None:
        """Make ``owner`` the process working on a backfill, if its owner is still
        ``expected_owner`` (None: nobody), with audit events, atomically.

        Sets the status ``running``, ``heartbeat_at`` to ``now`` and ``finished_at`` to None.
        Returns the updated backfill, or None when there is none or another process claimed it
        first (its owner is no longer ``expected_owner``).
        """
        ...

    def heartbeat_backfill(
        self, backfill_id: str, *, owner: str, now: datetime
    ) -> BackfillRecord | None:
        """Record that ``owner`` still works on the backfill. Returns the backfill (its status
        tells of a cancel request), or None when ``owner`` no longer owns it."""
        ...

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
        """Record the outcome of a chunk of partitions, atomically, if ``owner`` owns it.

        Sets the cursor, the counts and the heartbeat; inserts or replaces (by position) the
        rows of partitions that did not succeed; deletes the rows at the ``resolved`` positions
        (partitions that succeeded since). Returns the backfill, or None when ``owner`` no
        longer owns it (then nothing is written).
        """
        ...

    def finish_backfill(
        self,
        backfill_id: str,
        *,
        owner: str,
        status: BackfillStatus,
        now: datetime,
        audit: Sequence[AuditEvent] = (),
    ) -> BackfillRecord | None:
        """Set the status and release the backfill (no owner), with audit events, atomically,
        if ``owner`` owns it. ``finished_at`` becomes ``now`` for a final status. Returns the
        backfill, or None when ``owner`` no longer owns it (then nothing is written)."""
        ...

    def request_backfill_cancel(
        self, backfill_id: str, *, audit: Sequence[AuditEvent] = ()
    ) -> BackfillRecord | None:
        """Ask the process running a backfill to stop: ``running`` becomes ``canceling``, with
        the audit events, atomically; any other status is left as it is (and no event stored).
        Returns the backfill as it is after, or None when there is none."""
        ...

    def create_backfill_run(
        self,
        backfill_id: str,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """:meth:`create_run`, plus the run's link to its backfill, in one transaction.

        Raises:
            StoreError: there is no such backfill, the run is linked already, or a
                materialization is rejected (as by :meth:`create_run`); nothing is stored.
        """
        ...

    def list_backfill_runs(self, backfill_id: str) -> list[RunRecord]:
        """The runs linked to a backfill (:meth:`create_backfill_run`), in creation order."""
        ...

    def interrupt_backfill_runs(
        self, backfill_id: str, *, now: datetime, error_type: str, error_message: str
    ) -> list[str]:
        """Close the runs of a backfill left ``running`` by a process that died, atomically.

        Their ``pending`` and ``running`` materializations become ``failed`` with this error
        (completed at ``now``), the runs ``failed``, each with a ``run.failed`` audit event.
        Returns the ids of the runs closed, in creation order.
        """
        ...

    def list_backfill_partitions(
        self,
        backfill_id: str,
        *,
        outcome: PartitionOutcome | None = None,
        after: int = -1,
        limit: int | None = 100,
    ) -> list[BackfillPartition]:
        """The rows of partitions that did not succeed (of one outcome, if given) at positions
        after ``after``, by position: a caller pages through them with ``after``."""
        ...

    def successful_partitions(
        self,
        assets: Sequence[str],
        partition_keys: Sequence[str],
        *,
        backfill_id: str | None = None,
    ) -> set[str]:
        """The keys among ``partition_keys`` for which every one of ``assets`` has a
        ``success`` materialization (only in the runs of ``backfill_id``, when given).

        One query for the whole batch, whatever its size.
        """
        ...

    # --- schedules and sensors --------------------------------------------------------------
    def save_schedule(self, schedule: ScheduleRecord, audit: Sequence[AuditEvent] = ()) -> None:
        """Insert a schedule, or replace the definition of the one with its name.

        Replacing keeps the stored state: ``paused``, ``cursor`` and ``created_at``.
        """
        ...

    def get_schedule(self, name: str) -> ScheduleRecord | None:
        """The schedule with this name, or None."""
        ...

    def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""
        ...

    def set_schedule_paused(
        self,
        name: str,
        paused: bool,
        *,
        cursor: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """Pause or resume a schedule; with ``cursor``, also move its cursor forward to it
        (never back). False, and nothing stored, when no schedule has this name."""
        ...

    def delete_schedule(self, name: str, audit: Sequence[AuditEvent] = ()) -> bool:
        """Delete a schedule (its ticks stay, as history). False when there is none."""
        ...

    def create_schedule_tick(
        self,
        tick: TickRecord,
        launch: TickLaunch | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """Record a schedule's tick with the run it launches (``launch``), atomically, and move
        the schedule's cursor forward to the tick time (never back).

        The run is created as by :meth:`create_run` and claimed at ``tick.recorded_at``.

        Returns:
            False, storing nothing, when a tick of this schedule at this time is already
            recorded: another scheduler took it.
        """
        ...

    def save_sensor(self, sensor: SensorRecord, audit: Sequence[AuditEvent] = ()) -> None:
        """Insert a sensor, or replace its ``interval_s`` (its state is kept)."""
        ...

    def get_sensor(self, name: str) -> SensorRecord | None:
        """The sensor with this name, or None."""
        ...

    def list_sensors(self) -> list[SensorRecord]:
        """Every sensor, by name."""
        ...

    def set_sensor_paused(self, name: str, paused: bool, audit: Sequence[AuditEvent] = ()) -> bool:
        """Pause or resume a sensor. False when no sensor has this name."""
        ...

    def create_sensor_tick(
        self,
        name: str,
        *,
        expected_version: int,
        polled_at: datetime,
        cursor: str | None,
        tick: TickRecord | None = None,
        launches: Sequence[TickLaunch] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """Apply one poll of a sensor, atomically, if nobody applied another since it read
        the sensor at ``expected_version``: store the new ``cursor``, ``last_tick_at =
        polled_at``, the version plus one, the tick (if any) and its runs and run keys.

        Returns:
            False, storing nothing, when the version moved on (another scheduler polled) or
            the sensor is gone; a run key launched before also returns False.
        """
        ...

    def seen_run_keys(self, sensor: str, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` this sensor has launched runs for."""
        ...

    def list_ticks(self, kind: TickKind, name: str, *, limit: int = 50) -> list[TickRecord]:
        """A schedule's or sensor's ticks, newest first."""
        ...

    def orphaned_tick_runs(self, claimed_before: datetime) -> list[TickRun]:
        """Runs launched by ticks that never started: the run is still ``running``, every one
        of its materializations is ``pending``, and its last claim is older than
        ``claimed_before``. Oldest claim first."""
        ...

    def claim_tick_run(self, run_id: str, *, expected: datetime, claimed_at: datetime) -> bool:
        """Claim a tick's run for execution: set its claim time to ``claimed_at`` if it is
        still ``expected``. True when this caller won the claim."""
        ...

    # --- approvals ---------------------------------------------------------------------------
    def request_approval(
        self,
        approval: ApprovalRecord,
        materialization: MaterializationRecord,
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """Store a new approval request with the materialization that waits for it (saved as
        by :meth:`save_materialization`, usually ``waiting_approval``) and audit, atomically.

        A request id stored before raises :class:`~flowstone.errors.StoreError`, storing
        nothing.
        """
        ...

    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        """The approval request with this id, or None."""
        ...

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
        """Approval requests matching every filter given, oldest first (``requested_at``,
        ties by id).

        Args:
            id_prefix: Only ids starting with it (hex digits).
            due_before: Only requests with a ``timeout_at`` at or before it.
        """
        ...

    def decide_approval(
        self,
        decided: ApprovalRecord,
        *,
        materialization: MaterializationRecord | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        """Record a decision on a ``pending`` request, with the materialization's new record
        (a rejection or expiry fails it) and audit, atomically.

        The request's ``status``, ``decided_by``, ``decided_at``, ``reason`` and ``input``
        are taken from ``decided``. It changes only while it is ``pending`` (a compare and
        set), so of concurrent decisions exactly one is stored. Approving or rejecting also
        needs the request not due at ``decided.decided_at``; expiring needs it due.

        Returns:
            True when this call decided; False, storing nothing, otherwise.
        """
        ...

    def claim_materializations(self, materialization_ids: Sequence[str]) -> list[str]:
        """Move those of these materializations that are ``pending`` or ``waiting_approval``
        to ``running``, atomically, and return their ids (in the order given).

        A run resumed after an approval claims its steps before running them, so two
        processes continuing one run never run a step twice.
        """
        ...

    # --- run transactions (distributed execution) ------------------------------------------
    def run_transaction(self, run_id: str, work: Callable[[RunTransaction], T]) -> T:
        """Call ``work`` inside one write transaction that holds run ``run_id``'s lock.

        Calls for the same run take turns (on PostgreSQL an advisory lock on the run id; on
        SQLite the write lock; in memory the store's lock), so ``work`` sees every write of the
        calls before it. What ``work`` writes through the :class:`RunTransaction` commits with
        it, and nothing does if ``work`` raises. The run need not exist yet.

        Returns:
            What ``work`` returns.
        """
        ...

    def close(self) -> None:
        """Release connections. The store must not be used afterwards."""
        ...


def clamp_depth(depth: int) -> int:
    """Bound a requested lineage depth to ``1..MAX_LINEAGE_DEPTH``."""
    return max(1, min(int(depth), MAX_LINEAGE_DEPTH))


# --- approvals -----------------------------------------------------------------------------
def check_decision(decided: ApprovalRecord) -> None:
    """Raise :class:`StoreError` unless ``decided`` approves, rejects or expires."""
    if decided.status == ApprovalStatus.PENDING:
        raise StoreError(
            f"Could not decide approval {decided.id}: a decision approves, rejects or expires "
            "it; 'pending' is not one."
        )


# --- run transactions (distributed execution) ----------------------------------------------
class RunTransaction(Protocol):
    """One run's records inside an open write transaction (see
    :meth:`MetadataStore.run_transaction`).

    Writes follow the rules of the store's methods of the same names; reads see the writes
    made earlier in the same transaction.
    """

    @property
    def run_id(self) -> str:
        """The run whose lock the transaction holds."""
        ...

    @property
    def connection(self) -> Any:
        """The database driver's connection running this transaction (a ``psycopg``
        connection on PostgreSQL, ``sqlite3`` on SQLite, None in memory): a job queue in the
        same database enqueues through it, so its jobs commit with the records."""
        ...

    def get_run(self) -> RunRecord | None:
        """The run, or None when it is not stored (yet)."""
        ...

    def run_status(self) -> RunStatus | None:
        """The run's status, or None when it is not stored: a lighter read than
        :meth:`get_run` (no targets, no tags), for the check every step makes."""
        ...

    def create_run(
        self,
        run: RunRecord,
        materializations: Sequence[MaterializationRecord] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """As :meth:`MetadataStore.create_run`; ``run.id`` must be this transaction's run."""
        ...

    def update_run(self, run: RunRecord, audit: Sequence[AuditEvent] = ()) -> None:
        """As :meth:`MetadataStore.update_run`."""
        ...

    def save_materialization(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> None:
        """As :meth:`MetadataStore.save_materialization`; the record must belong to this run."""
        ...

    def materializations(self, assets: Sequence[str] | None = None) -> list[MaterializationRecord]:
        """The run's materializations (only of ``assets`` if given), in creation order."""
        ...

    def find(self, asset: str, partition_key: str) -> MaterializationRecord | None:
        """The run's materialization of (asset, partition), or None."""
        ...

    def find_many(
        self, steps: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MaterializationRecord]:
        """The run's materializations of ``steps`` ((asset, partition key) pairs), by step; a
        step the run does not have is left out. On PostgreSQL one statement, however many
        steps."""
        ...

    def has_unfinished(self) -> bool:
        """Whether any of the run's materializations is not final yet (see
        :attr:`Status.is_final`)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StepClaim:
    """The ``running`` record a distributed worker writes when it starts a step that never
    ran, less what the step's record already holds: a store that can writes it in the same
    round trip as the step lock and the step's read (:meth:`SQLStore.step_session
    <flowstone.store.sql.SQLStore.step_session>`), so starting a step costs no write of its own.
    """

    attempt: int
    started_at: datetime
    code_version: str | None
    io_manager: str | None


def check_run_member(run_id: str, record: MaterializationRecord | RunRecord) -> None:
    """Raise :class:`StoreError` unless ``record`` belongs to run ``run_id``."""
    owner = record.id if isinstance(record, RunRecord) else record.run_id
    if owner != run_id:
        raise StoreError(
            f"Could not write {type(record).__name__} {record.id} in the transaction of run "
            f"{run_id}: it belongs to run {owner}. Open a transaction on that run instead."
        )
