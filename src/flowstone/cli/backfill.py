"""``flowstone backfill run|list|show|resume|retry-failed|cancel``.

``run``, ``resume`` and ``retry-failed`` show a live progress line on stderr when it is a
terminal (one line redrawn with a carriage return, at most ten times a second) and a plain line
every few seconds otherwise, then print the backfill (a table, or JSON) on stdout.

Exit codes follow ``flowstone --help``: 0 when the backfill succeeded, 1 when partitions failed
or were canceled (or the backfill is busy elsewhere), 2 for bad input (an unknown asset or
backfill id, a bad partition), 3 when the pipeline or the store cannot be opened.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO, TypeAlias

from flowstone.backfill import BackfillReport, BackfillResult
from flowstone.backfill_progress import BackfillProgress
from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
)
from flowstone.cli import output
from flowstone.cli.loading import find_spec, load_pipeline
from flowstone.errors import PartitionError, UnknownBackfillError
from flowstone.partitions import PartitionsDefinition
from flowstone.pipeline import Pipeline

Handler = Callable[[argparse.Namespace], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# The exit codes of flowstone.cli.app (which imports this module, so they are not imported).
_OK, _FAILED, _USAGE = 0, 1, 2
#: Seconds between progress lines when stderr is not a terminal.
PLAIN_EVERY_S = 5.0
_TTY_EVERY_S = 0.1
_BAR = 20


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Add ``flowstone backfill ...`` to the ``flowstone`` parser."""
    backfill = _add(commands, "backfill", None, "backfill assets over many partitions", common)
    sub = backfill.add_subparsers(title="backfill commands", dest="backfill_command")
    sub.metavar = "COMMAND"
    sub.required = True
    _run_arguments(_add(sub, "run", _run, "start a backfill and run it here", common))
    listing = _add(sub, "list", _list, "list backfills, newest first", common)
    listing.add_argument("--limit", type=_positive, default=20, metavar="N", help="at most N")
    _json(listing)
    show = _add(sub, "show", _show, "show a backfill and its failing partitions", common)
    show.add_argument("id", metavar="ID", help="a backfill id (a unique prefix is enough)")
    show.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="failing partitions to list"
    )
    _json(show)
    for name, handler, text in (
        ("resume", _resume, "run every partition not successful yet (after a crash or cancel)"),
        ("retry-failed", _retry, "rerun only the partitions that failed"),
        ("cancel", _cancel, "stop a backfill: no new partitions; running ones finish"),
    ):
        command = _add(sub, name, handler, text, common)
        command.add_argument("id", metavar="ID", help="a backfill id (a unique prefix is enough)")
        _json(command)


def _add(
    commands: Commands,
    name: str,
    handler: Handler | None,
    help_text: str,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("assets", nargs="+", metavar="ASSET", help="the assets to backfill")
    which = parser.add_argument_group("partitions (one of)")
    which.add_argument("--from", dest="start", metavar="P", help="the first partition")
    which.add_argument("--to", dest="end", metavar="P", help="the last partition (included)")
    which.add_argument(
        "--partitions",
        action="append",
        metavar="P1,P2",
        help="these partitions (comma-separated; repeatable)",
    )
    which.add_argument("--all", action="store_true", help="every partition defined now")
    parser.add_argument(
        "--with-deps", action="store_true", help="also materialize their upstream assets"
    )
    parser.add_argument(
        "--parallel", type=_positive, default=4, metavar="N", help="assets at once (default: 4)"
    )
    parser.add_argument(
        "--chunk-size", type=_positive, default=500, metavar="N", help="partitions per run"
    )
    parser.add_argument(
        "--force", action="store_true", help="also rerun partitions that already succeeded"
    )
    _json(parser)


def _json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


@contextmanager
def _pipeline(args: argparse.Namespace) -> Iterator[Pipeline]:
    pipeline = load_pipeline(find_spec(getattr(args, "pipeline", None)))
    try:
        yield pipeline
    finally:
        pipeline.close()


def _usage_errors(handler: Handler) -> Handler:
    """An unknown backfill id is bad input (exit 2), like an unknown asset."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except UnknownBackfillError as exc:
            print(f"flowstone: error: {exc}", file=sys.stderr)
            return _USAGE

    return wrapped


# --- running ---------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        definition = _definition(pipeline, args.assets, args.with_deps)
        chosen: dict[str, Any] = {}
        if args.all:
            chosen["partitions"] = "all"
        if args.partitions:
            texts = [t.strip() for item in args.partitions for t in item.split(",") if t.strip()]
            chosen["partitions"] = [definition.parse(t) for t in texts]
        if args.start is not None:
            chosen["start"] = definition.parse(args.start)
        if args.end is not None:
            chosen["end"] = definition.parse(args.end)
        ways = (args.all, bool(args.partitions), args.start is not None or args.end is not None)
        if sum(ways) > 1:
            raise PartitionError("Give one of --partitions, --from/--to and --all, not several.")
        with _Progress(sys.stderr) as progress:
            result = pipeline.backfill(
                args.assets,
                with_upstream=args.with_deps,
                parallel=args.parallel,
                force=args.force,
                chunk_size=args.chunk_size,
                progress=progress,
                **chosen,
            )
    return _finish(result, args.json)


@_usage_errors
def _resume(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline, _Progress(sys.stderr) as progress:
        result = pipeline.resume_backfill(args.id, progress=progress)
    return _finish(result, args.json)


@_usage_errors
def _retry(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline, _Progress(sys.stderr) as progress:
        result = pipeline.retry_failed_backfill(args.id, progress=progress)
    return _finish(result, args.json)


@_usage_errors
def _cancel(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        record = pipeline.cancel_backfill(args.id)
    _emit(output.to_json(backfill_dict(record)) if args.json else _summary_table([record]))
    what = (
        "canceled"
        if record.status == BackfillStatus.CANCELED
        else "asked to stop (partitions running now finish)"
    )
    print(f"Backfill {record.id} {what}.", file=sys.stderr)
    return _OK


def _definition(pipeline: Pipeline, assets: Sequence[str], with_deps: bool) -> PartitionsDefinition:
    for name in pipeline.graph.select(assets, with_upstream=with_deps):
        definition = pipeline.graph.get(name).partitioned_by
        if definition is not None:
            return definition
    raise PartitionError(
        f"None of {', '.join(assets)} is partitioned: use `flowstone materialize` instead."
    )


def _finish(result: BackfillResult, as_json: bool) -> int:
    record = result.backfill
    if as_json:
        _emit(output.to_json({**backfill_dict(record), "run_ids": list(result.run_ids)}))
    else:
        _emit(_summary_table([record]))
    took = output.human_duration(result.elapsed_s * 1000.0)
    if result.ok:
        print(f"Backfill {record.id} succeeded in {took}.", file=sys.stderr)
        return _OK
    first = result.failures[0] if result.failures else None
    detail = "" if first is None else f" First: {_failure_line(first)}."
    print(
        f"flowstone: error: backfill {record.id} {record.status.value}: {record.failed} failed, "
        f"{record.canceled} canceled, {record.remaining} not reached.{detail} See `flowstone "
        f"backfill show {record.id[:8]}`; rerun with `flowstone backfill resume "
        f"{record.id[:8]}` (everything not successful) or `retry-failed` (failures only).",
        file=sys.stderr,
    )
    return _FAILED


# --- reading ---------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        records = pipeline.backfills(limit=args.limit)
    if args.json:
        _emit(output.to_json([backfill_dict(r) for r in records]))
    elif records:
        _emit(_summary_table(records))
    else:
        print("No backfills yet: start one with `flowstone backfill run`.", file=sys.stderr)
    return _OK


@_usage_errors
def _show(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        report = pipeline.backfill_status(args.id, failures=args.limit)
    if args.json:
        _emit(output.to_json(report_dict(report)))
    else:
        _emit(report_text(report))
    return _OK


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
        f"failed, {b.canceled} canceled, {b.remaining} not reached",
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
        more = b.failed + b.count(PartitionOutcome.CANCELED) - len(report.failures)
        text += "\n" + output.table(("partition", "outcome", "asset", "tries", "error"), rows)
        if more > 0:
            text += f"... and {more} more (--limit N, or --json)\n"
    return text


def _summary_table(records: Sequence[BackfillRecord]) -> str:
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


def _failure_line(f: BackfillPartition) -> str:
    where = f"{f.asset} {output.human_partition(f.partition_key)}"
    return f"{where}: {output.first_line(f'{f.error_type}: {f.error_message}', 120)}"


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- progress --------------------------------------------------------------------------------
class _Progress:
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

    def __enter__(self) -> _Progress:
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
        f"{p.running} running, {p.remaining} left, {rate}, ETA {eta}"
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_EPILOG = """\
examples:
  flowstone backfill run daily_report --from 2024-01-01 --to 2024-12-31 --parallel 8
  flowstone backfill run events daily_total --partitions 2025-01-03,2025-01-09 --force
  flowstone backfill run daily_report --all --with-deps
  flowstone backfill list
  flowstone backfill show 3f2a9c1e
  flowstone backfill resume 3f2a9c1e        # after a crash or a cancel
  flowstone backfill retry-failed 3f2a9c1e  # only the partitions that failed
  flowstone backfill cancel 3f2a9c1e

Partitions that already succeeded are skipped (and counted) unless --force. A backfill runs its
partitions in chunks of --chunk-size, one run per chunk; progress goes to stderr, the backfill
(or JSON with --json) to stdout. Exit code 1 when partitions failed or were canceled.
"""

__all__ = ["backfill_dict", "progress_line", "register", "report_dict", "report_text"]
