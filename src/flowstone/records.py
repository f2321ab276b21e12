"""The records FlowStone keeps: runs, materializations, lineage edges, audit events.

Frozen dataclasses, changed with :func:`dataclasses.replace`. They are what the metadata store
persists and returns, and what the public API hands back, so every field is plain data (str,
numbers, datetimes, JSON-compatible mappings): nothing here needs unpickling to be read back.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowstone.errors import RunFailedError, RunWaitingError

JSON = dict[str, Any]


def new_id() -> str:
    """A new random identifier (32 hex characters)."""
    # 128 random bits, like uuid4, without importing uuid on the import path.
    return os.urandom(16).hex()


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Status(enum.StrEnum):
    """The state of one materialization (one asset, one partition, one run)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    WAITING_APPROVAL = "waiting_approval"
    # --- distributed execution (issue 3): a step of a cancelled run that never ran ---
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for states a materialization never leaves on its own."""
        return self in (Status.SUCCESS, Status.FAILED, Status.SKIPPED, Status.CANCELLED)


class RunStatus(enum.StrEnum):
    """The state of a run: a group of materializations started together."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    WAITING_APPROVAL = "waiting_approval"
    # --- distributed execution (issue 3): cancelled by `flowstone runs cancel` ---
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class MaterializationRecord:
    """One asset computed (or attempted) for one partition within one run.

    ``partition_key`` is the tagged encoding of the partition (see
    :func:`flowstone.partitions.encode_partition`); ``n:`` for an unpartitioned asset.
    """

    id: str
    run_id: str
    asset: str
    partition_key: str
    status: Status
    attempt: int = 1
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    code_version: str | None = None
    io_manager: str | None = None
    metadata: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageEdge:
    """A materialization read the output of an upstream materialization."""

    materialization_id: str
    run_id: str
    asset: str
    partition_key: str
    upstream_materialization_id: str
    upstream_asset: str
    upstream_partition_key: str
    consumed_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LineageNode:
    """One node of a lineage answer, ``depth`` steps away from where the query started.

    Upstream answers name the exact materialization that was read; downstream answers name the
    latest materialization of each dependent (asset, partition) that read it.
    """

    asset: str
    partition_key: str
    depth: int
    materialization_id: str | None = None
    run_id: str | None = None
    status: Status | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """An append-only record of something a person or the system did."""

    action: str
    resource_type: str
    resource_id: str
    actor: str = "system"
    actor_type: str = "system"
    details: JSON = field(default_factory=dict)
    correlation_id: str | None = None
    occurred_at: datetime = field(default_factory=utcnow)
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRecord:
    """A group of materializations started by one call (a run of ``materialize_all``...)."""

    id: str
    status: RunStatus
    targets: tuple[str, ...]
    #: The encoded partition asked for; None for a run over several partitions.
    partition_key: str | None
    created_at: datetime
    completed_at: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """What a run did: its status and each materialization's final record, in plan order.

    Example::

        run = pipeline.materialize_all("daily_report", partition=dt.date(2025, 1, 15))
        if not run.ok:
            for record in run.failed:
                print(record.asset, record.error_message)
        run["daily_report"].duration_ms
    """

    run_id: str
    status: RunStatus
    partition_key: str | None
    materializations: tuple[MaterializationRecord, ...]

    @property
    def ok(self) -> bool:
        """True when every materialization succeeded."""
        return self.status == RunStatus.SUCCESS

    @property
    def failed(self) -> tuple[MaterializationRecord, ...]:
        """The materializations that failed."""
        return tuple(r for r in self.materializations if r.status == Status.FAILED)

    @property
    def skipped(self) -> tuple[MaterializationRecord, ...]:
        """The materializations skipped because something above them did not succeed."""
        return tuple(r for r in self.materializations if r.status == Status.SKIPPED)

    def __getitem__(self, asset: str) -> MaterializationRecord:
        """The record of ``asset`` in this run (for a run over several partitions, use
        :meth:`get` with the partition key)."""
        found = [r for r in self.materializations if r.asset == asset]
        if len(found) == 1:
            return found[0]
        if not found:
            raise KeyError(f"asset {asset!r} was not part of run {self.run_id}")
        raise KeyError(
            f"asset {asset!r} ran for {len(found)} partitions in run {self.run_id}; "
            "use result.get(asset, partition_key)"
        )

    def get(self, asset: str, partition_key: str) -> MaterializationRecord | None:
        """The record of ``asset`` for one encoded partition, or None."""
        for record in self.materializations:
            if record.asset == asset and record.partition_key == partition_key:
                return record
        return None

    def raise_for_status(self) -> RunResult:
        """Raise :class:`~flowstone.errors.RunFailedError` unless the run succeeded
        (:class:`~flowstone.errors.RunWaitingError`, a subclass, while it waits for approval).

        Returns:
            The result itself, so calls chain: ``pipeline.materialize_all().raise_for_status()``.
        """
        if self.ok:
            return self
        if self.status == RunStatus.WAITING_APPROVAL:
            waiting = [
                r.asset for r in self.materializations if r.status == Status.WAITING_APPROVAL
            ]
            raise RunWaitingError(self.run_id, waiting)
        failed = self.failed
        first = failed[0] if failed else None
        raise RunFailedError(
            self.run_id,
            [r.asset for r in failed] or [r.asset for r in self.skipped],
            None if first is None else f"{first.asset}: {first.error_type}: {first.error_message}",
        )


# --- the shapes of the audit log's run and materialization events, and of a run's status ------
def run_event(action: str, run: RunRecord, **details: object) -> AuditEvent:
    """An audit event about ``run`` (``run.started``, ``run.success``...): its targets and
    partition, with ``details``."""
    return AuditEvent(
        action=action,
        resource_type="run",
        resource_id=run.id,
        details={"targets": list(run.targets), "partition_key": run.partition_key, **details},
        correlation_id=run.id,
    )


def materialization_event(
    action: str, record: MaterializationRecord, **details: object
) -> AuditEvent:
    """An audit event about one materialization (``materialization.success``...): its id,
    partition and attempt, with ``details``."""
    return AuditEvent(
        action=action,
        resource_type="asset",
        resource_id=record.asset,
        details={
            "materialization_id": record.id,
            "partition_key": record.partition_key,
            "attempt": record.attempt,
            **details,
        },
        correlation_id=record.run_id,
    )


def run_status(records: Iterable[MaterializationRecord]) -> RunStatus:
    """A finished run's status from its materializations: waiting while any waits for
    approval, else failed when any failed or was skipped, else success."""
    statuses = {r.status for r in records}
    if Status.WAITING_APPROVAL in statuses:
        return RunStatus.WAITING_APPROVAL
    if statuses <= {Status.SUCCESS}:
        return RunStatus.SUCCESS
    return RunStatus.FAILED
