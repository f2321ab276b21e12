"""Partition definitions: counts, order, DST, clocks, validation messages, parsing."""

from __future__ import annotations

import doctest
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest

import flowstone.partitions as partitions_package
import flowstone.partitions.definitions as definitions_module
import flowstone.partitions.time_window as time_window_module
from flowstone.errors import PartitionError
from flowstone.partitions import (
    DailyPartitions,
    HourlyPartitions,
    MonthlyPartitions,
    MultiPartitions,
    Partition,
    PartitionsDefinition,
    StaticPartitions,
    TimeWindowPartitions,
    WeeklyPartitions,
    encode_partition,
)

OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")


def clock(iso: str) -> Callable[[], datetime]:
    """A fixed clock for open-ended definitions."""
    now = datetime.fromisoformat(iso)
    return lambda: now


def hours_of(day: date, timezone: str) -> list[datetime]:
    hourly = HourlyPartitions(day, day + timedelta(days=1), timezone=timezone)
    keys = list(hourly.keys())
    assert len(keys) == len(hourly)
    return keys  # type: ignore[return-value]


# --- StaticPartitions -------------------------------------------------------------------------


def test_static_keeps_order_and_counts() -> None:
    regions = StaticPartitions(["us", "eu", "apac"])
    assert list(regions.keys()) == ["us", "eu", "apac"]
    assert list(regions) == ["us", "eu", "apac"]
    assert len(regions) == 3
    assert regions.index("apac") == 2
    assert regions.key_at(1) == "eu"


def test_static_contains() -> None:
    regions = StaticPartitions(["us", "eu"])
    assert regions.contains("eu")
    assert "us" in regions
    assert not regions.contains("fr")
    assert not regions.contains(1)
    with pytest.raises(PartitionError, match=r"float"):
        regions.contains(2.5)  # type: ignore[arg-type]


def test_static_tells_int_from_bool_and_str() -> None:
    numbers = StaticPartitions([1, 2])
    assert numbers.contains(1)
    assert not numbers.contains("1")
    with pytest.raises(PartitionError, match=r"bool"):
        numbers.contains(True)


def test_static_rejects_duplicates_by_encoding() -> None:
    with pytest.raises(
        PartitionError, match=r"duplicate static partition key 'eu' \(positions 1 and 2\)"
    ):
        StaticPartitions(["us", "eu", "eu"])
    same_instant = [datetime(2025, 1, 1, 1, tzinfo=OSLO), datetime(2025, 1, 1, tzinfo=UTC)]
    with pytest.raises(PartitionError, match=r"duplicate"):
        StaticPartitions(same_instant)


def test_static_rejects_bad_input() -> None:
    with pytest.raises(PartitionError, match=r"key #1: cannot use float"):
        StaticPartitions(["a", 1.5])  # type: ignore[list-item]
    with pytest.raises(
        PartitionError, match=r"single string 'abc'; write StaticPartitions\(\['abc'\]\)"
    ):
        StaticPartitions("abc")
    with pytest.raises(PartitionError, match=r"at least one key"):
        StaticPartitions([])


def test_static_validate_messages() -> None:
    regions = StaticPartitions(["us", "eu"])
    assert regions.validate("eu") == "eu"
    with pytest.raises(PartitionError) as info:
        regions.validate("fr")
    assert str(info.value) == "'fr' is not one of the static partitions 'us', 'eu'"
    with pytest.raises(PartitionError, match=r"\(did you mean 'eu'\?\)"):
        regions.validate("euu")
    with pytest.raises(PartitionError, match=r"the keys are str, got int"):
        regions.validate(3)
    many = StaticPartitions([f"k{i}" for i in range(25)])
    with pytest.raises(PartitionError, match=r"'k9', \.\.\. \(25 keys\)"):
        many.validate("zz")


def test_static_validate_returns_the_stored_key() -> None:
    stored = datetime(2025, 1, 1, 1, tzinfo=OSLO)
    moments = StaticPartitions([stored])
    result = moments.validate(datetime(2025, 1, 1, tzinfo=UTC))
    assert isinstance(result, datetime)
    assert result.tzinfo is OSLO


def test_static_parse() -> None:
    regions = StaticPartitions(["us", "eu", "a:b"])
    assert regions.parse("us") == "us"
    assert regions.parse("s:eu") == "eu"
    assert regions.parse("a:b") == "a:b"
    with pytest.raises(PartitionError, match=r"'fr' is not one of"):
        regions.parse("fr")
    with pytest.raises(PartitionError, match=r"'x:y' is not one of"):
        regions.parse("x:y")
    with pytest.raises(PartitionError, match=r"'fr' is not one of"):
        regions.parse("s:fr")


def test_static_parse_non_string_keys() -> None:
    numbers = StaticPartitions([1, 2, None])
    assert numbers.parse("2") == 2
    assert numbers.parse("-") is None
    assert numbers.parse("n:") is None
    mixed = StaticPartitions([1, "1"])
    with pytest.raises(PartitionError, match=r"several static partitions.*'i:1', 's:1'"):
        mixed.parse("1")
    assert mixed.parse("i:1") == 1
    assert mixed.parse("s:1") == "1"


def test_static_equality_hash_repr() -> None:
    assert StaticPartitions(["a", "b"]) == StaticPartitions(("a", "b"))
    assert StaticPartitions(["a", "b"]) != StaticPartitions(["b", "a"])
    assert hash(StaticPartitions(["a", "b"])) == hash(StaticPartitions(["a", "b"]))
    assert repr(StaticPartitions(["us", "eu"])) == "StaticPartitions(['us', 'eu'])"
    assert repr(StaticPartitions(range(20))) == (
        "StaticPartitions([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...], 20 keys)"
    )
    assert StaticPartitions(["a"]).describe() == "StaticPartitions(['a'])"


def test_static_keys_between() -> None:
    letters = StaticPartitions(["a", "b", "c", "d"])
    assert list(letters.keys_between("b", "c")) == ["b", "c"]
    assert list(letters.keys_between("c", "c")) == ["c"]
    with pytest.raises(PartitionError, match=r"comes after its end"):
        letters.keys_between("c", "b")
    with pytest.raises(PartitionError, match=r"'z' is not one of"):
        letters.keys_between("a", "z")


def test_key_at_out_of_range() -> None:
    with pytest.raises(PartitionError, match=r"index 2 is out of range"):
        StaticPartitions(["a", "b"]).key_at(2)
    with pytest.raises(PartitionError, match=r"out of range"):
        StaticPartitions(["a", "b"]).key_at(-1)


# --- DailyPartitions --------------------------------------------------------------------------


def test_daily_with_end() -> None:
    days = DailyPartitions("2025-01-01", "2025-02-01")
    keys = list(days.keys())
    assert len(days) == len(keys) == 31
    assert keys[0] == date(2025, 1, 1)
    assert keys[-1] == date(2025, 1, 31)
    assert all(type(k) is date for k in keys)
    assert days.start == date(2025, 1, 1)
    assert days.end == date(2025, 2, 1)


@pytest.mark.parametrize(
    "start",
    [
        date(2025, 1, 1),
        "2025-01-01",
        " 2025-01-01 ",
        datetime(2025, 1, 1),
        "2025-01-01T00:00",
        datetime(2025, 1, 1, tzinfo=OSLO),
        datetime(2024, 12, 31, 23, tzinfo=UTC),  # midnight in Oslo
    ],
)
def test_daily_start_forms(start: date | str) -> None:
    assert DailyPartitions(start, timezone="Europe/Oslo").start == date(2025, 1, 1)


def test_daily_rejects_bad_start_and_end() -> None:
    with pytest.raises(PartitionError, match=r"is not a midnight in UTC; pass a date"):
        DailyPartitions(datetime(2025, 1, 1, 10))
    with pytest.raises(PartitionError, match=r"'2025/01/01' is not an ISO date"):
        DailyPartitions("2025/01/01")
    with pytest.raises(PartitionError, match=r"must be a date, datetime or ISO string, got int"):
        DailyPartitions(20250101)  # type: ignore[arg-type]
    with pytest.raises(PartitionError, match=r"end 2025-01-01 must be after start 2025-01-01"):
        DailyPartitions("2025-01-01", "2025-01-01")
    with pytest.raises(PartitionError, match=r"end_offset only applies to open-ended"):
        DailyPartitions("2025-01-01", "2025-02-01", end_offset=1)
    with pytest.raises(PartitionError, match=r"end_offset must be an int"):
        DailyPartitions("2025-01-01", end_offset=1.0)  # type: ignore[arg-type]
    with pytest.raises(PartitionError, match=r"now must be a callable"):
        DailyPartitions("2025-01-01", now=datetime(2025, 1, 1))  # type: ignore[arg-type]


def test_daily_open_ended_ends_at_the_last_complete_day() -> None:
    now = clock("2025-01-15T12:00+00:00")
    days = DailyPartitions("2025-01-01", now=now)
    assert len(days) == 14
    assert list(days.keys())[-1] == date(2025, 1, 14)
    assert not days.contains(date(2025, 1, 15))
    assert len(DailyPartitions("2025-01-01", end_offset=1, now=now)) == 15
    assert DailyPartitions("2025-01-01", end_offset=1, now=now).contains(date(2025, 1, 15))
    assert len(DailyPartitions("2025-01-01", end_offset=-1, now=now)) == 13


def test_daily_open_ended_follows_the_zone_calendar() -> None:
    late_utc = clock("2025-01-15T23:30+00:00")  # already Jan 16 in Tokyo
    assert len(DailyPartitions("2025-01-01", timezone="Asia/Tokyo", now=late_utc)) == 15
    early_utc = clock("2025-01-15T03:00+00:00")  # still Jan 14 in New York
    assert len(DailyPartitions("2025-01-01", timezone="America/New_York", now=early_utc)) == 13


def test_daily_completes_dst_days_at_local_midnight() -> None:
    # 2025-03-30 is 23 hours long in Oslo; it is complete at 22:00 UTC (00:00 CEST).
    before = DailyPartitions(
        "2025-03-29", timezone="Europe/Oslo", now=clock("2025-03-30T21:59+00:00")
    )
    after = DailyPartitions(
        "2025-03-29", timezone="Europe/Oslo", now=clock("2025-03-30T22:00+00:00")
    )
    assert list(before.keys()) == [date(2025, 3, 29)]
    assert list(after.keys()) == [date(2025, 3, 29), date(2025, 3, 30)]
    # 2025-11-02 is 25 hours long in New York; it is complete at 05:00 UTC on Nov 3.
    ny_before = DailyPartitions(
        "2025-11-02", timezone="America/New_York", now=clock("2025-11-03T04:59+00:00")
    )
    ny_after = DailyPartitions(
        "2025-11-02", timezone="America/New_York", now=clock("2025-11-03T05:00+00:00")
    )
    assert len(ny_before) == 0
    assert list(ny_after.keys()) == [date(2025, 11, 2)]


def test_daily_with_no_complete_day_yet() -> None:
    days = DailyPartitions("2025-01-15", now=clock("2025-01-15T12:00+00:00"))
    assert len(days) == 0
    assert list(days.keys()) == []
    assert bool(days) is True  # an empty definition still means "partitioned"
    with pytest.raises(PartitionError, match=r"no day is complete yet as of 2025-01-15T12:00:00"):
        days.validate(date(2025, 1, 15))


def test_daily_clock_must_be_aware() -> None:
    days = DailyPartitions("2025-01-01", now=lambda: datetime(2025, 1, 15))
    with pytest.raises(PartitionError, match=r"must return an aware datetime"):
        len(days)


def test_daily_default_clock_is_the_real_time() -> None:
    days = DailyPartitions("2025-01-01")
    expected = (datetime.now(UTC).date() - date(2025, 1, 1)).days
    assert len(days) in (expected, expected + 1)  # the test may straddle midnight


def test_daily_validate_messages() -> None:
    days = DailyPartitions("2025-01-01", now=clock("2025-02-01T00:00+00:00"))
    assert days.validate(date(2025, 1, 15)) == date(2025, 1, 15)
    with pytest.raises(PartitionError) as info:
        days.validate(date(2024, 12, 31))
    assert str(info.value) == (
        "2024-12-31 is before the first partition 2025-01-01 of "
        "DailyPartitions(start=2025-01-01, timezone=UTC)"
    )
    with pytest.raises(PartitionError) as info:
        days.validate("2025-01-15")
    assert str(info.value) == (
        "expected a date for DailyPartitions, got str '2025-01-15'; pass datetime.date(2025, 1, 15)"
    )
    with pytest.raises(
        PartitionError, match=r"got datetime .*; pass its date: datetime.date\(2025, 1, 3\)"
    ):
        days.validate(datetime(2025, 1, 3, 10))
    with pytest.raises(
        PartitionError,
        match=r"after the last partition 2025-01-31 .*raise end_offset to include the current day",
    ):
        days.validate(date(2025, 2, 1))
    closed = DailyPartitions("2025-01-01", "2025-01-10")
    with pytest.raises(PartitionError) as info:
        closed.validate(date(2025, 1, 10))
    assert str(info.value) == (
        "2025-01-10 is after the last partition 2025-01-09 of "
        "DailyPartitions(start=2025-01-01, end=2025-01-10, timezone=UTC)"
    )


def test_wrong_kind_is_an_error_not_false() -> None:
    days = DailyPartitions("2025-01-01", "2025-02-01")
    with pytest.raises(PartitionError, match=r"expected a date"):
        days.contains("2025-01-15")
    with pytest.raises(PartitionError, match=r"expected a date"):
        assert "2025-01-15" in days
    with pytest.raises(PartitionError, match=r"expected a date"):
        days.contains(None)
    assert not days.contains(date(2030, 1, 1))


def test_daily_parse() -> None:
    days = DailyPartitions("2025-01-01", "2025-02-01")
    assert days.parse("2025-01-15") == date(2025, 1, 15)
    assert days.parse(" 2025-01-15\n") == date(2025, 1, 15)
    assert days.parse("d:2025-01-15") == date(2025, 1, 15)
    with pytest.raises(PartitionError, match=r"expected text such as '2025-01-01' or a tagged key"):
        days.parse("2025/01/15")
    with pytest.raises(PartitionError, match=r"not a valid date"):
        days.parse("2025-02-30")
    with pytest.raises(PartitionError, match=r"expected a date for DailyPartitions, got str"):
        days.parse("s:2025-01-15")
    with pytest.raises(PartitionError, match=r"expected text such as .*no tag"):
        days.parse("yesterday")
    with pytest.raises(PartitionError, match=r"before the first partition"):
        days.parse("2024-12-31")


def test_daily_keys_between_is_lazy_and_validates_eagerly() -> None:
    days = DailyPartitions("2025-01-01", "2026-01-01")
    between = days.keys_between(date(2025, 1, 30), date(2025, 2, 2))
    assert isinstance(between, Iterator)
    assert list(between) == [
        date(2025, 1, 30),
        date(2025, 1, 31),
        date(2025, 2, 1),
        date(2025, 2, 2),
    ]
    with pytest.raises(PartitionError, match=r"comes after its end"):
        days.keys_between(date(2025, 2, 2), date(2025, 1, 30))
    with pytest.raises(PartitionError, match=r"after the last partition"):
        days.keys_between(date(2025, 12, 1), date(2026, 1, 1))


def test_time_window_equality_and_repr() -> None:
    a = DailyPartitions("2025-01-01")
    assert a == DailyPartitions(date(2025, 1, 1), now=clock("2025-03-01T00:00+00:00"))
    assert a != DailyPartitions("2025-01-01", timezone="Europe/Oslo")
    assert a != DailyPartitions("2025-01-01", "2025-02-01")
    assert a != DailyPartitions("2025-01-01", end_offset=1)
    assert a != WeeklyPartitions("2024-12-30")
    assert hash(a) == hash(DailyPartitions("2025-01-01"))
    assert {a: 1}[DailyPartitions("2025-01-01")] == 1
    assert repr(a) == "DailyPartitions(start=2025-01-01, timezone=UTC)"
    assert repr(DailyPartitions("2025-01-01", "2025-02-01", timezone="Europe/Oslo")) == (
        "DailyPartitions(start=2025-01-01, end=2025-02-01, timezone=Europe/Oslo)"
    )
    assert repr(DailyPartitions("2025-01-01", end_offset=1)) == (
        "DailyPartitions(start=2025-01-01, timezone=UTC, end_offset=1)"
    )
    assert isinstance(a, TimeWindowPartitions)
    assert a.timezone == "UTC"
    assert a.end_offset == 0


def test_unknown_time_zone() -> None:
    with pytest.raises(
        PartitionError, match=r"unknown time zone 'Europe/Olso' \(did you mean 'Europe/Oslo'"
    ):
        DailyPartitions("2025-01-01", timezone="Europe/Olso")
    with pytest.raises(PartitionError, match=r"unknown time zone ''"):
        DailyPartitions("2025-01-01", timezone="")
    with pytest.raises(PartitionError, match=r"unknown time zone '../etc/passwd'"):
        DailyPartitions("2025-01-01", timezone="../etc/passwd")
    with pytest.raises(PartitionError, match=r"timezone must be an IANA zone name"):
        DailyPartitions("2025-01-01", timezone=OSLO)  # type: ignore[arg-type]


# --- WeeklyPartitions -------------------------------------------------------------------------


def test_weekly_keys_and_alignment() -> None:
    weeks = WeeklyPartitions("2025-01-06", "2025-02-03")
    assert list(weeks.keys()) == [
        date(2025, 1, 6),
        date(2025, 1, 13),
        date(2025, 1, 20),
        date(2025, 1, 27),
    ]
    assert weeks.week_starts_on == 0
    with pytest.raises(PartitionError) as info:
        WeeklyPartitions("2025-01-08")
    assert str(info.value) == (
        "WeeklyPartitions start 2025-01-08 is a Wednesday, but weeks start on Monday "
        "(week_starts_on=0); use 2025-01-06 or 2025-01-13"
    )
    with pytest.raises(PartitionError, match=r"end 2025-02-05 is a Wednesday"):
        WeeklyPartitions("2025-01-06", "2025-02-05")


def test_weekly_starting_on_sunday() -> None:
    weeks = WeeklyPartitions(
        date(2025, 1, 5), week_starts_on=6, now=clock("2025-01-22T12:00+00:00")
    )
    assert list(weeks.keys()) == [date(2025, 1, 5), date(2025, 1, 12)]
    assert repr(weeks) == "WeeklyPartitions(start=2025-01-05, week_starts_on=6, timezone=UTC)"
    with pytest.raises(PartitionError, match=r"is a Monday, but weeks start on Sunday"):
        WeeklyPartitions("2025-01-06", week_starts_on=6)


@pytest.mark.parametrize("bad", [7, -1, True, "0"])
def test_weekly_rejects_bad_week_starts_on(bad: object) -> None:
    with pytest.raises(PartitionError, match=r"week_starts_on must be an int from 0"):
        WeeklyPartitions("2025-01-06", week_starts_on=bad)  # type: ignore[arg-type]


def test_weekly_open_ended_counts_complete_weeks() -> None:
    wednesday = clock("2025-01-22T12:00+00:00")
    assert list(WeeklyPartitions("2025-01-06", now=wednesday).keys()) == [
        date(2025, 1, 6),
        date(2025, 1, 13),
    ]
    assert len(WeeklyPartitions("2025-01-06", end_offset=1, now=wednesday)) == 3
    monday = clock("2025-01-20T00:00+00:00")
    assert len(WeeklyPartitions("2025-01-06", now=monday)) == 2


def test_weekly_validate_and_parse() -> None:
    weeks = WeeklyPartitions("2025-01-06", "2025-03-03")
    assert weeks.validate(date(2025, 1, 13)) == date(2025, 1, 13)
    assert not weeks.contains(date(2025, 1, 15))
    with pytest.raises(PartitionError, match=r"nearest partitions are 2025-01-13 and 2025-01-20"):
        weeks.validate(date(2025, 1, 15))
    assert weeks.parse("2025-01-20") == date(2025, 1, 20)
    with pytest.raises(PartitionError, match=r"is a Tuesday"):
        weeks.parse("2025-01-21")
    assert weeks.index(date(2025, 1, 20)) == 2
    assert weeks.key_at(2) == date(2025, 1, 20)


# --- MonthlyPartitions ------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["2024-11", "2024-11-01", date(2024, 11, 1)])
def test_monthly_start_forms(start: str | date) -> None:
    months = MonthlyPartitions(start, "2025-03")
    assert list(months.keys()) == [
        date(2024, 11, 1),
        date(2024, 12, 1),
        date(2025, 1, 1),
        date(2025, 2, 1),
    ]
    assert len(months) == 4


def test_monthly_alignment() -> None:
    with pytest.raises(PartitionError) as info:
        MonthlyPartitions("2024-12-15")
    assert str(info.value) == (
        "MonthlyPartitions start 2024-12-15 is not the first day of a month; use 2024-12-01 "
        "or 2025-01-01"
    )
    months = MonthlyPartitions("2024-01", "2026-01")
    assert not months.contains(date(2025, 1, 15))
    with pytest.raises(
        PartitionError, match=r"not the first day of a month .* 2025-01-01 and 2025-02-01"
    ):
        months.validate(date(2025, 1, 15))


def test_monthly_open_ended_and_arithmetic() -> None:
    months = MonthlyPartitions("2024-11", now=clock("2025-03-10T00:00+00:00"))
    assert len(months) == 4
    assert months.key_at(3) == date(2025, 2, 1)
    assert months.index(date(2025, 1, 1)) == 2
    assert len(MonthlyPartitions("2024-11", end_offset=1, now=clock("2025-03-10T00:00+00:00"))) == 5
    long_run = MonthlyPartitions("2000-01", "2100-01")
    assert len(long_run) == 1200
    assert long_run.key_at(1199) == date(2099, 12, 1)


def test_monthly_parse() -> None:
    months = MonthlyPartitions("2024-01", "2026-01")
    assert months.parse("2025-01") == date(2025, 1, 1)
    assert months.parse("2025-01-01") == date(2025, 1, 1)
    assert months.parse("d:2025-01-01") == date(2025, 1, 1)
    with pytest.raises(PartitionError, match=r"not the first day of a month"):
        months.parse("2025-01-15")
    with pytest.raises(PartitionError, match=r"expected a month such as '2024-01' or '2024-01-01'"):
        months.parse("Jan 2025")
    with pytest.raises(PartitionError, match=r"not a valid date"):
        months.parse("2025-13")


# --- HourlyPartitions -------------------------------------------------------------------------


def test_hourly_utc_day() -> None:
    keys = hours_of(date(2025, 1, 15), "UTC")
    assert len(keys) == 24
    assert keys[0] == datetime(2025, 1, 15, tzinfo=UTC)
    assert keys[-1] == datetime(2025, 1, 15, 23, tzinfo=UTC)
    assert all(isinstance(k.tzinfo, ZoneInfo) and k.tzinfo.key == "UTC" for k in keys)


def test_hourly_oslo_spring_forward_has_23_hours() -> None:
    keys = hours_of(date(2025, 3, 30), "Europe/Oslo")
    assert len(keys) == 23
    assert [k.hour for k in keys[:4]] == [0, 1, 3, 4]  # 02:00 does not exist
    assert keys[1].utcoffset() == timedelta(hours=1)
    assert keys[2].utcoffset() == timedelta(hours=2)
    utc = [k.astimezone(UTC) for k in keys]
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(utc))


def test_hourly_oslo_fall_back_has_25_hours() -> None:
    keys = hours_of(date(2025, 10, 26), "Europe/Oslo")
    assert len(keys) == 25
    first, second = keys[2], keys[3]
    assert (first.hour, first.fold, first.utcoffset()) == (2, 0, timedelta(hours=2))
    assert (second.hour, second.fold, second.utcoffset()) == (2, 1, timedelta(hours=1))
    assert len({encode_partition(k) for k in keys}) == 25
    # The pitfall the module warns about: Python compares same-zone datetimes by wall time.
    assert first == second
    assert len(set(keys)) == 24


def test_hourly_new_york_dst_days() -> None:
    spring = hours_of(date(2025, 3, 9), "America/New_York")
    fall = hours_of(date(2025, 11, 2), "America/New_York")
    assert len(spring) == 23
    assert [k.hour for k in spring[:3]] == [0, 1, 3]
    assert len(fall) == 25
    assert [(k.hour, k.fold) for k in fall[:4]] == [(0, 0), (1, 0), (1, 1), (2, 0)]


def test_hourly_day_whose_midnight_is_skipped_starts_at_one() -> None:
    # Chile springs forward at midnight: 2024-09-08 00:00 never happened in Santiago.
    keys = hours_of(date(2024, 9, 8), "America/Santiago")
    assert len(keys) == 23
    assert keys[0].hour == 1


@pytest.mark.parametrize(("timezone", "utc_minute"), [("Asia/Kolkata", 30), ("Asia/Kathmandu", 15)])
def test_hourly_keys_sit_on_local_hours_in_fractional_offset_zones(
    timezone: str, utc_minute: int
) -> None:
    keys = hours_of(date(2025, 1, 15), timezone)
    assert len(keys) == 24
    assert keys[0].isoformat().startswith("2025-01-15T00:00:00+05:")
    assert all(k.minute == 0 for k in keys)
    assert all(k.astimezone(UTC).minute == utc_minute for k in keys)


def test_hourly_start_must_be_on_a_local_hour() -> None:
    with pytest.raises(PartitionError) as info:
        HourlyPartitions(datetime(2025, 1, 1, tzinfo=UTC), timezone="Asia/Kolkata")
    assert str(info.value) == (
        "HourlyPartitions start 2025-01-01T05:30:00+05:30 is not on a whole hour in Asia/Kolkata; "
        "use 2025-01-01T05:00:00+05:30 or 2025-01-01T06:00:00+05:30"
    )
    with pytest.raises(PartitionError, match=r"is not on a whole hour"):
        HourlyPartitions("2025-01-01T10:15")


def test_hourly_start_forms() -> None:
    expected = datetime(2025, 1, 1, 10, tzinfo=OSLO)
    starts: list[datetime | str] = [
        "2025-01-01T10:00",
        "2025-01-01 10:00",
        "2025-01-01T09:00Z",
        datetime(2025, 1, 1, 10),
    ]
    for start in starts:
        hourly = HourlyPartitions(start, timezone="Europe/Oslo")
        assert hourly.start == expected
        assert hourly.start.tzinfo is OSLO
    assert HourlyPartitions(date(2025, 1, 1)).start == datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(PartitionError, match=r"does not exist in Europe/Oslo"):
        HourlyPartitions("2025-03-30T02:00", timezone="Europe/Oslo")
    with pytest.raises(PartitionError, match=r"'tomorrow' is not an ISO date"):
        HourlyPartitions("tomorrow")


def test_hourly_end_rules() -> None:
    with pytest.raises(PartitionError, match=r"must be a whole number of hours after start"):
        HourlyPartitions("2025-01-01T10:00", "2025-01-01T10:00")
    with pytest.raises(PartitionError, match=r"must be a whole number of hours after start"):
        HourlyPartitions("2025-01-01T10:00", "2025-01-01T09:00")
    hourly = HourlyPartitions("2025-01-01T10:00", "2025-01-01T13:00")
    assert len(hourly) == 3
    assert hourly.end == datetime(2025, 1, 1, 13, tzinfo=UTC)


def test_hourly_open_ended_with_clock() -> None:
    now = clock("2025-01-01T05:30+00:00")
    assert len(HourlyPartitions("2025-01-01", now=now)) == 5
    assert len(HourlyPartitions("2025-01-01", end_offset=1, now=now)) == 6
    assert len(HourlyPartitions("2025-01-01", now=clock("2024-12-31T23:00+00:00"))) == 0
    oslo_now = clock("2025-01-01T05:00+00:00")  # 06:00 in Oslo
    assert len(HourlyPartitions("2025-01-01", timezone="Europe/Oslo", now=oslo_now)) == 6


def test_hourly_contains_and_validate() -> None:
    hourly = HourlyPartitions("2025-01-01", "2025-12-01", timezone="Europe/Oslo")
    key = datetime(2025, 6, 1, 12, tzinfo=OSLO)
    assert hourly.contains(key)
    assert hourly.contains(datetime(2025, 6, 1, 10, tzinfo=UTC))  # same instant
    assert not hourly.contains(datetime(2025, 6, 1, 10, 30, tzinfo=UTC))
    assert not hourly.contains(datetime(2026, 1, 1, tzinfo=UTC))
    validated = hourly.validate(datetime(2025, 6, 1, 10, tzinfo=UTC))
    assert isinstance(validated, datetime)
    assert validated.tzinfo is OSLO
    assert (validated.hour, validated.utcoffset()) == (12, timedelta(hours=2))
    with pytest.raises(
        PartitionError,
        match=r"naive datetime .* attach a time zone, e.g. "
        r"\.replace\(tzinfo=ZoneInfo\('Europe/Oslo'\)\)",
    ):
        hourly.contains(datetime(2025, 6, 1, 12))
    with pytest.raises(
        PartitionError, match=r"expected an aware datetime for HourlyPartitions, got date"
    ):
        hourly.validate(date(2025, 6, 1))
    with pytest.raises(PartitionError, match=r"got str '2025-06-01 12:00'; pass datetime.datetime"):
        hourly.validate("2025-06-01 12:00")
    with pytest.raises(PartitionError) as info:
        hourly.validate(datetime(2025, 6, 1, 10, 30, tzinfo=UTC))
    assert "2025-06-01T12:30:00+02:00 is not on a whole hour of Europe/Oslo" in str(info.value)
    assert "nearest partitions are 2025-06-01T12:00:00+02:00 and 2025-06-01T13:00:00+02:00" in str(
        info.value
    )


def test_hourly_validate_picks_the_right_repeated_hour() -> None:
    hourly = HourlyPartitions("2025-10-26", "2025-10-27", timezone="Europe/Oslo")
    second = hourly.validate(datetime(2025, 10, 26, 1, tzinfo=UTC))
    assert isinstance(second, datetime)
    assert (second.hour, second.fold) == (2, 1)
    assert hourly.index(second) == 3
    assert hourly.index(datetime(2025, 10, 26, 0, tzinfo=UTC)) == 2


def test_hourly_parse() -> None:
    hourly = HourlyPartitions("2025-01-01", "2026-01-01", timezone="Europe/Oslo")
    ten = datetime(2025, 1, 15, 10, tzinfo=OSLO)
    assert hourly.parse("2025-01-15T10:00") == ten
    assert hourly.parse("2025-01-15 10:00") == ten
    assert hourly.parse("2025-01-15T10") == ten
    assert hourly.parse("2025-01-15T09:00Z") == ten
    assert hourly.parse("dt:2025-01-15T09:00:00.000000Z") == ten
    first = hourly.parse("2025-10-26 02:00")
    second = hourly.parse("2025-10-26T02:00+01:00")
    assert isinstance(first, datetime)
    assert isinstance(second, datetime)
    assert (first.fold, second.fold) == (0, 1)
    assert encode_partition(first) != encode_partition(second)
    with pytest.raises(PartitionError, match=r"2025-03-30T02:30:00 does not exist in Europe/Oslo"):
        hourly.parse("2025-03-30 02:30")
    with pytest.raises(PartitionError, match=r"expected a local time such as '2025-01-01 00:00'"):
        hourly.parse("2025-01-15")
    with pytest.raises(PartitionError, match=r"not on a whole hour"):
        hourly.parse("2025-01-15 10:30")


def test_twelve_years_of_hours_is_arithmetic_and_lazy() -> None:
    started = time.perf_counter()
    hourly = HourlyPartitions("2013-01-01", "2025-01-01", timezone="Europe/Oslo")
    assert len(hourly) == 105_192  # 4,383 days; the DST changes cancel out over whole years
    first_three = list(islice(hourly.keys(), 3))
    last = hourly.key_at(len(hourly) - 1)
    middle = list(
        hourly.keys_between(datetime(2020, 6, 1, tzinfo=OSLO), datetime(2020, 6, 1, 2, tzinfo=OSLO))
    )
    assert time.perf_counter() - started < 0.05
    assert first_three == [datetime(2013, 1, 1, h, tzinfo=OSLO) for h in range(3)]
    assert last == datetime(2024, 12, 31, 23, tzinfo=OSLO)
    assert len(middle) == 3
    assert hourly.index(last) == 105_191


def test_hourly_equality_and_repr() -> None:
    a = HourlyPartitions("2025-01-01T01:00", timezone="Europe/Oslo")
    assert a == HourlyPartitions(datetime(2025, 1, 1, tzinfo=UTC), timezone="Europe/Oslo")
    assert a != HourlyPartitions("2025-01-01T01:00", timezone="Europe/Berlin")
    assert repr(a) == "HourlyPartitions(start=2025-01-01T01:00:00+01:00, timezone=Europe/Oslo)"


# --- MultiPartitions --------------------------------------------------------------------------


def region_day() -> MultiPartitions:
    return MultiPartitions(
        {
            "region": StaticPartitions(["us", "eu"]),
            "day": DailyPartitions("2025-01-01", "2025-01-04"),
        }
    )


def test_multi_product_in_order() -> None:
    grid = region_day()
    assert grid.dimension_names == ("region", "day")
    assert list(grid.dimensions) == ["region", "day"]
    assert len(grid) == 6
    assert list(grid.keys()) == [
        ("us", date(2025, 1, 1)),
        ("us", date(2025, 1, 2)),
        ("us", date(2025, 1, 3)),
        ("eu", date(2025, 1, 1)),
        ("eu", date(2025, 1, 2)),
        ("eu", date(2025, 1, 3)),
    ]
    for position, key in enumerate(grid.keys()):
        assert grid.index(key) == position
        assert grid.key_at(position) == key


def test_multi_contains_and_validate() -> None:
    grid = region_day()
    assert grid.contains(("eu", date(2025, 1, 2)))
    assert not grid.contains(("fr", date(2025, 1, 2)))
    assert not grid.contains(("eu", date(2025, 1, 9)))
    with pytest.raises(PartitionError, match=r"expected a tuple of 2 values \(region, day\)"):
        grid.contains("eu")
    with pytest.raises(PartitionError, match=r"expected a tuple of 2 values"):
        grid.validate(("eu", date(2025, 1, 2), 3))
    assert grid.validate(("eu", date(2025, 1, 2))) == ("eu", date(2025, 1, 2))
    with pytest.raises(PartitionError) as info:
        grid.validate(("fr", date(2025, 1, 2)))
    assert str(info.value).startswith("dimension 'region' of MultiPartitions(")
    assert str(info.value).endswith("'fr' is not one of the static partitions 'us', 'eu'")
    with pytest.raises(
        PartitionError, match=r"dimension 'day' .*expected a date for DailyPartitions"
    ):
        grid.validate(("eu", "2025-01-02"))


def test_multi_parse() -> None:
    grid = region_day()
    assert grid.parse("us|2025-01-02") == ("us", date(2025, 1, 2))
    assert grid.parse("us | 2025-01-02") == ("us", date(2025, 1, 2))
    assert grid.parse("t:(s:eu,d:2025-01-03)") == ("eu", date(2025, 1, 3))
    with pytest.raises(
        PartitionError, match=r"expected 2 values separated by '\|' \(<region>\|<day>\)"
    ):
        grid.parse("us")
    with pytest.raises(PartitionError, match=r"dimension 'day' .*before the first partition"):
        grid.parse("us|2024-12-31")


def test_multi_keys_between_runs_across_rows() -> None:
    grid = region_day()
    assert list(grid.keys_between(("us", date(2025, 1, 3)), ("eu", date(2025, 1, 1)))) == [
        ("us", date(2025, 1, 3)),
        ("eu", date(2025, 1, 1)),
    ]


def test_multi_three_dimensions() -> None:
    cube = MultiPartitions(
        {
            "tier": StaticPartitions(["free", "paid"]),
            "region": StaticPartitions(["us", "eu", "apac"]),
            "month": MonthlyPartitions("2025-01", "2025-05"),
        }
    )
    assert len(cube) == 24
    keys = list(cube.keys())
    assert len(keys) == 24
    assert keys[5] == ("free", "eu", date(2025, 2, 1))
    assert cube.index(("paid", "apac", date(2025, 4, 1))) == 23
    assert cube.parse("paid|us|2025-03") == ("paid", "us", date(2025, 3, 1))


def test_multi_is_lazy_over_huge_dimensions() -> None:
    started = time.perf_counter()
    grid = MultiPartitions(
        {
            "hour": HourlyPartitions("2013-01-01", "2025-01-01"),
            "region": StaticPartitions(["us", "eu", "apac"]),
        }
    )
    assert len(grid) == 3 * 105_192
    first = list(islice(grid.keys(), 4))
    assert time.perf_counter() - started < 0.05
    assert [k[1] for k in first] == ["us", "eu", "apac", "us"]  # type: ignore[index]


def test_multi_construction_errors() -> None:
    regions = StaticPartitions(["us"])
    with pytest.raises(PartitionError, match=r"at least two dimensions, got 1"):
        MultiPartitions({"region": regions})
    with pytest.raises(PartitionError, match=r"must be a PartitionsDefinition, got list"):
        MultiPartitions({"region": regions, "day": ["a"]})  # type: ignore[dict-item]
    with pytest.raises(PartitionError, match=r"non-empty strings"):
        MultiPartitions({"region": regions, "": regions})
    with pytest.raises(PartitionError, match=r"takes a mapping"):
        MultiPartitions([("a", regions), ("b", regions)])  # type: ignore[arg-type]


def test_multi_equality_and_repr() -> None:
    assert region_day() == region_day()
    assert hash(region_day()) == hash(region_day())
    swapped = MultiPartitions(
        {
            "day": DailyPartitions("2025-01-01", "2025-01-04"),
            "region": StaticPartitions(["us", "eu"]),
        }
    )
    assert region_day() != swapped
    assert repr(region_day()) == (
        "MultiPartitions({'region': StaticPartitions(['us', 'eu']), "
        "'day': DailyPartitions(start=2025-01-01, end=2025-01-04, timezone=UTC)})"
    )


# --- the base class: what a custom definition inherits ----------------------------------------


class EvenNumbers(PartitionsDefinition):
    """A minimal custom definition: only the four abstract methods."""

    def __init__(self, count: int) -> None:
        self.count = count

    def contains(self, key: Partition) -> bool:
        return type(key) is int and 0 <= key < 2 * self.count and key % 2 == 0

    def keys(self) -> Iterator[Partition]:
        return iter(range(0, 2 * self.count, 2))

    def __len__(self) -> int:
        return self.count

    def parse(self, text: str) -> Partition:
        return self.validate(int(text))

    def __repr__(self) -> str:
        return f"EvenNumbers({self.count})"


def test_custom_definition_inherits_working_defaults() -> None:
    evens = EvenNumbers(5)
    assert evens.validate(4) == 4
    with pytest.raises(PartitionError, match=r"^3 is not a partition of EvenNumbers\(5\)$"):
        evens.validate(3)
    with pytest.raises(PartitionError, match=r"bool"):
        evens.validate(True)
    assert evens.index(6) == 3
    assert evens.key_at(3) == 6
    assert list(evens.keys_between(2, 6)) == [2, 4, 6]
    assert 8 in evens
    assert list(evens) == [0, 2, 4, 6, 8]
    assert evens.describe() == "EvenNumbers(5)"
    assert evens == evens
    assert evens != EvenNumbers(5)  # no _identity: identity semantics
    assert hash(evens) == hash(evens)
    assert bool(EvenNumbers(0)) is True


def test_abstract_methods_are_required() -> None:
    with pytest.raises(TypeError):
        PartitionsDefinition()  # type: ignore[abstract]


# --- documentation ----------------------------------------------------------------------------


@pytest.mark.parametrize("module", [partitions_package, definitions_module, time_window_module])
def test_docstring_examples_run(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_public_names() -> None:
    assert set(partitions_package.__all__) == {
        "Partition",
        "encode_partition",
        "decode_partition",
        "partition_repr",
        "PartitionsDefinition",
        "StaticPartitions",
        "HourlyPartitions",
        "DailyPartitions",
        "WeeklyPartitions",
        "MonthlyPartitions",
        "MultiPartitions",
        "TimeWindowPartitions",
        "PartitionMapping",
        "IdentityMapping",
        "AllPartitions",
        "LastPartitions",
        "TimeWindowMapping",
        "DimensionMapping",
    }
