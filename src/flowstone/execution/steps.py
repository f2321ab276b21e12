"""The worker's side of a job: run the step it names through the one materializer, once.

:class:`StepRunner` is what a ``flowstone worker`` does with each job, independent of the job
queue's API (``flowstone.worker`` wires it into procrastinate). For one job it:

1. reads the JSON arguments, resolves the asset name against the worker's own pipeline and
   decodes the partition; anything that does not fit is rejected for good, with the reason
   recorded in the store (nothing named in a job is ever imported);
2. in the store's step session (:meth:`~flowstone.store.sql.SQLStore.step_session`: one
   PostgreSQL connection for the whole step, its writes pipelined) takes the step lock (two
   workers never run one (asset, partition) at once), *claims* a step that never ran (makes it
   ``running``: the materializer writes no ``running`` record of its own) and reads the step's
   record, in one round trip; a step already final (a duplicate job) or of a run no longer
   running is a no-op (closing the run if nothing is left); a ``running`` record it did not
   claim is an attempt that died and is superseded;
3. reads the records of the step's in-run dependencies (one round trip for all) and runs the
   materializer, whose final write goes to :class:`_Finisher`. A success of an asset without
   dependents commits without the run's lock (:meth:`~flowstone.store.sql.SQLStore.commit_attempt`)
   and the runner closes the run afterwards if it was the last step; any other outcome is
   recorded in a run transaction that fences out a superseded attempt, applies the asset's
   retry policy, and, for a final status, enqueues the steps made ready or skips those below a
   failure, and closes the run when it was the last step: one commit for all of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, Protocol, cast

from flowstone.asset import AssetDef
from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.errors import (
    JobRejectedError,
    PartitionError,
    RetryScheduledError,
    StepFailedError,
    SupersededAttemptError,
    UnknownAssetError,
)
from flowstone.execution import queue
from flowstone.execution.scheduling import (
    MOVING,
    Outcome,
    after_final,
    close_if_moving,
    mark_waiting,
)
from flowstone.graph import AssetGraph
from flowstone.materializer import Materializer, RunScope
from flowstone.partitions import decode_partition, encode_partition
from flowstone.planner import Step, resolve_partition, step_deps, step_of
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    MaterializationRecord,
    RunStatus,
    Status,
    utcnow,
)
from flowstone.retry import retry_after
from flowstone.store.base import RunTransaction, StepClaim
from flowstone.store.sql import SQLStore

#: Builds the scope a step runs in: (run id, the run's I/O manager override) -> RunScope.
ScopeFactory = Callable[[str, str | None], RunScope]
#: A step's record in its run (None if it has none), the run's status (None if unknown), and
#: whether the session claimed the step (made it `running` with the worker's StepClaim).
StepState = tuple[MaterializationRecord | None, RunStatus | None, bool]


class AttemptSaves(Protocol):
    """The run transactions of a worker's step session (:meth:`SQLStore.step_session
    <flowstone.store.sql.SQLStore.step_session>`), which save an attempt's final record on the
    condition that the attempt still owns its step: the fencing check is the write's own
    condition, with no read of its own."""

    def save_attempt(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        superseded: Callable[[MaterializationRecord | None], BaseException],
    ) -> None:
        """Save ``record`` if its attempt still owns the step (``running`` with its attempt
        number, or ``pending`` and never started); else raise ``superseded(current)``, at the
        latest before the commit."""
        ...


# Audit columns hold at most 255 characters; a rejected job's names may be anything.
_MAX_NAME = 200


class StepRunner:
    """Runs the steps that jobs name, for one pipeline (one per worker process; thread-safe).

    Args:
        graph: The worker's asset graph: the only place asset names are resolved.
        store: The metadata store (PostgreSQL, shared with the job queue).
        materializer: The pipeline's materializer.
        scope_for: Builds the run scope of a step (the worker's resources and I/O managers).
    """

    def __init__(
        self,
        graph: AssetGraph,
        store: SQLStore,
        materializer: Materializer,
        scope_for: ScopeFactory,
    ) -> None:
        self._graph = graph
        self._store = store
        self._materializer = materializer
        self._scope_for = scope_for

    def run(
        self, args: Mapping[str, Any], *, job_id: int | None, retries: int, queue_name: str
    ) -> str:
        """Run the step a job names; return what happened, in a few words (for the job log).

        Args:
            args: The job's arguments.
            job_id: The queue's id of the job, for messages.
            retries: How many times the queue has retried this job (0 on its first run).
            queue_name: The queue the job came from; the steps it makes ready go there too.

        Raises:
            JobRejectedError: the arguments name no step this worker can run (final).
            RetryScheduledError: the step failed and its retry policy retries it.
            StepFailedError: the step failed for good (it is recorded ``failed``).
        """
        try:
            job = queue.StepJob.from_args(args, job_id=job_id)
        except JobRejectedError as exc:
            self._store.append_audit([_malformed_event(args, exc)])
            raise
        asset = self._resolve(job, job_id)
        scope = self._scope_for(job.run_id, job.io_manager)
        # A step that never ran starts as the session reads it (no write of its own). Its
        # start time is taken before the lock, which only waits when another job of the same
        # (asset, partition) runs: its duration is measured by the materializer, not from it.
        claim = StepClaim(
            attempt=job.attempt + retries,
            started_at=utcnow(),
            code_version=asset.code_version,
            io_manager=scope.io.name_for(asset),
        )
        # The step lock is held from before the record is read until after the final write.
        with self._store.step_session(
            job.run_id, job.asset, job.partition_key, lock=job.lock, claim=claim
        ) as found:
            record = found[0]
            done = None
            if record is not None:
                # Validated by _resolve already (against this worker's definition).
                step = step_of(self._graph, record, validate=False)
                done = self._execute(
                    job, step, scope, found, queue_name=queue_name, retries=retries
                )
        if record is None:
            raise self._reject(
                job, job_id, f"run {job.run_id} has no step {job.asset!r} {job.partition_key!r}."
            )
        assert done is not None
        if isinstance(done, str):
            return done
        final, finisher = done
        if final.status == Status.WAITING_APPROVAL:
            # The run shows it waits for a person; a decision continues it (the approved step
            # comes back as a job, see DistributedExecutor.continue_run).
            self._store.run_transaction(job.run_id, lambda tx: mark_waiting(tx, final))
            return f"{job.asset} waiting for approval (attempt {final.attempt})"
        if finisher.retry_in is not None:
            raise RetryScheduledError(
                asset=job.asset,
                attempt=final.attempt,
                delay_s=finisher.retry_in,
                error=f"{final.error_type}: {final.error_message}",
            )
        if final.status == Status.FAILED:
            raise StepFailedError(
                asset=job.asset,
                partition_key=job.partition_key,
                run_id=job.run_id,
                attempt=final.attempt,
                error=f"{final.error_type}: {final.error_message}",
            )
        ready = len(finisher.outcome.ready)
        return f"{job.asset} {final.status.value} (attempt {final.attempt}); {ready} enqueued"

    def _execute(
        self,
        job: queue.StepJob,
        step: Step,
        scope: RunScope,
        state: StepState,
        *,
        queue_name: str,
        retries: int,
    ) -> str | tuple[MaterializationRecord, _Finisher]:
        """Run the step inside its session: a message when there is nothing to do, else the
        final record and what its final write did."""
        record, run_status, claimed = state
        assert record is not None
        if claimed:
            return self._materialize(job, step, scope, record, queue_name, started=True)
        # Each start is a new attempt: after one that died (still `running`) or that failed and
        # is retried (`pending` again, with a start time), the next number.
        previous = 0 if record.started_at is None else record.attempt
        attempt = max(job.attempt + retries, previous + 1)
        if record.status not in (Status.PENDING, Status.RUNNING):
            if run_status in MOVING:
                # A duplicate job, or the retry of a job whose worker died after committing
                # the step's outcome and before closing the run (a step nothing waits on
                # commits without the run's lock, see _Finisher): close it if nothing is left.
                self._store.run_transaction(job.run_id, close_if_moving)
            return f"nothing to do: {job.asset} is already {record.status.value}"
        if record.status == Status.RUNNING and run_status not in MOVING:
            # A dead attempt's step (a cancel leaves running steps alone: check the run). The
            # steps of a cancelled run that had not started are `cancelled` already.
            return (
                f"nothing to do: run {job.run_id} is {run_status.value if run_status else 'gone'}"
            )
        approval = None
        if record.started_at is not None:
            # It ran before (approved and handed back, retried, or its worker died): if its
            # latest request was approved, it runs with that decision and does not ask again.
            approval = self._approved(record)
        step = replace(step, approval=approval)
        return self._materialize(
            job, step, scope, replace(record, attempt=attempt), queue_name, started=False
        )

    def _materialize(
        self,
        job: queue.StepJob,
        step: Step,
        scope: RunScope,
        record: MaterializationRecord,
        queue_name: str,
        *,
        started: bool,
    ) -> str | tuple[MaterializationRecord, _Finisher]:
        """Run the step through the materializer as attempt ``record.attempt``; ``started``:
        ``record`` is its ``running`` record, saved already (the session claimed the step)."""
        # Dependencies that are steps of this run are read from this run's records (the others
        # from the latest success in the store, as in an in-process run).
        deps = step_deps(self._graph, job.asset, step.partition, as_of=record.created_at)
        upstream = self._store.find_in_run(job.run_id, deps)  # one round trip for all
        step = replace(step, deps_in_plan=tuple(upstream))
        finisher = _Finisher(self, job, queue_name)
        try:
            final = self._materializer.run(
                step,
                scope,
                {d: r for d, r in upstream.items() if r.status == Status.SUCCESS},
                attempt=record.attempt,
                on_final=finisher,
                started=record if started else None,
            )
        except SupersededAttemptError as exc:
            return str(exc)
        if finisher.close_run:
            # A StoreError here fails the job, which is retried: the retry finds the step
            # final and closes the run (see _execute).
            closed = self._store.run_transaction(job.run_id, close_if_moving)
            finisher.outcome = Outcome(closed=closed)
        return final, finisher

    # --- the job's step --------------------------------------------------------------------
    def _approved(self, record: MaterializationRecord) -> ApprovalRecord | None:
        """The step's latest approval request, if it was approved."""
        asked = [
            a
            for a in self._store.list_approvals(
                run_id=record.run_id, asset=record.asset, limit=None
            )
            if a.materialization_id == record.id
        ]
        latest = max(asked, key=lambda a: a.attempt, default=None)
        return latest if latest is not None and latest.status == ApprovalStatus.APPROVED else None

    def _resolve(self, job: queue.StepJob, job_id: int | None) -> AssetDef:
        """The job's asset, its partition checked, or a rejection recorded in the store."""
        try:
            asset = self._graph.get(job.asset)
        except UnknownAssetError as exc:
            raise self._reject(job, job_id, str(exc)) from exc
        try:
            partition = decode_partition(job.partition_key)
            if encode_partition(resolve_partition(asset, partition)) != job.partition_key:
                raise PartitionError(
                    f"{job.partition_key!r} is not how asset {job.asset!r} encodes a partition."
                )
        except PartitionError as exc:
            raise self._reject(job, job_id, f"bad partition: {exc}") from exc
        return asset

    def _reject(self, job: queue.StepJob, job_id: int | None, reason: str) -> JobRejectedError:
        """Record why a job cannot run (audit, and its step ``failed`` if it has one)."""
        error = JobRejectedError(reason, job_id=job_id, args=job.to_args())

        def work(tx: RunTransaction) -> bool:
            record = tx.find(job.asset, job.partition_key)
            if record is not None and not record.status.is_final:
                failed = replace(
                    record,
                    status=Status.FAILED,
                    completed_at=utcnow(),
                    error_type="JobRejectedError",
                    error_message=str(error),
                )
                tx.save_materialization(failed, audit=[_rejected_event(job, job_id, error)])
                if job.asset in self._graph:
                    after_final(tx, self._graph, self._materializer, failed)
                else:
                    close_if_moving(tx)
                return True
            return False

        if not self._store.run_transaction(job.run_id, work):
            # No step to fail: the audit log still says what was refused, and why.
            self._store.append_audit([_rejected_event(job, job_id, error)])
        return error


def _rejected_event(job: queue.StepJob, job_id: int | None, error: JobRejectedError) -> AuditEvent:
    return AuditEvent(
        action="job.rejected",
        resource_type="job",
        resource_id=job.asset[:_MAX_NAME],
        details={"job_id": job_id, "args": job.to_args(), "reason": error.reason},
        correlation_id=job.run_id[:_MAX_NAME],
    )


def _malformed_event(args: Mapping[str, Any], error: JobRejectedError) -> AuditEvent:
    run_id, asset = args.get("run_id"), args.get("asset")
    return AuditEvent(
        action="job.rejected",
        resource_type="job",
        resource_id=asset[:_MAX_NAME] if isinstance(asset, str) else "?",
        details={"job_id": error.job_id, "args": dict(args), "reason": error.reason},
        correlation_id=run_id[:_MAX_NAME] if isinstance(run_id, str) else None,
    )


class _Finisher:
    """Writes a step's final record (a materializer ``FinalHook``): in a run transaction with
    what it decides, or, for a success nothing waits on, committed without the run's lock."""

    def __init__(self, runner: StepRunner, job: queue.StepJob, queue_name: str) -> None:
        self._runner = runner
        self._job = job
        self._queue = queue_name
        #: Seconds until the retry, when the retry policy retries the failure.
        self.retry_in: float | None = None
        self.outcome = Outcome()
        #: The step's outcome was committed without the run's lock and nothing is left: the
        #: run is to be closed (under its lock).
        self.close_run = False

    def __call__(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        error: BaseException | None,
    ) -> None:
        store = self._runner._store
        superseded = partial(_superseded, record)
        if record.status == Status.SUCCESS and not self._runner._graph.dependents(record.asset):
            # Nothing can be waiting on this step: its outcome needs no run lock and commits
            # in one round trip; only closing the run, when it was the last step, takes it.
            status, left = store.commit_attempt(
                record, lineage=lineage, audit=audit, superseded=superseded
            )
            # Closed by the runner once the materializer is done: an error closing it must not
            # look like the step's failure (its success is committed).
            self.close_run = status in MOVING and not left
            return
        store.run_transaction(
            record.run_id,
            lambda tx: self._record(
                tx, record, lineage=lineage, audit=audit, error=error, superseded=superseded
            ),
        )

    def _record(
        self,
        tx: RunTransaction,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        error: BaseException | None,
        superseded: Callable[[MaterializationRecord | None], BaseException],
    ) -> None:
        """Record the outcome under the run's lock, with what it decides: a retry, the steps
        it makes ready (enqueued in the same transaction), those it skips, the run's end."""
        graph = self._runner._graph
        # A fencing check: only the attempt that still owns the step records it. (Called in
        # the step's session, whose run transactions save attempts so.)
        cast("AttemptSaves", tx).save_attempt(
            record, lineage=lineage, audit=audit, superseded=superseded
        )
        retry = retry_after(graph.get(record.asset).retry, record, error)
        # The run's status (alone, not the whole run row) is read only when the policy
        # retries: a run that no longer moves (cancelled) is not retried.
        if retry is not None and tx.run_status() in MOVING:
            self.retry_in = retry.delay_s
            tx.save_materialization(retry.waiting, audit=[retry.event])
            return
        self.outcome = after_final(tx, graph, self._runner._materializer, record)
        ready = [
            queue.StepJob(
                run_id=r.run_id,
                asset=r.asset,
                partition_key=r.partition_key,
                io_manager=self._job.io_manager,
            )
            for r in self.outcome.ready
        ]
        if ready:
            queue.defer_steps(tx.connection, ready, queue=self._queue)


def _superseded(
    record: MaterializationRecord, current: MaterializationRecord | None
) -> SupersededAttemptError:
    now = "gone" if current is None else f"{current.status.value}, attempt {current.attempt}"
    return SupersededAttemptError(
        asset=record.asset,
        partition_key=record.partition_key,
        attempt=record.attempt,
        current=f"the step is now {now}",
    )
