"""``flowstone backfill run|list|show|resume|retry-failed|cancel``.

``run``, ``resume`` and ``retry-failed`` show a live progress line on stderr (see
:mod:`flowstone.cli.backfill_output`), then print the backfill (a table, or JSON) on stdout.

Exit codes follow ``flowstone --help``: 0 when the backfill succeeded, 1 when partitions failed
or were canceled (or the backfill is busy elsewhere), 2 for bad input (an unknown asset or
backfill id, a bad partition), 3 when the pipeline or the store cannot be opened.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flowstone.backfill import BackfillResult
from flowstone.backfill_records import (
    BackfillStatus,
)
from flowstone.cli import output
from flowstone.cli.backfill_output import (
    Progress,
    backfill_dict,
    failure_line,
    report_dict,
    report_text,
    summary_table,
)
from flowstone.cli.commands import Commands, Handler, add_command
from flowstone.cli.loading import find_spec, load_pipeline
from flowstone.errors import PartitionError, UnknownBackfillError
from flowstone.partitions import PartitionsDefinition
from flowstone.pipeline import Pipeline

# The exit codes of flowstone.cli.app (which imports this module, so they are not imported).
_OK, _FAILED, _USAGE = 0, 1, 2


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
    return add_command(
        commands,
        name,
        None if handler is None else handler,
        help_text,
        _EPILOG,
        common=common,
    )


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
        with Progress(sys.stderr) as progress:
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
    with _pipeline(args) as pipeline, Progress(sys.stderr) as progress:
        result = pipeline.resume_backfill(args.id, progress=progress)
    return _finish(result, args.json)


@_usage_errors
def _retry(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline, Progress(sys.stderr) as progress:
        result = pipeline.retry_failed_backfill(args.id, progress=progress)
    return _finish(result, args.json)


@_usage_errors
def _cancel(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        record = pipeline.cancel_backfill(args.id)
    _emit(output.to_json(backfill_dict(record)) if args.json else summary_table([record]))
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
        _emit(summary_table([record]))
    took = output.human_duration(result.elapsed_s * 1000.0)
    if result.ok:
        print(f"Backfill {record.id} succeeded in {took}.", file=sys.stderr)
        return _OK
    if record.status == BackfillStatus.WAITING:
        # As for a run: waiting for a person is not a failure (exit 0).
        print(
            f"Backfill {record.id} ran in {took}; {record.waiting} partition(s) wait for "
            f"approval: `flowstone approvals list`, decide them, then `flowstone backfill "
            f"resume {record.id[:8]}` records how they ended.",
            file=sys.stderr,
        )
        return _OK
    first = result.failures[0] if result.failures else None
    detail = "" if first is None else f" First: {failure_line(first)}."
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
        _emit(summary_table(records))
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


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


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

__all__ = ["register"]
