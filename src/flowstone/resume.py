"""Continuing a run after approval decisions, from what the store holds.

Nothing about a paused run lives in memory, so any process (a CLI after a restart, a web
server, a worker) continues it the same way, in passes:

1. pending steps below a failed or skipped step are recorded ``skipped`` (``Materializer.skip``);
2. the runnable steps are planned: steps waiting for an approval that was approved (the
   decision rides on ``Step.approval``), and pending steps whose in-run dependencies all
   succeeded or are in the plan;
3. they are claimed (``pending``/``waiting_approval`` -> ``running``) in one store call; a step
   another process claimed first is left to it, and what depends on it is taken up by whichever
   process finishes last (each one looks again after its own steps end);
4. the plan runs through ``Pipeline._execute``: the pipeline's executor and the one
   materializer;
5. this repeats until nothing is runnable; the run's status is recorded by the last pass (or,
   when nothing ran after a rejection or expiry, by an empty pass).

A run still ``running`` (its first execution has not ended) is not continued here: that
execution looks for decisions when it ends, so the two never both run a step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any, Protocol

from flowstone.checkpoints import ApprovalStatus
from flowstone.errors import ApprovalError
from flowstone.graph import AssetGraph
from flowstone.materializer import Materializer
from flowstone.planner import RunPlan, Step, StepKey, step_of
from flowstone.records import MaterializationRecord, RunRecord, RunResult, RunStatus, Status
from flowstone.store import MetadataStore

#: Runs a plan of a recorded run and records the run's status: ``Pipeline._execute``.
Execute = Callable[[RunPlan, RunRecord, Sequence[MaterializationRecord]], RunResult]


class RunContinuer(Protocol):
    """Continues a run after approval decisions: :class:`RunResumer` in this process, or the
    distributed executor's :class:`~flowstone.execution.distributed.DistributedRuns` through
    the workers."""

    def advance(self, run_id: str, *, decided: bool = False) -> RunResult:
        """Run (or hand to the workers) what the decisions let run, and record the status."""
        ...


class RunResumer:
    """Continues the runs of one pipeline that wait on approvals.

    Args:
        execute: Runs a plan for a recorded run, given the run's other records.
        lock: Held while a run is continued, so continuations in one process take turns and
            each records the run's status from what the one before it left.
    """

    def __init__(
        self,
        graph: AssetGraph,
        store: MetadataStore,
        materializer: Materializer,
        *,
        execute: Execute,
        lock: AbstractContextManager[Any],
    ) -> None:
        self._graph = graph
        self._store = store
        self._materializer = materializer
        self._execute = execute
        self._lock = lock

    def continue_decided(
        self, run_id: str, waiting: Sequence[MaterializationRecord]
    ) -> RunResult | None:
        """Continue a run whose execution just ended waiting, if any of its ``waiting``
        materializations was decided meanwhile (the decider left the run to its execution).
        """
        asked = {(r.id, r.attempt) for r in waiting if r.status == Status.WAITING_APPROVAL}
        if not asked:
            return None
        decided = [
            a
            for a in self._store.list_approvals(run_id=run_id, limit=None)
            if not a.is_pending and (a.materialization_id, a.attempt) in asked
        ]
        return self.advance(run_id, decided=True) if decided else None

    def advance(self, run_id: str, *, decided: bool = False) -> RunResult:
        """Skip what can no longer run, run what can, and record the run's status.

        Args:
            decided: A decision was just recorded: record the run's status even when nothing
                runs (a rejection fails it).

        Returns:
            Every materialization of the run, in plan order, and its status.
        """
        with self._lock:
            run = self._store.get_run(run_id)
            if run is None:
                raise ApprovalError(
                    f"Run {run_id} is not in the metadata store, so it cannot continue."
                )
            if run.status == RunStatus.RUNNING:
                # Its first execution is still going; it continues the run when it ends.
                return self._result(run, run.status)
            status: RunStatus = run.status
            changed = decided
            while True:
                records = self._records(run_id)
                if self._skip_blocked(run_id, records):
                    changed = True
                    records = self._records(run_id)
                plan = self._claim(run, records)
                if plan is None:
                    break
                mine = {s.materialization_id for s in plan.steps}
                status = self._execute(plan, run, [r for r in records if r.id not in mine]).status
                changed = False
            if changed:
                # Nothing ran since the last change: record the status the store now implies,
                # through the same path as every run's end.
                empty = replace(_plan_of(run), steps=())
                status = self._execute(empty, run, self._records(run_id)).status
            return self._result(run, status)

    def _result(self, run: RunRecord, status: RunStatus) -> RunResult:
        return RunResult(
            run_id=run.id,
            status=status,
            partition_key=run.partition_key,
            materializations=tuple(self._records(run.id)),
        )

    def _records(self, run_id: str) -> list[MaterializationRecord]:
        """The run's materializations in plan order (the store returns the newest first)."""
        return self._store.list_materializations(run_id=run_id, limit=None)[::-1]

    def _skip_blocked(self, run_id: str, records: list[MaterializationRecord]) -> bool:
        """Record ``skipped`` each pending step below a failed or skipped one (in plan order,
        so a skip cascades); True if any was."""
        by_key = {(r.asset, r.partition_key): r for r in records}
        skipped = False
        for record in records:
            if record.status != Status.PENDING or record.asset not in self._graph:
                continue
            # Not validated, as in scheduling.skip_below: a definition changed since the run was
            # planned must not keep a step below a failure from being recorded skipped.
            step = step_of(self._graph, record, by_key, validate=False)
            for dep in step.deps_in_plan:
                up = by_key[dep]
                if up.status in (Status.FAILED, Status.SKIPPED):
                    # Name the root cause, as the executor does.
                    reason = (
                        up.error_message
                        if up.status == Status.SKIPPED and up.error_message
                        else f"upstream asset {up.asset!r} {up.status.value}"
                    )
                    by_key[step.key] = self._materializer.skip(step, run_id, reason)
                    skipped = True
                    break
        return skipped

    def _claim(self, run: RunRecord, records: list[MaterializationRecord]) -> RunPlan | None:
        """Plan and claim the steps that can run now; None when there are none."""
        by_key = {(r.asset, r.partition_key): r for r in records}
        approved = {
            (a.materialization_id, a.attempt): a
            for a in self._store.list_approvals(
                run_id=run.id, status=ApprovalStatus.APPROVED, limit=None
            )
        }
        planned: dict[StepKey, Step] = {}
        for record in records:
            if record.asset not in self._graph:
                continue
            key = (record.asset, record.partition_key)
            if record.status == Status.WAITING_APPROVAL:
                approval = approved.get((record.id, record.attempt))
                if approval is not None:
                    # It ran up to its request once: it reads its inputs from the store again.
                    planned[key] = step_of(self._graph, record, approval=approval)
            elif record.status == Status.PENDING:
                step = step_of(self._graph, record, by_key)
                # Only steps whose inputs already succeeded: a step below one planned now is
                # claimed on the next pass, once that one ended. Claiming it now would leave it
                # `running` for good if the one above asked for approval again.
                if all(by_key[d].status == Status.SUCCESS for d in step.deps_in_plan):
                    planned[key] = replace(step, deps_in_plan=())
        if not planned:
            return None
        ids = [s.materialization_id for s in planned.values()]
        won = set(self._store.claim_materializations(ids))
        # Steps another process claimed first are its to run.
        steps = tuple(step for step in planned.values() if step.materialization_id in won)
        return replace(_plan_of(run), steps=steps) if steps else None


def _plan_of(run: RunRecord) -> RunPlan:
    return RunPlan(
        run_id=run.id,
        targets=run.targets,
        partition_key=run.partition_key,
        steps=(),
        created_at=run.created_at,
    )
