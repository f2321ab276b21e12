"""``flowstone runs``: list, show and cancel runs; and following a run the workers execute.

``materialize`` hands runs it submitted to the distributed executor to :func:`report_submitted`,
which prints the run (or, with ``--wait``, a progress line on stderr until it ends).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flowstone.cli import output
from flowstone.cli.loading import find_spec, load_pipeline
from flowstone.errors import UnknownRunError
from flowstone.pipeline import Pipeline
from flowstone.records import MaterializationRecord, RunRecord, RunResult, RunStatus, Status

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

EPILOG = """\
examples:
  flowstone runs                      the latest 20 runs
  flowstone runs list --limit 50 --json
  flowstone runs show 3f2a9c1e        a run and each of its steps (a unique id prefix is enough)
  flowstone runs cancel 3f2a9c1e      stop a run on the workers

Cancelling marks the steps that have not started `cancelled` and removes their jobs from the
queue; running steps are asked to abort (an asset function finishes what it is doing, and
nothing below it runs). Only runs on the distributed executor can be cancelled.
"""


def add_arguments(sub: argparse.ArgumentParser) -> None:
    """The ``runs`` command's arguments."""
    sub.add_argument(
        "action",
        nargs="?",
        choices=("list", "show", "cancel"),
        default="list",
        help="list (default), show RUN, or cancel RUN",
    )
    sub.add_argument("run", nargs="?", metavar="RUN", help="a run id, or a unique prefix of one")
    sub.add_argument(
        "--limit", type=int, default=20, metavar="N", help="list: the newest N runs (default: 20)"
    )
    sub.add_argument("--json", action="store_true", help="print JSON for scripts")


def handle(args: argparse.Namespace) -> int:
    """Run ``flowstone runs``."""
    if args.action != "list" and not args.run:
        _error(f"`flowstone runs {args.action}` needs a run id: flowstone runs {args.action} RUN")
        return EXIT_USAGE
    with _pipeline(args) as pipeline:
        if args.action == "list":
            return _list(pipeline, args)
        matches = matching_runs(pipeline, args.run)
        if len(matches) > 1:
            _error(f"run id prefix {args.run!r} matches {len(matches)} runs; give more of it.")
            return EXIT_USAGE
        run_id = matches[0] if matches else args.run
        if args.action == "show":
            return _show(pipeline, run_id, as_json=args.json)
        return _cancel(pipeline, run_id, as_json=args.json)


COMMAND = ("runs", handle, "list, show or cancel runs", EPILOG, add_arguments)


# --- following a submitted run ---------------------------------------------------------------
def report_submitted(pipeline: Pipeline, result: RunResult, *, wait: bool, as_json: bool) -> int:
    """Print a run submitted to the workers; with ``wait``, follow it to its end first."""
    if not wait:
        _note(
            f"Run {result.run_id} submitted: {len(result.materializations)} steps for the "
            f"workers. Follow it: `flowstone runs show {output.short_id(result.run_id)}`."
        )
        _emit(output.to_json(output.run_dict(result)) if as_json else output.run_table(result))
        return EXIT_OK
    progress = _ProgressLine(result.run_id)
    result = pipeline.wait_for_run(result.run_id, on_progress=progress)
    progress.close()
    _emit(output.to_json(output.run_dict(result)) if as_json else output.run_table(result))
    if result.ok:
        _note(f"Run {result.run_id} succeeded.")
        return EXIT_OK
    if result.status == RunStatus.WAITING_APPROVAL:
        # As in-process: waiting for a person is not a failure.
        _note(
            f"Run {result.run_id} is waiting for approval: `flowstone approvals list`, then "
            "approve or reject; the workers continue it."
        )
        return EXIT_OK
    shown = [
        f"{r.asset}: {r.error_type}: {output.first_line(r.error_message, 120)}"
        for r in result.failed
    ]
    _error(
        f"run {result.run_id} {result.status.value}" + (f" ({'; '.join(shown)})" if shown else "")
    )
    return EXIT_FAILED


class _ProgressLine:
    """One status line on stderr, rewritten in place on a terminal, else one line per change."""

    def __init__(self, run_id: str) -> None:
        self._run = output.short_id(run_id)
        self._tty = sys.stderr.isatty()
        self._width = 0

    def __call__(self, run: RunRecord, records: Sequence[MaterializationRecord]) -> None:
        line = f"run {self._run}: {progress_text(records)}"
        if self._tty:
            sys.stderr.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self._tty and self._width:
            sys.stderr.write("\n")


def progress_text(records: Sequence[MaterializationRecord]) -> str:
    """``12/50 done: 10 success, 1 failed, 1 skipped; 3 running``."""
    counts = Counter(r.status for r in records)
    done = sum(n for status, n in counts.items() if status.is_final)
    final = [f"{counts[s]} {s.value}" for s in Status if s.is_final and counts[s]]
    text = f"{done}/{len(records)} done" + (f": {', '.join(final)}" if final else "")
    if counts[Status.RUNNING]:
        text += f"; {counts[Status.RUNNING]} running"
    return text


# --- list, show, cancel ----------------------------------------------------------------------
def _list(pipeline: Pipeline, args: argparse.Namespace) -> int:
    runs = pipeline.store.list_runs(limit=max(1, args.limit))
    steps = {
        run.id: pipeline.store.list_materializations(run_id=run.id, limit=None) for run in runs
    }
    if args.json:
        _emit(output.to_json([_run_dict(run, steps[run.id]) for run in runs]))
        return EXIT_OK
    if not runs:
        _note("No runs recorded yet.")
        return EXIT_OK
    rows = [
        (
            output.short_id(run.id),
            run.status.value,
            ", ".join(run.targets),
            output.human_partition(run.partition_key),
            progress_text(steps[run.id]).split(":")[0],
            output.human_time(run.created_at),
            output.human_time(run.completed_at),
        )
        for run in runs
    ]
    _emit(
        output.table(("run", "status", "targets", "partition", "steps", "created", "ended"), rows)
    )
    return EXIT_OK


def _show(pipeline: Pipeline, run_id: str, *, as_json: bool) -> int:
    run = pipeline.store.get_run(run_id)
    if run is None:
        raise UnknownRunError(run_id)
    records = list(reversed(pipeline.store.list_materializations(run_id=run_id, limit=None)))
    if as_json:
        _emit(output.to_json(_run_dict(run, records)))
        return EXIT_OK
    _emit(
        f"run {run.id}  {run.status.value}  {progress_text(records)}\n"
        f"targets {', '.join(run.targets)}  created {output.human_time(run.created_at)}  "
        f"ended {output.human_time(run.completed_at)}\n\n"
    )
    rows = [
        (
            r.asset,
            output.human_partition(r.partition_key),
            r.status.value,
            str(r.attempt),
            output.human_duration(r.duration_ms),
            output.first_line(
                None if r.error_type is None else f"{r.error_type}: {r.error_message}", 80
            ),
        )
        for r in records
    ]
    _emit(
        output.table(
            ("asset", "partition", "status", "attempt", "duration", "error"), rows, right=[3, 4]
        )
    )
    return EXIT_OK


def _cancel(pipeline: Pipeline, run_id: str, *, as_json: bool) -> int:
    done = pipeline.cancel_run(run_id, actor="cli")
    if as_json:
        _emit(
            output.to_json(
                {
                    "run_id": done.run.id,
                    "status": done.run.status.value,
                    "cancelled_steps": done.cancelled_steps,
                    "jobs_cancelled": done.jobs_cancelled,
                    "jobs_aborting": done.jobs_aborting,
                }
            )
        )
    elif done.run.status != RunStatus.CANCELLED or not (done.cancelled_steps or done.jobs_aborting):
        _note(f"Run {run_id} is {done.run.status.value}: nothing to cancel.")
    else:
        _note(
            f"Run {run_id} cancelled: {done.cancelled_steps} steps will not run, "
            f"{done.jobs_aborting} running asked to abort."
        )
    return EXIT_OK


def matching_runs(pipeline: Pipeline, text: str) -> list[str]:
    """The ids of the runs ``text`` names: the run with that id, else those it prefixes
    (tables show the first 8 characters)."""
    if pipeline.store.get_run(text) is not None:
        return [text]
    return [r.id for r in pipeline.store.list_runs(limit=10_000) if r.id.startswith(text)]


def _run_dict(run: RunRecord, records: Sequence[MaterializationRecord]) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "status": run.status.value,
        "targets": list(run.targets),
        "partition_key": run.partition_key,
        "created_at": output.iso(run.created_at),
        "completed_at": output.iso(run.completed_at),
        "tags": dict(run.tags),
        "steps": {s.value: n for s, n in Counter(r.status for r in records).items()},
        "materializations": [output.materialization_dict(r) for r in records],
    }


# --- plumbing --------------------------------------------------------------------------------
@contextmanager
def _pipeline(args: argparse.Namespace) -> Iterator[Pipeline]:
    pipeline = load_pipeline(find_spec(getattr(args, "pipeline", None)))
    try:
        yield pipeline
    finally:
        pipeline.close()


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _error(message: str) -> None:
    print(f"flowstone: error: {message}", file=sys.stderr)
