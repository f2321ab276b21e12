"""Partition sets: compact storage (ranges where keys are consecutive), lazy walking from any
position, and a clear error when the definition changed under a stored set."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from itertools import islice

import pytest

from flowstone.errors import PartitionError
from flowstone.partitions import DailyPartitions, HourlyPartitions, StaticPartitions
from flowstone.partitions.sets import KeyList, KeyRange, PartitionSet, decode_key

DAYS = DailyPartitions("2025-01-01", "2025-02-01")


def day(n: int) -> dt.date:
    return dt.date(2025, 1, n)


def test_keys_are_sorted_deduplicated_and_runs_become_ranges() -> None:
    chosen = PartitionSet.of_keys(DAYS, [day(9), day(2), day(3), day(4), day(3), day(20), day(21)])
    assert chosen.segments == (
        KeyRange("d:2025-01-02", "d:2025-01-04", 3),
        KeyList(("d:2025-01-09", "d:2025-01-20", "d:2025-01-21")),
    )
    assert len(chosen) == 6
    assert [v for _, v in chosen.iter_from(DAYS)] == [day(n) for n in (2, 3, 4, 9, 20, 21)]
    assert [p for p, _ in chosen.iter_from(DAYS)] == list(range(6))


def test_ranges_and_all() -> None:
    assert PartitionSet.of_range(DAYS, day(3), day(5)).segments == (
        KeyRange("d:2025-01-03", "d:2025-01-05", 3),
    )
    assert len(PartitionSet.of_range(DAYS, start=day(30))) == 2
    assert len(PartitionSet.of_range(DAYS, end=day(2))) == 2
    assert len(PartitionSet.of_all(DAYS)) == 31


def test_json_round_trips_and_bad_json_is_a_partition_error() -> None:
    chosen = PartitionSet.of_keys(DAYS, [day(1), day(2), day(3), day(7)])
    assert PartitionSet.from_json(chosen.to_json()) == chosen
    for bad in ({}, {"format": 1}, {"format": 1, "segments": [{"start": "d:2025-01-01"}]}):
        with pytest.raises(PartitionError, match="another version"):
            PartitionSet.from_json(bad)


def test_walking_from_a_position_crosses_segments() -> None:
    chosen = PartitionSet.of_keys(
        DAYS, [day(1), day(2), day(3), day(10), day(20), day(21), day(22)]
    )
    assert list(chosen.iter_from(DAYS, 2)) == [
        (2, day(3)),
        (3, day(10)),
        (4, day(20)),
        (5, day(21)),
        (6, day(22)),
    ]
    assert list(chosen.iter_from(DAYS, 7)) == []
    chunks = list(chosen.chunks(DAYS, 3, start=1))
    assert [[p for p, _ in c] for c in chunks] == [[1, 2, 3], [4, 5, 6]]


def test_static_keys_follow_the_definitions_order() -> None:
    regions = StaticPartitions(["us", "eu", "apac", "latam"])
    chosen = PartitionSet.of_keys(regions, ["latam", "us", "eu", "apac"])
    assert chosen.segments == (KeyRange("s:us", "s:latam", 4),)
    assert chosen.describe() == "us..latam"


def test_a_changed_definition_is_caught() -> None:
    chosen = PartitionSet.of_range(DAYS, day(1), day(10))
    longer_days = DailyPartitions("2024-12-01", "2025-02-01")
    assert [v for _, v in islice(chosen.iter_from(longer_days), 2)] == [day(1), day(2)]
    weekly_start = DailyPartitions("2025-01-05", "2025-02-01")
    with pytest.raises(PartitionError, match="no longer valid"):
        list(chosen.iter_from(weekly_start))
    hours = HourlyPartitions("2025-01-01", "2025-01-02")
    stored = PartitionSet.of_range(hours)
    fall_back = HourlyPartitions("2025-01-01", "2025-01-02", timezone="America/New_York")
    with pytest.raises(PartitionError):
        list(stored.iter_from(fall_back))
    with pytest.raises(PartitionError, match="no longer valid"):
        decode_key(DAYS, "d:2026-01-01")


def test_empty_or_reversed_choices_are_refused() -> None:
    with pytest.raises(PartitionError, match="No partitions given"):
        PartitionSet.of_keys(DAYS, [])
    with pytest.raises(PartitionError, match="swap them"):
        PartitionSet.of_range(DAYS, day(5), day(4))
    with pytest.raises(PartitionError):
        PartitionSet.of_keys(DAYS, ["2025-01-01"])  # a string, not a date


def test_twelve_years_of_hours_is_one_range_walked_lazily() -> None:
    hours = HourlyPartitions("2013-01-01", "2025-01-01")
    tracemalloc.start()
    try:
        chosen = PartitionSet.of_all(hours)
        walked = sum(len(chunk) for chunk in chosen.chunks(hours, 1_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert walked == len(chosen) == 105_192
    assert len(chosen.segments) == 1
    # One chunk of 1,000 datetimes at a time: well under what 105,192 of them would take.
    assert peak < 2_000_000
