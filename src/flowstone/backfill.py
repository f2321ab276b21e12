"""Backfills: materialize assets over many partitions in chunked runs, resumably.

:class:`Backfiller` is what ``Pipeline.backfill``, ``resume_backfill``, ``retry_failed_backfill``
and ``cancel_backfill`` call. It owns the life of a backfill record; the partitions themselves
are worked through by :class:`~flowstone.backfill_chunks.BackfillPass`.

Ownership. The process working on a backfill writes its ``owner`` (``host:pid:token``) into the
record and a heartbeat every ``heartbeat_s`` from a background thread, which also reads the
status, so a cancel asked from another process is seen within a heartbeat. Every write of a
pass is conditional on still being the owner. A process that finds a backfill owned by a dead
process (same host and the pid is gone, or no heartbeat for ``lease_s``) takes it over: it
closes the runs left ``running`` (their unfinished steps become ``failed``, so nothing stays
running or pending) and continues. Two processes never work on one backfill: the takeover is a
compare-and-set on the owner.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from flowstone.backfill_chunks import BackfillPass, ExecutePlan, MaterializerFactory, StopFlag
from flowstone.backfill_progress import ProgressCallback, Tally
from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
)
from flowstone.errors import (
    BackfillBusyError,
    BackfillError,
    BackfillFailedError,
    BackfillStateError,
    FlowStoneError,
    PartitionError,
    UnknownBackfillError,
)
from flowstone.graph import AssetGraph
from flowstone.partitions import Partition, PartitionsDefinition
from flowstone.partitions.sets import PartitionSet
from flowstone.records import AuditEvent, new_id, utcnow
from flowstone.store import MetadataStore
from flowstone.telemetry import Telemetry

log = logging.getLogger("flowstone.backfill")

DEFAULT_PARALLEL = 4
#: Partitions per run: large enough that per-run costs vanish, small enough that a chunk's
#: steps and records stay a few megabytes and a cancel or crash redoes little.
DEFAULT_CHUNK_SIZE = 500
HEARTBEAT_S = 2.0
#: A backfill whose owner has not written a heartbeat for this long is taken to be abandoned.
LEASE_S = 30.0
#: The error type of steps that were running when their process died.
INTERRUPTED_ERROR = "ProcessLostError"

PartitionChoice = Sequence[Partition] | Literal["all"] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillResult:
    """What a backfill call did: the backfill as it stands after it, and this call's runs.

    Example::

        result = pipeline.backfill("daily_report", start=jan_1, end=dec_31, parallel=8)
        print(result.status, result.backfill.success, result.backfill.skipped)
        result.raise_for_status()
    """

    backfill: BackfillRecord
    run_ids: tuple[str, ...]
    #: The first partitions that did not succeed (at most 10), with their errors.
    failures: tuple[BackfillPartition, ...]
    elapsed_s: float

    @property
    def id(self) -> str:
        """The backfill's id."""
        return self.backfill.id

    @property
    def status(self) -> BackfillStatus:
        """The backfill's status."""
        return self.backfill.status

    @property
    def ok(self) -> bool:
        """True when every partition is successful."""
        return self.backfill.status == BackfillStatus.SUCCESS

    def raise_for_status(self) -> BackfillResult:
        """Raise :class:`~flowstone.errors.BackfillFailedError` unless the backfill succeeded;
        return the result itself otherwise, so calls chain."""
        if self.ok:
            return self
        first = self.failures[0] if self.failures else None
        raise BackfillFailedError(
            self.id,
            self.status.value,
            self.backfill.failed,
            self.backfill.canceled,
            None
            if first is None
            else f"{first.asset} {first.partition_key}: {first.error_type}: {first.error_message}",
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillReport:
    """A backfill as ``flowstone backfill show`` presents it."""

    backfill: BackfillRecord
    #: A short description of the partition set (``2025-01-01..2025-12-31``).
    partitions: str
    #: The first partitions that did not succeed, by position, with their errors.
    failures: tuple[BackfillPartition, ...]
    #: Whether a live process works on it now (False for a running backfill whose process
    #: died: resume or cancel it).
    active: bool


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
    """

    def __init__(
        self,
        graph: AssetGraph,
        store: MetadataStore,
        telemetry: Telemetry,
        execute: ExecutePlan,
        *,
        materializer: MaterializerFactory,
        heartbeat_s: float = HEARTBEAT_S,
        lease_s: float = LEASE_S,
    ) -> None:
        self._graph, self._store, self._telemetry = graph, store, telemetry
        self._execute = execute
        self._make_materializer = materializer
        self._heartbeat_s, self._lease_s = heartbeat_s, lease_s
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
        chosen = _partition_set(definition, partitions, start, end)
        now, owner = utcnow(), _new_owner()
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
        self._store.create_backfill(record, [_event("backfill.started", record, None, details)])
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
        """Run every partition not successful yet: failed, canceled, never reached."""
        record = self.get(backfill_id)
        if record.status == BackfillStatus.SUCCESS:
            return BackfillResult(backfill=record, run_ids=(), failures=(), elapsed_s=0.0)
        owner = _new_owner()
        claimed = self._claim(record, owner, "backfill.resumed", by)
        cursor = claimed.cursor
        self._telemetry.emit("backfill.resume", {"backfill_id": record.id, "kind": "resume"})
        todo = claimed.failed + claimed.count(PartitionOutcome.CANCELED) + claimed.remaining

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
        owner = _new_owner()
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
        asked = _event("backfill.cancel_requested", record, by, {})
        with self._lock:
            active = self._active.get(record.id)
        if active is not None:
            active[1].set("canceled")  # a pass of this process: stop it now
        now = utcnow()
        if active is not None or self._alive(record, now):
            current = self._store.request_backfill_cancel(record.id, audit=[asked])
            self._telemetry.emit("backfill.cancel", {"backfill_id": record.id, "live": True})
            return current or record
        owner = _new_owner()
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
            audit=[_event("backfill.canceled", claimed, by, _summary(claimed))],
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
        steps: Callable[[BackfillPass], None] = lambda run: run.forward(),
    ) -> BackfillResult:
        stop, clock = StopFlag(), time.perf_counter()
        tally = Tally(record, todo, progress)
        run = BackfillPass(
            graph=self._graph,
            store=self._store,
            telemetry=self._telemetry,
            execute=self._execute,
            materializer=self._make_materializer(stop, tally),
            record=record,
            owner=owner,
            definition=definition,
            stop=stop,
            tally=tally,
            fresh=fresh,
        )
        heartbeat = _Heartbeat(self._store, record.id, owner, stop, self._heartbeat_s)
        with self._lock:
            self._active[record.id] = (owner, stop)
        heartbeat.start()
        try:
            tally.report()
            steps(run)
        except BaseException as exc:
            self._abandon(run, heartbeat, owner, exc)
            raise
        finally:
            with self._lock:
                self._active.pop(record.id, None)
        run.close()
        heartbeat.stop()
        tally.report()  # the final counts, after every worker thread is done
        status = _final_status(run, before)
        action = "backfill.canceled" if status == BackfillStatus.CANCELED else "backfill.finished"
        finished = self._store.finish_backfill(
            record.id,
            owner=owner,
            status=status,
            now=utcnow(),
            audit=[_event(action, run.record, None, _summary(run.record, run.stop_reason))],
        )
        if finished is None:
            log.warning("Backfill %s was taken over by another process", record.id)
            finished = self._store.get_backfill(record.id) or run.record
        elapsed = time.perf_counter() - clock
        self._telemetry.emit(
            "backfill.stop",
            {"backfill_id": record.id, "status": finished.status.value, **_summary(finished)},
            {"duration_ms": elapsed * 1000.0},
        )
        failures = (
            ()
            if finished.status == BackfillStatus.SUCCESS
            else tuple(self._store.list_backfill_partitions(record.id, limit=10))
        )
        return BackfillResult(
            backfill=finished, run_ids=tuple(run.run_ids), failures=failures, elapsed_s=elapsed
        )

    def _abandon(
        self, run: BackfillPass, heartbeat: _Heartbeat, owner: str, exc: BaseException
    ) -> None:
        """Release a backfill whose pass raised (Ctrl-C, a store outage), so that resume and
        cancel work at once; steps already running finish first."""
        try:
            run.close()
            heartbeat.stop()
            status = (
                BackfillStatus.CANCELED
                if isinstance(exc, KeyboardInterrupt)
                else BackfillStatus.FAILED
            )
            reason = {"reason": f"{type(exc).__name__}: {exc}"}
            self._store.finish_backfill(
                run.record.id,
                owner=owner,
                status=status,
                now=utcnow(),
                audit=[_event(f"backfill.{status.value}", run.record, None, reason)],
            )
        except FlowStoneError:
            log.warning("Could not release backfill %s", run.record.id, exc_info=True)

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
            audit=[_event(action, record, by, {})],
        )
        if claimed is None:
            raise self._busy(record.id)
        if record.owner is not None:
            self._interrupt(record)
        return claimed

    def _interrupt(self, record: BackfillRecord) -> None:
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
        """Whether a live process works on ``record``."""
        if record.owner is None:
            return False
        with self._lock:
            if any(owner == record.owner for owner, _ in self._active.values()):
                return True
        host, _, rest = record.owner.partition(":")
        pid = rest.partition(":")[0]
        same_host = host == _hostname() and pid.isdigit() and int(pid) != os.getpid()
        if same_host and not _pid_alive(int(pid)):
            return False  # its process is gone: no need to wait for the lease
        if record.heartbeat_at is None:
            return False
        return (now - record.heartbeat_at).total_seconds() < self._lease_s

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


class _Heartbeat:
    """A daemon thread that proves the pass is alive and watches for a cancel or a takeover."""

    def __init__(
        self, store: MetadataStore, backfill_id: str, owner: str, stop: StopFlag, interval: float
    ) -> None:
        self._store, self._id, self._owner = store, backfill_id, owner
        self._stop, self._interval = stop, interval
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"flowstone-backfill-{backfill_id[:8]}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._done.wait(self._interval):
            try:
                record = self._store.heartbeat_backfill(self._id, owner=self._owner, now=utcnow())
            except FlowStoneError:
                log.warning("Backfill %s: heartbeat failed; retrying", self._id, exc_info=True)
                continue
            if record is None:
                self._stop.set("lost")
            elif record.status == BackfillStatus.CANCELING:
                self._stop.set("canceled")


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


def _partition_set(
    definition: PartitionsDefinition, partitions: PartitionChoice, start: Partition, end: Partition
) -> PartitionSet:
    if partitions is not None and (start is not None or end is not None):
        raise PartitionError("Give partitions=[...] or start=/end=, not both.")
    if isinstance(partitions, str):
        if partitions != "all":
            raise PartitionError(
                f"partitions= takes a list of partitions or 'all', got the string {partitions!r}."
            )
        return PartitionSet.of_all(definition)
    if partitions is not None:
        return PartitionSet.of_keys(definition, partitions)
    if start is None and end is None:
        raise PartitionError(
            "Say which partitions to backfill: partitions=[...], start= and/or end=, or "
            "partitions='all' (on the command line: --partitions, --from/--to, or --all)."
        )
    return PartitionSet.of_range(definition, start, end)


def _final_status(run: BackfillPass, before: BackfillStatus | None) -> BackfillStatus:
    record = run.record
    if run.stop_reason == "canceled":
        return BackfillStatus.CANCELED
    if run.stop_reason == "upstream":
        return BackfillStatus.FAILED
    if record.remaining or record.count(PartitionOutcome.CANCELED):
        # Only a retry-failed pass ends with partitions never reached: keep a cancel visible.
        return (
            BackfillStatus.CANCELED if before == BackfillStatus.CANCELED else BackfillStatus.FAILED
        )
    return BackfillStatus.FAILED if record.failed else BackfillStatus.SUCCESS


def _summary(record: BackfillRecord, stop_reason: str | None = None) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "total": record.total,
        "success": record.success,
        "skipped": record.skipped,
        "failed": record.failed,
        "canceled": record.canceled,
        "remaining": record.remaining,
    }
    if stop_reason is not None:
        summary["stopped"] = stop_reason
    return summary


def _event(
    action: str, record: BackfillRecord, by: str | None, details: dict[str, Any]
) -> AuditEvent:
    actor = by or record.created_by or "system"
    return AuditEvent(
        action=action,
        resource_type="backfill",
        resource_id=record.id,
        actor=actor,
        actor_type="system" if actor == "system" else "user",
        details={"targets": list(record.targets), **details},
        correlation_id=record.id,
    )


def current_user() -> str:
    """The OS user running this process (who started a backfill, by default)."""
    import getpass  # only when a backfill starts: keeps `import flowstone` light

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _new_owner() -> str:
    return f"{_hostname()}:{os.getpid()}:{new_id()[:8]}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # os.kill would terminate it on Windows: trust the heartbeat there
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists but is not ours (or we cannot tell): trust the heartbeat
    return True
