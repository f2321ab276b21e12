"""Backfills: materialize assets over many partitions in chunked runs, resumably.

:class:`Backfiller` is what ``Pipeline.backfill``, ``resume_backfill``, ``retry_failed_backfill``
and ``cancel_backfill`` call. It owns the life of a backfill record; the partitions themselves
are worked through by :class:`~flowstone.backfill_chunks.BackfillPass`.

A process that finds a backfill owned by a dead process (see :mod:`flowstone.backfill_owner`)
takes it over: it closes the runs left ``running`` (their unfinished steps become ``failed``, so
nothing stays running or pending) and continues.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime

from flowstone.backfill_chunks import BackfillPass, ExecutePlan
from flowstone.backfill_materializer import MaterializerFactory, StopFlag
from flowstone.backfill_owner import (
    HEARTBEAT_S,
    LEASE_S,
    current_user,
    new_owner,
    owner_alive,
)
from flowstone.backfill_progress import BackfillReport, BackfillResult, ProgressCallback
from flowstone.backfill_records import (
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
)
from flowstone.backfill_session import PassContext, Steps, backfill_event, run_pass, summary
from flowstone.errors import (
    BackfillBusyError,
    BackfillError,
    BackfillStateError,
    PartitionError,
    UnknownBackfillError,
)
from flowstone.graph import AssetGraph
from flowstone.partitions import Partition, PartitionsDefinition
from flowstone.partitions.sets import PartitionChoice, PartitionSet
from flowstone.records import new_id, utcnow
from flowstone.store import MetadataStore
from flowstone.telemetry import Telemetry

log = logging.getLogger("flowstone.backfill")

DEFAULT_PARALLEL = 4
#: Partitions per run: large enough that per-run costs vanish, small enough that a chunk's
#: steps and records stay a few megabytes and a cancel or crash redoes little.
DEFAULT_CHUNK_SIZE = 500
#: The error type of steps that were running when their process died.
INTERRUPTED_ERROR = "ProcessLostError"


class Backfiller:
    """Starts, resumes, retries and cancels the backfills of one pipeline.

    Args:
        graph: The pipeline's assets.
        store: Where backfills, runs and materializations are recorded.
        telemetry: Receives ``backfill.start``, ``backfill.resume``, ``backfill.chunk``,
            ``backfill.cancel`` and ``backfill.stop``.
        execute: Runs a chunk's plan as a recorded run (``Pipeline._execute``).
        materializer: Makes the materializer of a pass, with the pipeline's options.
        heartbeat_s: How often a running backfill proves it is alive and looks for a cancel.
        lease_s: How long without a heartbeat before a backfill may be taken over.

    Example::

        backfiller = Backfiller(graph, store, telemetry, pipeline._execute, materializer=make)
        result = backfiller.start(["events"], partitions="all", parallel=4)
    """

    def __init__(
        self,
        graph: AssetGraph,
        store: MetadataStore,
        telemetry: Telemetry,
        execute: ExecutePlan,
        *,
        materializer: MaterializerFactory,
        run_tags: Mapping[str, str] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self._graph, self._store, self._telemetry = graph, store, telemetry
        self._context = PassContext(
            graph, store, telemetry, execute, materializer, heartbeat_s, dict(run_tags or {})
        )
        self._lease_s = lease_s
        self._lock = threading.Lock()
        #: Backfill id -> (owner, stop flag) of the passes running in this process.
        self._active: dict[str, tuple[str, StopFlag]] = {}

    @property
    def store(self) -> MetadataStore:
        """The store the backfills are recorded in."""
        return self._store

    # --- starting ----------------------------------------------------------------------------
    def start(
        self,
        targets: Sequence[str],
        *,
        partitions: PartitionChoice = None,
        start: Partition = None,
        end: Partition = None,
        with_upstream: bool = False,
        parallel: int = DEFAULT_PARALLEL,
        force: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        created_by: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> BackfillResult:
        """Record a new backfill and run it to the end (see ``Pipeline.backfill``)."""
        for name, value in (("parallel", parallel), ("chunk_size", chunk_size)):
            if type(value) is not int or value < 1:
                raise BackfillError(f"{name} must be a positive integer, got {value!r}.")
        if not targets:
            raise BackfillError("Name at least one asset to backfill.")
        selection = self._graph.select(targets, with_upstream=with_upstream)
        definition = _shared_definition(self._graph, targets, selection)
        chosen = PartitionSet.choose(definition, partitions, start, end)
        now, owner = utcnow(), new_owner()
        record = BackfillRecord(
            id=new_id(),
            status=BackfillStatus.RUNNING,
            targets=tuple(dict.fromkeys(targets)),
            with_upstream=with_upstream,
            partition_set=chosen.to_json(),
            total=len(chosen),
            parallel=parallel,
            chunk_size=chunk_size,
            force=force,
            created_by=created_by or current_user(),
            created_at=now,
            owner=owner,
            heartbeat_at=now,
        )
        details = {"partitions": chosen.describe(), "total": record.total, "force": force}
        self._store.create_backfill(
            record, [backfill_event("backfill.started", record, None, details)]
        )
        self._telemetry.emit(
            "backfill.start",
            {"backfill_id": record.id, "targets": list(record.targets), **details},
        )
        return self._run_pass(
            record, owner, definition, progress, fresh=True, todo=record.total, before=None
        )

    def resume(
        self, backfill_id: str, *, by: str | None = None, progress: ProgressCallback | None = None
    ) -> BackfillResult:
        """Run every partition not successful yet: failed, canceled, never reached; and record
        how partitions that waited for an approval ended (one still waiting is left as is)."""
        record = self.get(backfill_id)
        if record.status == BackfillStatus.SUCCESS:
            return BackfillResult(backfill=record, run_ids=(), failures=(), elapsed_s=0.0)
        owner = new_owner()
        claimed = self._claim(record, owner, "backfill.resumed", by)
        cursor = claimed.cursor
        self._telemetry.emit("backfill.resume", {"backfill_id": record.id, "kind": "resume"})
        todo = (
            claimed.failed
            + claimed.waiting
            + claimed.count(PartitionOutcome.CANCELED)
            + claimed.remaining
        )

        def steps(run: BackfillPass) -> None:
            run.revisit(None, before=cursor)
            run.forward()

        return self._run_pass(
            claimed,
            owner,
            self._definition_of(claimed),
            progress,
            fresh=False,
            todo=todo,
            before=record.status,
            steps=steps,
        )

    def retry_failed(
        self, backfill_id: str, *, by: str | None = None, progress: ProgressCallback | None = None
    ) -> BackfillResult:
        """Rerun only the partitions that failed (not the canceled or never reached ones)."""
        record = self.get(backfill_id)
        if record.failed == 0:
            return BackfillResult(backfill=record, run_ids=(), failures=(), elapsed_s=0.0)
        owner = new_owner()
        claimed = self._claim(record, owner, "backfill.retry_failed", by)
        self._telemetry.emit("backfill.resume", {"backfill_id": record.id, "kind": "retry_failed"})
        return self._run_pass(
            claimed,
            owner,
            self._definition_of(claimed),
            progress,
            fresh=False,
            todo=claimed.failed,
            before=record.status,
            steps=lambda run: run.revisit(PartitionOutcome.FAILED, before=claimed.total),
        )

    # --- canceling ---------------------------------------------------------------------------
    def cancel(self, backfill_id: str, *, by: str | None = None) -> BackfillRecord:
        """Stop a backfill: no new partition starts; those running finish. A backfill whose
        process died is canceled at once, its leftover runs closed."""
        record = self.get(backfill_id)
        if record.status == BackfillStatus.CANCELED:
            return record
        if record.status.is_final:
            raise BackfillStateError(
                record.id,
                record.status.value,
                "it has finished, so there is nothing to cancel. `flowstone backfill resume "
                f"{record.id}` runs what did not succeed.",
            )
        asked = backfill_event("backfill.cancel_requested", record, by, {})
        with self._lock:
            active = self._active.get(record.id)
        if active is not None:
            active[1].set("canceled")  # a pass of this process: stop it now
        now = utcnow()
        if active is not None or self._alive(record, now):
            current = self._store.request_backfill_cancel(record.id, audit=[asked])
            self._telemetry.emit("backfill.cancel", {"backfill_id": record.id, "live": True})
            return current or record
        owner = new_owner()
        claimed = self._store.claim_backfill(
            record.id, owner=owner, expected_owner=record.owner, now=now, audit=[asked]
        )
        if claimed is None:
            raise self._busy(record.id)
        self._interrupt(record)
        done = self._store.finish_backfill(
            record.id,
            owner=owner,
            status=BackfillStatus.CANCELED,
            now=utcnow(),
            audit=[backfill_event("backfill.canceled", claimed, by, summary(claimed))],
        )
        self._telemetry.emit("backfill.cancel", {"backfill_id": record.id, "live": False})
        return done or claimed

    # --- reading -----------------------------------------------------------------------------
    def get(self, backfill_id: str) -> BackfillRecord:
        """The backfill with this id, or a unique prefix of it.

        Raises:
            UnknownBackfillError: no backfill (or several) match.
        """
        found = self._store.get_backfill(backfill_id)
        if found is not None:
            return found
        matches = [
            b for b in self._store.list_backfills(limit=None) if b.id.startswith(backfill_id)
        ]
        if len(matches) != 1 or not backfill_id:
            raise UnknownBackfillError(backfill_id, matches=len(matches))
        return matches[0]

    def report(self, backfill_id: str, *, failures: int = 20) -> BackfillReport:
        """A backfill, its partition set, its first failures and whether it is running."""
        record = self.get(backfill_id)
        try:
            described = PartitionSet.from_json(record.partition_set).describe()
        except PartitionError:
            described = "?"
        return BackfillReport(
            backfill=record,
            partitions=described,
            failures=tuple(self._store.list_backfill_partitions(record.id, limit=failures)),
            active=self._alive(record, utcnow()),
        )

    # --- a pass ------------------------------------------------------------------------------
    def _run_pass(
        self,
        record: BackfillRecord,
        owner: str,
        definition: PartitionsDefinition,
        progress: ProgressCallback | None,
        *,
        fresh: bool,
        todo: int,
        before: BackfillStatus | None,
        steps: Steps = lambda run: run.forward(),
    ) -> BackfillResult:
        stop = StopFlag()
        with self._lock:
            self._active[record.id] = (owner, stop)
        try:
            return run_pass(
                self._context,
                record,
                owner=owner,
                definition=definition,
                stop=stop,
                progress=progress,
                fresh=fresh,
                todo=todo,
                before=before,
                steps=steps,
            )
        finally:
            with self._lock:
                self._active.pop(record.id, None)

    # --- ownership ---------------------------------------------------------------------------
    def _claim(
        self, record: BackfillRecord, owner: str, action: str, by: str | None
    ) -> BackfillRecord:
        now = utcnow()
        if self._alive(record, now):
            raise self._busy(record.id)
        claimed = self._store.claim_backfill(
            record.id,
            owner=owner,
            expected_owner=record.owner,
            now=now,
            audit=[backfill_event(action, record, by, {})],
        )
        if claimed is None:
            raise self._busy(record.id)
        if record.owner is not None:
            self._interrupt(record)
        return claimed

    def _interrupt(self, record: BackfillRecord) -> None:
        # A chunk the workers run goes on without its dead follower: cancel it through the
        # queue (steps not started are cancelled, running ones end and are recorded), rather
        # than fail steps a worker may still finish.
        from flowstone.execution.distributed import QUEUE_TAG, DistributedExecutor
        from flowstone.execution.scheduling import MOVING

        for run in self._store.list_backfill_runs(record.id):
            queue = run.tags.get(QUEUE_TAG)
            if queue and run.status in MOVING:
                DistributedExecutor(queue=queue).cancel(self._store, run.id, actor="backfill")
        closed = self._store.interrupt_backfill_runs(
            record.id,
            now=utcnow(),
            error_type=INTERRUPTED_ERROR,
            error_message=(
                f"The process running backfill {record.id} ({record.owner}) stopped before "
                "this step finished; resuming the backfill runs it again."
            ),
        )
        if closed:
            log.info("Backfill %s: closed %d interrupted runs", record.id, len(closed))

    def _alive(self, record: BackfillRecord, now: datetime) -> bool:
        with self._lock:
            local = {owner for owner, _ in self._active.values()}
        return owner_alive(record, now, lease_s=self._lease_s, local=local)

    def _busy(self, backfill_id: str) -> BackfillBusyError:
        current = self.get(backfill_id)
        age = (
            (utcnow() - current.heartbeat_at).total_seconds()
            if current.heartbeat_at is not None
            else 0.0
        )
        return BackfillBusyError(backfill_id, current.owner or "?", age, self._lease_s)

    def _definition_of(self, record: BackfillRecord) -> PartitionsDefinition:
        selection = self._graph.select(record.targets, with_upstream=record.with_upstream)
        return _shared_definition(self._graph, record.targets, selection)


# --- helpers ---------------------------------------------------------------------------------
def _shared_definition(
    graph: AssetGraph, targets: Sequence[str], selection: Sequence[str]
) -> PartitionsDefinition:
    """The one partition definition of the selection's partitioned assets."""
    partitioned = [n for n in selection if graph.get(n).partitioned_by is not None]
    if not partitioned:
        raise PartitionError(
            f"None of {', '.join(repr(t) for t in targets)} is partitioned: a backfill runs "
            "partitioned assets over their partitions. Materialize unpartitioned assets with "
            "`materialize`."
        )
    first = next((t for t in targets if t in partitioned), partitioned[0])
    definition = graph.get(first).partitioned_by
    assert definition is not None  # in `partitioned`
    for name in partitioned:
        other = graph.get(name).partitioned_by
        if other != definition:
            assert other is not None
            raise PartitionError(
                f"Assets {first!r} and {name!r} have different partitions "
                f"({definition.describe()} and {other.describe()}); a backfill walks one "
                "partition definition. Backfill them separately."
            )
    return definition


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_PARALLEL",
    "INTERRUPTED_ERROR",
    "BackfillReport",
    "BackfillResult",
    "Backfiller",
    "PartitionChoice",
]
