"""Approval checkpoints: how an asset asks a person for sign-off, and what is recorded.

An asset asks in one of two ways:

- it returns :class:`WaitForApproval` (after computing, so the request can show what it found);
- it declares a gate, ``@asset(approval=Approval(...))``, and asks before it runs at all.

Either way the materializer records an :class:`ApprovalRecord` ``pending`` and leaves the
materialization ``waiting_approval``. Nothing waits in memory: deciding (see
:mod:`flowstone.approvals`) re-runs the asset with the decision in ``ctx.approval``.

Context and input are checked to be JSON objects and copied through JSON when they are made, so
the in-memory and SQL stores hand back equal values and nothing persisted needs unpickling.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flowstone.errors import ApprovalError
from flowstone.partitions import Partition, decode_partition
from flowstone.records import JSON, AuditEvent, MaterializationRecord, new_id

log = logging.getLogger("flowstone.approvals")


class ApprovalStatus(enum.StrEnum):
    """Where an approval request stands. Only ``pending`` ever changes."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


def json_object(value: Mapping[str, Any] | None, what: str) -> JSON:
    """A JSON-compatible copy of ``value`` (``{}`` for None).

    Raises:
        ApprovalError: ``value`` is not a mapping with str keys and JSON values.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ApprovalError(
            f"{what} must be a JSON object: a dict with str keys, got {type(value).__name__}."
        )
    try:
        copied: JSON = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ApprovalError(
            f"{what} must hold only JSON values (str, int, float, bool, None, lists and dicts "
            f"of these): {exc}."
        ) from exc
    return copied


def _check_request(message: object, timeout: object, what: str) -> None:
    if not isinstance(message, str) or not message.strip():
        raise ApprovalError(f"{what} needs a message for the approver (a non-empty str).")
    if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
        raise ApprovalError(
            f"{what} timeout must be a positive datetime.timedelta (or None to wait for as "
            f"long as it takes), got {timeout!r}."
        )


@dataclass(frozen=True, slots=True)
class WaitForApproval:
    """Returned by an asset: record nothing yet, and ask a person to approve.

    The materialization is left ``waiting_approval`` (no value is stored). Approving runs the
    asset again with ``ctx.approval`` set to the decision; rejecting fails it; after
    ``timeout`` the request expires and fails it.

    Args:
        message: What the approver is asked.
        context: JSON data shown with the request (totals, row counts, links).
        timeout: How long the request stays open; None waits for as long as it takes.

    Raises:
        ApprovalError: the message is empty, the context is not JSON, or the timeout is not a
            positive ``timedelta``.

    Example::

        @fs.asset(depends_on=["daily_report"])
        def publish(ctx, daily_report):
            if ctx.approval is None:
                return fs.WaitForApproval(
                    f"Publish {daily_report['total']}?",
                    context={"total": daily_report["total"]},
                    timeout=dt.timedelta(hours=24),
                )
            return push(daily_report, **ctx.approval.input)
    """

    message: str
    context: Mapping[str, Any] | None = None
    timeout: timedelta | None = None

    def __post_init__(self) -> None:
        _check_request(self.message, self.timeout, "WaitForApproval")
        object.__setattr__(self, "context", json_object(self.context, "WaitForApproval context"))


@dataclass(frozen=True, slots=True)
class Approval:
    """A gate: the asset asks for approval before it runs (for dangerous actions).

    Until the request is approved the asset's function is not called, its inputs are not
    loaded and its resources are not set up. Approving runs it with ``ctx.approval`` set.

    Args:
        message: What the approver is asked.
        context: JSON data shown with the request.
        timeout: How long the request stays open; None waits for as long as it takes.

    Example::

        @fs.asset(approval=fs.Approval("Drop last year's tables?", timeout=dt.timedelta(days=2)))
        def drop_old_tables(ctx):
            ...
    """

    message: str
    context: Mapping[str, Any] | None = None
    timeout: timedelta | None = None

    def __post_init__(self) -> None:
        _check_request(self.message, self.timeout, "Approval")
        object.__setattr__(self, "context", json_object(self.context, "Approval context"))

    def request(self) -> WaitForApproval:
        """The request this gate makes."""
        return WaitForApproval(self.message, self.context, self.timeout)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRecord:
    """An approval request as the metadata store keeps it, and the decision once made.

    ``ctx.approval`` is this record (``status == "approved"``) when an approved asset runs
    again: read ``decided_by``, ``decided_at``, ``reason`` and ``input`` from it.

    Attributes:
        id: The request's id (32 hex characters; commands accept a unique prefix).
        materialization_id: The materialization that waits for it.
        attempt: The attempt of that materialization that asked; the resumed one is the next.
        context: JSON data shown to the approver.
        timeout_at: When the request expires; None: never.
        input: JSON data the approver handed to the resumed asset (``{}`` if none).
    """

    id: str
    run_id: str
    materialization_id: str
    asset: str
    partition_key: str
    status: ApprovalStatus
    message: str
    context: JSON = field(default_factory=dict)
    attempt: int = 1
    requested_at: datetime
    timeout_at: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None
    input: JSON = field(default_factory=dict)

    @property
    def partition(self) -> Partition:
        """The partition value (decoded from ``partition_key``)."""
        return decode_partition(self.partition_key)

    @property
    def is_pending(self) -> bool:
        """True while nobody has decided and it has not expired."""
        return self.status == ApprovalStatus.PENDING

    def is_due(self, now: datetime) -> bool:
        """True when the request's timeout has passed at ``now``."""
        return self.timeout_at is not None and self.timeout_at <= now


def new_request(
    request: WaitForApproval, waiting: MaterializationRecord, now: datetime
) -> ApprovalRecord:
    """The pending record for ``request``, made by the ``waiting`` materialization."""
    return ApprovalRecord(
        id=new_id(),
        run_id=waiting.run_id,
        materialization_id=waiting.id,
        asset=waiting.asset,
        partition_key=waiting.partition_key,
        status=ApprovalStatus.PENDING,
        message=request.message,
        context=dict(request.context or {}),
        attempt=waiting.attempt,
        requested_at=now,
        timeout_at=None if request.timeout is None else now + request.timeout,
    )


# --- what every request and decision leaves behind ------------------------------------------

#: A callable told about each request and decision (a chat message, an e-mail...).
ApprovalNotifier = Callable[[ApprovalRecord], object]


def notify(notifiers: Iterable[ApprovalNotifier], record: ApprovalRecord) -> None:
    """Call each notifier with ``record``; a failing one is logged, never raised: a broken
    chat hook must not fail a materialization or undo a decision."""
    for notifier in notifiers:
        try:
            notifier(record)
        except Exception:
            log.exception(
                "Approval notifier %r failed on approval %s (%s)",
                notifier,
                record.id,
                record.status,
            )


def audit_event(record: ApprovalRecord) -> AuditEvent:
    """The audit event for a request (``approval.pending`` is named ``approval.requested``) or
    a decision, with who made it and why."""
    action = "requested" if record.is_pending else record.status.value
    details: JSON = {
        "approval_id": record.id,
        "materialization_id": record.materialization_id,
        "partition_key": record.partition_key,
    }
    if record.is_pending:
        details["message"] = record.message
        details["timeout_at"] = None if record.timeout_at is None else record.timeout_at.isoformat()
    else:
        details["reason"] = record.reason
        if record.input:
            details["input"] = record.input
    return AuditEvent(
        action=f"approval.{action}",
        resource_type="asset",
        resource_id=record.asset,
        actor=record.decided_by or "system",
        actor_type="system" if record.decided_by is None else "user",
        details=details,
        correlation_id=record.run_id,
        occurred_at=record.decided_at or record.requested_at,
    )


def event_metadata(record: ApprovalRecord) -> dict[str, Any]:
    """Telemetry metadata for ``approval.*`` events."""
    return {
        "approval_id": record.id,
        "asset": record.asset,
        "partition": record.partition_key,
        "run_id": record.run_id,
        "status": record.status.value,
        "actor": record.decided_by,
    }
