"""Deciding approval requests: approve, reject, expire, one or many at a time.

A decision is a compare and set in the store (:meth:`MetadataStore.decide_approval`): of two
concurrent decisions on one request exactly one is recorded, and the other caller gets
:class:`~flowstone.errors.ApprovalAlreadyDecidedError` naming who decided and when. A rejection
or expiry fails the waiting materialization in the same transaction. Each decision is then
told to telemetry and the notifiers, and its run is continued by
:class:`~flowstone.resume.RunResumer`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
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
from flowstone.partitions import decode_partition
from flowstone.planner import resolve_partition
from flowstone.records import MaterializationRecord, RunResult, Status, utcnow
from flowstone.resume import RunContinuer
from flowstone.store import MetadataStore
from flowstone.telemetry import Telemetry

log = logging.getLogger("flowstone.approvals")

#: The shortest id prefix accepted for a request (tables show 8 characters).
MIN_PREFIX = 4
_HEX = frozenset("0123456789abcdef")
_MAX_NAME = 255  # the width of the decided_by column


class ApprovalDesk:
    """Decides one pipeline's approval requests, then has their runs continued.

    The pipeline builds one per call (it holds no state of its own): see
    :meth:`flowstone.Pipeline.approve` and its neighbours for the public API.

    Args:
        runs: Continues a run once a decision is recorded.
        notifiers: Told about each decision (their failures are logged).
    """

    def __init__(
        self,
        graph: AssetGraph,
        store: MetadataStore,
        telemetry: Telemetry,
        runs: RunContinuer,
        *,
        notifiers: Sequence[ApprovalNotifier],
    ) -> None:
        self._graph = graph
        self._store = store
        self._telemetry = telemetry
        self._runs = runs
        self._notifiers = notifiers

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
        return self._runs.advance(current.run_id, decided=True)

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
            self._runs.advance(run, decided=True)
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
            self._runs.advance(run, decided=True)
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
