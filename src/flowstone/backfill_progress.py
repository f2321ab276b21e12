"""What a backfill reports: live progress while it runs, a result when a call ends.

A :class:`Tally` is kept by the process running a backfill pass and updated as partitions
finish (from worker threads); each change hands a :class:`BackfillProgress` snapshot (counts per
outcome, partitions in flight, rate, ETA) to the caller's ``progress`` callback, which the CLI
turns into its progress line. :class:`BackfillResult` is what ``Pipeline.backfill`` and its
resume and retry return; :class:`BackfillReport` is what ``backfill_status`` returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
)
from flowstone.errors import BackfillFailedError

log = logging.getLogger("flowstone.backfill")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillProgress:
    """A snapshot of a running backfill, handed to ``progress`` callbacks.

    ``success``, ``skipped``, ``failed``, ``canceled`` and ``waiting`` (for an approval) count
    the whole backfill. ``running``,
    ``remaining``, ``rate`` and ``eta_s`` are about the current pass: a resume or a retry only
    works through what is not successful yet.

    Example::

        def show(p: BackfillProgress) -> None:
            print(f"{p.done}/{p.total} done, {p.failed} failed, ETA {p.eta_s or 0:.0f} s")

        pipeline.backfill("daily_report", start=jan_1, end=dec_31, progress=show)
    """

    backfill_id: str
    total: int
    success: int
    skipped: int
    failed: int
    canceled: int
    running: int
    remaining: int
    elapsed_s: float
    #: Partitions executed per second in this pass; None before the first one finished.
    rate: float | None
    #: Seconds until the pass ends at the current rate; None while the rate is unknown.
    eta_s: float | None
    waiting: int = 0

    @property
    def done(self) -> int:
        """Partitions successful now: materialized or skipped."""
        return self.success + self.skipped


ProgressCallback = Callable[[BackfillProgress], object]

#: A partition's new outcome and the one it had before this pass (None: none yet).
Change = tuple[PartitionOutcome, PartitionOutcome | None]


class Tally:
    """Live counts of one pass. Thread-safe: partitions finish on worker threads.

    Args:
        record: The backfill as the pass starts (its stored counts).
        todo: How many partitions this pass works through.
        callback: Called with a snapshot after each change; its errors are logged.
    """

    def __init__(self, record: BackfillRecord, todo: int, callback: ProgressCallback | None):
        self._lock = threading.Lock()
        self._counts = {o: record.count(o) for o in PartitionOutcome}
        self._backfill_id = record.id
        self._total = record.total
        self._todo = todo
        self._settled = 0
        self._executed = 0
        self._running: set[str] = set()
        self._start = time.perf_counter()
        self._callback = callback

    def started(self, key: str) -> None:
        """A partition's first step started."""
        with self._lock:
            self._running.add(key)

    def finished(self, key: str, change: Change) -> None:
        """A partition this pass executed got its outcome."""
        with self._lock:
            self._running.discard(key)
            self._apply(change)
            self._executed += 1
        self.report()

    def settled(self, changes: Iterable[Change]) -> None:
        """Partitions got their outcome without running (already successful)."""
        with self._lock:
            for change in changes:
                self._apply(change)
        self.report()

    def _apply(self, change: Change) -> None:
        outcome, previous = change
        if previous is not None:
            self._counts[previous] -= 1
        self._counts[outcome] += 1
        self._settled += 1

    def snapshot(self) -> BackfillProgress:
        """The counts now."""
        with self._lock:
            elapsed = time.perf_counter() - self._start
            running = len(self._running)
            remaining = max(0, self._todo - self._settled - running)
            rate = self._executed / elapsed if self._executed and elapsed > 0 else None
            counts = self._counts
            return BackfillProgress(
                backfill_id=self._backfill_id,
                total=self._total,
                success=counts[PartitionOutcome.SUCCESS],
                skipped=counts[PartitionOutcome.SKIPPED],
                failed=counts[PartitionOutcome.FAILED],
                canceled=counts[PartitionOutcome.CANCELED],
                waiting=counts[PartitionOutcome.WAITING],
                running=running,
                remaining=remaining,
                elapsed_s=elapsed,
                rate=rate,
                eta_s=None if rate is None else (remaining + running) / rate,
            )

    def report(self) -> None:
        """Hand a snapshot to the callback."""
        if self._callback is None:
            return
        try:
            self._callback(self.snapshot())
        except Exception:
            # Progress is for whoever watches; a broken display never stops the backfill.
            log.exception("Backfill progress callback %r failed", self._callback)


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
