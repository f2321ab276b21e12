"""Backfills through ``Pipeline``: partition choices, skip and force, bounded parallelism,
failures and retry, cancel, resume, events, memory, bad input.

The crash-and-resume test (a backfill killed with SIGKILL in a child process) is in
``test_backfill_resume.py``.
"""

from __future__ import annotations

import datetime as dt
import threading
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import flowstone as fs
from flowstone.backfill_progress import BackfillProgress
from flowstone.backfill_records import BackfillStatus, PartitionOutcome
from flowstone.errors import (
    BackfillBusyError,
    BackfillError,
    BackfillFailedError,
    BackfillStateError,
    PartitionError,
    UnknownAssetError,
    UnknownBackfillError,
)
from flowstone.records import Status, utcnow
from flowstone.store import MemoryStore, MetadataStore
from flowstone.telemetry import TelemetryEvent

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")
JAN = [dt.date(2025, 1, d) for d in range(1, 32)]


class Calls:
    """What the assets saw: calls per (asset, partition), failures to raise, peak threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[tuple[str, Any]] = Counter()
        self.fail: set[Any] = set()
        self.hook: Any = None

    def called(self, asset: str, partition: Any) -> None:
        with self.lock:
            self.calls[(asset, partition)] += 1
        if self.hook is not None:
            self.hook(asset, partition)
        if partition in self.fail:
            raise ValueError(f"no data for {partition}")


def make_pipeline(store: str | MetadataStore, calls: Calls, **options: Any) -> fs.Pipeline:
    @fs.asset
    def regions() -> list[str]:
        calls.called("regions", None)
        return ["eu", "us"]

    @fs.asset(partitioned_by=DAYS)
    def events(ctx: fs.AssetContext) -> int:
        calls.called("events", ctx.partition)
        return ctx.partition.day

    @fs.asset(partitioned_by=DAYS)
    def totals(ctx: fs.AssetContext, events: int, regions: list[str]) -> int:
        calls.called("totals", ctx.partition)
        return events * len(regions)

    return fs.Pipeline([regions, events, totals], store=store, **options)


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def pipeline(store_url: str, calls: Calls) -> Iterator[fs.Pipeline]:
    with make_pipeline(store_url, calls, default_io_manager="memory") as built:
        yield built


def successes(pipeline: fs.Pipeline, asset: str) -> Counter[str]:
    records = pipeline.store.list_materializations(asset=asset, status=Status.SUCCESS, limit=None)
    return Counter(r.partition_key for r in records)


def open_records(pipeline: fs.Pipeline) -> list[Any]:
    return [
        r
        for status in (Status.PENDING, Status.RUNNING)
        for r in pipeline.store.list_materializations(status=status, limit=None)
    ]


# --- partition choices ---------------------------------------------------------------------


def test_a_range_runs_each_partition_once_and_is_stored_compactly(
    pipeline: fs.Pipeline, calls: Calls
) -> None:
    result = pipeline.backfill(
        "totals",
        start=dt.date(2025, 1, 5),
        end=dt.date(2025, 1, 24),
        with_upstream=True,
        chunk_size=7,
    )
    assert result.ok and result.status == BackfillStatus.SUCCESS
    record = result.backfill
    assert (record.total, record.success, record.skipped, record.failed, record.remaining) == (
        20,
        20,
        0,
        0,
        0,
    )
    assert record.partition_set["segments"] == [
        {"start": "d:2025-01-05", "end": "d:2025-01-24", "size": 20}
    ]
    # 20 partitions in chunks of 7: three runs, each tagged with the backfill.
    assert len(result.run_ids) == 3
    for run_id in result.run_ids:
        run = pipeline.store.get_run(run_id)
        assert run is not None and run.tags == {"backfill": record.id}
    assert calls.calls[("regions", None)] == 1  # unpartitioned upstream: once per pass
    assert all(calls.calls[("totals", d)] == 1 for d in JAN[4:24])
    assert calls.calls[("totals", JAN[0])] == 0
    assert pipeline.load("totals", dt.date(2025, 1, 10)) == 20
    assert record.owner is None and record.finished_at is not None
    assert open_records(pipeline) == []


def test_a_list_of_partitions_and_all(pipeline: fs.Pipeline, calls: Calls) -> None:
    listed = pipeline.backfill("events", partitions=[JAN[9], JAN[2], JAN[3], JAN[4], JAN[2]])
    assert listed.backfill.total == 4
    assert listed.backfill.partition_set["segments"] == [
        {"start": "d:2025-01-03", "end": "d:2025-01-05", "size": 3},
        {"keys": ["d:2025-01-10"]},
    ]
    everything = pipeline.backfill("events", partitions="all")
    assert (everything.backfill.total, everything.backfill.skipped) == (31, 4)
    assert all(calls.calls[("events", d)] == 1 for d in JAN)


def test_start_or_end_alone_run_to_the_last_or_from_the_first(pipeline: fs.Pipeline) -> None:
    assert pipeline.backfill("events", start=JAN[-3]).backfill.total == 3
    assert pipeline.backfill("events", end=JAN[1]).backfill.total == 2


# --- skip and force ------------------------------------------------------------------------


def test_partitions_already_successful_are_skipped_and_counted(
    pipeline: fs.Pipeline, calls: Calls
) -> None:
    for day in JAN[:3]:
        pipeline.materialize("events", partition=day).raise_for_status()
    result = pipeline.backfill("events", start=JAN[0], end=JAN[9])
    assert (result.backfill.skipped, result.backfill.success) == (3, 7)
    assert all(calls.calls[("events", d)] == 1 for d in JAN[:10])

    forced = pipeline.backfill("events", start=JAN[0], end=JAN[9], force=True)
    assert (forced.backfill.skipped, forced.backfill.success) == (0, 10)
    assert all(calls.calls[("events", d)] == 2 for d in JAN[:10])


def test_a_partition_is_skipped_only_when_every_asset_succeeded(
    pipeline: fs.Pipeline, calls: Calls
) -> None:
    pipeline.materialize("events", partition=JAN[0]).raise_for_status()
    result = pipeline.backfill(["events", "totals"], partitions=JAN[:2], with_upstream=True)
    assert (result.backfill.skipped, result.backfill.success) == (0, 2)
    assert calls.calls[("totals", JAN[0])] == 1


# --- parallelism ---------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [1, 3])
def test_no_more_than_parallel_assets_run_at_once(
    pipeline: fs.Pipeline, calls: Calls, parallel: int
) -> None:
    active = started = peak = 0
    cond = threading.Condition()

    def hook(asset: str, partition: Any) -> None:
        nonlocal active, started, peak
        with cond:
            active += 1
            started += 1
            peak = max(peak, active)
            cond.notify_all()
            # Hold on until `parallel` run together (or none is left to start), so the peak
            # shows the bound rather than how fast a thread happens to start.
            cond.wait_for(lambda: active >= parallel or started == 12, timeout=5)
            active -= 1

    calls.hook = hook
    result = pipeline.backfill("events", partitions=JAN[:12], parallel=parallel)
    assert result.ok
    assert peak == parallel


# --- failures and retry --------------------------------------------------------------------


def test_failed_partitions_are_counted_listed_and_retried_alone(
    pipeline: fs.Pipeline, calls: Calls
) -> None:
    calls.fail = {JAN[2], JAN[6]}
    result = pipeline.backfill(["events", "totals"], partitions=JAN[:10], with_upstream=True)
    record = result.backfill
    assert result.status == BackfillStatus.FAILED and not result.ok
    assert (record.success, record.failed, record.skipped, record.remaining) == (8, 2, 0, 0)
    # The root cause is named, not the asset skipped below it.
    assert [(f.partition_key, f.asset, f.error_type) for f in result.failures] == [
        ("d:2025-01-03", "events", "ValueError"),
        ("d:2025-01-07", "events", "ValueError"),
    ]
    assert result.failures[0].error_message == "no data for 2025-01-03"
    with pytest.raises(BackfillFailedError, match="2 partitions failed"):
        result.raise_for_status()

    calls.fail = set()
    retried = pipeline.retry_failed_backfill(result.id)
    assert retried.ok
    assert (retried.backfill.success, retried.backfill.failed) == (10, 0)
    assert pipeline.backfill_status(result.id).failures == ()
    for day in JAN[:10]:
        expected = 2 if day in (JAN[2], JAN[6]) else 1
        assert calls.calls[("events", day)] == expected
        assert calls.calls[("totals", day)] == 1
    assert successes(pipeline, "totals") == Counter({f"d:{d.isoformat()}": 1 for d in JAN[:10]})


def test_a_failure_that_persists_counts_its_attempts(pipeline: fs.Pipeline, calls: Calls) -> None:
    calls.fail = {JAN[1]}
    first = pipeline.backfill("events", partitions=JAN[:3])
    again = pipeline.retry_failed_backfill(first.id)
    assert again.status == BackfillStatus.FAILED
    assert [(f.partition_key, f.attempts) for f in again.failures] == [("d:2025-01-02", 2)]
    assert again.backfill.failed == 1 and again.backfill.success == 2


def test_retry_with_nothing_failed_runs_nothing(pipeline: fs.Pipeline) -> None:
    done = pipeline.backfill("events", partitions=JAN[:2])
    again = pipeline.retry_failed_backfill(done.id)
    assert again.run_ids == () and again.backfill == done.backfill
    assert pipeline.resume_backfill(done.id).run_ids == ()


def test_an_unpartitioned_upstream_failure_stops_the_backfill(
    pipeline: fs.Pipeline, calls: Calls
) -> None:
    calls.fail = {None}
    result = pipeline.backfill("totals", partitions=JAN[:9], with_upstream=True, chunk_size=3)
    record = result.backfill
    assert result.status == BackfillStatus.FAILED
    assert len(result.run_ids) == 1  # stopped after the first chunk, not 9 failures later
    assert (record.cursor, record.failed, record.remaining) == (3, 3, 6)
    assert result.failures[0].asset == "regions"

    calls.fail = set()
    resumed = pipeline.resume_backfill(result.id)
    assert resumed.ok and resumed.backfill.success == 9


# --- cancel --------------------------------------------------------------------------------


def test_cancel_stops_new_partitions_and_leaves_nothing_pending(
    pipeline: fs.Pipeline, calls: Calls
) -> None:
    holder: dict[str, str] = {}

    def cancel_after_five(progress: BackfillProgress) -> None:
        holder.setdefault("id", progress.backfill_id)
        if progress.done == 5:
            pipeline.cancel_backfill(progress.backfill_id, by="ana")

    result = pipeline.backfill(
        "events", partitions=JAN[:20], parallel=1, chunk_size=8, progress=cancel_after_five
    )
    record = result.backfill
    assert result.status == BackfillStatus.CANCELED
    assert (record.success, record.canceled) == (5, 15)
    assert record.count(PartitionOutcome.CANCELED) == 3  # the rest of the first chunk
    assert record.remaining == 12
    assert sum(calls.calls.values()) == 5
    assert open_records(pipeline) == []
    canceled_steps = pipeline.store.list_materializations(status=Status.SKIPPED, limit=None)
    assert len(canceled_steps) == 3

    resumed = pipeline.resume_backfill(result.id)
    assert resumed.ok and resumed.backfill.success == 20
    assert successes(pipeline, "events") == Counter({f"d:{d.isoformat()}": 1 for d in JAN[:20]})


def test_cancel_from_another_pipeline_is_seen_at_the_end_of_the_chunk(
    store_url: str, calls: Calls
) -> None:
    store = MemoryStore() if store_url == "memory" else store_url
    with (
        make_pipeline(store, calls, default_io_manager="memory") as running,
        make_pipeline(store, Calls(), default_io_manager="memory") as other,
    ):
        asked: list[BackfillStatus] = []

        def hook(asset: str, partition: Any) -> None:
            if partition == JAN[1]:
                backfill = running.backfills(limit=1)[0]
                asked.append(other.cancel_backfill(backfill.id).status)

        calls.hook = hook
        result = running.backfill("events", partitions=JAN[:9], parallel=1, chunk_size=3)
    assert asked == [BackfillStatus.CANCELING]  # another process: asked, not done
    assert result.status == BackfillStatus.CANCELED
    # The chunk under way ends (its heartbeat may catch the cancel first: then its last
    # partition is canceled rather than run); nothing after it starts.
    record = result.backfill
    assert record.success + record.count(PartitionOutcome.CANCELED) == 3
    assert record.success >= 2 and record.remaining == 6


def test_a_finished_backfill_cannot_be_canceled(pipeline: fs.Pipeline) -> None:
    done = pipeline.backfill("events", partitions=JAN[:1])
    with pytest.raises(BackfillStateError, match="nothing to cancel"):
        pipeline.cancel_backfill(done.id)


def test_a_backfill_whose_process_died_is_canceled_at_once(pipeline: fs.Pipeline) -> None:
    record = abandoned(pipeline)
    canceled = pipeline.cancel_backfill(record.id, by="ana")
    assert canceled.status == BackfillStatus.CANCELED and canceled.owner is None
    assert open_records(pipeline) == []
    run = pipeline.store.get_run(canceled_run_id(pipeline, record.id))
    assert run is not None and run.status == "failed"
    assert pipeline.cancel_backfill(record.id) == canceled  # again: nothing changes


def abandoned(pipeline: fs.Pipeline) -> Any:
    """A backfill left `running` by a process that died mid-chunk (simulated in the store)."""
    from flowstone.backfill_chunks import new_run
    from flowstone.planner import plan_run

    done = pipeline.backfill("events", partitions=JAN[:4], chunk_size=2)
    store = pipeline.store
    dead = "no-such-host:1:dead"
    long_ago = utcnow() - dt.timedelta(hours=1)
    claimed = store.claim_backfill(done.id, owner=dead, expected_owner=None, now=long_ago)
    assert claimed is not None
    plan = plan_run(pipeline.graph, ["events"], partitions=JAN[4:6], with_upstream=False)
    run, _ = new_run(plan, done.id)
    store.create_backfill_run(done.id, run, plan.pending_records())
    return claimed


def canceled_run_id(pipeline: fs.Pipeline, backfill_id: str) -> str:
    runs = [r for r in pipeline.store.list_runs() if r.tags.get("backfill") == backfill_id]
    return runs[0].id  # newest first: the one the dead process left


# --- ownership -----------------------------------------------------------------------------


def test_a_backfill_a_live_process_runs_cannot_be_resumed(pipeline: fs.Pipeline) -> None:
    done = pipeline.backfill("events", partitions=JAN[:2])
    live = f"{_hostname()}:{_pid()}:someone"
    pipeline.store.claim_backfill(done.id, owner=live, expected_owner=None, now=utcnow())
    with pytest.raises(BackfillBusyError, match="is being run by process"):
        pipeline.resume_backfill(done.id)
    assert pipeline.backfill_status(done.id).active


def test_a_dead_owner_is_taken_over_and_its_runs_closed(pipeline: fs.Pipeline) -> None:
    record = abandoned(pipeline)
    assert not pipeline.backfill_status(record.id).active
    resumed = pipeline.resume_backfill(record.id)
    assert resumed.ok and resumed.backfill.owner is None
    assert open_records(pipeline) == []


# --- events --------------------------------------------------------------------------------


def test_start_finish_cancel_and_resume_are_audited_and_emitted(
    pipeline: fs.Pipeline, calls: Calls
) -> None:
    events: list[TelemetryEvent] = []
    pipeline.subscribe(events.append, prefix="backfill.")

    def cancel_at_once(progress: BackfillProgress) -> None:
        if progress.done == 1:
            pipeline.cancel_backfill(progress.backfill_id, by="ana")

    first = pipeline.backfill(
        "events", partitions=JAN[:4], parallel=1, created_by="bo", progress=cancel_at_once
    )
    pipeline.resume_backfill(first.id, by="cy")
    actions = [e.action for e in pipeline.audit_log(asset=first.id)]
    assert actions == [
        "backfill.started",
        "backfill.cancel_requested",
        "backfill.canceled",
        "backfill.resumed",
        "backfill.finished",
    ]
    by_action = {e.action: e for e in pipeline.audit_log(asset=first.id)}
    assert by_action["backfill.started"].actor == "bo"
    assert by_action["backfill.cancel_requested"].actor == "ana"
    assert by_action["backfill.resumed"].actor == "cy"
    assert by_action["backfill.finished"].details["success"] == 4
    names = [e.name for e in events]
    assert names[0] == "backfill.start" and names[-1] == "backfill.stop"
    assert {"backfill.cancel", "backfill.resume", "backfill.chunk"} <= set(names)
    stop = events[-1]
    assert stop.metadata["status"] == "success" and stop.measurements["duration_ms"] >= 0


def test_progress_reports_every_partition(pipeline: fs.Pipeline, calls: Calls) -> None:
    seen: list[BackfillProgress] = []
    calls.fail = {JAN[3]}
    pipeline.backfill("events", partitions=JAN[:6], parallel=2, progress=seen.append)
    assert seen[0].done == 0 and seen[0].remaining == 6
    last = seen[-1]
    assert (last.done, last.failed, last.running, last.remaining, last.total) == (5, 1, 0, 0, 6)
    assert last.rate is not None and last.rate > 0


def test_a_broken_progress_callback_does_not_stop_the_backfill(pipeline: fs.Pipeline) -> None:
    def broken(progress: BackfillProgress) -> None:
        raise RuntimeError("display went away")

    assert pipeline.backfill("events", partitions=JAN[:3], progress=broken).ok


# --- size ----------------------------------------------------------------------------------


def test_a_100k_partition_backfill_stays_small_in_memory_and_in_the_store() -> None:
    def peak_bytes(hours: fs.HourlyPartitions) -> tuple[int, Any]:
        @fs.asset(partitioned_by=hours)
        def reading(ctx: fs.AssetContext) -> int:
            return ctx.partition.hour

        with fs.Pipeline([reading], store="memory") as pipeline:

            def stop_after_first_chunk(progress: BackfillProgress) -> None:
                if progress.done == 1_000:
                    pipeline.cancel_backfill(progress.backfill_id)

            tracemalloc.start()
            try:
                result = pipeline.backfill(
                    "reading",
                    partitions="all",
                    parallel=1,
                    chunk_size=1_000,
                    progress=stop_after_first_chunk,
                )
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        return peak, result

    twelve_years = fs.HourlyPartitions("2013-01-01", "2025-01-01")
    two_months = fs.HourlyPartitions("2024-11-01", "2025-01-01")
    big_peak, big = peak_bytes(twelve_years)
    small_peak, small = peak_bytes(two_months)
    assert big.backfill.total == 105_192 and small.backfill.total == 1_464
    assert big.backfill.success == small.backfill.success == 1_000
    assert big.backfill.remaining == 104_192
    # The set is one range, whatever its size, and memory does not grow with it.
    assert len(str(big.backfill.partition_set)) < 200
    assert big_peak < small_peak * 1.5 + 1_000_000


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, PartitionError, "Say which partitions"),
        ({"partitions": JAN[:2], "start": JAN[0]}, PartitionError, "not both"),
        ({"partitions": "everything"}, PartitionError, "'all'"),
        ({"partitions": [dt.date(2024, 12, 31)]}, PartitionError, "before the first"),
        ({"start": JAN[5], "end": JAN[1]}, PartitionError, "swap them"),
        ({"partitions": "all", "parallel": 0}, BackfillError, "parallel must be"),
        ({"partitions": "all", "chunk_size": -1}, BackfillError, "chunk_size must be"),
    ],
)
def test_bad_input_is_refused_before_anything_is_recorded(
    pipeline: fs.Pipeline, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        pipeline.backfill("events", **kwargs)
    assert pipeline.backfills() == []


def test_assets_must_be_partitioned_alike(calls: Calls) -> None:
    @fs.asset
    def lookup() -> int:
        return 1

    @fs.asset(partitioned_by=DAYS)
    def daily() -> int:
        return 1

    @fs.asset(partitioned_by=fs.StaticPartitions(["eu", "us"]))
    def regional() -> int:
        return 1

    with fs.Pipeline([lookup, daily, regional], store="memory") as pipeline:
        with pytest.raises(PartitionError, match="None of 'lookup' is partitioned"):
            pipeline.backfill("lookup", partitions="all")
        with pytest.raises(PartitionError, match="different partitions"):
            pipeline.backfill(["daily", "regional"], partitions="all")
        with pytest.raises(UnknownAssetError):
            pipeline.backfill("nope", partitions="all")
        assert pipeline.backfills() == []


def test_backfills_are_found_by_id_prefix(pipeline: fs.Pipeline) -> None:
    done = pipeline.backfill("events", partitions=JAN[:1])
    assert pipeline.backfill_status(done.id[:6]).backfill.id == done.id
    assert [b.id for b in pipeline.backfills()] == [done.id]
    with pytest.raises(UnknownBackfillError, match="No backfill with id 'zzz'"):
        pipeline.backfill_status("zzz")
    with pytest.raises(UnknownBackfillError):
        pipeline.resume_backfill("")


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _pid() -> int:
    import os

    return os.getpid()


def test_pipeline_backfill_defaults_match_the_backfill_module() -> None:
    # Pipeline.backfill spells its defaults out (importing the backfill module at import time
    # would cost `import flowstone` its budget); they must not drift from the module's.
    import inspect

    from flowstone.backfill import DEFAULT_CHUNK_SIZE, DEFAULT_PARALLEL

    parameters = inspect.signature(fs.Pipeline.backfill).parameters
    assert parameters["parallel"].default == DEFAULT_PARALLEL
    assert parameters["chunk_size"].default == DEFAULT_CHUNK_SIZE


def test_import_flowstone_leaves_feature_modules_unloaded() -> None:
    import subprocess
    import sys

    heavy = [
        "flowstone.backfill",
        "flowstone.backfill_chunks",
        "flowstone.schedules",
        "flowstone.resume",
        "flowstone.approvals",
        "sqlalchemy",
        "alembic",
        "procrastinate",
        "pyarrow",
        "pandas",
        "polars",
    ]
    code = f"import sys, flowstone; print(sorted(set({heavy!r}) & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- partitions that wait for an approval -----------------------------------------------------


def test_partitions_waiting_for_approval_are_counted_apart_and_never_asked_twice(
    store_url: str,
) -> None:
    days = fs.DailyPartitions(start="2025-01-01", end="2025-01-04")
    runs: Counter[Any] = Counter()

    @fs.asset(partitioned_by=days, approval=fs.Approval("Publish this day?"))
    def publish(ctx):  # type: ignore[no-untyped-def]
        runs[ctx.partition] += 1
        return ctx.partition.day

    @fs.asset(partitioned_by=days)
    def announce(publish):  # type: ignore[no-untyped-def]
        return publish * 10

    with fs.Pipeline([publish, announce], store=store_url) as pipeline:
        first = pipeline.backfill("announce", partitions="all", with_upstream=True)
        record = first.backfill
        assert (record.status, record.waiting, record.failed) == (BackfillStatus.WAITING, 3, 0)
        requests = pipeline.approvals()
        assert len(requests) == 3

        again = pipeline.resume_backfill(record.id).backfill
        assert (again.status, again.waiting) == (BackfillStatus.WAITING, 3)
        assert len(pipeline.approvals()) == 3  # nobody asked twice

        by_day = {r.partition: r for r in requests}
        pipeline.approve(by_day[dt.date(2025, 1, 1)].id, by="ana")
        pipeline.reject(by_day[dt.date(2025, 1, 2)].id, by="ana", reason="not yet")
        after = pipeline.resume_backfill(record.id).backfill
        assert (after.success, after.waiting) == (1, 2)  # approved; rejected asks again
        assert pipeline.load("announce", dt.date(2025, 1, 1)) == 10
        assert len(pipeline.approvals()) == 2
        assert runs[dt.date(2025, 1, 3)] == 0  # a gate asks before the asset runs


def test_a_partition_with_two_gates_is_not_asked_again_while_its_second_gate_waits(
    store_url: str,
) -> None:
    days = fs.DailyPartitions(start="2025-01-01", end="2025-01-02")

    @fs.asset(partitioned_by=days, approval=fs.Approval("First sign-off?"))
    def first(ctx):  # type: ignore[no-untyped-def]
        return 1

    @fs.asset(partitioned_by=days, approval=fs.Approval("Second sign-off?"))
    def second(ctx, first):  # type: ignore[no-untyped-def]
        return first + 1

    with fs.Pipeline([first, second], store=store_url) as pipeline:
        record = pipeline.backfill("second", partitions="all", with_upstream=True).backfill
        [ask_first] = pipeline.approvals()
        pipeline.approve(ask_first.id, by="ana")
        [ask_second] = pipeline.approvals()
        assert ask_second.asset == "second"
        again = pipeline.resume_backfill(record.id).backfill
        assert (again.status, again.waiting) == (BackfillStatus.WAITING, 1)
        assert [a.asset for a in pipeline.approvals()] == ["second"]  # nobody asked twice
        pipeline.approve(ask_second.id, by="ana")
        done = pipeline.resume_backfill(record.id).backfill
        assert (done.status, done.success) == (BackfillStatus.SUCCESS, 1)
