"""``flowstone approvals list|show|approve|reject|expire|resume``.

Every command first expires the requests whose timeout has passed (the sweep), so what it
shows and decides is current without any process keeping a timer. Approving continues the run
here, in this process: the asset runs again, then the assets below it.

Exit codes follow ``flowstone --help``: 0 when the decision was recorded (and the continued run
did not fail), 1 when the run failed or the request was already decided, 2 for bad input (an
unknown request id, bad JSON, a bad partition), 3 when the pipeline or the store cannot be
opened.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.cli import output
from flowstone.cli.approval_views import approval_dict, approval_table, approval_text
from flowstone.cli.commands import Commands, Handler, add_command
from flowstone.cli.loading import find_spec, load_pipeline
from flowstone.errors import ApprovalNotFoundError, PartitionError
from flowstone.partitions import Partition
from flowstone.pipeline import Pipeline
from flowstone.records import RunResult, RunStatus

# The exit codes of flowstone.cli.app (which imports this module, so they are not imported).
_OK, _FAILED, _USAGE = 0, 1, 2
_STATUSES = [s.value for s in ApprovalStatus]


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Add ``flowstone approvals ...`` to the ``flowstone`` parser."""
    approvals = _add(commands, "approvals", None, "list and decide approval requests", common)
    sub = approvals.add_subparsers(title="approvals commands", dest="approvals_command")
    sub.metavar = "COMMAND"
    sub.required = True

    listing = _add(sub, "list", _list, "list approval requests, oldest first", common)
    listing.add_argument(
        "--status",
        choices=[*_STATUSES, "all"],
        default="pending",
        help="only requests in this state (default: pending)",
    )
    listing.add_argument("--asset", metavar="ASSET", help="only this asset's requests")
    listing.add_argument("--run", metavar="RUN_ID", help="only this run's requests")
    listing.add_argument(
        "--limit", type=_positive, default=100, metavar="N", help="at most N (default: 100)"
    )
    _json_option(listing)

    show = _add(sub, "show", _show, "show one request with its context and decision", common)
    show.add_argument("id", metavar="ID", help="a request id (a unique prefix is enough)")
    _json_option(show)

    approve = _add(sub, "approve", _approve, "approve requests and continue their runs", common)
    _decision_arguments(approve, reason_required=False)
    approve.add_argument(
        "--input",
        type=_json_object,
        metavar="JSON",
        help='a JSON object for the resumed asset (ctx.approval.input), e.g. \'{"to": "web"}\'',
    )
    reject = _add(sub, "reject", _reject, "reject requests: the assets fail", common)
    _decision_arguments(reject, reason_required=True)

    expire = _add(sub, "expire", _expire, "expire the requests past their timeout", common)
    _json_option(expire)

    resume = _add(sub, "resume", _resume, "finish continuing a run after a crash", common)
    resume.add_argument("run", metavar="RUN_ID", help="the run (a unique prefix is enough)")
    _json_option(resume)


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
        None if handler is None else _usage_errors(handler),
        help_text,
        _EPILOG,
        common=common,
    )


def _decision_arguments(parser: argparse.ArgumentParser, *, reason_required: bool) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="a request id (a unique prefix is ok)")
    which.add_argument(
        "--all", action="store_true", help="every pending request chosen by the options below"
    )
    parser.add_argument("--by", required=True, metavar="NAME", help="who decides")
    parser.add_argument(
        "--reason", required=reason_required, metavar="TEXT", help="why (kept in the audit log)"
    )
    bulk = parser.add_argument_group("choosing requests for --all")
    bulk.add_argument("--asset", metavar="ASSET", help="only this asset's requests")
    bulk.add_argument(
        "--partition", action="append", metavar="P", help="only this partition (repeatable)"
    )
    bulk.add_argument(
        "--partition-range",
        type=_range,
        metavar="FROM..TO",
        help="only partitions from FROM to TO, both included (e.g. 2025-01-01..2025-01-30)",
    )
    bulk.add_argument("--run", metavar="RUN_ID", help="only this run's requests")
    _json_option(parser)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {text!r}")
    return value


def _range(text: str) -> tuple[str, str]:
    start, sep, end = text.partition("..")
    if not sep or not start.strip() or not end.strip():
        raise argparse.ArgumentTypeError(f"expected FROM..TO, got {text!r}")
    return start.strip(), end.strip()


def _usage_errors(handler: Handler) -> Handler:
    """An unknown request id is bad input (exit 2), like an unknown asset."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ApprovalNotFoundError as exc:
            _error(str(exc))
            return _USAGE

    return wrapped


@contextmanager
def _pipeline(args: argparse.Namespace) -> Iterator[Pipeline]:
    pipeline = load_pipeline(find_spec(getattr(args, "pipeline", None)))
    try:
        yield pipeline
    finally:
        pipeline.close()


def _sweep(pipeline: Pipeline) -> None:
    expired = pipeline.expire_approvals()
    if expired:
        _note(f"Expired {_count(len(expired))} past their timeout: {_ids(expired)}.")


# --- commands --------------------------------------------------------------------------------
def _list(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        _sweep(pipeline)
        status = None if args.status == "all" else args.status
        found = pipeline.approvals(status=status, asset=args.asset, run_id=args.run, limit=None)
    shown = found[: args.limit]
    if args.json:
        _emit(output.to_json([approval_dict(a) for a in shown]))
    elif not shown:
        _note(f"No {'' if status is None else status + ' '}approval requests.")
    else:
        _emit(approval_table(shown))
    if len(found) > len(shown):
        _note(f"Showing {len(shown)} of {len(found)}; raise --limit to see more.")
    return _OK


def _show(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        _sweep(pipeline)
        approval = pipeline.get_approval(args.id)
    _emit(output.to_json(approval_dict(approval)) if args.json else approval_text(approval))
    return _OK


def _approve(args: argparse.Namespace) -> int:
    return _decide(args, ApprovalStatus.APPROVED)


def _reject(args: argparse.Namespace) -> int:
    return _decide(args, ApprovalStatus.REJECTED)


def _decide(args: argparse.Namespace, status: ApprovalStatus) -> int:
    chosen = args.asset or args.partition or args.partition_range or args.run
    if args.id is not None and chosen:
        _error("--asset, --partition, --partition-range and --run choose requests for --all.")
        return _USAGE
    with _pipeline(args) as pipeline:
        _sweep(pipeline)
        if args.all:
            return _decide_all(pipeline, args, status)
        approval_id = pipeline.get_approval(args.id).id
        if status == ApprovalStatus.APPROVED:
            result = pipeline.approve(approval_id, by=args.by, reason=args.reason, input=args.input)
        else:
            result = pipeline.reject(approval_id, by=args.by, reason=args.reason)
        approval = pipeline.get_approval(approval_id)
    if args.json:
        _emit(output.to_json({"approval": approval_dict(approval), "run": output.run_dict(result)}))
    else:
        _emit(output.run_table(result))
    where = f"{approval.asset} [{output.human_partition(approval.partition_key)}]"
    _note(f"{status.value.capitalize()} {output.short_id(approval.id)} ({where}). {_run(result)}")
    # A rejection fails its run by design; an approval whose run then failed did not go well.
    failed = status == ApprovalStatus.APPROVED and result.status == RunStatus.FAILED
    return _FAILED if failed else _OK


def _decide_all(pipeline: Pipeline, args: argparse.Namespace, status: ApprovalStatus) -> int:
    partitions: list[Partition] | None = None
    between: tuple[Partition, Partition] | None = None
    if args.partition or args.partition_range:
        if args.asset is None:
            raise PartitionError(
                "--partition and --partition-range need --asset: its partitions read them."
            )
        partitions = [pipeline.parse_partition(args.asset, p) for p in args.partition or ()]
        if args.partition_range is not None:
            start, end = args.partition_range
            between = (
                pipeline.parse_partition(args.asset, start),
                pipeline.parse_partition(args.asset, end),
            )
    decide = pipeline.approve_all if status == ApprovalStatus.APPROVED else pipeline.reject_all
    options: dict[str, Any] = {"input": args.input} if status == ApprovalStatus.APPROVED else {}
    decided = decide(
        args.asset,
        by=args.by,
        reason=args.reason,
        partitions=partitions,
        between=between,
        run_id=args.run,
        **options,
    )
    if args.json:
        _emit(output.to_json([approval_dict(a) for a in decided]))
    elif decided:
        _emit(approval_table(decided))
    _note(f"{status.value.capitalize()} {_count(len(decided))}." if decided else "None matched.")
    return _OK


def _expire(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        expired = pipeline.expire_approvals()
    if args.json:
        _emit(output.to_json([approval_dict(a) for a in expired]))
    elif expired:
        _emit(approval_table(expired))
    _note(f"Expired {_count(len(expired))}." if expired else "Nothing is past its timeout.")
    return _OK


def _resume(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        _sweep(pipeline)
        matches = [r.id for r in pipeline.runs(limit=10_000) if r.id.startswith(args.run)]
        if len(matches) != 1:
            how = "no run" if not matches else f"{len(matches)} runs"
            _error(f"Run id {args.run!r} matches {how}; give a full id (see `flowstone audit`).")
            return _USAGE
        result = pipeline.resume_run(matches[0])
    _emit(output.to_json(output.run_dict(result)) if args.json else output.run_table(result))
    _note(_run(result))
    return _FAILED if result.status == RunStatus.FAILED else _OK


# --- messages --------------------------------------------------------------------------------
def _run(result: RunResult) -> str:
    state = {
        RunStatus.SUCCESS: "succeeded",
        RunStatus.FAILED: "failed",
        RunStatus.WAITING_APPROVAL: "still waits for other approvals",
        RunStatus.RUNNING: "is still executing; it continues when it ends",
    }.get(result.status, result.status.value)
    return f"Run {result.run_id} {state}."


def _count(n: int) -> str:
    return f"{n} request{'s' if n != 1 else ''}"


def _ids(approvals: Sequence[ApprovalRecord]) -> str:
    return ", ".join(output.short_id(a.id) for a in approvals)


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _error(message: str) -> None:
    print(f"flowstone: error: {message}", file=sys.stderr)


_EPILOG = """\
examples:
  flowstone approvals list
  flowstone approvals list --status all --asset publish --json
  flowstone approvals show 3f2a9c1e
  flowstone approvals approve 3f2a9c1e --by ana --reason "totals checked" --input '{"to": "web"}'
  flowstone approvals reject 3f2a9c1e --by ana --reason "the total looks wrong"
  flowstone approvals approve --all --asset publish --partition-range 2025-01-01..2025-01-30 \\
      --by ana
  flowstone approvals expire
  flowstone approvals resume 3f2a9c1e

Every command first expires the requests past their timeout. Approving runs the asset again,
here, with the decision in ctx.approval, then the assets that waited below it.
"""
