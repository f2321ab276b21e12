"""Partition mappings: which upstream partitions a downstream partition reads, in the planner,
the materializer (values and lineage) and the graph's checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import flowstone as fs
from flowstone.errors import DefinitionError, PartitionError
from flowstone.graph import AssetGraph
from flowstone.materializer import _mapping_value_type
from flowstone.partitions import PartitionsDefinition, encode_partition
from flowstone.planner import plan_run
from flowstone.records import Status

UTC = dt.UTC
DAY = dt.date(2025, 3, 4)
HOURS = fs.HourlyPartitions(start="2025-03-01", end="2025-04-01")
DAYS = fs.DailyPartitions(start="2025-03-01", end="2025-04-01")
PARIS_HOURS = fs.HourlyPartitions(start="2025-03-01", end="2025-04-01", timezone="Europe/Paris")
PARIS_DAYS = fs.DailyPartitions(start="2025-03-01", end="2025-04-01", timezone="Europe/Paris")


def hour(day: dt.date, h: int, zone: str = "UTC") -> dt.datetime:
    return dt.datetime.combine(day, dt.time(h), tzinfo=ZoneInfo(zone))


# --- the mappings on their own ----------------------------------------------------------------


def test_a_day_reads_its_24_hours_and_a_daylight_saving_day_its_23() -> None:
    mapping = fs.TimeWindowMapping()
    hours = mapping.upstream_partitions(DAY, DAYS, HOURS)
    assert hours == tuple(hour(DAY, h) for h in range(24))
    assert mapping.many(DAYS, HOURS) is True
    spring = mapping.upstream_partitions(dt.date(2025, 3, 30), PARIS_DAYS, PARIS_HOURS)
    assert len(spring) == 23  # Paris skips 02:00 that night
    assert spring[0] == hour(dt.date(2025, 3, 30), 0, "Europe/Paris")


def test_an_hour_reads_the_day_that_holds_it_as_one_value() -> None:
    mapping = fs.TimeWindowMapping()
    assert mapping.upstream_partitions(hour(DAY, 23), HOURS, DAYS) == (DAY,)
    assert mapping.many(HOURS, DAYS) is False
    # Local hours in Paris fall on the local day, not the UTC one.
    late = hour(DAY, 0, "Europe/Paris")
    assert mapping.upstream_partitions(late, PARIS_HOURS, PARIS_DAYS) == (DAY,)


@pytest.mark.parametrize(
    ("inner", "outer", "many"),
    [
        (fs.DailyPartitions("2025-01-01"), fs.MonthlyPartitions("2025-01-01"), False),
        (fs.DailyPartitions("2025-01-01"), fs.WeeklyPartitions("2024-12-30"), False),
        (fs.WeeklyPartitions("2024-12-30"), fs.MonthlyPartitions("2025-01-01"), True),
        (fs.MonthlyPartitions("2025-01-01"), fs.WeeklyPartitions("2024-12-30"), True),
        (fs.DailyPartitions("2025-01-01"), fs.DailyPartitions("2024-01-01"), False),
        # Another zone's day straddles two of ours.
        (DAYS, PARIS_DAYS, True),
    ],
)
def test_the_value_shape_depends_only_on_whether_windows_nest(
    inner: PartitionsDefinition, outer: PartitionsDefinition, many: bool
) -> None:
    assert fs.TimeWindowMapping().many(inner, outer) is many


def test_weeks_that_touch_a_month_are_all_read() -> None:
    months = fs.MonthlyPartitions("2025-01-01", "2025-12-01")
    weeks = fs.WeeklyPartitions("2024-12-30", "2025-12-29")
    read = fs.TimeWindowMapping().upstream_partitions(dt.date(2025, 2, 1), months, weeks)
    # Feb 2025 runs Saturday 1st to Friday 28th: weeks starting Jan 27 to Feb 24.
    assert read == tuple(dt.date(2025, 1, 27) + dt.timedelta(weeks=w) for w in range(5))


def test_windows_the_upstream_does_not_hold_fail_unless_allowed() -> None:
    late_hours = fs.HourlyPartitions(start="2025-03-04T06:00", end="2025-04-01")
    with pytest.raises(PartitionError, match="allow_missing=True"):
        fs.TimeWindowMapping().upstream_partitions(DAY, DAYS, late_hours)
    lenient = fs.TimeWindowMapping(allow_missing=True)
    assert lenient.upstream_partitions(DAY, DAYS, late_hours) == tuple(
        hour(DAY, h) for h in range(6, 24)
    )


def test_last_partitions_is_a_rolling_window_clipped_at_the_start() -> None:
    last3 = fs.LastPartitions(3)
    assert last3.upstream_partitions(dt.date(2025, 3, 10), DAYS, DAYS) == (
        dt.date(2025, 3, 8),
        dt.date(2025, 3, 9),
        dt.date(2025, 3, 10),
    )
    assert last3.upstream_partitions(dt.date(2025, 3, 1), DAYS, DAYS) == (dt.date(2025, 3, 1),)
    # Below an unpartitioned asset: the last three of the upstream.
    assert last3.upstream_partitions(None, None, DAYS) == (
        dt.date(2025, 3, 29),
        dt.date(2025, 3, 30),
        dt.date(2025, 3, 31),
    )
    # Across time windows: the 48 hours up to the end of the day.
    hours = fs.LastPartitions(48).upstream_partitions(DAY, DAYS, HOURS)
    assert (hours[0], hours[-1], len(hours)) == (
        hour(DAY, 0) - dt.timedelta(days=1),
        hour(DAY, 23),
        48,
    )


def test_dimension_mapping_goes_both_ways() -> None:
    regions = fs.StaticPartitions(["eu", "us"])
    grid = fs.MultiPartitions({"region": regions, "day": DAYS})
    mapping = fs.DimensionMapping("day")
    assert mapping.upstream_partitions(("us", DAY), grid, DAYS) == (DAY,)
    assert mapping.many(grid, DAYS) is False
    assert mapping.upstream_partitions(DAY, DAYS, grid) == (("eu", DAY), ("us", DAY))
    assert mapping.many(DAYS, grid) is True
    with pytest.raises(DefinitionError, match="no dimension 'hour'"):
        fs.DimensionMapping("hour").check(grid, DAYS)
    with pytest.raises(DefinitionError, match="must be the same definition"):
        fs.DimensionMapping("region").check(grid, DAYS)


def test_mappings_reject_bad_arguments_and_compare_by_value() -> None:
    with pytest.raises(DefinitionError, match="n >= 1"):
        fs.LastPartitions(0)
    with pytest.raises(DefinitionError, match="allow_missing"):
        fs.AllPartitions(allow_missing="yes")  # type: ignore[arg-type]
    assert fs.LastPartitions(2) == fs.LastPartitions(2) != fs.LastPartitions(3)
    assert repr(fs.LastPartitions(7, allow_missing=True)) == "LastPartitions(7, allow_missing=True)"
    assert len({fs.AllPartitions(), fs.AllPartitions()}) == 1


# --- the graph's checks -----------------------------------------------------------------------


def test_assets_partitioned_differently_need_a_mapping_and_are_told_which() -> None:
    @fs.asset(partitioned_by=HOURS)
    def events():  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=DAYS)
    def daily(events):  # type: ignore[no-untyped-def]
        return events

    @fs.asset
    def total(events):  # type: ignore[no-untyped-def]
        return events

    with pytest.raises(DefinitionError, match=r"TimeWindowMapping\(\)"):
        AssetGraph([events, daily])
    with pytest.raises(DefinitionError, match=r"AllPartitions\(\)"):
        AssetGraph([events, total])


def test_a_mapping_that_does_not_fit_is_refused_at_build_time() -> None:
    @fs.asset(partitioned_by=fs.StaticPartitions(["a"]))
    def letters():  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=DAYS, partition_mappings={"letters": fs.TimeWindowMapping()})
    def daily(letters):  # type: ignore[no-untyped-def]
        return letters

    @fs.asset
    def plain():  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=DAYS, partition_mappings={"plain": fs.AllPartitions()})
    def uses_plain(plain):  # type: ignore[no-untyped-def]
        return plain

    with pytest.raises(DefinitionError, match="does not fit: TimeWindowMapping maps time windows"):
        AssetGraph([letters, daily])
    with pytest.raises(DefinitionError, match="not partitioned"):
        AssetGraph([plain, uses_plain])
    with pytest.raises(DefinitionError, match="not one of its dependencies"):

        @fs.asset(partition_mappings={"nope": fs.AllPartitions()})
        def stray():  # type: ignore[no-untyped-def]
            return 1

    with pytest.raises(DefinitionError, match="PartitionMapping"):

        @fs.asset(partition_mappings={"plain": "all"})  # type: ignore[dict-item]
        def wrong(plain):  # type: ignore[no-untyped-def]
            return 1


def test_the_graph_shows_mappings_on_their_edges() -> None:
    pipeline = hourly_pipeline("memory")
    text = pipeline.graph.to_text()
    assert text.splitlines()[1:] == [
        "daily   <- events [TimeWindowMapping()]",
        "share   <- events, daily [TimeWindowMapping()]",
    ]
    assert '-->|"TimeWindowMapping()"|' in pipeline.graph.to_mermaid()


# --- runs -------------------------------------------------------------------------------------


def hourly_pipeline(store: str, *, allow_missing: bool = False) -> fs.Pipeline:
    @fs.asset(partitioned_by=HOURS)
    def events(ctx):  # type: ignore[no-untyped-def]
        return ctx.partition.hour

    @fs.asset(
        partitioned_by=DAYS,
        partition_mappings={"events": fs.TimeWindowMapping(allow_missing=allow_missing)},
    )
    def daily(events: dict[dt.datetime, int]) -> dict[str, object]:
        return {"hours": len(events), "sum": sum(events.values()), "first": min(events).isoformat()}

    @fs.asset(partitioned_by=HOURS, partition_mappings={"daily": fs.TimeWindowMapping()})
    def share(ctx, events: int, daily: Mapping[str, int]) -> float:  # type: ignore[no-untyped-def]
        return events / daily["sum"]

    return fs.Pipeline([events, daily, share], store=store)


def test_a_day_is_computed_from_its_24_hours_with_lineage_to_each(store_url: str) -> None:
    with hourly_pipeline(store_url) as pipeline:
        run = pipeline.materialize_all("daily", partition=DAY)
        run.raise_for_status()
        assert len(run.materializations) == 25
        assert pipeline.load("daily", DAY) == {
            "hours": 24,
            "sum": sum(range(24)),
            "first": "2025-03-04T00:00:00+00:00",
        }
        [record] = pipeline.history("daily", DAY)
        hourly = {r.partition_key: r.id for r in run.materializations if r.asset == "events"}
        edges = pipeline.store.upstream(record.id, depth=1)
        assert {(n.asset, n.partition_key, n.materialization_id) for n in edges} == {
            ("events", key, mid) for key, mid in hourly.items()
        }


def test_each_hour_reads_the_day_that_holds_it(store_url: str) -> None:
    with hourly_pipeline(store_url) as pipeline:
        pipeline.materialize_all("daily", partition=DAY).raise_for_status()
        at = hour(DAY, 6)
        run = pipeline.materialize("share", partition=at)
        run.raise_for_status()
        assert pipeline.load("share", at) == pytest.approx(6 / sum(range(24)))
        [record] = pipeline.history("share", at)
        ups = {(n.asset, n.partition_key) for n in pipeline.store.upstream(record.id, depth=1)}
        assert ups == {("events", encode_partition(at)), ("daily", encode_partition(DAY))}


def test_a_missing_hour_fails_the_day_by_name_or_is_left_out_when_allowed(
    store_url: str,
) -> None:
    def all_hours_but_5(pipeline: fs.Pipeline) -> None:
        for h in range(24):
            if h != 5:
                pipeline.materialize("events", partition=hour(DAY, h)).raise_for_status()

    with hourly_pipeline(store_url) as pipeline:
        all_hours_but_5(pipeline)
        run = pipeline.materialize("daily", partition=DAY)
        [failed] = run.materializations
        assert failed.status == Status.FAILED
        assert failed.error_type == "MissingUpstreamError"
        assert "1 of the 'events' partitions it reads" in (failed.error_message or "")
        assert "05:00" in (failed.error_message or "")
    with hourly_pipeline(store_url, allow_missing=True) as lenient:
        all_hours_but_5(lenient)
        lenient.materialize("daily", partition=DAY).raise_for_status()
        assert lenient.load("daily", DAY)["hours"] == 23


def test_a_rolling_window_reads_earlier_partitions_from_the_store(store_url: str) -> None:
    @fs.asset(partitioned_by=DAYS)
    def sales(ctx):  # type: ignore[no-untyped-def]
        return ctx.partition.day

    @fs.asset(partitioned_by=DAYS, partition_mappings={"sales": fs.LastPartitions(3)})
    def rolling(sales: dict[dt.date, int]) -> list[int]:
        return list(sales.values())

    with fs.Pipeline([sales, rolling], store=store_url) as pipeline:
        for day in (2, 3):
            pipeline.materialize("sales", partition=dt.date(2025, 3, day)).raise_for_status()
        # sales for the 4th is seeded by the request: earlier days are read, not re-run.
        plan = plan_run(pipeline.graph, ["rolling"], partitions=[DAY], with_upstream=True)
        assert [(s.asset.name, s.partition) for s in plan.steps] == [
            ("sales", DAY),
            ("rolling", DAY),
        ]
        run = pipeline.materialize_all("rolling", partition=DAY)
        run.raise_for_status()
        assert pipeline.load("rolling", DAY) == [2, 3, 4]
        [record] = pipeline.history("rolling", DAY)
        assert len(pipeline.store.upstream(record.id, depth=1)) == 3


def test_an_unpartitioned_summary_of_all_partitions_runs_them_first(store_url: str) -> None:
    week = fs.DailyPartitions("2025-03-01", "2025-03-08")

    @fs.asset(partitioned_by=week)
    def visits(ctx):  # type: ignore[no-untyped-def]
        return 10 + ctx.partition.day

    @fs.asset(partition_mappings={"visits": fs.AllPartitions()})
    def total(visits: dict[dt.date, int]) -> int:
        assert list(visits) == sorted(visits)  # oldest first
        return sum(visits.values())

    with fs.Pipeline([visits, total], store=store_url) as pipeline:
        run = pipeline.materialize_all()
        run.raise_for_status()
        assert len(run.materializations) == 8
        assert pipeline.load("total") == sum(10 + d for d in range(1, 8))


def test_a_region_grid_joins_a_daily_asset_on_its_day_dimension(store_url: str) -> None:
    grid = fs.MultiPartitions({"region": fs.StaticPartitions(["eu", "us"]), "day": DAYS})

    @fs.asset(partitioned_by=DAYS)
    def fx_rate(ctx):  # type: ignore[no-untyped-def]
        return 2

    @fs.asset(partitioned_by=grid, partition_mappings={"fx_rate": fs.DimensionMapping("day")})
    def revenue(ctx, fx_rate: int) -> int:  # type: ignore[no-untyped-def]
        return {"eu": 10, "us": 20}[ctx.partition[0]] * fx_rate

    @fs.asset(partitioned_by=DAYS, partition_mappings={"revenue": fs.DimensionMapping("day")})
    def by_day(revenue: dict[tuple[str, dt.date], int]) -> dict[str, int]:
        return {region: value for (region, _day), value in revenue.items()}

    with fs.Pipeline([fx_rate, revenue, by_day], store=store_url) as pipeline:
        run = pipeline.materialize_all("by_day", partition=DAY)
        run.raise_for_status()
        assert sorted((r.asset, r.partition_key) for r in run.materializations) == sorted(
            [
                ("fx_rate", encode_partition(DAY)),
                ("revenue", encode_partition(("eu", DAY))),
                ("revenue", encode_partition(("us", DAY))),
                ("by_day", encode_partition(DAY)),
            ]
        )
        assert pipeline.load("by_day", DAY) == {"eu": 20, "us": 40}


def test_a_plan_over_two_days_puts_each_day_after_its_hours() -> None:
    pipeline = hourly_pipeline("memory")
    days = [DAY, DAY + dt.timedelta(days=1)]
    plan = plan_run(pipeline.graph, ["daily"], partitions=days, with_upstream=True)
    assert len(plan.steps) == 50
    position = {step.key: i for i, step in enumerate(plan.steps)}
    for step in plan.steps:
        assert all(position[dep] < position[step.key] for dep in step.deps_in_plan)
    daily_steps = [s for s in plan.steps if s.asset.name == "daily"]
    assert [len(s.deps_in_plan) for s in daily_steps] == [24, 24]
    # Partition by partition: the first day is complete before the second day's hours.
    assert (
        position[("daily", encode_partition(DAY))]
        < position[("events", encode_partition(hour(days[1], 0)))]
    )


def test_a_partition_the_upstream_does_not_hold_is_refused_when_planning() -> None:
    pipeline = hourly_pipeline("memory")
    with pytest.raises(PartitionError, match="is after the last partition"):
        pipeline.materialize_all("daily", partition=dt.date(2025, 4, 1))


def test_dict_annotations_give_the_io_manager_the_value_type() -> None:
    assert _mapping_value_type(dict[dt.date, float]) is float
    assert _mapping_value_type(Mapping[str, list[int]]) == list[int]
    assert _mapping_value_type(list[int]) is None
    assert _mapping_value_type(None) is None


def test_a_backfill_of_days_reads_the_hours_and_refuses_to_mix_definitions(
    store_url: str,
) -> None:
    with hourly_pipeline(store_url) as pipeline:
        days = [DAY, DAY + dt.timedelta(days=1)]
        for day in days:
            for h in range(24):
                pipeline.materialize("events", partition=hour(day, h)).raise_for_status()
        result = pipeline.backfill("daily", start=days[0], end=days[1])
        result.raise_for_status()
        assert [pipeline.load("daily", d)["hours"] for d in days] == [24, 24]
        with pytest.raises(PartitionError, match="Backfill them separately"):
            pipeline.backfill("daily", start=days[0], end=days[1], with_upstream=True)


# --- edge cases found in review -----------------------------------------------------------------


def test_both_hours_of_a_fall_back_night_reach_the_day(store_url: str) -> None:
    hours = fs.HourlyPartitions(start="2025-10-01", end="2025-11-01", timezone="Europe/Paris")
    days = fs.DailyPartitions(start="2025-10-01", end="2025-11-01", timezone="Europe/Paris")

    @fs.asset(partitioned_by=hours)
    def readings(ctx):  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=days, partition_mappings={"readings": fs.TimeWindowMapping()})
    def per_day(readings: dict[dt.datetime, int]) -> list[str]:
        return [key.isoformat() for key in readings]

    with fs.Pipeline([readings, per_day], store=store_url) as pipeline:
        day = dt.date(2025, 10, 26)
        pipeline.materialize_all("per_day", partition=day).raise_for_status()
        keys = pipeline.load("per_day", day)
        assert len(keys) == 25  # Python's == would merge the two 02:00s into one key
        assert keys[2:4] == ["2025-10-26T02:00:00+02:00", "2025-10-26T02:00:00+01:00"]


def test_an_hour_planned_with_its_day_reads_all_of_the_day_s_hours(store_url: str) -> None:
    # share[h] reads events[h] (the requested hour) and daily[d]; daily, added by the
    # planner, needs all 24 hours from this run, not only the requested one.
    with hourly_pipeline(store_url) as pipeline:
        at = hour(DAY, 6)
        run = pipeline.materialize_all("share", partition=at)
        run.raise_for_status()
        assert len(run.materializations) == 26
        assert pipeline.load("share", at) == pytest.approx(6 / sum(range(24)))


def test_open_ended_windows_are_read_as_of_the_run_s_creation() -> None:
    shift = [dt.timedelta()]
    now = dt.datetime.now(UTC)
    hours = fs.HourlyPartitions(
        start=(now - dt.timedelta(days=1)).replace(minute=0, second=0, microsecond=0),
        now=lambda: dt.datetime.now(UTC) + shift[0],
    )

    @fs.asset(partitioned_by=hours)
    def ticks(ctx):  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partition_mappings={"ticks": fs.LastPartitions(3)})
    def recent(ticks: dict[dt.datetime, int]) -> int:
        return len(ticks)

    graph = AssetGraph([ticks, recent])
    planned_at = dt.datetime.now(UTC)
    [before] = graph.reads("recent", None, as_of=planned_at)
    shift[0] = dt.timedelta(hours=2)  # two more hours complete while the run goes on
    [same] = graph.reads("recent", None, as_of=planned_at)
    [live] = graph.reads("recent", None)
    assert same.keys == before.keys
    assert live.keys != before.keys


def test_a_rolling_window_ending_before_the_upstream_starts_is_refused() -> None:
    late = fs.HourlyPartitions(start="2025-03-10", end="2025-04-01")
    with pytest.raises(PartitionError, match="allow_missing=True"):
        fs.LastPartitions(3).upstream_partitions(DAY, DAYS, late)
    assert fs.LastPartitions(3, allow_missing=True).upstream_partitions(DAY, DAYS, late) == ()


def test_a_single_value_read_that_spans_two_windows_is_refused() -> None:
    # Lord Howe Island shifts its clocks by 30 minutes: its hours then straddle midnight.
    zone = "Australia/Lord_Howe"
    hours = fs.HourlyPartitions(
        start="2025-04-01", timezone=zone, now=lambda: dt.datetime(2025, 5, 1, tzinfo=UTC)
    )
    days = fs.DailyPartitions(start="2025-04-01", end="2025-05-01", timezone=zone)

    @fs.asset(partitioned_by=days)
    def tide():  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=hours, partition_mappings={"tide": fs.TimeWindowMapping()})
    def hourly_tide(tide):  # type: ignore[no-untyped-def]
        return tide

    graph = AssetGraph([tide, hourly_tide])
    straddling = dt.datetime(2025, 4, 6, 23, 30, tzinfo=ZoneInfo(zone))
    with pytest.raises(PartitionError, match="reads 2 partitions of 'tide'"):
        graph.reads("hourly_tide", straddling)


def test_errors_name_both_assets_and_the_missing_partition(store_url: str) -> None:
    graph = hourly_pipeline("memory").graph
    with pytest.raises(PartitionError, match="Asset 'daily' partition 2025-04-01 cannot read"):
        graph.reads("daily", dt.date(2025, 4, 1))
    with hourly_pipeline(store_url) as pipeline:
        at = hour(DAY, 6)
        pipeline.materialize("events", partition=at).raise_for_status()
        [failed] = pipeline.materialize("share", partition=at).materializations
        assert failed.error_message is not None
        assert failed.error_message.startswith(
            "Asset 'share' partition 2025-03-04T06:00:00+00:00 needs 'daily' partition 2025-03-04,"
        )


def test_plan_building_stays_linear_in_the_number_of_days(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 60 days of hours below days: each step's reads are computed a bounded number of times
    # (the planner once looked again at every earlier step for each requested day: ~45,000
    # calls here instead of a few thousand).
    hours = fs.HourlyPartitions(start="2025-01-01", end="2025-03-02")
    days = fs.DailyPartitions(start="2025-01-01", end="2025-03-02")

    @fs.asset(partitioned_by=hours)
    def raw(ctx):  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=days, partition_mappings={"raw": fs.TimeWindowMapping()})
    def day_total(raw):  # type: ignore[no-untyped-def]
        return 1

    graph = AssetGraph([raw, day_total])
    calls = [0]
    reads = graph.reads

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return reads(*args, **kwargs)

    monkeypatch.setattr(graph, "reads", counted)
    plan = plan_run(graph, ["day_total"], partitions=list(days.keys()), with_upstream=True)
    assert len(plan.steps) == len(days) * 25
    assert calls[0] <= 3 * len(plan.steps)


# --- one asset read two ways (ins=) ---------------------------------------------------------------


def test_two_parameters_read_one_asset_through_different_mappings(store_url: str) -> None:
    @fs.asset(partitioned_by=DAYS)
    def sales(ctx):  # type: ignore[no-untyped-def]
        return ctx.partition.day

    @fs.asset(
        partitioned_by=DAYS,
        ins={"week": fs.AssetIn("sales", fs.LastPartitions(7)), "same_day": "sales"},
    )
    def versus_week(sales: int, week: dict[dt.date, int], same_day: int) -> dict[str, object]:
        return {"today": sales, "same": same_day, "week": list(week.values())}

    with fs.Pipeline([sales, versus_week], store=store_url) as pipeline:
        day = dt.date(2025, 3, 9)
        for d in range(1, 9):
            pipeline.materialize("sales", partition=dt.date(2025, 3, d)).raise_for_status()
        run = pipeline.materialize_all("versus_week", partition=day)
        run.raise_for_status()
        assert pipeline.load("versus_week", day) == {
            "today": 9,
            "same": 9,
            "week": [3, 4, 5, 6, 7, 8, 9],
        }
        [record] = pipeline.history("versus_week", day)
        # Seven upstream materializations, one lineage edge each (the 9th is read twice).
        assert len(pipeline.store.upstream(record.id, depth=1)) == 7
        assert pipeline.graph.to_text().splitlines()[1] == (
            "versus_week  <- sales [week: LastPartitions(7), same_day]"
        )


def test_ins_must_name_parameters_and_assets() -> None:
    with pytest.raises(DefinitionError, match="not a parameter of its function"):

        @fs.asset(ins={"nope": "sales"})
        def a(sales):  # type: ignore[no-untyped-def]
            return sales

    with pytest.raises(DefinitionError, match=r"fs.AssetIn\('asset', ...\)"):

        @fs.asset(ins={"x": 3})  # type: ignore[dict-item]
        def b(x):  # type: ignore[no-untyped-def]
            return x

    @fs.asset(ins={"recent": "salez"})
    def c(recent):  # type: ignore[no-untyped-def]
        return recent

    @fs.asset
    def sales():  # type: ignore[no-untyped-def]
        return 1

    with pytest.raises(DefinitionError, match=r"reads \(ins=\{'recent': ...\}\) 'salez'"):
        AssetGraph([sales, c])
