"""Approvals and schedules on the distributed executor, with real worker processes against the
real PostgreSQL: a step that asks waits in the store (the run shows ``waiting_approval``) and a
decision from any distributed pipeline continues the run on the workers; a schedule's tick is
recorded once by two schedulers and run by the workers."""

from __future__ import annotations

from collections import Counter

import pytest

from distributed_fixtures.harness import Cluster
from flowstone.records import RunResult, RunStatus, Status

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def statuses(result: RunResult) -> dict[str, Status]:
    return {r.asset: r.status for r in result.materializations}


def test_an_approved_step_runs_again_on_a_worker_with_the_decision(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("approvals")
    pg_cluster.start_worker("approvals", "--concurrency", "2")
    submitted = pipeline.materialize_all()
    waiting = pg_cluster.finish(pipeline, submitted.run_id)
    assert waiting.status == RunStatus.WAITING_APPROVAL
    assert statuses(waiting) == {
        "gated": Status.WAITING_APPROVAL,
        "shipped": Status.PENDING,
        "unrelated": Status.SUCCESS,
    }
    [request] = pipeline.approvals()
    continued = pipeline.approve(request.id, by="ana", input={"channel": "web"})
    assert continued.status == RunStatus.RUNNING  # handed to the workers
    done = pg_cluster.finish(pipeline, submitted.run_id)
    assert done.status == RunStatus.SUCCESS, pg_cluster.worker_logs()
    assert pipeline.load("shipped") == "shipped by ana to web"
    [gated] = [r for r in done.materializations if r.asset == "gated"]
    assert gated.attempt == 2
    ran = Counter(e.asset for e in pg_cluster.executions(submitted.run_id) if e.event == "done")
    assert ran == Counter({"gated": 2, "shipped": 1, "unrelated": 1})
    actions = [e.action for e in pipeline.audit_log(run_id=submitted.run_id, limit=None)]
    assert "run.waiting_approval" in actions and "materialization.resumed" in actions
    assert actions.count("run.success") == 1


def test_a_rejection_skips_what_is_below_and_fails_the_run(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("approvals")
    pg_cluster.start_worker("approvals")
    submitted = pipeline.materialize_all()
    assert pg_cluster.finish(pipeline, submitted.run_id).status == RunStatus.WAITING_APPROVAL
    [request] = pipeline.approvals()
    result = pipeline.reject(request.id, by="ana", reason="not today")
    assert result.status == RunStatus.FAILED
    assert statuses(result) == {
        "gated": Status.FAILED,
        "shipped": Status.SKIPPED,
        "unrelated": Status.SUCCESS,
    }
    run = pipeline.get_run(submitted.run_id)
    assert run is not None and run.status == RunStatus.FAILED and run.completed_at is not None


# --- schedules: a tick's run goes to the workers ------------------------------------------------
def test_two_schedulers_tick_once_and_the_workers_run_it(pg_cluster: Cluster) -> None:
    from datetime import UTC, datetime

    from flowstone.scheduler import Scheduler

    schedulers = []
    for _ in range(2):
        pipeline = pg_cluster.pipeline("diamond")
        pipeline.schedule("hourly", "join", cron="0 * * * *", with_upstream=True)
        schedulers.append(Scheduler(pipeline))
    pg_cluster.start_worker("diamond", "--concurrency", "2")
    before, tick = (datetime(2026, 1, 1, h, m, tzinfo=UTC) for h, m in ((9, 59), (10, 0)))
    for scheduler in schedulers:
        scheduler.tick_once(before)  # a new schedule starts from here
    for scheduler in schedulers:
        scheduler.tick_once(tick)
    pipeline = schedulers[0].pipeline
    [run] = pipeline.runs()
    result = pipeline.wait_for_run(run.id, timeout=90, poll_interval=0.1)
    assert result.status == RunStatus.SUCCESS, pg_cluster.worker_logs()
    done = Counter(e.asset for e in pg_cluster.executions(run.id) if e.event == "done")
    assert done == Counter({"root": 1, "left": 1, "right": 1, "join": 1})
    for scheduler in schedulers:
        scheduler.close()


# --- backfills: each chunk is a run on the workers ---------------------------------------------
def test_a_backfill_from_a_distributed_pipeline_runs_its_chunks_on_the_workers(
    pg_cluster: Cluster,
) -> None:
    pipeline = pg_cluster.pipeline("partitioned")
    pg_cluster.start_worker("partitioned", "--concurrency", "2")
    seen = []
    result = pipeline.backfill("regional", partitions="all", chunk_size=1, progress=seen.append)
    result.raise_for_status()
    assert (result.backfill.success, len(result.run_ids)) == (2, 2)
    assert [pipeline.load("regional", key) for key in ("eu", "us")] == ["eu", "us"]
    # The workers ran them (they log each execution), once per partition.
    ran = Counter(
        (e.asset, e.partition_key)
        for run_id in result.run_ids
        for e in pg_cluster.executions(run_id)
    )
    assert ran == Counter({("regional", "s:eu"): 1, ("regional", "s:us"): 1})
    assert seen[-1].success == 2


def test_a_scheduler_refuses_values_the_workers_could_not_read(pg_cluster: Cluster) -> None:
    from flowstone.errors import DistributedSetupError
    from flowstone.scheduler import Scheduler

    pipeline = pg_cluster.pipeline("diamond", default_io_manager="memory")
    with pytest.raises(DistributedSetupError, match="would store their values in memory"):
        Scheduler(pipeline)


def test_a_decision_from_an_in_process_pipeline_hands_a_workers_run_back_to_them(
    pg_cluster: Cluster,
) -> None:
    from flowstone.execution import InProcessExecutor

    pipeline = pg_cluster.pipeline("approvals")
    pg_cluster.start_worker("approvals")
    submitted = pipeline.materialize_all()
    assert pg_cluster.finish(pipeline, submitted.run_id).status == RunStatus.WAITING_APPROVAL
    local = pg_cluster.pipeline("approvals", executor=InProcessExecutor())  # e.g. a plain CLI
    [request] = local.approvals()
    assert local.approve(request.id, by="ana").status == RunStatus.RUNNING  # to the workers
    done = pg_cluster.finish(pipeline, submitted.run_id)
    assert done.status == RunStatus.SUCCESS, pg_cluster.worker_logs()
    ran = Counter(e.asset for e in pg_cluster.executions(submitted.run_id) if e.event == "done")
    assert ran == Counter({"gated": 2, "shipped": 1, "unrelated": 1})  # all on the workers


def test_cancelling_a_distributed_backfill_cancels_its_chunk_on_the_workers(
    pg_cluster: Cluster,
) -> None:
    import threading

    from distributed_fixtures.harness import wait_until

    pipeline = pg_cluster.pipeline("slow_parts")
    pg_cluster.start_worker("slow_parts", "--concurrency", "1")
    results = []
    worker = threading.Thread(
        target=lambda: results.append(pipeline.backfill("slow_part", partitions="all"))
    )
    worker.start()
    wait_until(lambda: bool(pipeline.backfills()), "the backfill to start")
    backfill_id = pipeline.backfills()[0].id
    wait_until(
        lambda: any(
            e.event == "done" for r in pipeline.runs() for e in pg_cluster.executions(r.id)
        ),
        "a first partition",
    )
    pipeline.cancel_backfill(backfill_id)
    worker.join(timeout=60)
    assert not worker.is_alive(), pg_cluster.worker_logs()
    [result] = results
    record = result.backfill
    assert record.status == "canceled"
    assert record.success >= 1 and record.canceled >= 1
    # The step running at the cancel finished and counts as a success, not a failure.
    assert record.success + record.canceled == 6, record.counts
    statuses = {r.status for r in pipeline.store.list_materializations(limit=None)}
    assert statuses <= {Status.SUCCESS, Status.CANCELLED}  # nothing left pending or running


def test_an_approved_gate_retried_on_a_worker_does_not_ask_again(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("gated_retry")
    pg_cluster.start_worker("gated_retry")
    submitted = pipeline.materialize_all()
    assert pg_cluster.finish(pipeline, submitted.run_id).status == RunStatus.WAITING_APPROVAL
    [request] = pipeline.approvals()
    pipeline.approve(request.id, by="ana")
    done = pg_cluster.finish(pipeline, submitted.run_id)
    assert done.status == RunStatus.SUCCESS, pg_cluster.worker_logs()
    [gate] = done.materializations
    assert gate.attempt == 3
    assert pipeline.load("gate_retry") == "ana"
    assert len(pipeline.approvals(status=None)) == 1  # asked once


def test_ctrl_c_during_a_distributed_backfill_cancels_its_chunk_and_resume_runs_each_once(
    pg_cluster: Cluster,
) -> None:
    import _thread
    import threading

    from distributed_fixtures.harness import wait_until

    pipeline = pg_cluster.pipeline("slow_parts")
    pg_cluster.start_worker("slow_parts", "--concurrency", "1")

    def interrupt_after_first() -> None:
        wait_until(
            lambda: any(
                e.event == "done" for r in pipeline.runs() for e in pg_cluster.executions(r.id)
            ),
            "a first partition",
        )
        _thread.interrupt_main()

    threading.Thread(target=interrupt_after_first, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        pipeline.backfill("slow_part", partitions="all")
    [chunk] = pipeline.runs()
    assert pipeline.get_run(chunk.id).status == RunStatus.CANCELLED  # the workers stop too
    wait_until(
        lambda: all(
            r.status != Status.RUNNING for r in pipeline.store.list_materializations(limit=None)
        ),
        "the running step to end",
    )
    backfill_id = pipeline.backfills()[0].id
    pipeline.resume_backfill(backfill_id).raise_for_status()
    done = Counter(
        e.partition_key
        for r in pipeline.runs()
        for e in pg_cluster.executions(r.id)
        if e.event == "done"
    )
    assert done == Counter({f"s:{p}": 1 for p in "abcdef"})  # nothing ran twice


def test_a_workers_run_can_be_cancelled_from_an_in_process_pipeline(pg_cluster: Cluster) -> None:
    from flowstone.execution import InProcessExecutor

    submitted = pg_cluster.pipeline("diamond").materialize_all()  # no worker: it stays queued
    local = pg_cluster.pipeline("diamond", executor=InProcessExecutor())
    done = local.cancel_run(submitted.run_id)
    assert done.run.status == RunStatus.CANCELLED
    assert done.cancelled_steps == 4
