"""Live progress of a backfill: counts per outcome, partitions in flight, rate and ETA.

A :class:`Tally` is kept by the process running a backfill pass and updated as partitions
finish (from worker threads); each change hands a :class:`BackfillProgress` snapshot to the
caller's ``progress`` callback, which the CLI turns into its progress line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flowstone.backfill_records import BackfillRecord, PartitionOutcome

log = logging.getLogger("flowstone.backfill")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillProgress:
    """A snapshot of a running backfill, handed to ``progress`` callbacks.

    ``success``, ``skipped``, ``failed`` and ``canceled`` count the whole backfill. ``running``,
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
