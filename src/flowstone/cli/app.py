"""The ``flowstone`` command: the argparse parser, one handler per command, exit codes.

Handlers print data on stdout and messages on stderr, and return an exit code. Errors travel as
exceptions up to :func:`main`, which prints one ``flowstone: error: <message>`` line (the
traceback too with ``--debug``) and maps the error to an exit code (see ``EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import flowstone
from flowstone import config
from flowstone.cli import approvals, backfill, output, schedules
from flowstone.cli import runs as runs_cli  # --- distributed execution ---
from flowstone.cli import worker as worker_cli  # --- distributed execution ---
from flowstone.cli.commands import Handler
from flowstone.cli.commands import add_command as _add_command
from flowstone.cli.loading import (
    PIPELINE_ENV,
    PipelineLoadError,
    find_spec,
    load_pipeline,
)
from flowstone.errors import (
    DefinitionError,
    FlowStoneError,
    PartitionError,
    StoreError,
    UnknownAssetError,
)
from flowstone.partitions import Partition, encode_partition
from flowstone.pipeline import Pipeline
from flowstone.planner import UNPARTITIONED_KEY
from flowstone.records import MaterializationRecord, RunResult, RunStatus, Status
from flowstone.telemetry import TelemetryEvent

PROG = "flowstone"

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3

EXIT_CODES = """\
exit codes:
  0  success (or a run now waiting for approval: see `flowstone approvals`)
  1  a run had failed or skipped materializations (or another operation failed)
  2  bad usage or input: unknown asset, bad partition, invalid pipeline definition
  3  environment problem: the pipeline cannot be located or imported, or the metadata
     store cannot be opened"""

_T = TypeVar("_T")


class UsageError(FlowStoneError):
    """The command line is invalid."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flowstone`` command line and return its exit code.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    database_url = getattr(args, "database_url", None)
    if database_url:
        # Before the pipeline module is imported: a Pipeline built without a store opens
        # config.database_url() on first use.
        os.environ[config.DATABASE_URL_ENV] = database_url
    handler: Handler = args.handler
    try:
        return handler(args)
    except FlowStoneError as exc:
        return _report(exc, debug, exit_code(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`flowstone history x | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        # A bug, in FlowStone or in code it called: say so in one line unless asked for more.
        return _report(exc, debug, EXIT_RUN_FAILED, unexpected=True)


def exit_code(exc: FlowStoneError) -> int:
    """The exit code for an error that ends a command."""
    if isinstance(exc, DefinitionError | PartitionError | UsageError):
        return EXIT_USAGE
    if isinstance(exc, StoreError | PipelineLoadError):
        return EXIT_ENVIRONMENT
    return EXIT_RUN_FAILED


def _report(exc: BaseException, debug: bool, code: int, *, unexpected: bool = False) -> int:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    message = f"unexpected {type(exc).__name__}: {exc}" if unexpected else str(exc)
    if unexpected and not debug:
        message += " (rerun with --debug for the traceback)"
    _error(message)
    return code


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- the parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The full ``flowstone`` argument parser."""
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="FlowStone: materialize assets and inspect their runs, lineage and audit log.",
        epilog=_TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {flowstone.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    commands.required = True
    for name, handler, help_text, epilog, add_arguments in _COMMANDS:
        add_arguments(_add_command(commands, name, handler, help_text, epilog, common=common))
    schedules.register(commands, common)  # schedule, sensor, scheduler
    backfill.register(commands, common)  # backfill run|list|show|resume|retry-failed|cancel
    approvals.register(commands, common)  # approvals list|show|approve|reject|expire|resume
    db = _add_command(
        commands, "db", None, "manage the metadata database", _DB_EPILOG, common=common
    )
    db_commands = db.add_subparsers(title="db commands", dest="db_command", metavar="COMMAND")
    db_commands.required = True
    for name, handler, help_text in (
        ("upgrade", _db_upgrade, "migrate the database to this FlowStone's schema"),
        ("current", _db_current, "print the database's schema revision"),
    ):
        _json_option(_add_command(db_commands, name, handler, help_text, _DB_EPILOG, common=common))
    return parser


def _global_options() -> argparse.ArgumentParser:
    # Accepted before and after the command (`flowstone -p x status`, `flowstone status -p x`);
    # SUPPRESS keeps a subcommand's parser from resetting what came before it.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument(
        "-p",
        "--pipeline",
        metavar="SPEC",
        default=argparse.SUPPRESS,
        help="the pipeline: package.module:attribute or path/to/file.py:attribute "
        f"(default: ${PIPELINE_ENV}, then [tool.flowstone] pipeline in ./pyproject.toml)",
    )
    group.add_argument(
        "--database-url",
        metavar="URL",
        default=argparse.SUPPRESS,
        help=f"the metadata store URL (sets ${config.DATABASE_URL_ENV}; default: "
        f"sqlite:///${config.HOME_ENV}/flowstone.db)",
    )
    group.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and debug logs",
    )
    return common


def _materialize_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("assets", nargs="+", metavar="ASSET", help="the assets to materialize")
    _partition_option(sub, "the partition to materialize (e.g. 2025-01-15, us|2025-01-15)")
    sub.add_argument(
        "--with-deps",
        action="store_true",
        help="also materialize everything they depend on, first (each asset once)",
    )
    sub.add_argument(
        "--io-manager", metavar="NAME", help="store every value of this run with this I/O manager"
    )
    sub.add_argument(
        "--tag",
        action="append",
        type=_tag,
        default=[],
        metavar="KEY=VALUE",
        help="a label stored on the run (repeatable)",
    )
    sub.add_argument(  # --- distributed execution ---
        "--wait",
        action="store_true",
        help="with the distributed executor: follow the run to its end (progress on stderr)",
    )
    _json_option(sub)


def _status_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("assets", nargs="*", metavar="ASSET", help="only these assets")
    _json_option(sub)


def _history_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("asset", metavar="ASSET")
    _partition_option(sub, "only this partition")
    sub.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="at most N (default: 20)"
    )
    sub.add_argument(
        "--errors",
        action="store_true",
        help="only failures, each with its error type, message and traceback",
    )
    _json_option(sub)


def _lineage_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "direction",
        choices=("upstream", "downstream", "impact"),
        help="upstream: the materializations it read; downstream: what read it; impact: "
        "downstream with each dependent's latest status",
    )
    sub.add_argument("asset", metavar="ASSET")
    _partition_option(sub, "the partition (required for a partitioned asset)")
    sub.add_argument(
        "--depth", type=_positive, default=10, metavar="N", help="at most N steps (default: 10)"
    )
    _json_option(sub)


def _graph_arguments(sub: argparse.ArgumentParser) -> None:
    formats = sub.add_mutually_exclusive_group()
    formats.add_argument(
        "--format",
        choices=("text", "mermaid", "dot"),
        default="text",
        help="text (default), Mermaid, or Graphviz dot",
    )
    formats.add_argument("--json", action="store_true", help="the assets as JSON")


def _audit_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--run", metavar="RUN_ID", help="only this run (a unique prefix is enough)")
    sub.add_argument("--asset", metavar="ASSET", help="only events about this asset")
    sub.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="the last N (default: 50)"
    )
    _json_option(sub)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _partition_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--partition", metavar="P", help=help_text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


@contextmanager
def _pipeline(args: argparse.Namespace) -> Iterator[Pipeline]:
    pipeline = load_pipeline(find_spec(getattr(args, "pipeline", None)))
    try:
        yield pipeline
    finally:
        pipeline.close()


def _parse_partition(pipeline: Pipeline, asset: str, text: str | None) -> Partition:
    """``--partition`` for one asset, parsed by the asset's own partitions definition."""
    definition = pipeline.graph.get(asset).partitioned_by
    if text is None:
        return None
    if definition is None:
        raise PartitionError(f"Asset {asset!r} is not partitioned: drop --partition.")
    return definition.parse(text)


# --- materialize -----------------------------------------------------------------------------
class _Progress:
    """Prints one line on stderr as each materialization ends (called from worker threads)."""

    def __init__(self, width: int, partition_key: str | None = None) -> None:
        self._width = width
        # Steps of other partitions (hours below a requested day) name theirs.
        self._shown_key = partition_key
        self._lock = threading.Lock()
        self._ok, self._failed, self._skipped = output.status_marks(sys.stderr)

    def __call__(self, event: TelemetryEvent) -> None:
        meta = event.metadata
        asset = str(meta.get("asset", "?"))
        key = meta.get("partition")
        if isinstance(key, str) and key not in (self._shown_key, UNPARTITIONED_KEY):
            asset += f" [{output.human_partition(key)}]"
        asset = asset.ljust(self._width)
        if event.name == "materialization.stop":
            duration = output.human_duration(event.measurements.get("duration_ms"))
            line = f"{self._ok} {asset}  {duration}"
        elif event.name == "materialization.exception":
            error = output.first_line(str(meta.get("error", "")))
            line = f"{self._failed} {asset}  {meta.get('error_type')}: {error}"
        elif event.name == "materialization.skipped":
            line = f"{self._skipped} {asset}  skipped ({meta.get('reason')})"
        elif event.name == "materialization.waiting":
            line = f"? {asset}  waiting for approval {output.short_id(meta.get('approval_id'))}"
        else:
            return
        with self._lock:
            _note(line.rstrip())


def _materialize(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        selection = pipeline.graph.select(args.assets, with_upstream=args.with_deps)
        partition: Partition = None
        if args.partition is not None:
            # The named assets' definition first: with partition mappings, an upstream asset
            # may be partitioned otherwise (hours below a requested day).
            named = [n for n in selection if n in args.assets] + list(selection)
            definition = next(
                (d for d in (pipeline.graph.get(n).partitioned_by for n in named) if d),
                None,
            )
            # With no partitioned asset, Pipeline says the partition cannot apply.
            partition = args.partition if definition is None else definition.parse(args.partition)
        shown = "" if partition is None else f" for partition {args.partition}"
        count = f"{len(selection)} asset{'s' if len(selection) != 1 else ''}"
        _note(f"Materializing {count}{shown}...")
        unsubscribe = pipeline.subscribe(
            _Progress(
                max(len(n) for n in selection),
                None if partition is None else encode_partition(partition),
            ),
            prefix="materialization.",
        )
        clock = time.perf_counter()
        try:
            result = pipeline.materialize(
                *args.assets,
                partition=partition,
                with_upstream=args.with_deps,
                io_manager=args.io_manager,
                tags=dict(args.tag),
            )
        finally:
            unsubscribe()
        if result.status == RunStatus.RUNNING:  # --- distributed execution: workers run it ---
            return runs_cli.report_submitted(pipeline, result, wait=args.wait, as_json=args.json)
        elapsed = (time.perf_counter() - clock) * 1000.0
    _emit(output.to_json(output.run_dict(result)) if args.json else output.run_table(result))
    if result.ok:
        _note(f"Run {result.run_id} succeeded in {output.human_duration(elapsed)}.")
        return EXIT_OK
    if result.status == RunStatus.WAITING_APPROVAL:
        # Not a failure: the run is paused in the store until someone decides.
        _note(
            f"Run {result.run_id} is waiting for approval: `{PROG} approvals list`, then "
            f"`{PROG} approvals approve ID --by NAME`."
        )
        return EXIT_OK
    _error(_run_failure(result))
    return EXIT_RUN_FAILED


def _run_failure(result: RunResult) -> str:
    parts = [
        f"{r.asset} failed ({r.error_type}: {output.first_line(r.error_message, 120)})"
        for r in result.failed
    ]
    if result.skipped:
        parts.append("skipped: " + ", ".join(r.asset for r in result.skipped))
    parts.extend(
        f"{r.asset} {r.status.value}"
        for r in result.materializations
        if r.status not in (Status.SUCCESS, Status.FAILED, Status.SKIPPED)
    )
    message = f"run {result.run_id} {result.status.value}: {'; '.join(parts)}."
    if result.failed:
        message += f" See the traceback with `{PROG} history {result.failed[0].asset} --errors`."
    return message


# --- status, history -------------------------------------------------------------------------
def _status(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        # Only this pipeline's assets: several pipelines may share one store.
        order = list(dict.fromkeys(args.assets)) or list(pipeline.graph.topological_order())
        records = pipeline.status(*order)
    by_asset: dict[str, list[MaterializationRecord]] = {}
    for record in records:
        by_asset.setdefault(record.asset, []).append(record)
    latest: list[output.Latest] = []
    for asset in order:
        found = sorted(by_asset.get(asset, []), key=lambda r: r.partition_key)
        latest.extend([(asset, r) for r in found] or [(asset, None)])
    if args.json:
        _emit(output.to_json([output.status_dict(asset, record) for asset, record in latest]))
    else:
        _emit(output.status_table(latest))
    return EXIT_OK


def _history(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        partition = _parse_partition(pipeline, args.asset, args.partition)
        if args.errors:
            # Filtering in the store keeps --limit meaning "the last N failures".
            key = None if args.partition is None else encode_partition(partition)
            records = pipeline.store.list_materializations(
                asset=args.asset, partition_key=key, status=Status.FAILED, limit=args.limit
            )
        else:
            records = pipeline.history(args.asset, partition, limit=args.limit)
    if args.json:
        _emit(output.to_json([output.materialization_dict(r) for r in records]))
        return EXIT_OK
    what = "failed materializations" if args.errors else "materializations"
    if not records:
        where = "" if args.partition is None else f" for partition {args.partition}"
        _note(f"No {what} of {args.asset!r}{where}.")
        return EXIT_OK
    _emit(
        "\n".join(map(output.error_block, records))
        if args.errors
        else output.history_table(records)
    )
    return EXIT_OK


# --- lineage, graph --------------------------------------------------------------------------
def _lineage(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        partition = _parse_partition(pipeline, args.asset, args.partition)
        query = {
            "upstream": pipeline.upstream_lineage,
            "downstream": pipeline.downstream_lineage,
            "impact": pipeline.impact,
        }[args.direction]
        nodes = query(args.asset, partition, depth=args.depth)
    key = encode_partition(partition)
    if args.json:
        _emit(
            output.to_json(output.lineage_dict(args.direction, args.asset, key, args.depth, nodes))
        )
        return EXIT_OK
    _emit(output.lineage_text(args.direction, args.asset, key, nodes))
    if not nodes:
        hint = (
            f"; is it materialized? (`{PROG} status {args.asset}`)"
            if args.direction == "upstream"
            else ""
        )
        _note(f"No {args.direction} lineage recorded for {args.asset!r}{hint}.")
    return EXIT_OK


def _graph(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        graph = pipeline.graph
    if args.json:
        _emit(output.to_json(output.graph_dict(graph)))
    else:
        render = {"text": graph.to_text, "mermaid": graph.to_mermaid, "dot": graph.to_dot}
        _emit(render[args.format]())
    return EXIT_OK


# --- db --------------------------------------------------------------------------------------
def _db_upgrade(args: argparse.Namespace) -> int:
    from flowstone.store import migrate

    url = config.database_url()
    before = _migrating(url, lambda: migrate.current_revision(url))
    _migrating(url, lambda: migrate.upgrade(url))
    after = _migrating(url, lambda: migrate.current_revision(url))
    if args.json:
        _emit(
            output.to_json(
                {
                    "url": output.redact_url(url),
                    "from": before,
                    "to": after,
                    "head": migrate.HEAD_REVISION,
                }
            )
        )
    elif before == after:
        _emit(f"{output.redact_url(url)}: already at revision {after} (head)\n")
    else:
        _emit(f"{output.redact_url(url)}: {before or '(empty)'} -> {after}\n")
    return EXIT_OK


def _db_current(args: argparse.Namespace) -> int:
    from flowstone.store import migrate

    url = config.database_url()
    revision = _migrating(url, lambda: migrate.current_revision(url))
    head = migrate.HEAD_REVISION
    if args.json:
        _emit(
            output.to_json(
                {
                    "url": output.redact_url(url),
                    "revision": revision,
                    "head": head,
                    "up_to_date": revision == head,
                }
            )
        )
        return EXIT_OK
    if revision == head:
        _emit(f"{revision} (head)\n")
    else:
        _emit(f"{revision or '(empty)'}\n")
        _note(f"The schema is not at head ({head}): run `{PROG} db upgrade`.")
    return EXIT_OK


def _migrating(url: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except FlowStoneError:
        raise
    except Exception as exc:
        raise StoreError(
            f"Cannot migrate the metadata database {output.redact_url(url)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


# --- audit -----------------------------------------------------------------------------------
def _audit(args: argparse.Namespace) -> int:
    with _pipeline(args) as pipeline:
        run_id = None if args.run is None else _resolve_run_id(pipeline, args.run)
        # The store returns the oldest first; the newest N are the interesting ones.
        events = pipeline.audit_log(run_id=run_id, asset=args.asset, limit=None)[-args.limit :]
        if not events and args.asset is not None and args.asset not in pipeline.graph:
            raise UnknownAssetError(args.asset, pipeline.graph.assets)
    if args.json:
        _emit(output.to_json([output.audit_dict(e) for e in events]))
        return EXIT_OK
    if not events:
        _note("No audit events match.")
        return EXIT_OK
    _emit(output.audit_table(events))
    return EXIT_OK


def _resolve_run_id(pipeline: Pipeline, text: str) -> str:
    """A full run id from a unique prefix (tables show the first 8 characters)."""
    store = pipeline.store
    if store.get_run(text) is not None:
        return text
    matches = [run.id for run in store.list_runs(limit=10_000) if run.id.startswith(text)]
    if len(matches) > 1:
        raise UsageError(
            f"Run id prefix {text!r} matches {len(matches)} runs; give more characters."
        )
    return matches[0] if matches else text


# --- help texts ------------------------------------------------------------------------------
_TOP_EPILOG = f"""\
Run `{PROG} COMMAND --help` for a command's options and examples.

locating the pipeline (the first one given wins):
  --pipeline/-p SPEC     package.module:attribute or path/to/file.py:attribute
  ${PIPELINE_ENV}    the same SPEC
  ./pyproject.toml       [tool.flowstone] pipeline = "SPEC"
  Without ":attribute", the module's only Pipeline is used.

environment:
  {config.DATABASE_URL_ENV}  the metadata store URL
  {config.HOME_ENV}          the folder for the embedded database and stored values
                          (default: .flowstone)

output: data on stdout (tables, or JSON with --json), progress and messages on stderr.

{EXIT_CODES}
"""

_MAT_EPILOG = f"""\
examples:
  {PROG} materialize raw_events
  {PROG} materialize daily_report --with-deps --partition 2025-01-15
  {PROG} -p flows/etl.py:pipeline materialize cleaned --tag owner=ana --json

Progress goes to stderr as each asset finishes, then a summary table (or JSON) to stdout.
A run with failed or skipped materializations exits with 1.
"""

_STATUS_EPILOG = f"""\
examples:
  {PROG} status
  {PROG} status daily_report --json

Assets never materialized are listed with status "never".
"""

_HISTORY_EPILOG = f"""\
examples:
  {PROG} history cleaned
  {PROG} history daily_report --partition 2025-01-15 --limit 5
  {PROG} history cleaned --errors
"""

_LINEAGE_EPILOG = f"""\
examples:
  {PROG} lineage upstream daily_report --partition 2025-01-15
  {PROG} lineage downstream raw_events --depth 2
  {PROG} lineage impact raw_events --json
"""

_GRAPH_EPILOG = f"""\
examples:
  {PROG} graph
  {PROG} graph --format mermaid > assets.mmd
  {PROG} graph --format dot | dot -Tsvg > assets.svg
"""

_DB_EPILOG = f"""\
examples:
  {PROG} db upgrade
  {PROG} db upgrade --database-url postgresql+psycopg://flowstone@db/flowstone
  {PROG} db current --json

The URL is --database-url, else ${config.DATABASE_URL_ENV}, else the SQLite file under
${config.HOME_ENV}. No pipeline is needed.
"""

_AUDIT_EPILOG = f"""\
examples:
  {PROG} audit
  {PROG} audit --run 3f2a9c1e
  {PROG} audit --asset daily_report --limit 20 --json
"""

_COMMANDS: tuple[tuple[str, Handler, str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    (
        "materialize",
        _materialize,
        "compute assets now, in this process",
        _MAT_EPILOG,
        _materialize_arguments,
    ),
    (
        "status",
        _status,
        "show the latest materialization of each asset and partition",
        _STATUS_EPILOG,
        _status_arguments,
    ),
    ("history", _history, "list an asset's materializations", _HISTORY_EPILOG, _history_arguments),
    (
        "lineage",
        _lineage,
        "show what fed an asset, or what it feeds",
        _LINEAGE_EPILOG,
        _lineage_arguments,
    ),
    ("graph", _graph, "print the asset graph", _GRAPH_EPILOG, _graph_arguments),
    ("audit", _audit, "show the audit log, newest last", _AUDIT_EPILOG, _audit_arguments),
    worker_cli.COMMAND,  # --- distributed execution ---
    runs_cli.COMMAND,  # --- distributed execution ---
)

__all__ = ["EXIT_CODES", "UsageError", "build_parser", "exit_code", "main"]
