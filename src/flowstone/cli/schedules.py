"""``flowstone schedule ...``, ``flowstone sensor ...`` and ``flowstone scheduler``.

Each command loads the pipeline (for its assets, and for the schedules and sensors declared in
its code, which are stored first, as a scheduler would) and works on the metadata store.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from flowstone.cli import output
from flowstone.cli import schedule_output as show
from flowstone.cli.commands import Commands
from flowstone.cli.commands import add_command as _add
from flowstone.cli.loading import find_spec, load_pipeline
from flowstone.errors import FlowStoneError, ScheduleDefinitionError, UnknownScheduleError
from flowstone.pipeline import Pipeline
from flowstone.records import AuditEvent, utcnow
from flowstone.schedule_records import (
    CatchUp,
    TickKind,
    TickRecord,
)
from flowstone.scheduler import Scheduler
from flowstone.schedules import BUILTIN_PARTITIONS, define_schedule
from flowstone.schedules.cron import NONEXISTENT_POLICIES, REPEATED_POLICIES


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Add the ``schedule``, ``sensor`` and ``scheduler`` commands to the ``flowstone`` parser."""
    schedule = _add(
        commands, "schedule", None, "manage cron schedules", _SCHEDULE_EPILOG, common=common
    )
    sub = schedule.add_subparsers(
        title="schedule commands", dest="schedule_command", metavar="COMMAND"
    )
    sub.required = True
    _add_arguments(
        _add(sub, "add", _add_schedule, "store a new schedule", _SCHEDULE_EPILOG, common=common)
    )
    _json(_add(sub, "list", _list_schedules, "list the schedules", _SCHEDULE_EPILOG, common=common))
    for name, handler, text in (
        ("pause", _pause, "stop a schedule's ticks until it is resumed"),
        ("resume", _resume, "resume a schedule (ticks due while paused never run)"),
        ("remove", _remove, "delete a schedule (its ticks stay, as history)"),
    ):
        _add(sub, name, handler, text, _SCHEDULE_EPILOG, common=common).add_argument(
            "name", metavar="NAME"
        )
    _ticks_arguments(
        _add(sub, "ticks", _schedule_ticks, "show a schedule's ticks", "", common=common)
    )

    sensor = _add(commands, "sensor", None, "inspect sensors", _SENSOR_EPILOG, common=common)
    sensors = sensor.add_subparsers(
        title="sensor commands", dest="sensor_command", metavar="COMMAND"
    )
    sensors.required = True
    _json(_add(sensors, "list", _list_sensors, "list the sensors", _SENSOR_EPILOG, common=common))
    for name, handler, text in (
        ("pause", _pause_sensor, "stop polling a sensor until it is resumed"),
        ("resume", _resume_sensor, "poll a paused sensor again"),
    ):
        _add(sensors, name, handler, text, _SENSOR_EPILOG, common=common).add_argument(
            "name", metavar="NAME"
        )
    _ticks_arguments(
        _add(sensors, "ticks", _sensor_ticks, "show a sensor's polls", "", common=common)
    )

    run = _add(
        commands,
        "scheduler",
        _scheduler,
        "run the schedules and sensors",
        _SCHEDULER_EPILOG,
        common=common,
    )
    run.add_argument("--once", action="store_true", help="evaluate once, wait for the runs, exit")
    run.add_argument(
        "--poll-interval", type=float, default=5.0, metavar="S", help="seconds between evaluations"
    )
    run.add_argument(
        "--max-concurrent-runs", type=int, default=4, metavar="N", help="runs executed at once"
    )


def _json(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    return parser


def _add_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("assets", nargs="+", metavar="ASSET", help="the assets each tick materializes")
    sub.add_argument("--cron", required=True, help="five cron fields, e.g. '30 2 * * *', or @daily")
    sub.add_argument("--timezone", default="UTC", help="IANA zone of the cron fields (default UTC)")
    sub.add_argument(
        "--partition",
        default="none",
        choices=sorted(BUILTIN_PARTITIONS),
        help="the partition of each tick, from its time (default: none)",
    )
    sub.add_argument("--with-deps", action="store_true", help="also materialize upstream assets")
    sub.add_argument("--catch-up", default="latest", choices=[c.value for c in CatchUp])
    sub.add_argument("--catch-up-limit", type=int, default=10, metavar="N")
    sub.add_argument(
        "--max-lateness", type=float, metavar="S", help="seconds after which a tick is missed"
    )
    sub.add_argument("--dst-nonexistent", default="auto", choices=NONEXISTENT_POLICIES)
    sub.add_argument("--dst-repeated", default="auto", choices=REPEATED_POLICIES)
    sub.add_argument("--replace", action="store_true", help="replace a schedule of that name")


def _ticks_arguments(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--limit", type=int, default=20, metavar="N", help="the last N (default 20)")
    _json(sub)


@contextmanager
def _synced(args: argparse.Namespace) -> Iterator[Pipeline]:
    """The pipeline, with the schedules and sensors of its code stored."""
    pipeline = load_pipeline(find_spec(getattr(args, "pipeline", None)))
    try:
        Scheduler(pipeline).sync()
        yield pipeline
    finally:
        pipeline.close()


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- schedules -----------------------------------------------------------------------------
def _add_schedule(args: argparse.Namespace) -> int:
    with _synced(args) as pipeline:
        targets = [pipeline.graph.get(name).name for name in args.assets]
        existing = pipeline.store.get_schedule(args.name)
        if existing is not None and not args.replace:
            raise ScheduleDefinitionError(
                args.name,
                f"a schedule of this name exists ({existing.cron}); pass --replace to replace "
                "its definition, or choose another name.",
            )
        definition = define_schedule(
            args.name,
            targets,
            cron=args.cron,
            timezone=args.timezone,
            partition=args.partition,
            with_upstream=args.with_deps,
            catch_up=args.catch_up,
            catch_up_limit=args.catch_up_limit,
            max_lateness=args.max_lateness,
            dst_nonexistent=args.dst_nonexistent,
            dst_repeated=args.dst_repeated,
            source="cli",
        )
        now = utcnow()
        record = replace(definition.record, created_at=now, updated_at=now)
        action = "schedule.created" if existing is None else "schedule.updated"
        pipeline.store.save_schedule(record, [_human(action, "schedule", args.name, record.cron)])
        verb = "replaced" if existing else "added"
        _emit(f"{verb} schedule {args.name}: {show.next_text(record)}\n")
    return 0


def _list_schedules(args: argparse.Namespace) -> int:
    with _synced(args) as pipeline:
        records = pipeline.store.list_schedules()
        last = {r.name: _last_tick(pipeline, TickKind.SCHEDULE, r.name) for r in records}
    if args.json:
        _emit(output.to_json([show.schedule_dict(r, last[r.name]) for r in records]))
        return 0
    rows = [
        (
            r.name,
            r.cron,
            r.timezone,
            ",".join(r.targets),
            r.partition,
            r.catch_up.value,
            "paused" if r.paused else "active",
            output.human_time(show.next_time(r)) if not r.paused else output.NONE,
            show.tick_summary(last[r.name]),
        )
        for r in records
    ]
    headers = ("name", "cron", "zone", "assets", "partition", "catch-up", "state", "next", "last")
    _emit(output.table(headers, rows) if rows else "No schedules.\n")
    return 0


def _pause(args: argparse.Namespace) -> int:
    return _set_paused(args, True)


def _resume(args: argparse.Namespace) -> int:
    return _set_paused(args, False)


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    with _synced(args) as pipeline:
        store = pipeline.store
        action = "schedule.paused" if paused else "schedule.resumed"
        # Resuming moves the cursor to now: ticks that came due while paused never run.
        cursor = None if paused else utcnow()
        if not store.set_schedule_paused(
            args.name, paused, cursor=cursor, audit=[_human(action, "schedule", args.name)]
        ):
            raise UnknownScheduleError(
                "schedule", args.name, [r.name for r in store.list_schedules()]
            )
    _emit(f"{'paused' if paused else 'resumed'} schedule {args.name}\n")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _synced(args) as pipeline:
        store = pipeline.store
        if not store.delete_schedule(
            args.name, [_human("schedule.removed", "schedule", args.name)]
        ):
            raise UnknownScheduleError(
                "schedule", args.name, [r.name for r in store.list_schedules()]
            )
        code = args.name in pipeline.schedules
    _emit(f"removed schedule {args.name}\n")
    if code:
        print(
            f"note: {args.name!r} is declared in the pipeline's code; a scheduler will store it "
            "again. Delete it from the code to remove it for good.",
            file=sys.stderr,
        )
    return 0


def _schedule_ticks(args: argparse.Namespace) -> int:
    with _synced(args) as pipeline:
        store = pipeline.store
        ticks = store.list_ticks(TickKind.SCHEDULE, args.name, limit=args.limit)
        if not ticks and store.get_schedule(args.name) is None:
            raise UnknownScheduleError(
                "schedule", args.name, [r.name for r in store.list_schedules()]
            )
    return _show_ticks(args, ticks)


# --- sensors -------------------------------------------------------------------------------
def _list_sensors(args: argparse.Namespace) -> int:
    with _synced(args) as pipeline:
        states = pipeline.store.list_sensors()
        last = {s.name: _last_tick(pipeline, TickKind.SENSOR, s.name) for s in states}
        declared = set(pipeline.sensors)
    if args.json:
        _emit(
            output.to_json([show.sensor_dict(s, last[s.name], s.name in declared) for s in states])
        )
        return 0
    rows = [
        (
            s.name,
            f"{s.interval_s:g}s",
            "paused" if s.paused else "active",
            output.human_time(s.last_tick_at),
            output.first_line(s.cursor, 40) or output.NONE,
            show.tick_summary(last[s.name]),
            "yes" if s.name in declared else "no",
        )
        for s in states
    ]
    headers = ("name", "interval", "state", "last poll", "cursor", "last tick", "in pipeline")
    _emit(output.table(headers, rows) if rows else "No sensors.\n")
    return 0


def _pause_sensor(args: argparse.Namespace) -> int:
    return _set_sensor_paused(args, True)


def _resume_sensor(args: argparse.Namespace) -> int:
    return _set_sensor_paused(args, False)


def _set_sensor_paused(args: argparse.Namespace, paused: bool) -> int:
    with _synced(args) as pipeline:
        store = pipeline.store
        action = "sensor.paused" if paused else "sensor.resumed"
        if not store.set_sensor_paused(args.name, paused, [_human(action, "sensor", args.name)]):
            raise UnknownScheduleError("sensor", args.name, [s.name for s in store.list_sensors()])
    _emit(f"{'paused' if paused else 'resumed'} sensor {args.name}\n")
    return 0


def _sensor_ticks(args: argparse.Namespace) -> int:
    with _synced(args) as pipeline:
        store = pipeline.store
        ticks = store.list_ticks(TickKind.SENSOR, args.name, limit=args.limit)
        if not ticks and store.get_sensor(args.name) is None:
            raise UnknownScheduleError("sensor", args.name, [s.name for s in store.list_sensors()])
    return _show_ticks(args, ticks)


# --- the scheduler -------------------------------------------------------------------------
def _scheduler(args: argparse.Namespace) -> int:
    if args.poll_interval <= 0 or args.max_concurrent_runs < 1:
        raise FlowStoneError("--poll-interval must be positive and --max-concurrent-runs >= 1.")
    logging.getLogger("flowstone.scheduler").setLevel(logging.INFO)
    with _synced(args) as pipeline:
        scheduler = Scheduler(
            pipeline,
            poll_interval=args.poll_interval,
            max_concurrent_runs=args.max_concurrent_runs,
        )
        if not args.once:
            scheduler.run_forever()
            return 0
        try:
            outcomes = scheduler.tick_once()
        finally:
            scheduler.close()
    failed = 0
    for outcome in outcomes:
        tick = outcome.tick
        results = [f.result() for f in outcome.runs]
        failed += sum(1 for r in results if r is not None and not r.ok)
        print(f"{tick.kind.value} {tick.name}: {show.tick_summary(tick)}", file=sys.stderr)
    return 1 if failed else 0


# --- output --------------------------------------------------------------------------------
def _show_ticks(args: argparse.Namespace, ticks: Sequence[TickRecord]) -> int:
    if args.json:
        _emit(output.to_json([show.tick_dict(t) for t in ticks]))
    else:
        _emit(show.tick_table(ticks))
    return 0


def _last_tick(pipeline: Pipeline, kind: TickKind, name: str) -> TickRecord | None:
    found = pipeline.store.list_ticks(kind, name, limit=1)
    return found[0] if found else None


def _human(action: str, kind: str, name: str, cron: str | None = None) -> AuditEvent:
    import getpass

    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        who = "cli"
    details = {} if cron is None else {"cron": cron}
    return AuditEvent(
        action=action,
        resource_type=kind,
        resource_id=name,
        actor=who,
        actor_type="user",
        details=details,
    )


_SCHEDULE_EPILOG = """\
examples:
  flowstone schedule add nightly daily_report --cron '30 2 * * *' --timezone Europe/Oslo \\
      --partition previous_day --with-deps --catch-up all --catch-up-limit 3
  flowstone schedule list
  flowstone schedule pause nightly
  flowstone schedule ticks nightly --limit 50

Schedules declared in the pipeline's code (pipeline.schedule(...)) are stored by any of these
commands and by the scheduler. `flowstone scheduler` runs them.
"""

_SENSOR_EPILOG = """\
examples:
  flowstone sensor list
  flowstone sensor ticks new_files

Sensors are declared in the pipeline's code (pipeline.sensor(...)).
"""

_SCHEDULER_EPILOG = """\
examples:
  flowstone scheduler
  flowstone scheduler --once
  flowstone scheduler --poll-interval 10 --max-concurrent-runs 8

Any number of schedulers may run against one metadata store: each tick runs once.
SIGTERM or Ctrl-C stops it after the runs in flight finish.
"""
