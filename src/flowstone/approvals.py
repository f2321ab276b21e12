"""Deciding approval requests, and continuing the runs that wait on them.

A decision is a compare and set in the store (:meth:`MetadataStore.decide_approval`): of two
concurrent decisions on one request exactly one is recorded, and the other caller gets
:class:`~flowstone.errors.ApprovalAlreadyDecidedError` naming who decided and when.

Continuing a run reads everything from the store, never from memory, so any process (a CLI
after a restart, a web server, a worker) continues it the same way:

1. pending steps below a failed or skipped step are recorded ``skipped`` (``Materializer.skip``);
2. the runnable steps are planned: steps waiting for an approval that was approved, and pending
   steps whose in-run dependencies all succeeded or are in the plan;
3. they are claimed (``pending``/``waiting_approval`` -> ``running``) in one store call; a step
   another process claimed first is left to it, and what depends on it is taken up by whichever
   process finishes last (each one looks again after its own steps end);
4. the plan runs through the pipeline's executor and the one materializer;
5. this repeats until nothing is runnable, and the run's status is recorded.

A run still ``running`` (its first execution has not ended) is not continued here: that
execution looks for decisions when it ends (``Pipeline._execute``), so the two never both run
a step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any

from flowstone.checkpoints import (
    ApprovalNotifier,
    ApprovalRecord,
    ApprovalStatus,
    audit_event,
    event_metadata,
    json_object,
    notify,
)
from flowstone.errors import (
    ApprovalAlreadyDecidedError,
    ApprovalError,
    ApprovalExpiredError,
    ApprovalNotFoundError,
    ApprovalRejectedError,
)
from flowstone.graph import AssetGraph
from flowstone.materializer import Materializer
from flowstone.partitions import decode_partition, encode_partition
from flowstone.planner import RunPlan, Step, StepKey, resolve_partition
from flowstone.records import MaterializationRecord, RunRecord, RunResult, RunStatus, Status, utcnow
from flowstone.store import MetadataStore
from flowstone.telemetry import Telemetry

log = logging.getLogger("flowstone.approvals")

#: Runs a plan of a recorded run and records the run's status: ``Pipeline._execute``.
Execute = Callable[[RunPlan, RunRecord, Sequence[MaterializationRecord]], RunResult]

#: The shortest id prefix accepted for a request (tables show 8 characters).
MIN_PREFIX = 4
_HEX = frozenset("0123456789abcdef")
_MAX_NAME = 255  # the width of the decided_by column


class ApprovalDesk:
    """Decides one pipeline's approval requests and continues their runs.

    The pipeline builds one per call (it holds no state of its own): see
    :meth:`flowstone.Pipeline.approve` and its neighbours for the public API.

    Args:
        lock: Held while a run is continued, so continuations in one process take turns and
            each records the run's status from what the one before it left.
    """

    def __init__(
        self,
        graph: AssetGraph,
        store: MetadataStore,
        materializer: Materializer,
        telemetry: Telemetry,
        *,
        notifiers: Sequence[ApprovalNotifier],
        execute: Execute,
        lock: AbstractContextManager[Any],
    ) -> None:
        self._graph = graph
        self._store = store
        self._materializer = materializer
        self._telemetry = telemetry
        self._notifiers = notifiers
        self._execute = execute
        self._lock = lock

    # --- reading -------------------------------------------------------------------------------
    def get(self, approval_id: str) -> ApprovalRecord:
        """The request with this id, or with this unique id prefix (4+ hex characters).

        Raises:
            ApprovalNotFoundError: no request matches.
            ApprovalError: the prefix matches several requests.
        """
        found = self._store.get_approval(approval_id)
        if found is not None:
            return found
        prefix = approval_id.strip().lower()
        if len(prefix) >= MIN_PREFIX and set(prefix) <= _HEX:
            matches = self._store.list_approvals(id_prefix=prefix, limit=2)
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise ApprovalError(
                    f"Approval id prefix {approval_id!r} matches several requests; give more "
                    "characters."
                )
        raise ApprovalNotFoundError(approval_id)

    # --- deciding ------------------------------------------------------------------------------
    def decide(
        self,
        approval_id: str,
        status: ApprovalStatus,
        *,
        by: str,
        reason: str | None = None,
        input: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> RunResult:
        """Approve or reject one request, then continue its run.

        Raises:
            ApprovalAlreadyDecidedError: someone decided it first, or it expired (an expired
                request is recorded as such, and its run continued, before this raises).
        """
        person, why, data = _check_decision(status, by, reason, input)
        current = self.get(approval_id)
        if status == ApprovalStatus.APPROVED:
            self._check_resumable(current)
        now = now or utcnow()
        if current.is_pending and current.is_due(now):
            # Past its timeout: the request expires rather than being decided late.
            self.expire_due(now, only=current)
        decided = self._apply(current, status, by=person, reason=why, input=data, now=now)
        if decided is None:
            raise self._already_decided(current.id)
        return self.advance(current.run_id, decided=True)

    def decide_all(
        self,
        status: ApprovalStatus,
        *,
        by: str,
        reason: str | None = None,
        input: Mapping[str, Any] | None = None,
        asset: str | None = None,
        partition_keys: Collection[str] | None = None,
        run_id: str | None = None,
        now: datetime | None = None,
    ) -> list[ApprovalRecord]:
        """Decide every pending request that matches, then continue each run once (so the
        approved steps of one run run in parallel). Requests someone else decides meanwhile
        are left as they are; the expired ones are expired. Returns the requests decided."""
        person, why, data = _check_decision(status, by, reason, input)
        now = now or utcnow()
        self.expire_due(now)
        chosen = [
            a
            for a in self._store.list_approvals(
                status=ApprovalStatus.PENDING, asset=asset, run_id=run_id, limit=None
            )
            if partition_keys is None or a.partition_key in partition_keys
        ]
        if status == ApprovalStatus.APPROVED:
            for approval in chosen:  # every one before any decision: all or nothing changes
                self._check_resumable(approval)
        decided = []
        for approval in chosen:
            done = self._apply(approval, status, by=person, reason=why, input=data, now=now)
            if done is None:
                log.info("Approval %s was decided by someone else meanwhile", approval.id)
            else:
                decided.append(done)
        for run in dict.fromkeys(a.run_id for a in decided):
            self.advance(run, decided=True)
        return decided

    def expire_due(
        self, now: datetime | None = None, *, only: ApprovalRecord | None = None
    ) -> list[ApprovalRecord]:
        """Expire the pending requests whose timeout has passed, fail their materializations
        and continue (skip below) their runs. Returns the requests it expired."""
        now = now or utcnow()
        due = (
            [only]
            if only is not None
            else self._store.list_approvals(
                status=ApprovalStatus.PENDING, due_before=now, limit=None
            )
        )
        expired = []
        for approval in due:
            why = f"not decided before its timeout, {_iso(approval.timeout_at)}"
            done = self._apply(
                approval, ApprovalStatus.EXPIRED, by=None, reason=why, input={}, now=now
            )
            if done is not None:
                expired.append(done)
        for run in dict.fromkeys(a.run_id for a in expired):
            self.advance(run, decided=True)
        return expired

    def _apply(
        self,
        current: ApprovalRecord,
        status: ApprovalStatus,
        *,
        by: str | None,
        reason: str | None,
        input: dict[str, Any],
        now: datetime,
    ) -> ApprovalRecord | None:
        """Record one decision (None when another was recorded first), then tell telemetry
        and the notifiers."""
        decided = replace(
            current, status=status, decided_by=by, decided_at=now, reason=reason, input=input
        )
        failed = None if status == ApprovalStatus.APPROVED else self._failed(decided)
        if not self._store.decide_approval(
            decided, materialization=failed, audit=[audit_event(decided)]
        ):
            return None
        self._telemetry.emit(f"approval.{status.value}", event_metadata(decided))
        notify(self._notifiers, decided)
        return decided

    def _failed(self, decided: ApprovalRecord) -> MaterializationRecord | None:
        """The failed record of the materialization a rejection or expiry ends."""
        waiting = self._store.get_materialization(decided.materialization_id)
        if waiting is None:
            return None
        error: ApprovalRejectedError | ApprovalExpiredError
        if decided.status == ApprovalStatus.REJECTED:
            error = ApprovalRejectedError(
                decided.asset,
                decided.partition,
                approval_id=decided.id,
                decided_by=decided.decided_by or "someone",
                reason=decided.reason or "no reason given",
            )
        else:
            error = ApprovalExpiredError(
                decided.asset,
                decided.partition,
                approval_id=decided.id,
                timeout_at=decided.timeout_at or decided.decided_at or utcnow(),
            )
        return replace(
            waiting,
            status=Status.FAILED,
            completed_at=decided.decided_at,
            error_type=type(error).__name__,
            error_message=str(error),
            error_traceback=None,
        )

    def _already_decided(self, approval_id: str) -> ApprovalAlreadyDecidedError:
        latest = self._store.get_approval(approval_id)
        if latest is None:  # deleted with its materialization meanwhile
            raise ApprovalNotFoundError(approval_id)
        return ApprovalAlreadyDecidedError(
            approval_id,
            status=latest.status.value,
            decided_by=latest.decided_by,
            decided_at=latest.decided_at,
        )

    def _check_resumable(self, approval: ApprovalRecord) -> None:
        """Raise before anything changes if the approved asset could not run again (renamed
        or removed from the pipeline, or its partitions changed)."""
        asset = self._graph.get(approval.asset)
        resolve_partition(asset, decode_partition(approval.partition_key))

    # --- continuing runs -----------------------------------------------------------------------
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

    def _step(
        self,
        record: MaterializationRecord,
        present: Collection[StepKey],
        approval: ApprovalRecord | None = None,
    ) -> Step:
        """Rebuild a recorded materialization's step; its in-plan dependencies are those of
        its dependencies in ``present`` (the planner's rule, applied to stored keys)."""
        asset = self._graph.get(record.asset)
        partition = resolve_partition(asset, decode_partition(record.partition_key))
        deps = []
        for dep in asset.deps:
            key = (dep, encode_partition(resolve_partition(self._graph.get(dep), partition)))
            if key in present:
                deps.append(key)
        return Step(
            asset=asset,
            partition=partition,
            partition_key=record.partition_key,
            materialization_id=record.id,
            created_at=record.created_at,
            deps_in_plan=tuple(deps),
            approval=approval,
        )

    def _skip_blocked(self, run_id: str, records: list[MaterializationRecord]) -> bool:
        """Record ``skipped`` each pending step below a failed or skipped one (in plan order,
        so a skip cascades); True if any was."""
        by_key = {(r.asset, r.partition_key): r for r in records}
        skipped = False
        for record in records:
            if record.status != Status.PENDING or record.asset not in self._graph:
                continue
            step = self._step(record, by_key)
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
                    planned[key] = self._step(record, (), approval)
            elif record.status == Status.PENDING:
                step = self._step(record, by_key)
                deps = step.deps_in_plan
                if all(by_key[d].status == Status.SUCCESS or d in planned for d in deps):
                    in_plan = tuple(d for d in deps if d in planned)
                    planned[key] = replace(step, deps_in_plan=in_plan)
        if not planned:
            return None
        ids = [s.materialization_id for s in planned.values()]
        won = set(self._store.claim_materializations(ids))
        steps: dict[StepKey, Step] = {}
        for key, step in planned.items():
            if step.materialization_id not in won:
                continue  # another process runs it
            if all(d in steps for d in step.deps_in_plan):
                steps[key] = step
            else:
                # A dependency went to another process: hand the step back, still pending.
                self._store.save_materialization(by_key[key])
        return replace(_plan_of(run), steps=tuple(steps.values())) if steps else None


def _plan_of(run: RunRecord) -> RunPlan:
    return RunPlan(
        run_id=run.id,
        targets=run.targets,
        partition_key=run.partition_key,
        steps=(),
        created_at=run.created_at,
    )


def _check_decision(
    status: ApprovalStatus, by: object, reason: object, input: Mapping[str, Any] | None
) -> tuple[str, str | None, dict[str, Any]]:
    """Validate who, why and the input before anything is read or written."""
    if status not in (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED):
        raise ApprovalError(f"A person approves or rejects a request; {status!r} is neither.")
    if not isinstance(by, str) or not by.strip() or len(by.strip()) > _MAX_NAME:
        raise ApprovalError(
            f"Say who decides: by= must be a name of 1 to {_MAX_NAME} characters, got {by!r}."
        )
    if reason is not None and not isinstance(reason, str):
        raise ApprovalError(f"reason must be a str, got {type(reason).__name__}.")
    why = reason.strip() if reason and reason.strip() else None
    if status == ApprovalStatus.REJECTED and why is None:
        raise ApprovalError("Say why the request is rejected: reason= is required.")
    if status == ApprovalStatus.REJECTED and input:
        raise ApprovalError("A rejection takes no input: nothing resumes.")
    return by.strip(), why, json_object(input, "The approval input")


def _iso(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat(timespec="seconds")
