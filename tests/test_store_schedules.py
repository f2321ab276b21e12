"""The store contract for schedules, sensors and ticks, over memory, SQLite and PostgreSQL.

Same stores as ``test_store_contract.py`` (PostgreSQL runs when a server answers, and must on
CI). What matters most here is that a tick is taken once: a second ``create_schedule_tick`` for
the same (schedule, time), or a sensor poll applied on a stale version, stores nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowstone.errors import StoreError
from flowstone.records import RunStatus, Status
from flowstone.schedule_records import (
    CatchUp,
    ScheduleRecord,
    SensorRecord,
    TickKind,
    TickLaunch,
    TickRecord,
    TickStatus,
)
from flowstone.store import MetadataStore
from test_store_contract import STORE_KINDS, event, mat, open_test_store, run_record

T0 = datetime(2025, 3, 9, 6, 0, tzinfo=UTC)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    with open_test_store(request.param, tmp_path) as opened:
        yield opened


def schedule(name: str = "nightly", **fields: object) -> ScheduleRecord:
    fields.setdefault("targets", ("report",))
    fields.setdefault("cron", "0 2 * * *")
    fields.setdefault("created_at", T0)
    fields.setdefault("updated_at", T0)
    return ScheduleRecord(name=name, **fields)  # type: ignore[arg-type]


def tick(
    name: str = "nightly",
    minutes: float = 0,
    *,
    kind: TickKind = TickKind.SCHEDULE,
    status: TickStatus = TickStatus.LAUNCHED,
    **fields: object,
) -> TickRecord:
    return TickRecord(
        kind=kind,
        name=name,
        tick_time=T0 + timedelta(minutes=minutes),
        status=status,
        recorded_at=fields.pop("recorded_at", T0),  # type: ignore[arg-type]
        **fields,  # type: ignore[arg-type]
    )


def launch(run_key: str | None = None) -> TickLaunch:
    run = run_record()
    pending = [
        mat("report", run_id=run.id, status=Status.PENDING),
        mat("raw", run_id=run.id, status=Status.PENDING),
    ]
    return TickLaunch(run=run, materializations=pending, run_key=run_key)


# --- schedules -----------------------------------------------------------------------------


def test_a_schedule_round_trips(store: MetadataStore) -> None:
    record = schedule(
        targets=("a", "b"),
        timezone="Asia/Kathmandu",
        partition="previous_day",
        with_upstream=True,
        catch_up=CatchUp.ALL,
        catch_up_limit=3,
        max_lateness_s=3600.5,
        dst_nonexistent="skip",
        dst_repeated="both",
        source="cli",
        tags={"team": "bi"},
    )
    store.save_schedule(record, [event("schedule.created", resource_type="schedule")])
    assert store.get_schedule("nightly") == record
    assert store.get_schedule("nope") is None
    assert [e.action for e in store.list_audit()] == ["schedule.created"]


def test_saving_a_definition_keeps_the_schedules_state(store: MetadataStore) -> None:
    store.save_schedule(schedule())
    store.set_schedule_paused("nightly", True)
    assert store.create_schedule_tick(tick(minutes=5, status=TickStatus.SKIPPED))
    later = T0 + timedelta(days=1)
    store.save_schedule(schedule(cron="0 3 * * *", created_at=later, updated_at=later))
    saved = store.get_schedule("nightly")
    assert saved is not None
    assert (saved.cron, saved.updated_at) == ("0 3 * * *", later)
    # State is kept: still paused, same cursor, same creation time.
    assert (saved.paused, saved.cursor, saved.created_at) == (True, T0 + timedelta(minutes=5), T0)


def test_schedules_are_listed_by_name(store: MetadataStore) -> None:
    for name in ("b", "a", "C"):
        store.save_schedule(schedule(name))
    assert [s.name for s in store.list_schedules()] == ["C", "a", "b"]


def test_pause_resume_and_cursor_never_moves_back(store: MetadataStore) -> None:
    assert not store.set_schedule_paused("nightly", True)
    store.save_schedule(schedule())
    assert store.set_schedule_paused("nightly", True, audit=[event("schedule.paused")])
    assert store.get_schedule("nightly").paused  # type: ignore[union-attr]
    resumed_at = T0 + timedelta(hours=5)
    assert store.set_schedule_paused("nightly", False, cursor=resumed_at)
    saved = store.get_schedule("nightly")
    assert saved is not None and not saved.paused and saved.cursor == resumed_at
    store.set_schedule_paused("nightly", False, cursor=T0)
    assert store.get_schedule("nightly").cursor == resumed_at  # type: ignore[union-attr]


def test_deleting_a_schedule_keeps_its_ticks(store: MetadataStore) -> None:
    store.save_schedule(schedule())
    store.create_schedule_tick(tick(status=TickStatus.MISSED, reason="late"))
    assert store.delete_schedule("nightly", [event("schedule.removed")])
    assert not store.delete_schedule("nightly")
    assert store.get_schedule("nightly") is None
    assert [t.reason for t in store.list_ticks(TickKind.SCHEDULE, "nightly")] == ["late"]


# --- ticks ---------------------------------------------------------------------------------


def test_a_tick_creates_its_run_and_moves_the_cursor_atomically(store: MetadataStore) -> None:
    store.save_schedule(schedule())
    work = launch()
    first = tick(minutes=10, run_ids=(work.run.id,), details={"local": "02:00"})
    assert store.create_schedule_tick(first, work, [event("schedule.tick.launched")])
    assert store.get_run(work.run.id) == work.run
    statuses = {m.asset: m.status for m in store.list_materializations(run_id=work.run.id)}
    assert statuses == {"report": Status.PENDING, "raw": Status.PENDING}
    assert store.get_schedule("nightly").cursor == first.tick_time  # type: ignore[union-attr]
    [stored] = store.list_ticks(TickKind.SCHEDULE, "nightly")
    assert stored.id is not None
    assert replace(stored, id=None) == first


def test_a_tick_is_taken_once(store: MetadataStore) -> None:
    store.save_schedule(schedule())
    assert store.create_schedule_tick(tick(minutes=10), launch())
    second = launch()
    # Another scheduler, same tick: nothing of its call is stored.
    assert not store.create_schedule_tick(tick(minutes=10), second, [event("dup")])
    assert store.get_run(second.run.id) is None
    assert store.list_materializations(run_id=second.run.id) == []
    assert [e.action for e in store.list_audit()] == []
    assert len(store.list_ticks(TickKind.SCHEDULE, "nightly")) == 1


def test_the_cursor_never_moves_back(store: MetadataStore) -> None:
    store.save_schedule(schedule())
    store.create_schedule_tick(tick(minutes=30, status=TickStatus.SKIPPED))
    store.create_schedule_tick(tick(minutes=10, status=TickStatus.SKIPPED))
    assert store.get_schedule("nightly").cursor == T0 + timedelta(minutes=30)  # type: ignore[union-attr]


def test_a_tick_whose_run_is_rejected_stores_nothing(store: MetadataStore) -> None:
    store.save_schedule(schedule())
    existing = mat("report", status=Status.SUCCESS)
    store.save_materialization(existing)
    clash = launch()
    clash = replace(
        clash,
        materializations=[replace(existing, run_id=clash.run.id, status=Status.PENDING)],
    )
    with pytest.raises(StoreError):
        store.create_schedule_tick(tick(minutes=1), clash)
    assert store.list_ticks(TickKind.SCHEDULE, "nightly") == []
    assert store.get_run(clash.run.id) is None
    assert store.get_schedule("nightly").cursor is None  # type: ignore[union-attr]


def test_ticks_are_listed_newest_first_per_schedule(store: MetadataStore) -> None:
    for minutes in (1, 3, 2):
        store.create_schedule_tick(tick(minutes=minutes, status=TickStatus.SKIPPED))
    store.create_schedule_tick(tick("other", 9, status=TickStatus.SKIPPED))
    listed = store.list_ticks(TickKind.SCHEDULE, "nightly", limit=2)
    assert [t.tick_time.minute for t in listed] == [3, 2]
    assert store.list_ticks(TickKind.SENSOR, "nightly") == []


# --- sensors -------------------------------------------------------------------------------


def sensor(name: str = "files", **fields: object) -> SensorRecord:
    fields.setdefault("interval_s", 30.0)
    fields.setdefault("created_at", T0)
    fields.setdefault("updated_at", T0)
    return SensorRecord(name=name, **fields)  # type: ignore[arg-type]


def test_a_sensor_round_trips_and_keeps_its_state(store: MetadataStore) -> None:
    store.save_sensor(sensor())
    assert store.get_sensor("files") == sensor()
    assert store.create_sensor_tick("files", expected_version=0, polled_at=T0, cursor="c1")
    store.set_sensor_paused("files", True)
    store.save_sensor(sensor(interval_s=5.0))
    saved = store.get_sensor("files")
    assert saved is not None
    assert (saved.interval_s, saved.cursor, saved.version, saved.paused) == (5.0, "c1", 1, True)
    assert saved.last_tick_at == T0
    assert [s.name for s in store.list_sensors()] == ["files"]
    assert not store.set_sensor_paused("nope", True)


def test_a_poll_applies_only_on_the_version_it_read(store: MetadataStore) -> None:
    store.save_sensor(sensor())
    work = launch("file-1")
    polled = tick("files", 1, kind=TickKind.SENSOR, run_ids=(work.run.id,))
    assert store.create_sensor_tick(
        "files",
        expected_version=0,
        polled_at=polled.tick_time,
        cursor="1",
        tick=polled,
        launches=[work],
    )
    stale = launch("file-2")
    assert not store.create_sensor_tick(
        "files",
        expected_version=0,
        polled_at=T0,
        cursor="2",
        tick=tick("files", 2, kind=TickKind.SENSOR),
        launches=[stale],
    )
    assert store.get_run(stale.run.id) is None
    saved = store.get_sensor("files")
    assert saved is not None and (saved.cursor, saved.version) == ("1", 1)
    assert store.seen_run_keys("files", ["file-1", "file-2"]) == {"file-1"}
    assert store.seen_run_keys("other", ["file-1"]) == set()
    assert not store.create_sensor_tick("missing", expected_version=0, polled_at=T0, cursor=None)


def test_a_run_key_launches_once(store: MetadataStore) -> None:
    store.save_sensor(sensor())
    first = tick("files", 1, kind=TickKind.SENSOR)
    assert store.create_sensor_tick(
        "files",
        expected_version=0,
        polled_at=T0,
        cursor=None,
        tick=first,
        launches=[launch("k")],
    )
    again = launch("k")
    assert not store.create_sensor_tick(
        "files",
        expected_version=1,
        polled_at=T0,
        cursor="x",
        tick=tick("files", 2, kind=TickKind.SENSOR),
        launches=[again],
    )
    assert store.get_run(again.run.id) is None
    assert store.get_sensor("files").version == 1  # type: ignore[union-attr]
    # Runs without a key never collide.
    assert store.create_sensor_tick(
        "files",
        expected_version=1,
        polled_at=T0,
        cursor=None,
        tick=tick("files", 3, kind=TickKind.SENSOR),
        launches=[launch(), launch()],
    )


# --- orphaned runs -------------------------------------------------------------------------


def test_runs_that_never_started_are_found_and_claimed_once(store: MetadataStore) -> None:
    store.save_schedule(schedule())
    never, started, done = launch(), launch(), launch()
    for minutes, work in enumerate((never, started, done)):
        store.create_schedule_tick(tick(minutes=minutes), work)
    first = started.materializations[0]
    store.save_materialization(replace(first, status=Status.RUNNING, started_at=T0))
    store.update_run(replace(done.run, status=RunStatus.SUCCESS, completed_at=T0))

    assert store.orphaned_tick_runs(T0) == []  # claimed at T0: not before T0
    [orphan] = store.orphaned_tick_runs(T0 + timedelta(seconds=1))
    assert (orphan.run_id, orphan.kind, orphan.name, orphan.claimed_at) == (
        never.run.id,
        TickKind.SCHEDULE,
        "nightly",
        T0,
    )
    later = T0 + timedelta(minutes=5)
    assert store.claim_tick_run(never.run.id, expected=T0, claimed_at=later)
    assert not store.claim_tick_run(never.run.id, expected=T0, claimed_at=later)
    assert store.orphaned_tick_runs(later) == []
    assert not store.claim_tick_run("nope", expected=T0, claimed_at=later)
