"""Sensors: a persisted cursor, run keys launched once, errors recorded and survived."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import flowstone as fs
from flowstone.errors import DefinitionError
from flowstone.records import RunStatus, Status
from flowstone.schedule_records import TickKind, TickStatus
from flowstone.scheduler import Scheduler
from flowstone.schedules import RunRequest, SensorResult
from flowstone.telemetry import TelemetryEvent

T0 = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)


def make_pipeline(store: Any = "memory") -> fs.Pipeline:
    @fs.asset
    def ping() -> int:
        return 1

    @fs.asset(partitioned_by=fs.StaticPartitions(["a.csv", "b.csv", "c.csv"]))
    def ingest(ctx: fs.AssetContext) -> str:
        return str(ctx.partition)

    return fs.Pipeline([ping, ingest], store=store, default_io_manager="memory")


def sensor_ticks(pipeline: fs.Pipeline, name: str) -> list[Any]:
    return sorted(
        pipeline.store.list_ticks(TickKind.SENSOR, name, limit=1000), key=lambda t: t.tick_time
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'meta.db'}"


def new_files(cursor: str | None) -> SensorResult:
    """A sensor over a fixed list of files: the cursor is how many it has seen."""
    files = ["a.csv", "b.csv", "c.csv"]
    seen = int(cursor or 0)
    fresh = files[seen : seen + 2]  # at most two per poll
    requests = [RunRequest("ingest", partition=f, run_key=f) for f in fresh]
    return SensorResult(requests, str(seen + len(fresh)))


def test_the_cursor_survives_a_restart(sqlite_url: str) -> None:
    first = make_pipeline(sqlite_url)
    first.sensor("files", new_files, interval=30)
    Scheduler(first).tick_once(T0)
    first.close()

    calls: list[str | None] = []

    def spy(cursor: str | None) -> SensorResult:
        calls.append(cursor)
        return new_files(cursor)

    second = make_pipeline(sqlite_url)  # a new process, same store
    second.sensor("files", spy, interval=30)
    scheduler = Scheduler(second)
    scheduler.tick_once(T0 + timedelta(seconds=31))
    assert calls == ["2"]
    state = second.store.get_sensor("files")
    assert state is not None and state.cursor == "3" and state.version == 2
    ingested = sorted(r.partition_key for r in second.status("ingest"))
    assert ingested == ["s:a.csv", "s:b.csv", "s:c.csv"]
    assert [t.status for t in sensor_ticks(second, "files")] == [TickStatus.LAUNCHED] * 2
    second.close()


def test_polls_wait_for_the_interval() -> None:
    pipeline = make_pipeline()
    calls: list[datetime] = []
    pipeline.sensor("probe", lambda cursor: calls.append(T0), interval=timedelta(minutes=1))
    scheduler = Scheduler(pipeline)
    for seconds in (0, 30, 59, 60, 90, 121):
        scheduler.tick_once(T0 + timedelta(seconds=seconds))
    assert len(calls) == 3  # at 0, 60 and 121
    # Polls that ask for nothing are not history.
    assert sensor_ticks(pipeline, "probe") == []
    assert pipeline.store.get_sensor("probe").last_tick_at == T0 + timedelta(seconds=121)  # type: ignore[union-attr]


def test_a_run_key_is_launched_once() -> None:
    pipeline = make_pipeline()
    pipeline.sensor(
        "same",
        lambda cursor: [RunRequest("ping", run_key="k1"), RunRequest("ping", run_key="k1")],
        interval=1,
    )
    scheduler = Scheduler(pipeline)
    scheduler.tick_once(T0)
    scheduler.tick_once(T0 + timedelta(seconds=5))
    first, second = sensor_ticks(pipeline, "same")
    assert first.status == TickStatus.LAUNCHED and len(first.run_ids) == 1
    assert [e["outcome"] for e in first.details["requests"]] == ["launched", "skipped"]
    assert second.status == TickStatus.SKIPPED
    assert second.reason == "every run key was launched before"
    assert len(pipeline.store.list_runs()) == 1
    [run] = pipeline.store.list_runs()
    assert run.tags == {"flowstone/sensor": "same", "flowstone/run_key": "k1"}


def test_a_sensor_that_raises_is_recorded_and_the_scheduler_goes_on() -> None:
    pipeline = make_pipeline()
    attempts: list[str | None] = []

    def flaky(cursor: str | None) -> SensorResult:
        attempts.append(cursor)
        if len(attempts) == 2:
            raise ConnectionError("bucket unreachable")
        return SensorResult([RunRequest("ping")], f"c{len(attempts)}")

    pipeline.sensor("flaky", flaky, interval=10)
    pipeline.schedule("minutely", "ping", cron="* * * * *")
    scheduler = Scheduler(pipeline)
    for seconds in (0, 61, 122):
        scheduler.tick_once(T0 + timedelta(seconds=seconds))
    polls = sensor_ticks(pipeline, "flaky")
    assert [t.status for t in polls] == [
        TickStatus.LAUNCHED,
        TickStatus.FAILED,
        TickStatus.LAUNCHED,
    ]
    failed = polls[1]
    assert failed.reason == "the sensor raised ConnectionError: bucket unreachable"
    assert "Traceback" in failed.details["traceback"] and failed.run_ids == ()
    # The failed poll kept the cursor: the next poll saw c1 again.
    assert attempts == [None, "c1", "c1"]
    # The schedule ran at 00:01 and 00:02 all the same.
    schedule_ticks = pipeline.store.list_ticks(TickKind.SCHEDULE, "minutely")
    assert {t.status for t in schedule_ticks} == {TickStatus.LAUNCHED} and len(schedule_ticks) == 2


def test_bad_requests_fail_the_tick_but_good_ones_launch() -> None:
    pipeline = make_pipeline()
    pipeline.sensor(
        "mixed",
        lambda cursor: [
            RunRequest("pnig"),
            RunRequest("ingest", partition="z.csv"),
            RunRequest("ping"),
        ],
        interval=1,
    )
    Scheduler(pipeline).tick_once(T0)
    [tick] = sensor_ticks(pipeline, "mixed")
    assert tick.status == TickStatus.FAILED and len(tick.run_ids) == 1
    outcomes = [(e["outcome"], e.get("error_type")) for e in tick.details["requests"]]
    assert outcomes == [
        ("failed", "UnknownAssetError"),
        ("failed", "PartitionError"),
        ("launched", None),
    ]
    assert "Did you mean 'ping'" in (tick.reason or "")
    assert pipeline.store.get_run(tick.run_ids[0]).status == RunStatus.SUCCESS  # type: ignore[union-attr]


def test_a_sensor_returning_the_wrong_thing_fails_its_tick() -> None:
    pipeline = make_pipeline()
    pipeline.sensor("wrong", lambda cursor: {"asset": "ping"}, interval=1)
    Scheduler(pipeline).tick_once(T0)
    [tick] = sensor_ticks(pipeline, "wrong")
    assert tick.status == TickStatus.FAILED and "must return" in (tick.reason or "")


def test_a_stored_sensor_the_pipeline_lacks_fails_its_tick(sqlite_url: str) -> None:
    declaring = make_pipeline(sqlite_url)
    declaring.sensor("files", new_files, interval=30)
    Scheduler(declaring).sync(T0)
    declaring.close()
    other = make_pipeline(sqlite_url)
    Scheduler(other).tick_once(T0)
    [tick] = sensor_ticks(other, "files")
    assert tick.status == TickStatus.FAILED and "declares no sensor 'files'" in (tick.reason or "")
    other.close()


def test_a_paused_sensor_is_not_polled() -> None:
    pipeline = make_pipeline()
    calls: list[str | None] = []
    pipeline.sensor("probe", calls.append, interval=1)
    scheduler = Scheduler(pipeline)
    scheduler.sync(T0)
    assert pipeline.store.set_sensor_paused("probe", True)
    scheduler.tick_once(T0 + timedelta(seconds=5))
    assert calls == []


def test_two_schedulers_polling_one_sensor_launch_each_poll_once(sqlite_url: str) -> None:
    pipelines = [make_pipeline(sqlite_url) for _ in range(2)]
    calls = []

    def counter(cursor: str | None) -> SensorResult:
        calls.append(cursor)
        n = int(cursor or 0) + 1
        return SensorResult([RunRequest("ping")], str(n))  # no run key: only the CAS protects

    for p in pipelines:
        p.sensor("counter", counter, interval=1)
    barrier = threading.Barrier(2)

    def run(pipeline: fs.Pipeline) -> None:
        scheduler = Scheduler(pipeline)
        for step in range(30):
            barrier.wait()
            scheduler.tick_once(T0 + timedelta(seconds=2 * step))
        scheduler.close()

    threads = [threading.Thread(target=run, args=(p,)) for p in pipelines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = pipelines[0].store
    polls = sensor_ticks(pipelines[0], "counter")
    state = store.get_sensor("counter")
    assert state is not None
    # Every applied poll advanced the cursor by one and launched one run, whoever applied it.
    assert len(polls) == state.version == int(state.cursor or 0)
    assert len(store.list_runs(limit=1000)) == len(polls)
    assert len(store.list_materializations(asset="ping", status=Status.SUCCESS, limit=None)) == len(
        polls
    )
    for p in pipelines:
        p.close()


def test_sensor_ticks_are_audited_and_emit_telemetry() -> None:
    pipeline = make_pipeline()
    pipeline.sensor("one", lambda cursor: [RunRequest("ping", run_key="x")], interval=1)
    events: list[TelemetryEvent] = []
    pipeline.subscribe(events.append, prefix="sensor.")
    Scheduler(pipeline).tick_once(T0)
    actions = [e.action for e in pipeline.audit_log(limit=None) if e.resource_type == "sensor"]
    assert actions == ["sensor.created", "sensor.tick.launched"]
    [event] = events
    assert event.metadata["status"] == "launched" and event.metadata["launched"] == 1
    assert "duration_ms" in event.measurements


def test_the_decorator_form() -> None:
    pipeline = make_pipeline()

    @pipeline.sensor("decorated", interval=5)
    def decorated(cursor: str | None) -> None:
        return None

    assert pipeline.sensors["decorated"].interval_s == 5.0
    with pytest.raises(DefinitionError, match="already declared"):
        pipeline.sensor("decorated", decorated)
