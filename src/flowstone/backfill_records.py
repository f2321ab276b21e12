"""The records of backfills, as the metadata store keeps them.

Frozen dataclasses of plain data, like :mod:`flowstone.records`. A backfill is one record
(what to run, over which partitions, and how far it got) plus one row per partition that did
*not* succeed (with its error); successful partitions are only counted, so a 100,000-partition
backfill that goes well stores one row, not 100,000.

The partition set is JSON (see :mod:`flowstone.partitions.sets`): ranges ``{"start", "end"}``
over the asset's partition definition where the partitions are consecutive, key lists
otherwise.

Progress is a prefix: the partitions at positions ``[0, cursor)`` of the set have a recorded
outcome (counted in ``counts``, and listed in the partition rows when they did not succeed);
the ones from ``cursor`` on have none yet. A backfill works through its set in order, one chunk
(one run) at a time, and moves the cursor in the same store call that records the chunk.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from flowstone.records import JSON, AuditEvent


class BackfillStatus(enum.StrEnum):
    """The state of a backfill."""

    #: A process works through the partitions (see ``owner``; if that process died, the
    #: status stays ``running`` until someone resumes or cancels it).
    RUNNING = "running"
    #: Cancel was asked for; the running process starts no new partition and then records
    #: ``canceled``.
    CANCELING = "canceling"
    #: Every partition succeeded (or was already successful).
    SUCCESS = "success"
    #: Every partition was tried and some failed (``retry-failed`` reruns them), or an
    #: unpartitioned upstream asset failed and stopped it (``resume`` continues).
    FAILED = "failed"
    #: Stopped by a cancel before every partition ran (``resume`` continues).
    CANCELED = "canceled"
    #: Every partition ran, none failed, and some wait for an approval: decide them (the
    #: decision continues their runs), then ``resume`` records how they ended.
    WAITING = "waiting"

    @property
    def is_final(self) -> bool:
        """True when no process works on the backfill."""
        return self in (
            BackfillStatus.SUCCESS,
            BackfillStatus.FAILED,
            BackfillStatus.CANCELED,
            BackfillStatus.WAITING,
        )


class PartitionOutcome(enum.StrEnum):
    """What a backfill did with one partition."""

    #: Materialized (every asset of the backfill) by this backfill.
    SUCCESS = "success"
    #: Already successful before the backfill, so not run (``force`` runs them).
    SKIPPED = "skipped"
    #: An asset failed (or was skipped below a failure) for this partition.
    FAILED = "failed"
    #: Not run because the backfill was canceled while its chunk ran.
    CANCELED = "canceled"
    #: A step asked for an approval; its decision continues the partition's run (a resume
    #: then records how it ended, and never asks again while it is pending).
    WAITING = "waiting"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillRecord:
    """One backfill: assets, a partition set, and how far it got.

    Example::

        backfill = pipeline.backfill_status(backfill_id).backfill
        print(backfill.status, backfill.success, "/", backfill.total, backfill.remaining)
    """

    id: str
    status: BackfillStatus
    targets: tuple[str, ...]
    with_upstream: bool
    #: The partitions, compactly (see :class:`flowstone.partitions.sets.PartitionSet`).
    partition_set: JSON
    total: int
    #: Partitions at positions ``[0, cursor)`` of the set have a recorded outcome.
    cursor: int = 0
    #: How many partitions had each :class:`PartitionOutcome` (missing keys count 0).
    counts: Mapping[str, int] = field(default_factory=dict)
    parallel: int
    chunk_size: int
    force: bool
    created_by: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    #: ``host:pid:token`` of the process working on it; None when nobody is.
    owner: str | None = None
    heartbeat_at: datetime | None = None

    def count(self, outcome: PartitionOutcome) -> int:
        """How many partitions had ``outcome``."""
        return int(self.counts.get(outcome.value, 0))

    @property
    def success(self) -> int:
        """Partitions this backfill materialized."""
        return self.count(PartitionOutcome.SUCCESS)

    @property
    def skipped(self) -> int:
        """Partitions skipped because they were already successful."""
        return self.count(PartitionOutcome.SKIPPED)

    @property
    def failed(self) -> int:
        """Partitions whose last attempt failed."""
        return self.count(PartitionOutcome.FAILED)

    @property
    def waiting(self) -> int:
        """Partitions waiting for an approval."""
        return self.count(PartitionOutcome.WAITING)

    @property
    def canceled(self) -> int:
        """Partitions a cancel kept from running: those canceled mid-chunk and, once the
        backfill is canceled, every one not reached."""
        unreached = self.remaining if self.status == BackfillStatus.CANCELED else 0
        return self.count(PartitionOutcome.CANCELED) + unreached

    @property
    def remaining(self) -> int:
        """Partitions not reached yet."""
        return self.total - self.cursor

    @property
    def done(self) -> int:
        """Partitions that are successful now: materialized or skipped."""
        return self.success + self.skipped


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillPartition:
    """A partition of a backfill that did not succeed, with why (its latest attempt)."""

    backfill_id: str
    #: The partition's position in the backfill's partition set.
    position: int
    partition_key: str
    outcome: PartitionOutcome
    #: The asset whose failure decided the outcome, and its materialization.
    asset: str | None = None
    run_id: str | None = None
    materialization_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    #: How many times the backfill tried this partition and it did not succeed.
    attempts: int = 1
    updated_at: datetime


def interrupted_run_event(run_id: str, backfill_id: str, now: datetime) -> AuditEvent:
    """The audit event of a backfill run closed because the process running it died."""
    return AuditEvent(
        action="run.failed",
        resource_type="run",
        resource_id=run_id,
        details={"reason": "interrupted", "backfill_id": backfill_id},
        correlation_id=run_id,
        occurred_at=now,
    )
