"""Retry policies: validation, which errors retry, and the waits."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

import pytest

import flowstone as fs
from distributed_fixtures.harness import wait_until
from flowstone.errors import AssetExecutionError, DefinitionError
from flowstone.execution import inprocess
from flowstone.planner import plan_run
from flowstone.records import MaterializationRecord, RunRecord, RunStatus, Status


class Flaky(Exception):
    pass


def test_defaults_retry_every_exception_three_times() -> None:
    policy = fs.RetryPolicy()
    assert policy.should_retry(ValueError("x"), 1)
    assert policy.should_retry(ValueError("x"), 2)
    assert not policy.should_retry(ValueError("x"), 3)


def test_only_the_listed_exceptions_retry_matched_on_the_asset_s_own_error() -> None:
    policy = fs.RetryPolicy(max_attempts=5, retry_on=(Flaky, TimeoutError))
    wrapped = AssetExecutionError("prices", None, Flaky("upstream down"))
    assert policy.should_retry(wrapped, 1)
    assert policy.should_retry(TimeoutError(), 4)
    assert not policy.should_retry(AssetExecutionError("prices", None, ValueError()), 1)
    assert not policy.should_retry(KeyboardInterrupt(), 1)  # never a BaseException


def test_a_single_exception_class_is_accepted() -> None:
    assert fs.RetryPolicy(retry_on=Flaky).retry_on == (Flaky,)  # type: ignore[arg-type]


def test_waits_grow_exponentially_up_to_the_cap() -> None:
    policy = fs.RetryPolicy(max_attempts=10, backoff=1.5, multiplier=3.0, max_backoff=20.0)
    assert [policy.min_delay(a) for a in range(1, 6)] == [1.5, 4.5, 13.5, 20.0, 20.0]


def test_jitter_only_adds_up_to_its_fraction() -> None:
    policy = fs.RetryPolicy(backoff=2.0, jitter=0.25)
    rng = random.Random(7)
    waits = [policy.delay(2, rng) for _ in range(500)]
    assert all(4.0 <= w <= 5.0 for w in waits)
    assert max(waits) - min(waits) > 0.5  # really spread, not a constant
    assert fs.RetryPolicy(backoff=2.0, jitter=0).delay(2) == 4.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"backoff": -1}, "backoff must be >= 0"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"backoff": 10, "max_backoff": 5}, "max_backoff (5) must be >= backoff (10)"),
        ({"jitter": 2}, "jitter must be between 0 and 1"),
        ({"retry_on": ("TimeoutError",)}, "retry_on must be a tuple of exception classes"),
        ({"retry_on": ()}, "retry_on must be a tuple of exception classes"),
    ],
)
def test_invalid_policies_say_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError, match="Invalid RetryPolicy") as raised:
        fs.RetryPolicy(**options)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_assets_carry_their_policy() -> None:
    policy = fs.RetryPolicy(max_attempts=2)

    @fs.asset(retry=policy)
    def prices() -> int:
        return 1

    @fs.asset
    def plain() -> int:
        return 1

    assert prices.retry is policy
    assert plain.retry is None
    with pytest.raises(DefinitionError, match=r"retry must be fs\.RetryPolicy"):
        fs.asset(name="prices", retry=3)(lambda: 1)  # type: ignore[arg-type]


# --- the in-process executor applies the policy --------------------------------------------


def flaky_pipeline(
    store_url: str, fails: int, policy: fs.RetryPolicy
) -> tuple[fs.Pipeline, list[int]]:
    attempts: list[int] = []

    @fs.asset(retry=policy)
    def prices(ctx):  # type: ignore[no-untyped-def]
        attempts.append(ctx.attempt)
        if len(attempts) <= fails:
            raise Flaky(f"attempt {ctx.attempt} failed")
        return 42

    @fs.asset
    def report(prices):  # type: ignore[no-untyped-def]
        return prices + 1

    return fs.Pipeline([prices, report], store=store_url), attempts


def test_a_retryable_failure_succeeds_on_attempt_3_in_process(store_url: str) -> None:
    policy = fs.RetryPolicy(max_attempts=3, backoff=0.01, jitter=0.0)
    pipeline, attempts = flaky_pipeline(store_url, fails=2, policy=policy)
    with pipeline:
        run = pipeline.materialize_all()
        run.raise_for_status()
        assert attempts == [1, 2, 3]
        [prices] = [r for r in run.materializations if r.asset == "prices"]
        assert (prices.status, prices.attempt) == (Status.SUCCESS, 3)
        assert pipeline.load("report") == 43
        actions = [
            (e.action, e.details.get("attempt"))
            for e in pipeline.audit_log(run_id=run.run_id, limit=None)
            if e.resource_id == "prices"
        ]
        assert actions == [
            ("materialization.failed", 1),
            ("materialization.retry_scheduled", 1),
            ("materialization.failed", 2),
            ("materialization.retry_scheduled", 2),
            ("materialization.success", 3),
        ]


def test_the_last_attempt_fails_for_good_and_other_errors_never_retry(store_url: str) -> None:
    pipeline, attempts = flaky_pipeline(
        store_url, fails=5, policy=fs.RetryPolicy(max_attempts=2, backoff=0.0)
    )
    with pipeline:
        run = pipeline.materialize_all()
        [prices, report] = sorted(run.materializations, key=lambda r: r.asset)
        assert (prices.status, prices.attempt, prices.error_message) == (
            Status.FAILED,
            2,
            "attempt 2 failed",
        )
        assert report.status == Status.SKIPPED
        assert attempts == [1, 2]
    only_timeouts = fs.RetryPolicy(max_attempts=5, backoff=0.0, retry_on=(TimeoutError,))
    pipeline, attempts = flaky_pipeline(store_url, fails=5, policy=only_timeouts)
    with pipeline:
        assert pipeline.materialize_all().status == fs.RunStatus.FAILED
        assert attempts == [1]


def test_an_interrupted_run_stops_waiting_and_records_the_failure() -> None:
    # A long backoff, interrupted: the step is recorded failed (not left pending) at once.
    pipeline, attempts = flaky_pipeline(
        "memory", fails=5, policy=fs.RetryPolicy(max_attempts=3, backoff=60.0, max_backoff=60.0)
    )
    with pipeline:
        plan = plan_run(pipeline.graph, ["prices"], with_upstream=False)
        step = plan.steps[0]
        materializer, scope = pipeline.step_runtime(
            plan.run_id, resources=pipeline.resource_scope()
        )
        stop = threading.Event()
        result: list[MaterializationRecord] = []
        worker = threading.Thread(
            target=lambda: result.append(inprocess._run_step(materializer, step, scope, {}, stop))
        )
        pipeline.store.create_run(
            RunRecord(
                id=plan.run_id,
                status=RunStatus.RUNNING,
                targets=plan.targets,
                partition_key=None,
                created_at=plan.created_at,
            ),
            [step.pending_record(plan.run_id)],
        )
        worker.start()
        wait_until(lambda: bool(attempts), "the first attempt")
        stop.set()
        worker.join(timeout=10)
        assert not worker.is_alive()
        [record] = result
        assert (record.status, record.attempt) == (Status.FAILED, 1)
        stored = pipeline.store.get_materialization(record.id)
        assert stored is not None and stored.status == Status.FAILED


def test_ctrl_c_during_a_backoff_on_the_calling_thread_records_the_failure() -> None:
    import _thread

    pipeline, attempts = flaky_pipeline(
        "memory", fails=5, policy=fs.RetryPolicy(max_attempts=3, backoff=60.0, max_backoff=60.0)
    )
    pipeline = fs.Pipeline(
        list(pipeline.graph.assets.values()),
        store="memory",
        executor=inprocess.InProcessExecutor(max_workers=1),  # every step on this thread
    )
    threading.Thread(
        target=lambda: (wait_until(lambda: bool(attempts), "attempt 1"), _thread.interrupt_main())
    ).start()
    with pytest.raises(KeyboardInterrupt):
        pipeline.materialize_all()
    [prices] = pipeline.store.list_materializations(asset="prices", limit=None)
    assert (prices.status, prices.attempt) == (Status.FAILED, 1)
    [report] = pipeline.store.list_materializations(asset="report", limit=None)
    assert report.status == Status.SKIPPED


def test_a_backfill_counts_only_the_last_attempt_and_its_cancel_stops_a_backoff() -> None:
    days = fs.DailyPartitions("2025-01-01", "2025-01-03")
    tries: Counter[Any] = Counter()

    @fs.asset(partitioned_by=days, retry=fs.RetryPolicy(max_attempts=3, backoff=0.01))
    def flaky_day(ctx):  # type: ignore[no-untyped-def]
        tries[ctx.partition] += 1
        if tries[ctx.partition] == 1:
            raise Flaky("first try fails")
        return 1

    seen: list[Any] = []
    with fs.Pipeline([flaky_day], store="memory") as pipeline:
        result = pipeline.backfill("flaky_day", partitions="all", progress=seen.append)
        result.raise_for_status()
        assert max(p.failed for p in seen) == 0  # a retried attempt is not a failed partition
        assert (seen[-1].success, result.backfill.success) == (2, 2)

    @fs.asset(partitioned_by=days, retry=fs.RetryPolicy(max_attempts=3, backoff=60.0))
    def stuck_day(ctx):  # type: ignore[no-untyped-def]
        raise Flaky("always")

    with fs.Pipeline([stuck_day], store="memory") as pipeline:
        outcome: list[Any] = []
        worker = threading.Thread(
            target=lambda: outcome.append(pipeline.backfill("stuck_day", partitions="all"))
        )
        worker.start()
        wait_until(lambda: bool(pipeline.backfills()), "the backfill to start")
        wait_until(
            lambda: (
                len(pipeline.store.list_materializations(asset="stuck_day", limit=None)) == 2
                and all(
                    r.started_at is not None
                    for r in pipeline.store.list_materializations(asset="stuck_day", limit=None)
                )
            ),
            "both first attempts",
        )
        pipeline.cancel_backfill(pipeline.backfills()[0].id)
        worker.join(timeout=30)  # a hang guard: without the fix it waits out 60 s backoffs
        assert not worker.is_alive()
        [result] = outcome
        assert result.backfill.status == "canceled"
        statuses = {r.status for r in pipeline.store.list_materializations(limit=None)}
        assert statuses == {Status.FAILED}  # nothing left pending or running
