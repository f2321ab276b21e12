"""``flowstone worker``: serve a pipeline's jobs from the PostgreSQL queue until stopped."""

from __future__ import annotations

import argparse
import logging
import sys

from flowstone.cli.loading import find_spec, load_pipeline

EPILOG = """\
examples:
  flowstone worker -p flows/etl.py:pipeline
  flowstone worker -p flows.etl:pipeline --concurrency 4 --queue flowstone
  FLOWSTONE_DATABASE_URL=postgresql+psycopg://app@db/flowstone flowstone worker -p flows.etl

The metadata store must be PostgreSQL ($FLOWSTONE_DATABASE_URL or the pipeline's store); the
job queue's tables are created there on first use. Start as many workers, on as many machines,
as you like. SIGTERM or Ctrl-C: start nothing new, finish the running steps, exit (a second
signal exits at once; the steps it ran are retried by the other workers after --stalled-after).
"""


def add_arguments(sub: argparse.ArgumentParser) -> None:
    """The ``worker`` command's arguments."""
    sub.add_argument(
        "--concurrency", type=_positive_int, default=1, metavar="N", help="steps run at once"
    )
    sub.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="Q",
        help="serve this queue (repeatable; default: every queue)",
    )
    sub.add_argument("--name", help="the worker's name in logs")
    sub.add_argument(
        "--stalled-after",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="hand back the jobs of a worker silent for S seconds (default: 30)",
    )
    sub.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=10.0,
        metavar="S",
        help="seconds between heartbeats (default: 10)",
    )
    sub.add_argument(
        "--recovery-interval",
        type=_positive_int,
        default=15,
        metavar="S",
        help="seconds between looks for stalled jobs (default: 15)",
    )
    sub.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=1.0,
        metavar="S",
        help="seconds between looks for jobs whose retry time came (default: 1)",
    )
    sub.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        metavar="S",
        help="on SIGTERM, hand back steps still running after S seconds (default: wait)",
    )
    sub.add_argument(
        "--keep-jobs", action="store_true", help="keep succeeded jobs in the queue's table"
    )
    sub.add_argument("-v", "--verbose", action="store_true", help="log every job (INFO) on stderr")


def handle(args: argparse.Namespace) -> int:
    """Run ``flowstone worker``."""
    from flowstone.worker import WorkerSettings, run_worker  # imports procrastinate

    if args.verbose or getattr(args, "debug", False):
        for name in ("flowstone", "procrastinate"):
            logging.getLogger(name).setLevel(logging.INFO)
    settings = WorkerSettings(
        concurrency=args.concurrency,
        queues=tuple(args.queue),
        name=args.name,
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat_interval,
        stalled_after=args.stalled_after,
        recovery_interval=args.recovery_interval,
        shutdown_timeout=args.shutdown_timeout,
        keep_jobs=args.keep_jobs,
    )
    pipeline = load_pipeline(find_spec(getattr(args, "pipeline", None)))
    try:
        queues = ", ".join(settings.queues) or "every queue"
        print(
            f"flowstone worker: {len(pipeline.graph)} assets, concurrency "
            f"{settings.concurrency}, serving {queues}. Stop with Ctrl-C or SIGTERM.",
            file=sys.stderr,
            flush=True,
        )
        run_worker(pipeline, settings)
    finally:
        pipeline.close()
    print("flowstone worker: stopped.", file=sys.stderr, flush=True)
    return 0


COMMAND = ("worker", handle, "run steps from the PostgreSQL job queue", EPILOG, add_arguments)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value
