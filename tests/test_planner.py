from __future__ import annotations

import datetime as dt

import pytest

import flowstone as fs
from flowstone.errors import PartitionError
from flowstone.graph import AssetGraph
from flowstone.planner import plan_run

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")


def graph() -> AssetGraph:
    @fs.asset
    def lookup():
        return 1

    @fs.asset(partitioned_by=DAYS)
    def day(lookup):
        return lookup

    @fs.asset(partitioned_by=DAYS)
    def report(day):
        return day

    return AssetGraph([lookup, day, report])


def test_single_partition_plan() -> None:
    plan = plan_run(graph(), ["report"], partitions=(dt.date(2025, 1, 2),), with_upstream=True)
    assert [s.key for s in plan.steps] == [
        ("lookup", "n:"),
        ("day", "d:2025-01-02"),
        ("report", "d:2025-01-02"),
    ]
    assert plan.steps[1].deps_in_plan == (("lookup", "n:"),)
    assert plan.steps[2].deps_in_plan == (("day", "d:2025-01-02"),)
    assert plan.partition_key == "d:2025-01-02"
    assert len({s.materialization_id for s in plan.steps}) == 3


def test_multi_partition_plan_shares_unpartitioned_upstream_once() -> None:
    days = [dt.date(2025, 1, 1), dt.date(2025, 1, 2), dt.date(2025, 1, 1)]
    plan = plan_run(graph(), ["report"], partitions=days, with_upstream=True)
    assert [s.key for s in plan.steps] == [
        ("lookup", "n:"),
        ("day", "d:2025-01-01"),
        ("report", "d:2025-01-01"),
        ("day", "d:2025-01-02"),
        ("report", "d:2025-01-02"),
    ]
    assert plan.partition_key is None
    # Every step comes after the steps it depends on.
    seen: set[tuple[str, str]] = set()
    for step in plan.steps:
        assert set(step.deps_in_plan) <= seen
        seen.add(step.key)


def test_without_upstream_dependencies_are_outside_the_plan() -> None:
    plan = plan_run(graph(), ["report"], partitions=(dt.date(2025, 1, 2),), with_upstream=False)
    [step] = plan.steps
    assert step.deps_in_plan == ()


def test_partition_errors() -> None:
    with pytest.raises(PartitionError, match="is partitioned"):
        plan_run(graph(), ["report"], with_upstream=True)
    with pytest.raises(PartitionError):
        plan_run(graph(), ["report"], partitions=(dt.date(2024, 12, 31),), with_upstream=True)
    with pytest.raises(PartitionError, match="None of 'lookup'"):
        plan_run(graph(), ["lookup"], partitions=(dt.date(2025, 1, 2),), with_upstream=True)
