"""Launching a tick's runs: build them, execute them once, and recover those a crash left.

A tick's run is written with the tick (one transaction), then executed through the pipeline's
one execution path. Between the two a scheduler may die; the run then sits ``running`` with
every materialization ``pending``. Each tick run carries a claim time, and a run is executed
only by the caller that moves the claim from the value it read (compare-and-set), so:

- the scheduler that recorded the tick claims it right before executing it;
- any scheduler finds runs whose materializations are all still ``pending`` and whose claim
  is older than ``recovery_grace`` (:meth:`MetadataStore.orphaned_tick_runs`), claims and
  executes them. If the first scheduler was only slow, its own claim then fails, and the run
  still executes once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures as cf
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from flowstone.errors import PartitionError
from flowstone.execution.distributed import DistributedExecutor
from flowstone.partitions import Partition
from flowstone.pipeline import Pipeline
from flowstone.planner import (
    UNPARTITIONED_KEY,
    RunPlan,
    Step,
    StepKey,
    dependencies_first,
    plan_run,
    step_of,
)
from flowstone.records import (
    MaterializationRecord,
    RunRecord,
    RunResult,
    RunStatus,
    Status,
    run_event,
)
from flowstone.schedule_records import TickLaunch, TickRun

log = logging.getLogger("flowstone.scheduler")


def _hand_off(
    executor: DistributedExecutor, pipeline: Pipeline, plan: RunPlan, run: RunRecord
) -> RunResult:
    """Give a recorded tick run to the workers (they do the rest, as for any submitted run)."""
    executor.hand_off(pipeline.store, plan)
    return RunResult(
        run_id=run.id,
        status=RunStatus.RUNNING,
        partition_key=run.partition_key,
        materializations=tuple(plan.pending_records()),
    )


Clock = Callable[[], datetime]

#: The claim time of a run handed to a distributed executor's queue: never "older than" now.
HANDED_OFF = datetime(9999, 1, 1, tzinfo=UTC)


def new_launch(
    pipeline: Pipeline,
    targets: Sequence[str],
    partition: Partition,
    *,
    with_upstream: bool,
    tags: Mapping[str, str],
    run_key: str | None = None,
) -> tuple[TickLaunch, RunPlan]:
    """A run for ``targets`` and its ``pending`` records, not yet stored.

    Raises:
        UnknownAssetError, PartitionError: the targets or partition do not fit the pipeline.
    """
    plan = plan_run(pipeline.graph, targets, partitions=(partition,), with_upstream=with_upstream)
    if isinstance(pipeline.executor, DistributedExecutor):
        tags = pipeline.executor.run_tags(tags)  # the workers' run
    run = plan.run_record(tags)
    return TickLaunch(run=run, materializations=plan.pending_records(), run_key=run_key), plan


def plan_from_pending(
    pipeline: Pipeline, run: RunRecord, pending: Sequence[MaterializationRecord]
) -> RunPlan | str:
    """Rebuild the plan of a run that never started from its ``pending`` records (same ids),
    or say why it cannot be (an asset no longer in the pipeline, a partition no longer in
    its asset's definition)."""
    known = set(pipeline.graph.topological_order())
    missing = sorted({r.asset for r in pending} - known)
    if missing:
        return f"asset(s) {', '.join(map(repr, missing))} are no longer in the pipeline"
    order = {name: i for i, name in enumerate(pipeline.graph.topological_order())}
    in_plan: set[StepKey] = {(r.asset, r.partition_key) for r in pending}
    steps: dict[StepKey, Step] = {}
    for record in pending:
        try:
            step = step_of(pipeline.graph, record, in_plan)
        except PartitionError as exc:
            return f"{record.asset!r} {record.partition_key!r}: {exc}"
        steps[(record.asset, record.partition_key)] = step
    # Dependencies first (the planner's order): unpartitioned assets, then by topology.
    ranked = dependencies_first(steps, lambda key: (0, key[1] != UNPARTITIONED_KEY, order[key[0]]))
    return RunPlan(
        run_id=run.id,
        targets=run.targets,
        partition_key=run.partition_key,
        steps=tuple(steps[key] for key in ranked),
        created_at=run.created_at,
    )


class Launcher:
    """Executes tick runs on a thread pool, each only after winning its claim."""

    def __init__(self, pipeline: Pipeline, clock: Clock, max_concurrent_runs: int) -> None:
        self._pipeline = pipeline
        self._clock = clock
        self._max = max_concurrent_runs
        self._pool: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The scheduler's clock."""
        return self._clock()

    def submit(
        self, plan: RunPlan, run: RunRecord, claimed_at: datetime
    ) -> cf.Future[RunResult | None]:
        """Execute ``run`` on a pool thread if its claim is still ``claimed_at``."""
        with self._lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self._max, thread_name_prefix="flowstone-tick")
            return self._pool.submit(self._execute, plan, run, claimed_at)

    def recover(self, claimed_before: datetime) -> list[cf.Future[RunResult | None]]:
        """Launch the tick runs that were recorded but never started (see the module doc)."""
        store = self._pipeline.store
        launched = []
        for orphan in store.orphaned_tick_runs(claimed_before):
            run = store.get_run(orphan.run_id)
            if run is None:
                continue
            pending = store.list_materializations(run_id=run.id, limit=None)
            plan = plan_from_pending(self._pipeline, run, pending)
            if isinstance(plan, str):
                self._abandon(orphan, run, pending, plan)
                continue
            log.warning(
                "Launching run %s of %s %r: it was recorded but never started",
                run.id,
                orphan.kind.value,
                orphan.name,
            )
            launched.append(self.submit(plan, run, orphan.claimed_at))
        return launched

    def close(self) -> None:
        """Wait for the runs in flight, then stop the pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _execute(self, plan: RunPlan, run: RunRecord, claimed_at: datetime) -> RunResult | None:
        # The new claim differs from the old one even when the clock has not moved (an
        # injected clock), so a second claimant's compare-and-set fails.
        now = max(self._clock(), claimed_at + timedelta(microseconds=1))
        store = self._pipeline.store
        if not store.claim_tick_run(run.id, expected=claimed_at, claimed_at=now):
            log.info("Run %s was claimed by another scheduler; not executing it here", run.id)
            return None
        executor = self._pipeline.executor
        if isinstance(executor, DistributedExecutor):
            result = _hand_off(executor, self._pipeline, plan, run)
        else:
            result = self._pipeline._execute(plan, run)
        if result.status == RunStatus.RUNNING:
            # A distributed executor enqueued the steps; its queue owns them now (and recovers
            # stalled jobs), so queued steps still `pending` must not look orphaned here.
            store.claim_tick_run(run.id, expected=now, claimed_at=HANDED_OFF)
        return result

    def _abandon(
        self, orphan: TickRun, run: RunRecord, pending: Sequence[MaterializationRecord], why: str
    ) -> None:
        """Close a never-started run that cannot be rebuilt, so it does not stay ``running``."""
        store = self._pipeline.store
        now = max(self._clock(), orphan.claimed_at + timedelta(microseconds=1))
        if not store.claim_tick_run(run.id, expected=orphan.claimed_at, claimed_at=now):
            return
        reason = f"never started, and cannot be now: {why}"
        for record in pending:
            store.save_materialization(
                replace(
                    record,
                    status=Status.SKIPPED,
                    completed_at=now,
                    error_type="SkippedError",
                    error_message=reason,
                )
            )
        failed = replace(run, status=RunStatus.FAILED, completed_at=now)
        store.update_run(failed, [run_event("run.failed", failed, reason=reason)])
        log.error("Run %s of %s %r %s", run.id, orphan.kind.value, orphan.name, reason)
