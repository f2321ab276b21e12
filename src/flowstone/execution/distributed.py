"""The distributed executor: runs go to procrastinate workers on PostgreSQL.

Chosen by configuration, not by code: ``Pipeline(..., executor=DistributedExecutor())`` or
``FLOWSTONE_EXECUTOR=distributed``. The pipeline code does not change. A run is then *submitted*:
in one transaction the run, its ``pending`` steps, and the jobs of the steps with no dependency
in the run are written, and ``materialize``/``materialize_all`` return a ``running`` result.
Workers (``flowstone worker``, :mod:`flowstone.worker`) do the rest: each finished step enqueues
the steps it made ready in the transaction that records it (:mod:`.scheduling`), and the last one
closes the run. :func:`wait_for_run` follows a run to its end; :meth:`DistributedExecutor.cancel`
stops one.

Importing this module is cheap: procrastinate is imported when a run is first submitted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from flowstone.asset import AssetDef
from flowstone.checkpoints import ApprovalStatus, audit_event
from flowstone.errors import DistributedSetupError, UnknownRunError
from flowstone.execution.scheduling import MOVING, Continuation, continue_decided
from flowstone.graph import AssetGraph
from flowstone.io import MemoryIOManager
from flowstone.materializer import IOSelection, Materializer, RunScope
from flowstone.partitions import decode_partition
from flowstone.planner import RunPlan, StepKey, deps_in
from flowstone.records import (
    AuditEvent,
    MaterializationRecord,
    RunRecord,
    RunResult,
    RunStatus,
    Status,
    materialization_event,
    run_event,
    utcnow,
)
from flowstone.store import MetadataStore
from flowstone.store.base import RunTransaction

if TYPE_CHECKING:  # the queue glue imports procrastinate: only when a run is submitted
    from flowstone.execution.queue import StepJob
    from flowstone.store.sql import SQLStore

#: The queue steps go to unless the executor names another.
DEFAULT_QUEUE = "flowstone"

#: The run tag that marks a run as the workers' (its value: the queue). A decision on such a
#: run hands it back to the workers, whatever executor the deciding pipeline has.
QUEUE_TAG = "flowstone.queue"

#: Called while following a run: (the run, its records so far).
Progress = Callable[[RunRecord, Sequence[MaterializationRecord]], object]


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What cancelling a run did."""

    run: RunRecord
    #: Steps that had not started, now ``cancelled``.
    cancelled_steps: int
    #: Waiting jobs cancelled in the queue, and running jobs asked to abort.
    jobs_cancelled: int
    jobs_aborting: int


class DistributedExecutor:
    """Runs plans on ``flowstone worker`` processes, through procrastinate on PostgreSQL.

    The metadata store must be PostgreSQL (the queue's tables live beside FlowStone's, so a
    step's success and the jobs it makes ready commit together), and every value must be stored
    where all workers can read it (not the in-memory I/O manager). Procrastinate's tables are
    created on first use when missing.

    Args:
        queue: The queue steps go to; start workers with ``--queue`` to serve it (workers serve
            every queue by default).

    Example::

        pipeline = fs.Pipeline(assets, store="postgresql+psycopg://app@db/flowstone",
                               executor=fs.DistributedExecutor())
        run = pipeline.materialize_all()          # status "running": workers do the rest
        run = pipeline.wait_for_run(run.run_id)   # ... until it ends
    """

    def __init__(self, *, queue: str = DEFAULT_QUEUE) -> None:
        if not queue or len(queue) > 128:
            raise DistributedSetupError(f"Queue name must be 1 to 128 characters, got {queue!r}.")
        self.queue = queue
        self._ready_dsns: set[str] = set()

    def submit(
        self,
        store: MetadataStore,
        graph: AssetGraph,
        plan: RunPlan,
        *,
        io: IOSelection,
        tags: dict[str, str],
        started: Callable[[RunRecord], AuditEvent] | None = None,
    ) -> RunResult:
        """Record the run and enqueue its first steps, in one transaction.

        Args:
            io: The run's I/O selection (checked: every value must be readable by every worker).
            started: The audit event of the run's start (default: ``run.started``).

        Returns:
            The run, ``running``, with its steps ``pending``.

        Raises:
            DistributedSetupError: the store is not PostgreSQL, or a value would be stored in
                memory.
        """
        from flowstone.execution import queue

        self.prepare(store)
        check_shared_io([step.asset for step in plan.steps], io)
        run = plan.run_record(self.run_tags(tags))
        pending = plan.pending_records()
        first = _first_jobs(plan, io.override)
        event = started(run) if started else run_event("run.started", run)

        def work(tx: RunTransaction) -> None:
            tx.create_run(run, pending, [event])
            queue.defer_steps(tx.connection, first, queue=self.queue)

        store.run_transaction(run.id, work)
        # A wide run can be most of what the two tables hold: refresh their statistics, so the
        # workers plan their reads of it for its size (the first few jobs, fetched while the
        # ANALYZE runs, may still be planned for an empty queue; see
        # SQLStore.refresh_statistics). Imported here: the schema loads SQLAlchemy, which
        # `import flowstone` does not.
        from flowstone.store.schema import materializations

        postgres_store(store).refresh_statistics(
            {materializations.name: len(pending), queue.JOBS_TABLE: len(first)}
        )
        return RunResult(
            run_id=run.id,
            status=RunStatus.RUNNING,
            partition_key=run.partition_key,
            materializations=tuple(pending),
        )

    def enqueue(self, store: MetadataStore, steps: Sequence[StepJob]) -> list[StepJob]:
        """Enqueue jobs for steps of existing runs; a step already waiting is not enqueued twice.

        Returns:
            The steps enqueued by this call.
        """
        from flowstone.execution import queue

        self.prepare(store)
        done: list[StepJob] = []
        for run_id in dict.fromkeys(step.run_id for step in steps):
            mine = [s for s in steps if s.run_id == run_id]

            def work(tx: RunTransaction, mine: list[StepJob] = mine) -> list[StepJob]:
                return queue.defer_steps(tx.connection, mine, queue=self.queue)

            done += store.run_transaction(run_id, work)
        return done

    def cancel(self, store: MetadataStore, run_id: str, *, actor: str = "user") -> Cancellation:
        """Cancel a run: its steps that have not started become ``cancelled`` and their jobs
        are cancelled; running steps are asked to abort (an asset function cannot be interrupted:
        its result is recorded, and nothing below it runs). A run that has ended is left alone.

        Raises:
            UnknownRunError: no run has this id.
        """
        from flowstone.execution import queue

        dsn = self.prepare(store)

        def work(tx: RunTransaction) -> tuple[RunRecord, int, list[queue.StepJob]]:
            run = tx.get_run()
            if run is None:
                raise UnknownRunError(run_id)
            if run.status not in MOVING:
                return run, 0, []
            now, records = utcnow(), tx.materializations()
            message = f"run {run_id} was cancelled by {actor}"
            # Steps waiting for a person are not started either: cancelled with the rest.
            pending = [r for r in records if r.status in (Status.PENDING, Status.WAITING_APPROVAL)]
            for record in pending:
                cancelled = replace(
                    record,
                    status=Status.CANCELLED,
                    completed_at=now,
                    error_type="RunCancelled",
                    error_message=message,
                )
                event = materialization_event("materialization.cancelled", cancelled)
                tx.save_materialization(
                    cancelled, audit=[replace(event, actor=actor, actor_type="user")]
                )
            finished = replace(run, status=RunStatus.CANCELLED, completed_at=now)
            event = replace(run_event("run.cancelled", finished), actor=actor, actor_type="user")
            tx.update_run(finished, [event])
            unfinished = [
                queue.StepJob(run_id=run_id, asset=r.asset, partition_key=r.partition_key)
                for r in records
                if not r.status.is_final
            ]
            return finished, len(pending), unfinished

        run, steps, unfinished = store.run_transaction(run_id, work)
        jobs_cancelled, jobs_aborting = queue.cancel_jobs(dsn, unfinished) if unfinished else (0, 0)
        if run.status == RunStatus.CANCELLED:
            _close_requests(store, run_id, actor)
        return Cancellation(run, steps, jobs_cancelled, jobs_aborting)

    def run_tags(self, tags: Mapping[str, str] | None = None) -> dict[str, str]:
        """``tags`` plus the :data:`QUEUE_TAG` that marks a run as these workers' (a decision
        or a cancel on it then goes through their queue, from any pipeline)."""
        return {**(tags or {}), QUEUE_TAG: self.queue}

    def hand_off(self, store: MetadataStore, plan: RunPlan) -> None:
        """Give a run recorded by someone else (a schedule tick, a backfill chunk, created with
        the :data:`QUEUE_TAG` tag) to the workers: enqueue its first steps (a step already
        queued is not queued twice).

        Raises:
            DistributedSetupError: the store is not PostgreSQL.
        """
        self.enqueue(store, _first_jobs(plan))  # enqueue checks the store (prepare)

    def continue_run(
        self, store: MetadataStore, graph: AssetGraph, materializer: Materializer, run_id: str
    ) -> RunResult:
        """Act on a run's decided approvals, for the workers to continue it: the approved
        steps are enqueued (a worker runs each again, the decision in ``ctx.approval``), the
        steps below a rejected or expired request are skipped, and the run's status recorded,
        in one transaction. Returns at once: the run goes on in the workers.

        Raises:
            UnknownRunError: no run has this id.
            DistributedSetupError: the store is not PostgreSQL.
        """
        from flowstone.execution import queue

        self.prepare(store)
        decided = store.list_approvals(run_id=run_id, limit=None)

        def work(tx: RunTransaction) -> Continuation:
            done = continue_decided(tx, graph, materializer, decided)
            jobs = [
                queue.StepJob(run_id=r.run_id, asset=r.asset, partition_key=r.partition_key)
                for r in done.ready
            ]
            queue.defer_steps(tx.connection, jobs, queue=self.queue)
            return done

        done = store.run_transaction(run_id, work)
        if done.run is None:
            raise UnknownRunError(run_id)
        records = store.list_materializations(run_id=run_id, limit=None)[::-1]
        return RunResult(
            run_id=run_id,
            status=done.run.status,
            partition_key=done.run.partition_key,
            materializations=tuple(records),
        )

    def prepare(self, store: MetadataStore) -> str:
        """Check that ``store`` can carry the queue, create procrastinate's tables if needed,
        and return the queue's connection string.

        Raises:
            DistributedSetupError: the store is not PostgreSQL.
        """
        from flowstone.execution import queue

        dsn = postgres_dsn(store)
        if dsn not in self._ready_dsns:
            queue.ensure_schema(dsn)
            self._ready_dsns.add(dsn)
        return dsn

    def execute(
        self,
        plan: RunPlan,
        materializer: Materializer,
        scope: RunScope,
        on_record: Callable[[MaterializationRecord], object] | None = None,
    ) -> list[MaterializationRecord]:
        """Not supported: distributed runs are submitted (see :meth:`submit`), never run in the
        calling process."""
        raise DistributedSetupError(
            "The distributed executor does not run plans in this process: "
            "Pipeline.materialize/materialize_all and backfills submit them to the workers, "
            "and approval decisions continue runs there."
        )

    def run_recorded(
        self,
        store: MetadataStore,
        plan: RunPlan,
        run: RunRecord,
        *,
        io: IOSelection,
        observe: Callable[[MaterializationRecord], object],
        should_stop: Callable[[], bool],
        poll_s: float = 0.2,
        cancel_grace_s: float = 60.0,
    ) -> RunResult:
        """Hand a recorded run (``run`` and its ``pending`` steps are in the store) to the
        workers and follow it until it settles: closed, or resting on approvals with nothing
        in flight. Used for a backfill's chunks.

        Args:
            io: The run's I/O selection (checked: every value must be readable by every worker).
            observe: Called once with each step's record as it starts (``running``) and once
                as it ends (final or ``waiting_approval``).
            should_stop: Polled: True cancels the run (steps not started are ``cancelled``;
                running ones finish), and the call returns once nothing is running, or after
                ``cancel_grace_s`` (a worker that died mid-step leaves it running until its
                job is recovered).

        Raises:
            DistributedSetupError: the store is not PostgreSQL.
        """

        check_shared_io([step.asset for step in plan.steps], io)
        self.hand_off(store, plan)
        deps = {step.key: step.deps_in_plan for step in plan.steps}
        try:
            return self._follow(
                store,
                run,
                deps=deps,
                observe=observe,
                should_stop=should_stop,
                poll_s=poll_s,
                cancel_grace_s=cancel_grace_s,
            )
        except BaseException:
            # Ctrl-C, or the store went away: the workers must not go on with a chunk whose
            # backfill is recorded stopped (a resume would run its partitions again).
            with contextlib.suppress(Exception):
                self.cancel(store, run.id, actor="backfill")
            raise

    def _follow(
        self,
        store: MetadataStore,
        run: RunRecord,
        *,
        deps: Mapping[tuple[str, str], tuple[tuple[str, str], ...]],
        observe: Callable[[MaterializationRecord], object],
        should_stop: Callable[[], bool],
        poll_s: float,
        cancel_grace_s: float,
    ) -> RunResult:
        """Follow a handed-off run until it rests (see :meth:`run_recorded`)."""
        seen: dict[str, Status] = {}
        cancelled_at: float | None = None
        while True:
            current = store.get_run(run.id)
            records = store.list_materializations(run_id=run.id, limit=None)[::-1]
            for record in records:
                if seen.get(record.id) != record.status and (
                    record.status == Status.RUNNING or _settled(record.status)
                ):
                    seen[record.id] = record.status
                    observe(record)
            gave_up = cancelled_at is not None and time.monotonic() - cancelled_at > cancel_grace_s
            if current is None or gave_up or _rests(current, records, deps):
                status = current.status if current is not None else RunStatus.FAILED
                return RunResult(
                    run_id=run.id,
                    status=status,
                    partition_key=run.partition_key,
                    materializations=tuple(records),
                )
            if should_stop() and cancelled_at is None:
                self.cancel(store, run.id, actor="backfill")
                cancelled_at = time.monotonic()
            time.sleep(poll_s)

    def close(self) -> None:
        """Nothing to release: each call uses the store's own connections."""


class DistributedRuns:
    """Continues runs after approval decisions through the workers (what
    :class:`~flowstone.approvals.ApprovalDesk` calls; the in-process counterpart is
    :class:`~flowstone.resume.RunResumer`)."""

    def __init__(
        self,
        executor: DistributedExecutor,
        store: MetadataStore,
        graph: AssetGraph,
        materializer: Materializer,
    ) -> None:
        self._executor = executor
        self._store = store
        self._graph = graph
        self._materializer = materializer

    def advance(self, run_id: str, *, decided: bool = False) -> RunResult:
        """Enqueue what the decisions let run, skip what they stop, record the status."""
        return self._executor.continue_run(self._store, self._graph, self._materializer, run_id)


def _close_requests(store: MetadataStore, run_id: str, actor: str) -> None:
    """Reject the pending approval requests of a cancelled run, so nobody is asked about it
    (one already past its timeout is left to the expiry sweep)."""
    now = utcnow()
    for request in store.list_approvals(run_id=run_id, status=ApprovalStatus.PENDING, limit=None):
        decided = replace(
            request,
            status=ApprovalStatus.REJECTED,
            decided_by=actor,
            decided_at=now,
            reason=f"run {run_id} was cancelled",
        )
        store.decide_approval(decided, audit=[audit_event(decided)])


def _first_jobs(plan: RunPlan, io_manager: str | None = None) -> list[StepJob]:
    """The jobs of a plan's steps that depend on no other step of the run."""
    from flowstone.execution import queue

    return [
        queue.StepJob(
            run_id=plan.run_id,
            asset=step.asset.name,
            partition_key=step.partition_key,
            io_manager=io_manager,
        )
        for step in plan.steps
        if not step.deps_in_plan
    ]


def _settled(status: Status) -> bool:
    return status.is_final or status == Status.WAITING_APPROVAL


def _rests(
    run: RunRecord,
    records: Sequence[MaterializationRecord],
    deps: Mapping[tuple[str, str], tuple[tuple[str, str], ...]],
) -> bool:
    """Whether nothing more happens in ``run`` without a person: it closed, or only steps
    waiting for an approval (and the steps below them) are left."""
    if any(r.status == Status.RUNNING for r in records):
        return False  # even in a cancelled run: a running step still ends, and is recorded
    if run.status not in (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL):
        return True
    by_key = {(r.asset, r.partition_key): r for r in records}
    for record in records:
        # A pending step is ready (queued, or about to be) when its in-run dependencies all
        # succeeded; below a waiting or failed step it is not.
        below = deps.get((record.asset, record.partition_key), ())
        if record.status == Status.PENDING and all(
            by_key[d].status == Status.SUCCESS for d in below
        ):
            return False
    return True


def postgres_dsn(store: MetadataStore) -> str:
    """The queue's connection string for a PostgreSQL metadata store.

    Raises:
        DistributedSetupError: the store is not PostgreSQL.
    """
    from flowstone.execution import queue

    sql = postgres_store(store)
    return queue.conninfo(sql.engine.url, sql.connect_args)


def postgres_store(store: MetadataStore) -> SQLStore:
    """``store``, checked to be a PostgreSQL :class:`~flowstone.store.sql.SQLStore`.

    Raises:
        DistributedSetupError: the store is not PostgreSQL.
    """
    from flowstone.store.sql import SQLStore

    if isinstance(store, SQLStore) and store.engine.dialect.name == "postgresql":
        return store
    raise DistributedSetupError(
        f"The distributed executor needs a PostgreSQL metadata store (its job queue lives in "
        f"the same database); this pipeline's store is {store!r}. Set FLOWSTONE_DATABASE_URL "
        "(or Pipeline(store=...)) to 'postgresql+psycopg://user@host:5432/dbname', or run "
        "in-process (unset FLOWSTONE_EXECUTOR)."
    )


def wait_for_run(
    store: MetadataStore,
    run_id: str,
    *,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    on_progress: Progress | None = None,
    graph: AssetGraph,
) -> RunResult:
    """Follow a run until it ends, or rests on approvals with nothing in flight (or
    ``timeout_s`` passed).

    Args:
        on_progress: Called with the run and its records whenever a step's status changed.
        graph: The run's graph, to tell a pending step that is ready (queued) from one held
            below a waiting step.

    Returns:
        The run's result; still ``running`` when the timeout passed first.

    Raises:
        UnknownRunError: no run has this id.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen: list[tuple[str, Status, int]] | None = None
    # A pending step's in-run dependencies, by record id: they never change, so they are
    # computed once, not on every poll.
    deps: dict[str, tuple[StepKey, ...]] = {}
    while True:
        run = store.get_run(run_id)
        if run is None:
            raise UnknownRunError(run_id)
        # Newest first from the store; the run's steps were all created at once, in plan order.
        records = list(reversed(store.list_materializations(run_id=run_id, limit=None)))
        state = [(r.id, r.status, r.attempt) for r in records]
        if on_progress is not None and state != seen:
            on_progress(run, records)
        seen = state
        if _ended_or_resting(run, records, graph, deps) or (
            deadline is not None and time.monotonic() >= deadline
        ):
            return RunResult(
                run_id=run.id,
                status=run.status,
                partition_key=run.partition_key,
                materializations=tuple(records),
            )
        time.sleep(poll_s)


def _ended_or_resting(
    run: RunRecord,
    records: Sequence[MaterializationRecord],
    graph: AssetGraph,
    deps: dict[str, tuple[StepKey, ...]],
) -> bool:
    if run.status != RunStatus.WAITING_APPROVAL:
        return run.status != RunStatus.RUNNING
    present = {(r.asset, r.partition_key) for r in records}
    for r in records:
        if r.status == Status.PENDING and r.asset in graph and r.id not in deps:
            deps[r.id] = deps_in(
                graph, r.asset, decode_partition(r.partition_key), present, as_of=r.created_at
            )
    pending = {
        (r.asset, r.partition_key): deps[r.id]
        for r in records
        if r.status == Status.PENDING and r.id in deps
    }
    return _rests(run, records, pending)


def check_shared_io(assets: Iterable[AssetDef], io: IOSelection) -> None:
    """Raise :class:`DistributedSetupError` when one of ``assets`` would store its value in
    memory, where workers in other processes cannot read it."""
    in_memory = sorted(
        {asset.name for asset in assets if isinstance(io.for_asset(asset)[1], MemoryIOManager)}
    )
    if in_memory:
        raise DistributedSetupError(
            f"Assets {', '.join(map(repr, in_memory))} would store their values in memory, "
            "where workers on other machines (or in other processes) cannot read them. Give the "
            "pipeline a shared I/O manager (filesystem on a shared volume, object storage, "
            "PostgreSQL tables) as its default_io_manager."
        )
