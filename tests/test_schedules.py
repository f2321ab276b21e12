"""Cron times across DST, catch-up decisions, and schedule/sensor definitions (no store)."""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from flowstone.errors import InvalidCronError, ScheduleDefinitionError
from flowstone.schedule_records import CatchUp, TickStatus
from flowstone.schedules import (
    BUILTIN_PARTITIONS,
    CatchUpPolicy,
    CronTimes,
    RunRequest,
    SensorResult,
    catchup,
    define_schedule,
    define_sensor,
    sensor_output,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def fire_times(cron: str, zone: str, after: str, until: str, **policy: str) -> list[str]:
    """Fire times as local ISO strings (with their offset)."""
    times = CronTimes(cron, zone, **policy)
    return [t.isoformat() for t in times.between(utc(after), utc(until))]


# --- DST -----------------------------------------------------------------------------------


def test_a_fixed_time_in_the_spring_gap_shifts_to_the_end_of_the_gap() -> None:
    # 2025-03-09: New York skips 02:00-03:00.
    got = fire_times("30 2 * * *", "America/New_York", "2025-03-08T00:00Z", "2025-03-11T00:00Z")
    assert got == [
        "2025-03-08T02:30:00-05:00",
        "2025-03-09T03:00:00-04:00",
        "2025-03-10T02:30:00-04:00",
    ]


def test_a_fixed_time_in_the_gap_can_be_skipped_instead() -> None:
    got = fire_times(
        "30 2 * * *",
        "America/New_York",
        "2025-03-08T00:00Z",
        "2025-03-11T00:00Z",
        nonexistent="skip",
    )
    assert got == ["2025-03-08T02:30:00-05:00", "2025-03-10T02:30:00-04:00"]


def test_a_fixed_time_in_the_repeated_hour_fires_once_by_default_or_twice() -> None:
    # 2025-10-26: Oslo repeats 02:00-03:00.
    once = fire_times("30 2 * * *", "Europe/Oslo", "2025-10-25T12:00Z", "2025-10-27T12:00Z")
    assert once == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]
    both = fire_times(
        "30 2 * * *", "Europe/Oslo", "2025-10-25T12:00Z", "2025-10-27T12:00Z", repeated="both"
    )
    assert both == [
        "2025-10-26T02:30:00+02:00",
        "2025-10-26T02:30:00+01:00",
        "2025-10-27T02:30:00+01:00",
    ]


def test_an_hourly_schedule_follows_elapsed_time_across_both_changes() -> None:
    spring = fire_times("0 * * * *", "Europe/Oslo", "2025-03-30T00:00Z", "2025-03-30T03:00Z")
    # 02:00 does not exist: one real hour from 01:00 CET to 03:00 CEST.
    assert spring == [
        "2025-03-30T03:00:00+02:00",
        "2025-03-30T04:00:00+02:00",
        "2025-03-30T05:00:00+02:00",
    ]
    autumn = fire_times("0 * * * *", "Europe/Oslo", "2025-10-25T22:30Z", "2025-10-26T02:00Z")
    # 02:00 happens twice; each real hour fires once.
    assert autumn == [
        "2025-10-26T01:00:00+02:00",
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]
    gaps = [b - a for a, b in zip(*_pairs(autumn), strict=True)]
    assert set(gaps) == {timedelta(hours=1)}


def _pairs(times: list[str]) -> tuple[list[datetime], list[datetime]]:
    parsed = [datetime.fromisoformat(t) for t in times]
    return parsed[:-1], parsed[1:]


def test_gap_times_that_shift_to_one_instant_fire_once() -> None:
    got = fire_times(
        "*/15 * * * *",
        "America/New_York",
        "2025-03-09T06:40Z",
        "2025-03-09T07:20Z",
        nonexistent="shift",
    )
    # 02:00, 02:15, 02:30, 02:45 all shift to 03:00, which is a tick of its own: one tick.
    assert got == [
        "2025-03-09T01:45:00-05:00",
        "2025-03-09T03:00:00-04:00",
        "2025-03-09T03:15:00-04:00",
    ]


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Asia/Kolkata", ["2025-01-01T09:00:00+05:30", "2025-01-02T09:00:00+05:30"]),
        ("Asia/Kathmandu", ["2025-01-01T09:00:00+05:45", "2025-01-02T09:00:00+05:45"]),
    ],
)
def test_half_and_quarter_hour_zones_tick_at_local_time(zone: str, expected: list[str]) -> None:
    assert fire_times("0 9 * * *", zone, "2024-12-31T12:00Z", "2025-01-02T12:00Z") == expected


def test_lord_howes_half_hour_dst_shift() -> None:
    # 2025-10-05 02:00 -> 02:30 in Australia/Lord_Howe: 02:15 does not exist.
    got = fire_times("15 2 * * *", "Australia/Lord_Howe", "2025-10-04T00:00Z", "2025-10-06T00:00Z")
    assert got == [
        "2025-10-05T02:30:00+11:00",  # shifted to the end of the 30-minute gap
        "2025-10-06T02:15:00+11:00",
    ]


def test_bounds_are_exclusive_then_inclusive() -> None:
    times = CronTimes("0 6 * * *", "UTC")
    after = utc("2025-01-01T06:00Z")
    assert [t.isoformat() for t in times.between(after, utc("2025-01-02T06:00Z"))] == [
        "2025-01-02T06:00:00+00:00"
    ]


def test_aliases_and_a_long_range_are_lazy() -> None:
    times = CronTimes("@hourly", "UTC")
    lazy = times.between(utc("2025-01-01T00:00Z"), utc("2125-01-01T00:00Z"))
    assert next(iter(lazy)).isoformat() == "2025-01-01T01:00:00+00:00"


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [("0 0 * *", "4 fields"), ("61 * * * *", "bad minute"), ("0 0 31 2 *", "day")],
)
def test_bad_cron_expressions_say_what_to_write(cron: str, fragment: str) -> None:
    with pytest.raises(InvalidCronError) as info:
        CronTimes(cron, "UTC", owner="nightly")
    message = str(info.value)
    assert "'nightly'" in message and fragment in message.lower() and "e.g. '0 6 * * *'" in message


def test_unknown_zone_and_policies_are_refused_with_suggestions() -> None:
    with pytest.raises(ScheduleDefinitionError, match="Europe/Oslo"):
        CronTimes("0 0 * * *", "Europe/Olso")
    with pytest.raises(ScheduleDefinitionError, match="dst_repeated"):
        CronTimes("0 0 * * *", "UTC", repeated="twice")


# --- catch-up ------------------------------------------------------------------------------

NOW = utc("2025-01-10T12:00Z")


def due(*hours_ago: float) -> list[datetime]:
    return [NOW - timedelta(hours=h) for h in hours_ago]


def statuses(decisions: list[catchup.TickDecision]) -> list[str]:
    return [d.status.value for d in decisions]


def test_latest_runs_the_most_recent_and_skips_the_rest() -> None:
    decisions = CatchUpPolicy(CatchUp.LATEST).decide(due(3, 2, 1), NOW, grace_s=60)
    assert statuses(decisions) == ["skipped", "skipped", "launched"]
    assert "later tick ran" in (decisions[0].reason or "")


def test_all_runs_up_to_the_limit_most_recent() -> None:
    decisions = CatchUpPolicy(CatchUp.ALL, limit=2).decide(due(3, 2, 1), NOW, grace_s=60)
    assert statuses(decisions) == ["skipped", "launched", "launched"]
    assert "catch_up_limit (2)" in (decisions[0].reason or "")


def test_skip_runs_only_ticks_found_on_time() -> None:
    on_time = NOW - timedelta(seconds=30)
    decisions = CatchUpPolicy(CatchUp.SKIP).decide([*due(2, 1), on_time], NOW, grace_s=60)
    assert statuses(decisions) == ["skipped", "skipped", "launched"]
    assert "catch_up is 'skip'" in (decisions[0].reason or "")


def test_max_lateness_marks_old_ticks_missed_whatever_the_policy() -> None:
    policy = CatchUpPolicy(CatchUp.ALL, limit=10, max_lateness_s=3 * 3600)
    decisions = policy.decide(due(5, 4, 2, 1), NOW, grace_s=60)
    assert statuses(decisions) == ["missed", "missed", "launched", "launched"]
    assert "max_lateness (3.0h)" in (decisions[0].reason or "")
    everything_late = CatchUpPolicy(CatchUp.LATEST, max_lateness_s=60).decide(due(2), NOW, 60)
    assert statuses(everything_late) == ["missed"]


def test_a_long_outage_is_summarized_not_written_tick_by_tick() -> None:
    minutes = [NOW - timedelta(minutes=m) for m in range(5000, 0, -1)]
    decisions = CatchUpPolicy(CatchUp.LATEST).decide(minutes, NOW, grace_s=60)
    assert len(decisions) == catchup.RECORDED_INDIVIDUALLY + 2
    summary = decisions[0]
    assert summary.status == TickStatus.SKIPPED
    assert summary.time == minutes[0]
    assert summary.details["summarized_ticks"] == 5000 - 1 - catchup.RECORDED_INDIVIDUALLY
    assert decisions[-1].status == TickStatus.LAUNCHED and decisions[-1].time == minutes[-1]
    total = summary.details["summarized_ticks"] + len(decisions) - 1
    assert total == 5000  # every due tick is accounted for


# --- definitions ---------------------------------------------------------------------------


def test_builtin_partitions_of_a_tick() -> None:
    tick = datetime(2025, 3, 30, 3, 0, tzinfo=ZoneInfo("Europe/Oslo"))  # just after the gap
    assert BUILTIN_PARTITIONS["tick_date"](tick) == dt.date(2025, 3, 30)
    assert BUILTIN_PARTITIONS["previous_day"](tick) == dt.date(2025, 3, 29)
    assert BUILTIN_PARTITIONS["none"](tick) is None
    previous = BUILTIN_PARTITIONS["previous_hour"](tick)
    assert isinstance(previous, datetime)
    # An hour of elapsed time before 03:00 CEST is 01:00 CET (02:00 does not exist).
    assert previous.isoformat() == "2025-03-30T01:00:00+01:00"


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"catch_up": "sometimes"}, "catch_up must be one of"),
        ({"catch_up_limit": 0}, "catch_up_limit must be at least 1"),
        ({"max_lateness": -5}, "max_lateness must be positive"),
        ({"partition": "yesterday"}, "partition must be a function"),
        ({"cron": "* * *"}, "invalid cron expression"),
    ],
)
def test_bad_schedule_settings_are_refused(settings: dict[str, object], fragment: str) -> None:
    kwargs: dict[str, object] = {"cron": "0 6 * * *", **settings}
    with pytest.raises(ScheduleDefinitionError, match=fragment):
        define_schedule("nightly", ["report"], **kwargs)  # type: ignore[arg-type]


def test_a_partition_function_is_stored_as_code() -> None:
    definition = define_schedule(
        "nightly", ["report"], cron="0 6 * * *", partition=lambda t: t.date()
    )
    assert definition.record.partition == "code"
    assert definition.partition_fn(datetime(2025, 1, 2, tzinfo=UTC)) == dt.date(2025, 1, 2)


def test_sensor_outputs_are_normalized_or_refused() -> None:
    request = RunRequest("a", run_key="k")
    assert sensor_output(None, "c") == ([], "c")
    assert sensor_output(SensorResult([request], "d"), "c") == ([request], "d")
    assert sensor_output(([request], "e"), "c") == ([request], "e")
    assert sensor_output([request], "c") == ([request], "c")
    with pytest.raises(TypeError, match="must return"):
        sensor_output(42, None)
    with pytest.raises(TypeError, match="cursor must be a string"):
        sensor_output(([request], 7), None)
    with pytest.raises(TypeError, match="RunRequest was expected"):
        sensor_output(["a"], None)
    with pytest.raises(ScheduleDefinitionError, match="interval must be positive"):
        define_sensor("s", lambda c: None, interval=0)
