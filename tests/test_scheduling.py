"""Dependency-driven scheduling and job arguments, without a database or a worker.

The rules the distributed workers apply inside each run transaction, checked step by step on
the in-memory store: what becomes ready, what is skipped, when the run ends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

import flowstone as fs
from distributed_fixtures import pipelines
from flowstone.errors import DefinitionError, JobRejectedError
from flowstone.execution.queue import StepJob
from flowstone.execution.scheduling import Outcome, after_final, mark_waiting
from flowstone.materializer import Materializer
from flowstone.planner import RunPlan, plan_run
from flowstone.records import RunStatus, Status, utcnow
from flowstone.store import MemoryStore
from flowstone.telemetry import Telemetry


def start(pipeline: fs.Pipeline, *, partitions: tuple[object, ...] = (None,)) -> RunPlan:
    plan = plan_run(pipeline.graph, [], partitions=partitions, with_upstream=True)
    pipeline.store.create_run(plan.run_record(), plan.pending_records())
    return plan


def finish(
    pipeline: fs.Pipeline, plan: RunPlan, asset: str, status: Status, key: str = "n:"
) -> Outcome:
    """Record ``asset`` final, as a worker's finisher does, and apply the rules."""
    store = pipeline.store
    (record,) = [
        r
        for r in store.list_materializations(run_id=plan.run_id, asset=asset, limit=None)
        if r.partition_key == key
    ]
    done = replace(record, status=status, completed_at=utcnow(), error_message="boom")
    materializer = Materializer(pipeline.graph, store, Telemetry())

    def work(tx):  # type: ignore[no-untyped-def]
        tx.save_materialization(done)
        return after_final(tx, pipeline.graph, materializer, done)

    return store.run_transaction(plan.run_id, work)


def ready(outcome: Outcome) -> list[str]:
    return sorted(f"{r.asset}/{r.partition_key}" for r in outcome.ready)


def test_a_diamond_s_join_is_ready_once_when_both_parents_succeeded() -> None:
    pipeline = pipelines.diamond(store=MemoryStore())
    plan = start(pipeline)
    assert ready(finish(pipeline, plan, "root", Status.SUCCESS)) == ["left/n:", "right/n:"]
    assert finish(pipeline, plan, "left", Status.SUCCESS) == Outcome()
    assert ready(finish(pipeline, plan, "right", Status.SUCCESS)) == ["join/n:"]
    closed = finish(pipeline, plan, "join", Status.SUCCESS)
    assert closed == Outcome(closed=RunStatus.SUCCESS)
    run = pipeline.store.get_run(plan.run_id)
    assert run is not None and run.status == RunStatus.SUCCESS and run.completed_at
    assert [e.action for e in pipeline.store.list_audit(action="run.success")] == ["run.success"]


def test_a_failure_skips_everything_below_it_with_the_root_cause() -> None:
    pipeline = pipelines.retries(store=MemoryStore())
    plan = start(pipeline)
    outcome = finish(pipeline, plan, "broken", Status.FAILED)
    assert sorted(r.asset for r in outcome.skipped) == ["below_broken", "further_below"]
    assert {r.error_message for r in outcome.skipped} == {"upstream asset 'broken' failed"}
    assert outcome.closed is None  # flaky and below_flaky are still to run
    assert ready(finish(pipeline, plan, "flaky", Status.SUCCESS)) == ["below_flaky/n:"]
    assert finish(pipeline, plan, "below_flaky", Status.SUCCESS).closed == RunStatus.FAILED


def test_an_unpartitioned_parent_readies_its_children_in_every_partition() -> None:
    @fs.asset
    def rates(ctx):  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=pipelines.REGIONS)
    def sales(ctx, rates):  # type: ignore[no-untyped-def]
        return rates

    pipeline = fs.Pipeline([rates, sales], store=MemoryStore())
    plan = start(pipeline, partitions=("eu", "us"))
    assert ready(finish(pipeline, plan, "rates", Status.SUCCESS)) == ["sales/s:eu", "sales/s:us"]
    assert finish(pipeline, plan, "sales", Status.FAILED, key="s:eu").closed is None
    assert finish(pipeline, plan, "sales", Status.SUCCESS, key="s:us").closed == RunStatus.FAILED


def test_nothing_moves_in_a_run_that_is_no_longer_running() -> None:
    pipeline = pipelines.diamond(store=MemoryStore())
    plan = start(pipeline)
    run = pipeline.store.get_run(plan.run_id)
    assert run is not None
    pipeline.store.update_run(replace(run, status=RunStatus.CANCELLED))
    assert finish(pipeline, plan, "root", Status.SUCCESS) == Outcome()


# --- job arguments ---------------------------------------------------------------------------
def test_job_arguments_round_trip_as_plain_json() -> None:
    job = StepJob(run_id="r1", asset="sales", partition_key="s:eu", attempt=2, io_manager="s3")
    assert StepJob.from_args(job.to_args()) == job
    assert job.to_args() == {
        "run_id": "r1",
        "asset": "sales",
        "partition": "s:eu",
        "attempt": 2,
        "options": {"io_manager": "s3"},
    }
    assert job.queueing_lock == "flowstone:r1:sales:s:eu"
    assert job.lock == "flowstone:sales:s:eu"  # across runs: one (asset, partition) at a time


def test_long_partition_keys_are_hashed_in_locks() -> None:
    key = "t:(" + ",".join(f"s:{i}" for i in range(100)) + ")"
    job = StepJob(run_id="r1", asset="a", partition_key=key)
    assert len(job.lock) < 100 and job.lock.startswith("flowstone:a:sha256:")
    assert job.lock != StepJob(run_id="r1", asset="a", partition_key=key + " ").lock


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"run_id": "r"}, "arguments must be exactly"),
        ({**StepJob(run_id="r", asset="a", partition_key="n:").to_args(), "x": 1}, "exactly"),
        ({**StepJob(run_id="r", asset="a", partition_key="n:").to_args(), "asset": 3}, "'asset'"),
        (
            {**StepJob(run_id="r", asset="a", partition_key="n:").to_args(), "attempt": True},
            "'attempt'",
        ),
        (
            {**StepJob(run_id="r", asset="a", partition_key="n:").to_args(), "attempt": 0},
            "'attempt'",
        ),
        (
            {**StepJob(run_id="r", asset="a", partition_key="n:").to_args(), "options": {"x": 1}},
            "'options'",
        ),
    ],
)
def test_malformed_arguments_are_rejected_with_the_reason(
    args: dict[str, object], reason: str
) -> None:
    with pytest.raises(JobRejectedError, match="It is not retried") as raised:
        StepJob.from_args(args, job_id=7)
    assert reason in raised.value.reason
    assert raised.value.job_id == 7


# --- configuration ---------------------------------------------------------------------------
def test_the_executor_is_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowstone.execution import InProcessExecutor
    from flowstone.execution.distributed import DistributedExecutor

    monkeypatch.setenv("FLOWSTONE_EXECUTOR", "distributed")
    monkeypatch.setenv("FLOWSTONE_QUEUE", "etl")
    chosen = pipelines.diamond(store=MemoryStore()).executor
    assert isinstance(chosen, DistributedExecutor) and chosen.queue == "etl"
    monkeypatch.setenv("FLOWSTONE_EXECUTOR", "inprocess")
    assert isinstance(pipelines.diamond(store=MemoryStore()).executor, InProcessExecutor)
    monkeypatch.setenv("FLOWSTONE_EXECUTOR", "celery")
    with pytest.raises(DefinitionError, match="use 'inprocess'"):
        pipelines.diamond(store=MemoryStore())


def test_a_day_becomes_ready_once_its_last_hour_succeeded() -> None:
    pipeline = pipelines.hours_into_days(store=MemoryStore())
    day = dt.date(2025, 3, 4)
    plan = start(pipeline, partitions=(day,))
    assert len(plan.steps) == 25
    keys = [s.partition_key for s in plan.steps if s.asset.name == "hourly_events"]
    for key in keys[:-1]:
        assert finish(pipeline, plan, "hourly_events", Status.SUCCESS, key=key) == Outcome()
    assert ready(finish(pipeline, plan, "hourly_events", Status.SUCCESS, key=keys[-1])) == [
        "daily_events/d:2025-03-04"
    ]


def test_a_failed_hour_skips_the_day_that_reads_it() -> None:
    pipeline = pipelines.hours_into_days(store=MemoryStore())
    plan = start(pipeline, partitions=(dt.date(2025, 3, 4),))
    first = next(s.partition_key for s in plan.steps if s.asset.name == "hourly_events")
    outcome = finish(pipeline, plan, "hourly_events", Status.FAILED, key=first)
    assert [(r.asset, r.partition_key) for r in outcome.skipped] == [
        ("daily_events", "d:2025-03-04")
    ]


def test_a_step_reading_open_ended_windows_is_readied_as_planned_when_time_moves() -> None:
    shift = [dt.timedelta()]
    hours = fs.HourlyPartitions(
        start=(dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(
            minute=0, second=0, microsecond=0
        ),
        now=lambda: dt.datetime.now(dt.UTC) + shift[0],
    )

    @fs.asset(partitioned_by=hours)
    def ticks(ctx):  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partition_mappings={"ticks": fs.LastPartitions(3)})
    def recent(ticks):  # type: ignore[no-untyped-def]
        return len(ticks)

    pipeline = fs.Pipeline([ticks, recent], store=MemoryStore())
    plan = start(pipeline)
    keys = [s.partition_key for s in plan.steps if s.asset.name == "ticks"]
    assert len(keys) == 3
    shift[0] = dt.timedelta(hours=2)  # two more hours complete before the steps finish
    for key in keys[:-1]:
        assert finish(pipeline, plan, "ticks", Status.SUCCESS, key=key) == Outcome()
    assert ready(finish(pipeline, plan, "ticks", Status.SUCCESS, key=keys[-1])) == ["recent/n:"]


def test_a_run_shows_waiting_only_while_its_step_still_waits() -> None:
    pipeline = pipelines.diamond(store=MemoryStore())
    plan = start(pipeline)
    store = pipeline.store
    [root] = store.list_materializations(run_id=plan.run_id, asset="root", limit=None)
    asked = replace(root, status=Status.WAITING_APPROVAL, attempt=1)
    store.save_materialization(asked)
    assert store.run_transaction(plan.run_id, lambda tx: mark_waiting(tx, asked)) == (
        RunStatus.WAITING_APPROVAL
    )
    run = store.get_run(plan.run_id)
    assert run is not None and run.status == RunStatus.WAITING_APPROVAL
    # Decided (and pending again) before the worker marked the run: nothing to show.
    store.update_run(replace(run, status=RunStatus.RUNNING))
    store.save_materialization(replace(asked, status=Status.PENDING))
    assert store.run_transaction(plan.run_id, lambda tx: mark_waiting(tx, asked)) is None
    again = store.get_run(plan.run_id)
    assert again is not None and again.status == RunStatus.RUNNING


def two_days_pipeline(store: MemoryStore, start_day: str) -> fs.Pipeline:
    days = fs.DailyPartitions(start_day, "2025-03-01")

    @fs.asset(partitioned_by=days)
    def a() -> int:
        return 1

    @fs.asset(partitioned_by=days)
    def b(a: int) -> int:
        return a

    return fs.Pipeline([a, b], store=store)


def test_a_failure_skips_the_steps_below_it_even_if_their_partition_left_the_definition() -> None:
    # Planned for Jan 15; a worker runs a definition that now starts in February, rejects
    # `a`'s job (bad partition), and must still skip `b` and end the run.
    store = MemoryStore()
    plan = start(two_days_pipeline(store, "2025-01-01"), partitions=(dt.date(2025, 1, 15),))
    changed = two_days_pipeline(store, "2025-02-01")
    outcome = finish(changed, plan, "a", Status.FAILED, key="d:2025-01-15")
    assert [(r.asset, r.status) for r in outcome.skipped] == [("b", Status.SKIPPED)]
    assert outcome.closed == RunStatus.FAILED


def test_an_orphaned_tick_run_whose_partition_left_the_definition_is_given_up_with_why() -> None:
    from flowstone.scheduler.launch import plan_from_pending

    store = MemoryStore()
    plan = start(two_days_pipeline(store, "2025-01-01"), partitions=(dt.date(2025, 1, 15),))
    run = store.get_run(plan.run_id)
    assert run is not None
    pending = store.list_materializations(run_id=run.id, limit=None)
    reason = plan_from_pending(two_days_pipeline(store, "2025-02-01"), run, pending)
    assert isinstance(reason, str) and "d:2025-01-15" in reason


def test_resuming_skips_the_steps_below_a_failure_even_if_their_partition_left_it() -> None:
    # The in-process path of the test above: a run waiting on approvals, `a` failed, is
    # resumed by a process whose definition no longer has `b`'s day.
    store = MemoryStore()
    plan = start(two_days_pipeline(store, "2025-01-01"), partitions=(dt.date(2025, 1, 15),))
    (failed,) = store.list_materializations(run_id=plan.run_id, asset="a", limit=None)
    store.save_materialization(replace(failed, status=Status.FAILED, completed_at=utcnow()))
    run = store.get_run(plan.run_id)
    assert run is not None
    store.update_run(replace(run, status=RunStatus.WAITING_APPROVAL))
    result = two_days_pipeline(store, "2025-02-01").resume_run(plan.run_id)
    assert result.status == RunStatus.FAILED
    assert {(r.asset, r.status) for r in result.materializations} == {
        ("a", Status.FAILED),
        ("b", Status.SKIPPED),
    }
