"""The scheduler with an injected clock: DST, catch-up after downtime, exactly-once ticks across
schedulers (threads, processes, SQLite and PostgreSQL), recovery of runs that never started."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowstone as fs
from flowstone.records import RunStatus, Status, run_event
from flowstone.schedule_records import TickKind, TickStatus
from flowstone.scheduler import Scheduler
from flowstone.scheduler.launch import new_launch
from flowstone.telemetry import TelemetryEvent
from test_store_contract import POSTGRES_URL, postgres_schema

T0 = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)


def days(zone: str = "UTC") -> fs.DailyPartitions:
    return fs.DailyPartitions(start="2024-01-01", timezone=zone)


def make_pipeline(store: Any = "memory", *, zone: str = "UTC") -> fs.Pipeline:
    @fs.asset
    def ping() -> int:
        return 1

    @fs.asset(partitioned_by=days(zone))
    def report(ctx: fs.AssetContext) -> str:
        return str(ctx.partition)

    return fs.Pipeline([ping, report], store=store, default_io_manager="memory")


def walk(scheduler: Scheduler, start: datetime, end: datetime, step: timedelta) -> None:
    now = start
    while now <= end:
        scheduler.tick_once(now)
        now += step


def ticks(pipeline: fs.Pipeline, name: str, status: TickStatus | None = None) -> list[Any]:
    found = pipeline.store.list_ticks(TickKind.SCHEDULE, name, limit=100_000)
    return sorted(
        (t for t in found if status is None or t.status == status), key=lambda t: t.tick_time
    )


def local_times(pipeline: fs.Pipeline, name: str) -> list[str]:
    return [t.details["local_time"] for t in ticks(pipeline, name, TickStatus.LAUNCHED)]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'meta.db'}"


# --- DST -----------------------------------------------------------------------------------

DST_CASES = [
    # (zone, cron, walk start (UTC), expected launched local times)
    (
        "Europe/Oslo",
        "30 2 * * *",
        "2025-03-29T00:00",
        ["2025-03-29T02:30:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"],
    ),
    (
        "Europe/Oslo",
        "30 2 * * *",
        "2025-10-25T00:00",
        ["2025-10-25T02:30:00+02:00", "2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"],
    ),
    (
        "America/New_York",
        "30 2 * * *",
        "2025-03-08T05:00",
        ["2025-03-08T02:30:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"],
    ),
    (
        "America/New_York",
        "30 1 * * *",
        "2025-11-01T04:00",
        ["2025-11-01T01:30:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-03T01:30:00-05:00"],
    ),
]


@pytest.mark.parametrize(("zone", "cron", "start", "expected"), DST_CASES)
def test_a_daily_schedule_fires_once_a_day_across_dst(
    zone: str, cron: str, start: str, expected: list[str]
) -> None:
    pipeline = make_pipeline(zone=zone)
    pipeline.schedule("nightly", "report", cron=cron, timezone=zone, partition="previous_day")
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    walk(Scheduler(pipeline), begin, begin + timedelta(days=3), timedelta(minutes=7))
    assert local_times(pipeline, "nightly") == expected
    # Each tick ran its own partition (the day before the tick's local date), once.
    runs = [r for r in pipeline.status("report")]
    days_run = sorted(r.partition_key for r in runs if r.status == Status.SUCCESS)
    wanted = [
        f"d:{(datetime.fromisoformat(t).date() - timedelta(days=1)).isoformat()}" for t in expected
    ]
    assert days_run == wanted
    assert ticks(pipeline, "nightly") == ticks(pipeline, "nightly", TickStatus.LAUNCHED)


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        ("Europe/Oslo", "2025-03-29T12:00"),
        ("Europe/Oslo", "2025-10-25T12:00"),
        ("America/New_York", "2025-03-08T12:00"),
        ("America/New_York", "2025-11-01T12:00"),
    ],
)
def test_an_hourly_schedule_fires_once_per_real_hour_across_dst(zone: str, start: str) -> None:
    pipeline = make_pipeline()
    pipeline.schedule("hourly", "ping", cron="0 * * * *", timezone=zone)
    begin = datetime.fromisoformat(start).replace(tzinfo=UTC)
    walk(Scheduler(pipeline), begin, begin + timedelta(hours=36, minutes=13), timedelta(minutes=13))
    launched = ticks(pipeline, "hourly", TickStatus.LAUNCHED)
    instants = [t.tick_time for t in launched]
    assert len(instants) == 36 == len(set(instants))
    assert {b - a for a, b in itertools.pairwise(instants)} == {timedelta(hours=1)}
    assert all(i.minute == 0 for i in instants)
    assert ticks(pipeline, "hourly") == launched  # nothing skipped, missed or failed
    runs = pipeline.store.list_runs(limit=1000)
    assert len(runs) == 36 and {r.status for r in runs} == {RunStatus.SUCCESS}


@pytest.mark.parametrize(
    ("zone", "utc_time"), [("Asia/Kolkata", (3, 30)), ("Asia/Kathmandu", (3, 15))]
)
def test_half_and_quarter_hour_zones_tick_at_their_local_time(
    zone: str, utc_time: tuple[int, int]
) -> None:
    pipeline = make_pipeline(zone=zone)
    pipeline.schedule("morning", "report", cron="0 9 * * *", timezone=zone, partition="tick_date")
    walk(Scheduler(pipeline), T0, T0 + timedelta(days=2), timedelta(minutes=5))
    launched = ticks(pipeline, "morning", TickStatus.LAUNCHED)
    assert [(t.tick_time.hour, t.tick_time.minute) for t in launched] == [utc_time, utc_time]
    assert [t.details["partition_key"] for t in launched] == ["d:2025-01-06", "d:2025-01-07"]


# --- catch-up after downtime ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ({"catch_up": "skip"}, ["skipped"] * 5),
        ({"catch_up": "latest"}, ["skipped"] * 4 + ["launched"]),
        ({"catch_up": "all", "catch_up_limit": 3}, ["skipped"] * 2 + ["launched"] * 3),
        (
            {"catch_up": "all", "catch_up_limit": 3, "max_lateness": 3 * 3600},
            ["missed"] * 2 + ["launched"] * 3,
        ),
    ],
)
def test_restart_after_downtime_follows_the_catch_up_policy(
    sqlite_url: str, policy: dict[str, Any], expected: list[str]
) -> None:
    def scheduler_process() -> tuple[fs.Pipeline, Scheduler]:
        pipeline = make_pipeline(sqlite_url)
        pipeline.schedule("hourly", "ping", cron="0 * * * *", **policy)
        return pipeline, Scheduler(pipeline)

    first, scheduler = scheduler_process()
    scheduler.tick_once(T0 - timedelta(minutes=30))  # stores the schedule
    scheduler.tick_once(T0 + timedelta(seconds=10))  # the 00:00 tick, on time
    scheduler.close()
    first.close()
    # Down from 00:01 to 05:30: ticks 01:00..05:00 came due meanwhile.
    second, scheduler = scheduler_process()
    scheduler.tick_once(T0 + timedelta(hours=5, minutes=30))
    recorded = ticks(second, "hourly")
    assert [t.status.value for t in recorded] == ["launched", *expected]
    assert [t.tick_time.hour for t in recorded] == [0, 1, 2, 3, 4, 5]
    assert all(t.reason for t in recorded[1:] if t.status != TickStatus.LAUNCHED)
    # Back to normal: the 06:00 tick runs on time, whatever the policy.
    scheduler.tick_once(T0 + timedelta(hours=6, seconds=5))
    assert ticks(second, "hourly")[-1].status == TickStatus.LAUNCHED
    launched = len(ticks(second, "hourly", TickStatus.LAUNCHED))
    assert len(second.store.list_runs(limit=100)) == launched
    second.close()


def test_changing_the_cron_never_reruns_a_past_tick(sqlite_url: str) -> None:
    first = make_pipeline(sqlite_url)
    first.schedule("daily", "ping", cron="0 6 * * *")
    Scheduler(first).tick_once(T0)
    Scheduler(first).tick_once(T0 + timedelta(hours=6, minutes=1))
    first.close()
    # Redeployed at 07:00 with an earlier time of day (and another minute).
    second = make_pipeline(sqlite_url)
    second.schedule("daily", "ping", cron="30 5 * * *")
    scheduler = Scheduler(second)
    scheduler.tick_once(T0 + timedelta(hours=7))
    assert [t.details["local_time"] for t in ticks(second, "daily")] == [
        "2025-01-06T06:00:00+00:00"
    ]
    scheduler.tick_once(T0 + timedelta(days=1, hours=5, minutes=31))
    assert [t.details["local_time"] for t in ticks(second, "daily")][-1] == (
        "2025-01-07T05:30:00+00:00"
    )
    updated = [e for e in second.audit_log(limit=None) if e.action == "schedule.updated"]
    assert updated and updated[0].details["previous_cron"] == "0 6 * * *"
    second.close()


def test_a_paused_schedule_records_nothing_and_resumes_from_now() -> None:
    pipeline = make_pipeline()
    pipeline.schedule("hourly", "ping", cron="0 * * * *")
    scheduler = Scheduler(pipeline)
    scheduler.tick_once(T0 - timedelta(minutes=1))
    pipeline.store.set_schedule_paused("hourly", True)
    walk(scheduler, T0, T0 + timedelta(hours=3), timedelta(minutes=20))
    assert ticks(pipeline, "hourly") == []
    pipeline.store.set_schedule_paused("hourly", False, cursor=T0 + timedelta(hours=3, minutes=5))
    scheduler.tick_once(T0 + timedelta(hours=4))
    assert [t.tick_time.hour for t in ticks(pipeline, "hourly")] == [4]


# --- failures are recorded, never fatal ----------------------------------------------------


def test_a_code_partition_function_the_pipeline_lacks_fails_the_tick(sqlite_url: str) -> None:
    declaring = make_pipeline(sqlite_url)
    declaring.schedule("custom", "report", cron="0 6 * * *", partition=lambda t: t.date())
    Scheduler(declaring).sync(T0)
    declaring.close()
    other = make_pipeline(sqlite_url)  # same store, no such schedule in its code
    Scheduler(other).tick_once(T0 + timedelta(hours=6, minutes=1))
    [tick] = ticks(other, "custom")
    assert tick.status == TickStatus.FAILED
    assert "defined in code" in (tick.reason or "") and "flowstone schedule remove" in tick.reason
    assert other.store.list_runs() == []
    other.close()


def test_a_raising_partition_function_fails_its_tick_and_the_others_go_on() -> None:
    pipeline = make_pipeline()

    def broken(tick: datetime) -> dt.date:
        raise ValueError("no calendar for " + tick.isoformat())

    pipeline.schedule("broken", "report", cron="0 6 * * *", partition=broken)
    pipeline.schedule("fine", "ping", cron="0 6 * * *")
    scheduler = Scheduler(pipeline)
    scheduler.tick_once(T0)
    scheduler.tick_once(T0 + timedelta(hours=6, minutes=1))
    [failed] = ticks(pipeline, "broken")
    assert failed.status == TickStatus.FAILED
    assert failed.reason == "the partition function raised ValueError: no calendar for " + (
        "2025-01-06T06:00:00+00:00"
    )
    assert "Traceback" in failed.details["traceback"]
    assert [t.status for t in ticks(pipeline, "fine")] == [TickStatus.LAUNCHED]
    # The failed tick is taken: it is not retried on the next evaluation.
    scheduler.tick_once(T0 + timedelta(hours=6, minutes=2))
    assert len(ticks(pipeline, "broken")) == 1


def test_a_partition_outside_the_assets_definition_fails_the_tick() -> None:
    pipeline = make_pipeline()
    pipeline.schedule("early", "report", cron="0 6 * * *", partition=lambda t: dt.date(1999, 1, 1))
    Scheduler(pipeline).tick_once(T0)
    Scheduler(pipeline).tick_once(T0 + timedelta(hours=6, minutes=1))
    [tick] = ticks(pipeline, "early")
    assert tick.status == TickStatus.FAILED and tick.details["error_type"] == "PartitionError"


# --- exactly once --------------------------------------------------------------------------


def _race(make: Callable[[], fs.Pipeline], schedulers: int, minutes: int) -> list[fs.Pipeline]:
    """Schedulers, one per thread, each with its own store connection, evaluating the same
    instants in lock step."""
    pipelines = [make() for _ in range(schedulers)]
    for p in pipelines:
        p.schedule("minutely", "ping", cron="* * * * *")
    barrier = threading.Barrier(schedulers)
    errors: list[BaseException] = []
    recorded: list[int] = []

    def run(pipeline: fs.Pipeline) -> None:
        scheduler = Scheduler(pipeline)
        try:
            for minute in range(minutes + 1):
                barrier.wait()
                outcomes = scheduler.tick_once(T0 + timedelta(minutes=minute, seconds=1))
                recorded.append(len(outcomes))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            barrier.abort()
        finally:
            scheduler.close()

    threads = [threading.Thread(target=run, args=(p,)) for p in pipelines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Each scheduler reports only the ticks it recorded: together, each tick once.
    assert sum(recorded) == minutes
    return pipelines


def _assert_each_minute_once(pipeline: fs.Pipeline, minutes: int) -> None:
    recorded = ticks(pipeline, "minutely")
    # The schedule is stored at T0 + 1s: its ticks are T0 + 1 min ... T0 + `minutes` min.
    assert [t.tick_time for t in recorded] == [
        T0 + timedelta(minutes=m) for m in range(1, minutes + 1)
    ]
    assert {t.status for t in recorded} == {TickStatus.LAUNCHED}
    runs = pipeline.store.list_runs(limit=10_000)
    assert len(runs) == len(recorded) == len({r.id for r in runs})
    assert {r.status for r in runs} == {RunStatus.SUCCESS}
    # Each run executed once: one materialization per run, each a success.
    mats = pipeline.store.list_materializations(asset="ping", limit=None)
    assert Counter(m.run_id for m in mats) == Counter({r.id: 1 for r in runs})


def test_two_schedulers_on_one_sqlite_file_fire_each_tick_once(sqlite_url: str) -> None:
    pipelines = _race(lambda: make_pipeline(sqlite_url), schedulers=2, minutes=60)
    _assert_each_minute_once(pipelines[0], 60)
    for p in pipelines:
        p.close()


@pytest.mark.postgres
def test_three_schedulers_on_postgres_fire_each_tick_once() -> None:
    from flowstone.store.sql import SQLStore

    with postgres_schema() as options:
        stores: list[SQLStore] = []

        def make() -> fs.Pipeline:
            stores.append(SQLStore(POSTGRES_URL, engine_options=options))
            return make_pipeline(stores[-1])

        pipelines = _race(make, schedulers=3, minutes=40)
        _assert_each_minute_once(pipelines[0], 40)
        for store in stores:
            store.close()


PROCESS_SCRIPT = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta

    import flowstone as fs
    from flowstone.scheduler import Scheduler

    @fs.asset
    def ping():
        return 1

    url, barrier_dir = sys.argv[1], sys.argv[2]
    pipeline = fs.Pipeline([ping], store=url, default_io_manager="memory")
    pipeline.schedule("minutely", "ping", cron="* * * * *")
    scheduler = Scheduler(pipeline)
    t0 = datetime(2025, 1, 6, tzinfo=UTC)
    for minute in range(61):
        scheduler.tick_once(t0 + timedelta(minutes=minute, seconds=1))
    scheduler.close()
    pipeline.close()
    """
)


def test_two_scheduler_processes_on_one_sqlite_file_fire_each_tick_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "scheduler_process.py"
    script.write_text(PROCESS_SCRIPT)
    setup = make_pipeline(sqlite_url)
    setup.store.list_runs()  # create the database before the processes race to
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), sqlite_url, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()
    _assert_each_minute_once(setup, 60)
    setup.close()


# --- runs recorded but never started -------------------------------------------------------


def test_a_run_recorded_before_a_crash_is_launched_once_by_another_scheduler(
    sqlite_url: str,
) -> None:
    from flowstone.schedule_records import TickRecord

    crashed = make_pipeline(sqlite_url)
    crashed.schedule("daily", "report", cron="0 6 * * *", partition="tick_date")
    Scheduler(crashed).sync(T0)
    # What a scheduler writes before executing; then it died.
    launch, _ = new_launch(crashed, ["report"], dt.date(2025, 1, 6), with_upstream=False, tags={})
    tick = TickRecord(
        kind=TickKind.SCHEDULE,
        name="daily",
        tick_time=T0 + timedelta(hours=6),
        status=TickStatus.LAUNCHED,
        run_ids=(launch.run.id,),
        recorded_at=T0 + timedelta(hours=6),
    )
    assert crashed.store.create_schedule_tick(tick, launch, [run_event("run.started", launch.run)])
    crashed.close()

    survivors = [make_pipeline(sqlite_url) for _ in range(2)]
    for p in survivors:
        p.schedule("daily", "report", cron="0 6 * * *", partition="tick_date")
    early = T0 + timedelta(hours=6, seconds=30)  # within recovery_grace: maybe just slow
    Scheduler(survivors[0]).tick_once(early)
    assert survivors[0].store.get_run(launch.run.id).status == RunStatus.RUNNING  # type: ignore[union-attr]
    later = T0 + timedelta(hours=6, minutes=2)
    for p in survivors:
        Scheduler(p).tick_once(later)
    run = survivors[1].store.get_run(launch.run.id)
    assert run is not None and run.status == RunStatus.SUCCESS
    [mat] = survivors[1].store.list_materializations(run_id=launch.run.id)
    assert (mat.id, mat.status) == (launch.materializations[0].id, Status.SUCCESS)
    # The 06:00 tick was taken by the crashed scheduler: nobody records it again.
    assert [t.run_ids for t in ticks(survivors[1], "daily")] == [(launch.run.id,)]
    for p in survivors:
        p.close()


def test_a_stale_claim_does_not_execute(sqlite_url: str) -> None:
    from flowstone.scheduler.launch import Launcher

    pipeline = make_pipeline(sqlite_url)
    pipeline.schedule("daily", "ping", cron="0 6 * * *")
    scheduler = Scheduler(pipeline)
    scheduler.tick_once(T0)
    [outcome] = scheduler.tick_once(T0 + timedelta(hours=6, seconds=1))
    [future] = outcome.runs
    assert future.result() is not None  # executed once, by the claim it was recorded with
    launcher = Launcher(pipeline, lambda: T0 + timedelta(hours=7), 1)
    run = pipeline.store.get_run(outcome.tick.run_ids[0])
    assert run is not None
    plan_unused: Any = None
    assert launcher._execute(plan_unused, run, outcome.tick.recorded_at) is None
    launcher.close()
    pipeline.close()


# --- audit and telemetry -------------------------------------------------------------------


def test_ticks_are_audited_and_emit_telemetry() -> None:
    pipeline = make_pipeline()
    pipeline.schedule("hourly", "ping", cron="0 * * * *", catch_up="latest")
    events: list[TelemetryEvent] = []
    pipeline.subscribe(events.append, prefix="schedule.")
    scheduler = Scheduler(pipeline)
    scheduler.tick_once(T0 - timedelta(minutes=1))
    scheduler.tick_once(T0 + timedelta(hours=1, minutes=10))
    actions = [e.action for e in pipeline.audit_log(limit=None) if e.resource_type == "schedule"]
    assert actions == ["schedule.created", "schedule.tick.skipped", "schedule.tick.launched"]
    launched = [e for e in pipeline.audit_log(limit=None) if e.action == "schedule.tick.launched"]
    run_id = ticks(pipeline, "hourly")[-1].run_ids[0]
    assert launched[0].correlation_id == run_id
    assert [(e.metadata["status"], e.measurements["lateness_s"]) for e in events] == [
        ("skipped", 4200.0),
        ("launched", 600.0),
    ]
    assert events[1].metadata["run_id"] == run_id


def test_run_forever_polls_until_stopped() -> None:
    pipeline = make_pipeline()
    polled = threading.Event()

    def sensor(cursor: str | None) -> None:
        polled.set()

    pipeline.sensor("probe", sensor, interval=0.01)
    scheduler = Scheduler(pipeline, poll_interval=0.01)
    thread = scheduler.start()
    assert polled.wait(timeout=60)
    scheduler.stop()
    assert not thread.is_alive()


def test_the_scheduler_expires_approvals_past_their_timeout(tmp_path: Path) -> None:
    @fs.asset
    def publish(ctx):
        if ctx.approval is None:
            return fs.WaitForApproval("Publish?", timeout=timedelta(hours=1))
        return "published"

    pipeline = fs.Pipeline([publish], store=f"sqlite:///{tmp_path / 'meta.db'}")
    run = pipeline.materialize_all()
    assert run.status == RunStatus.WAITING_APPROVAL
    [request] = pipeline.approvals()
    scheduler = Scheduler(pipeline, clock=lambda: datetime.now(UTC))
    assert request.timeout_at is not None
    scheduler.tick_once(request.timeout_at - timedelta(minutes=1))
    assert pipeline.approvals()[0].status == "pending"
    scheduler.tick_once(request.timeout_at + timedelta(seconds=1))
    [expired] = pipeline.approvals(status="expired")
    assert expired.id == request.id
    assert pipeline.history("publish")[0].status == Status.FAILED
    pipeline.close()


def test_a_distributed_pipeline_without_postgresql_is_refused_before_any_tick() -> None:
    from flowstone.errors import DistributedSetupError

    @fs.asset
    def a():
        return 1

    pipeline = fs.Pipeline([a], store="memory", executor=fs.DistributedExecutor())
    with pytest.raises(DistributedSetupError, match="needs a PostgreSQL metadata store"):
        Scheduler(pipeline)
