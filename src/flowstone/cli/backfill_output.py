"""How ``flowstone backfill`` shows things: tables, JSON, and the live progress line.

The progress line is one line redrawn with a carriage return on a terminal (at most ten times a
second), and a plain line every few seconds otherwise; nothing here writes ANSI codes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from flowstone.backfill_progress import BackfillProgress, BackfillReport
from flowstone.backfill_records import BackfillPartition, BackfillRecord, PartitionOutcome
from flowstone.cli import output

#: Seconds between progress lines when stderr is not a terminal.
PLAIN_EVERY_S = 5.0
_TTY_EVERY_S = 0.1
_BAR = 20


# --- tables and JSON -------------------------------------------------------------------------
def backfill_dict(record: BackfillRecord) -> dict[str, Any]:
    """A backfill as JSON: every key always present."""
    return {
        "id": record.id,
        "status": record.status.value,
        "targets": list(record.targets),
        "with_upstream": record.with_upstream,
        "total": record.total,
        "success": record.success,
        "skipped": record.skipped,
        "failed": record.failed,
        "canceled": record.canceled,
        "waiting": record.waiting,
        "remaining": record.remaining,
        "parallel": record.parallel,
        "chunk_size": record.chunk_size,
        "force": record.force,
        "created_by": record.created_by,
        "created_at": output.iso(record.created_at),
        "finished_at": output.iso(record.finished_at),
        "owner": record.owner,
        "heartbeat_at": output.iso(record.heartbeat_at),
    }


def report_dict(report: BackfillReport) -> dict[str, Any]:
    """``backfill show --json``."""
    return {
        **backfill_dict(report.backfill),
        "partitions": report.partitions,
        "active": report.active,
        "failures": [
            {
                "position": f.position,
                "partition": output.json_partition(f.partition_key),
                "partition_key": f.partition_key,
                "outcome": f.outcome.value,
                "asset": f.asset,
                "error_type": f.error_type,
                "error_message": f.error_message,
                "attempts": f.attempts,
                "run_id": f.run_id,
                "materialization_id": f.materialization_id,
            }
            for f in report.failures
        ],
    }


def report_text(report: BackfillReport) -> str:
    """``backfill show``: the backfill, then its failing partitions."""
    b = report.backfill
    status = b.status.value
    if not b.status.is_final and not report.active:
        status += " (no live process: resume or cancel it)"
    lines = [
        f"backfill     {b.id}",
        f"status       {status}",
        f"assets       {', '.join(b.targets)}{' (with upstream)' if b.with_upstream else ''}",
        f"partitions   {report.partitions} ({b.total})",
        f"counts       {b.success} success, {b.skipped} skipped (already done), {b.failed} "
        f"failed, {b.canceled} canceled, {b.remaining} not reached"
        + (f", {b.waiting} waiting for approval" if b.waiting else ""),
        f"options      parallel {b.parallel}, chunk size {b.chunk_size}"
        + (", force" if b.force else ""),
        f"created      {output.human_time(b.created_at)} by {b.created_by or output.NONE}",
        f"finished     {output.human_time(b.finished_at)}",
    ]
    text = "\n".join(lines) + "\n"
    if report.failures:
        rows = [
            (
                output.human_partition(f.partition_key),
                f.outcome.value,
                f.asset or output.NONE,
                str(f.attempts),
                output.first_line(f"{f.error_type}: {f.error_message}", 100),
            )
            for f in report.failures
        ]
        more = b.failed + b.waiting + b.count(PartitionOutcome.CANCELED) - len(report.failures)
        text += "\n" + output.table(("partition", "outcome", "asset", "tries", "error"), rows)
        if more > 0:
            text += f"... and {more} more (--limit N, or --json)\n"
    return text


def summary_table(records: Sequence[BackfillRecord]) -> str:
    rows = [
        (
            output.short_id(r.id),
            r.status.value,
            ",".join(r.targets),
            str(r.total),
            str(r.done),
            str(r.failed),
            str(r.canceled),
            str(r.remaining),
            output.human_time(r.created_at),
            r.created_by or output.NONE,
        )
        for r in records
    ]
    headers = ("id", "status", "assets", "total", "done", "failed", "canceled", "left", "created")
    return output.table((*headers, "by"), rows, right=range(3, 8))


def failure_line(f: BackfillPartition) -> str:
    where = f"{f.asset} {output.human_partition(f.partition_key)}"
    return f"{where}: {output.first_line(f'{f.error_type}: {f.error_message}', 120)}"


# --- progress --------------------------------------------------------------------------------
class Progress:
    """The progress callback: a redrawn line on a terminal, a plain line every few seconds
    otherwise. Called from worker threads."""

    def __init__(self, stream: TextIO, every: float | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._every = every if every is not None else _TTY_EVERY_S if self._tty else PLAIN_EVERY_S
        self._lock = threading.Lock()
        self._last = -float("inf")  # the first report is always drawn
        self._width = 0
        self._latest: BackfillProgress | None = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._latest is not None:
                self._write(self._latest)
            if self._tty and self._width:
                self._stream.write("\n")
                self._stream.flush()

    def __call__(self, progress: BackfillProgress) -> None:
        now = time.monotonic()
        with self._lock:
            self._latest = progress
            if now - self._last < self._every:
                return
            self._last = now
            self._write(progress)

    def _write(self, p: BackfillProgress) -> None:
        line = progress_line(p, bar=self._tty)
        if self._tty:
            # Pad over what the previous, longer line left behind.
            self._stream.write("\r" + line.ljust(self._width))
            self._width = max(self._width, len(line))
        else:
            self._stream.write(line + "\n")
        self._stream.flush()


def progress_line(p: BackfillProgress, *, bar: bool) -> str:
    """``backfill 3f2a9c1e [#####.....] 120/365 done, 3 failed, 4 running, 238 left, 45.1/s,
    ETA 5s``."""
    filled = round(_BAR * p.done / p.total) if p.total else _BAR
    shown = f"[{'#' * filled}{'.' * (_BAR - filled)}] " if bar else ""
    rate = "-" if p.rate is None else f"{p.rate:.1f}/s"
    eta = "-" if p.eta_s is None else _clock(p.eta_s)
    return (
        f"backfill {p.backfill_id[:8]} {shown}{p.done}/{p.total} done, {p.failed} failed, "
        + (f"{p.waiting} waiting, " if p.waiting else "")
        + f"{p.running} running, {p.remaining} left, {rate}, ETA {eta}"
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
