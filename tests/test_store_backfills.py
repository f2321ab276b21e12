"""The metadata store contract for backfills: every promise of the backfill methods in
``flowstone/store/base.py``, over memory, SQLite and PostgreSQL (the ``store`` fixture of
``test_store_contract.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
)
from flowstone.errors import StoreError
from flowstone.records import RunStatus, Status
from flowstone.store import MetadataStore
from test_store_contract import STORE_KINDS, at, event, mat, new_id, open_test_store, run_record

ME = "host-a:100:aaaa"
OTHER = "host-b:200:bbbb"


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    with open_test_store(request.param, tmp_path) as opened:
        yield opened


def backfill(created: float = 0, **fields: Any) -> BackfillRecord:
    fields.setdefault("id", new_id("b"))
    fields.setdefault("status", BackfillStatus.RUNNING)
    fields.setdefault("targets", ("a",))
    fields.setdefault("with_upstream", False)
    fields.setdefault(
        "partition_set",
        {"format": 1, "size": 10, "segments": [{"start": "i:0", "end": "i:9", "size": 10}]},
    )
    fields.setdefault("total", 10)
    fields.setdefault("parallel", 4)
    fields.setdefault("chunk_size", 500)
    fields.setdefault("force", False)
    return BackfillRecord(created_at=at(created), **fields)


def failure(backfill_id: str, position: int, **fields: Any) -> BackfillPartition:
    fields.setdefault("outcome", PartitionOutcome.FAILED)
    fields.setdefault("partition_key", f"i:{position}")
    fields.setdefault("error_type", "ValueError")
    fields.setdefault("error_message", f"bad {position}")
    return BackfillPartition(
        backfill_id=backfill_id, position=position, updated_at=at(position), **fields
    )


def created(store: MetadataStore, **fields: Any) -> BackfillRecord:
    record = backfill(**fields)
    store.create_backfill(record)
    return record


# --- records -------------------------------------------------------------------------------


def test_a_backfill_round_trips(store: MetadataStore) -> None:
    record = backfill(
        counts={"success": 3, "failed": 1},
        cursor=4,
        created_by="ana",
        owner=ME,
        heartbeat_at=at(5),
        force=True,
        with_upstream=True,
        targets=("a", "b"),
    )
    store.create_backfill(record, [event("backfill.started", resource_id=record.id)])
    assert store.get_backfill(record.id) == record
    assert store.get_backfill("nope") is None
    assert [e.action for e in store.list_audit(resource_id=record.id)] == ["backfill.started"]


def test_creating_a_backfill_twice_fails_and_keeps_the_first(store: MetadataStore) -> None:
    record = created(store)
    with pytest.raises(StoreError, match="exists"):
        store.create_backfill(replace(record, total=99), [event(resource_id=record.id)])
    assert store.get_backfill(record.id) == record
    assert store.list_audit(resource_id=record.id) == []


def test_backfills_are_listed_newest_first(store: MetadataStore) -> None:
    old = created(store, created=0)
    tie_first = created(store, created=5)
    tie_second = created(store, created=5)
    assert [b.id for b in store.list_backfills()] == [tie_second.id, tie_first.id, old.id]
    assert [b.id for b in store.list_backfills(limit=1)] == [tie_second.id]
    assert len(store.list_backfills(limit=None)) == 3


# --- ownership -----------------------------------------------------------------------------


def test_only_one_process_claims_a_free_backfill(store: MetadataStore) -> None:
    record = created(store, status=BackfillStatus.FAILED, finished_at=at(9))
    claimed = store.claim_backfill(
        record.id,
        owner=ME,
        expected_owner=None,
        now=at(10),
        audit=[event("backfill.resumed", resource_id=record.id)],
    )
    assert claimed is not None
    assert (claimed.owner, claimed.heartbeat_at, claimed.status) == (
        ME,
        at(10),
        BackfillStatus.RUNNING,
    )
    assert claimed.finished_at is None
    lost = store.claim_backfill(
        record.id,
        owner=OTHER,
        expected_owner=None,
        now=at(11),
        audit=[event("backfill.resumed", resource_id=record.id)],
    )
    assert lost is None
    assert store.get_backfill(record.id) == claimed
    assert len(store.list_audit(resource_id=record.id)) == 1
    assert store.claim_backfill("nope", owner=ME, expected_owner=None, now=at(1)) is None


def test_a_dead_owner_is_taken_over_by_naming_it(store: MetadataStore) -> None:
    record = created(store, owner=OTHER, heartbeat_at=at(1))
    taken = store.claim_backfill(record.id, owner=ME, expected_owner=OTHER, now=at(50))
    assert taken is not None and taken.owner == ME
    # The old owner's writes are refused from now on.
    assert store.heartbeat_backfill(record.id, owner=OTHER, now=at(51)) is None
    assert (
        store.save_backfill_progress(record.id, owner=OTHER, now=at(51), cursor=9, counts={})
        is None
    )
    assert (
        store.finish_backfill(record.id, owner=OTHER, status=BackfillStatus.FAILED, now=at(52))
        is None
    )
    assert store.get_backfill(record.id) == taken


def test_heartbeat_moves_only_the_heartbeat(store: MetadataStore) -> None:
    record = created(store, owner=ME, heartbeat_at=at(1), cursor=3)
    beat = store.heartbeat_backfill(record.id, owner=ME, now=at(7))
    assert beat == replace(record, heartbeat_at=at(7))


# --- progress ------------------------------------------------------------------------------


def test_progress_sets_cursor_counts_and_failure_rows(store: MetadataStore) -> None:
    record = created(store, owner=ME)
    first = [failure(record.id, 1), failure(record.id, 4, outcome=PartitionOutcome.CANCELED)]
    saved = store.save_backfill_progress(
        record.id,
        owner=ME,
        now=at(3),
        cursor=5,
        counts={"success": 3, "failed": 1, "canceled": 1},
        partitions=first,
    )
    assert saved is not None
    assert (saved.cursor, dict(saved.counts), saved.heartbeat_at) == (
        5,
        {"success": 3, "failed": 1, "canceled": 1},
        at(3),
    )
    assert store.list_backfill_partitions(record.id) == first

    # A retried partition that failed again is replaced; one that succeeded is resolved.
    again = failure(record.id, 1, attempts=2, error_message="still bad", run_id="r" * 32)
    store.save_backfill_progress(
        record.id,
        owner=ME,
        now=at(4),
        cursor=5,
        counts={"success": 4, "failed": 1},
        partitions=[again],
        resolved=[4],
    )
    assert store.list_backfill_partitions(record.id) == [again]


def test_failure_rows_page_by_position_and_filter_by_outcome(store: MetadataStore) -> None:
    record = created(store, owner=ME)
    rows = [
        failure(record.id, p, outcome=PartitionOutcome.CANCELED)
        if p % 3 == 0
        else failure(record.id, p)
        for p in (7, 2, 9, 3, 5)
    ]
    store.save_backfill_progress(
        record.id, owner=ME, now=at(1), cursor=10, counts={}, partitions=rows
    )
    positions = [r.position for r in store.list_backfill_partitions(record.id)]
    assert positions == [2, 3, 5, 7, 9]
    page = store.list_backfill_partitions(record.id, after=3, limit=2)
    assert [r.position for r in page] == [5, 7]
    failed = store.list_backfill_partitions(record.id, outcome=PartitionOutcome.FAILED)
    assert [r.position for r in failed] == [2, 5, 7]
    assert store.list_backfill_partitions(new_id("b")) == []


def test_finish_releases_the_backfill(store: MetadataStore) -> None:
    record = created(store, owner=ME)
    done = store.finish_backfill(
        record.id,
        owner=ME,
        status=BackfillStatus.SUCCESS,
        now=at(9),
        audit=[event("backfill.finished", resource_id=record.id)],
    )
    assert done == replace(
        record,
        status=BackfillStatus.SUCCESS,
        owner=None,
        heartbeat_at=at(9),
        finished_at=at(9),
    )
    assert [e.action for e in store.list_audit(resource_id=record.id)] == ["backfill.finished"]


# --- cancel --------------------------------------------------------------------------------


def test_cancel_is_asked_of_running_backfills_only(store: MetadataStore) -> None:
    running = created(store, owner=ME)
    asked = store.request_backfill_cancel(
        running.id, audit=[event("backfill.cancel_requested", resource_id=running.id)]
    )
    assert asked == replace(running, status=BackfillStatus.CANCELING)
    # Asking again, or asking a finished backfill, changes nothing and records nothing.
    assert store.request_backfill_cancel(
        running.id, audit=[event("backfill.cancel_requested", resource_id=running.id)]
    ) == replace(running, status=BackfillStatus.CANCELING)
    done = created(store, status=BackfillStatus.SUCCESS)
    assert store.request_backfill_cancel(
        done.id, audit=[event("backfill.cancel_requested", resource_id=done.id)]
    ) == (done)
    assert len(store.list_audit(action="backfill.cancel_requested")) == 1
    assert store.request_backfill_cancel("nope") is None


# --- runs ----------------------------------------------------------------------------------


def test_a_backfill_run_is_stored_and_linked(store: MetadataStore) -> None:
    record = created(store)
    run = run_record(partition_key=None, tags={"backfill": record.id})
    store.create_backfill_run(record.id, run, audit=[event("run.started", resource_id=run.id)])
    assert store.get_run(run.id) == run
    assert [e.action for e in store.list_audit(resource_id=run.id)] == ["run.started"]
    with pytest.raises(StoreError):
        store.create_backfill_run(record.id, run)
    orphan = run_record()
    with pytest.raises(StoreError):
        store.create_backfill_run("no-such-backfill", orphan)
    assert store.get_run(orphan.id) is None


def test_a_backfill_run_is_created_with_its_pending_steps_atomically(
    store: MetadataStore,
) -> None:
    record = created(store)
    run = run_record()
    steps = [mat("a", f"i:{i}", run_id=run.id, status=Status.PENDING) for i in range(3)]
    store.create_backfill_run(record.id, run, steps)
    assert store.list_materializations(run_id=run.id, limit=None) == steps[::-1]

    # A step that clashes with a stored one (same id, other run) rejects the whole call.
    clash = run_record()
    taken = replace(steps[0], run_id=clash.id)
    with pytest.raises(StoreError):
        store.create_backfill_run(record.id, clash, [mat("a", "i:9", run_id=clash.id), taken])
    assert store.get_run(clash.id) is None
    assert store.list_materializations(run_id=clash.id) == []
    assert store.successful_partitions(["a"], ["i:9"], backfill_id=record.id) == set()


def test_interrupted_runs_are_closed_and_nothing_stays_running(store: MetadataStore) -> None:
    record = created(store, owner=OTHER)
    stuck = run_record(created=1)
    finished = run_record(created=2, status=RunStatus.SUCCESS)
    unrelated = run_record(created=3)
    store.create_backfill_run(record.id, stuck)
    store.create_backfill_run(record.id, finished)
    store.create_run(unrelated)
    ok = mat("a", "i:1", run_id=stuck.id, status=Status.SUCCESS)
    running = mat("a", "i:2", run_id=stuck.id, status=Status.RUNNING)
    pending = mat("a", "i:3", run_id=stuck.id, status=Status.PENDING)
    other = mat("a", "i:2", run_id=unrelated.id, status=Status.RUNNING)
    for record_ in (ok, running, pending, other):
        store.save_materialization(record_)

    assert store.list_backfill_runs(record.id) == [stuck, finished]
    assert store.list_backfill_runs("no-such-backfill") == []
    closed = store.interrupt_backfill_runs(
        record.id, now=at(60), error_type="ProcessLost", error_message="process died"
    )
    assert closed == [stuck.id]
    for before in (running, pending):
        after = store.get_materialization(before.id)
        assert after is not None
        assert (after.status, after.error_type, after.error_message, after.completed_at) == (
            Status.FAILED,
            "ProcessLost",
            "process died",
            at(60),
        )
    assert store.get_materialization(ok.id) == ok
    assert store.get_materialization(other.id) == other
    closed_run = store.get_run(stuck.id)
    assert closed_run is not None
    assert (closed_run.status, closed_run.completed_at) == (RunStatus.FAILED, at(60))
    assert store.get_run(finished.id) == finished
    assert [r.status for r in store.list_backfill_runs(record.id)] == [
        RunStatus.FAILED,
        RunStatus.SUCCESS,
    ]
    assert [e.action for e in store.list_audit(resource_id=stuck.id)] == ["run.failed"]
    assert (
        store.interrupt_backfill_runs(record.id, now=at(61), error_type="x", error_message="y")
        == []
    )


# --- successful partitions -----------------------------------------------------------------


def test_a_partition_is_successful_when_every_asset_succeeded(store: MetadataStore) -> None:
    for asset, key, status in [
        ("a", "i:1", Status.SUCCESS),
        ("b", "i:1", Status.SUCCESS),
        ("a", "i:2", Status.SUCCESS),
        ("b", "i:2", Status.FAILED),
        ("a", "i:3", Status.RUNNING),
        ("c", "i:4", Status.SUCCESS),
    ]:
        store.save_materialization(mat(asset, key, run_id=new_id("r"), status=status))
    keys = ["i:1", "i:2", "i:3", "i:4", "i:5"]
    assert store.successful_partitions(["a", "b"], keys) == {"i:1"}
    assert store.successful_partitions(["a"], keys) == {"i:1", "i:2"}
    assert store.successful_partitions(["a", "a"], ["i:1", "i:1"]) == {"i:1"}
    assert store.successful_partitions([], keys) == set()
    assert store.successful_partitions(["a"], []) == set()


def test_an_older_success_counts_after_a_later_failure(store: MetadataStore) -> None:
    store.save_materialization(mat("a", "i:1", run_id=new_id("r"), created=0))
    store.save_materialization(mat("a", "i:1", run_id=new_id("r"), status=Status.FAILED, created=5))
    assert store.successful_partitions(["a"], ["i:1"]) == {"i:1"}


def test_successes_can_be_limited_to_a_backfills_runs(store: MetadataStore) -> None:
    record = created(store)
    mine = run_record()
    store.create_backfill_run(record.id, mine)
    store.save_materialization(mat("a", "i:1", run_id=mine.id))
    store.save_materialization(mat("a", "i:2", run_id=new_id("r")))
    store.save_materialization(mat("a", "i:3", run_id=mine.id, status=Status.FAILED, created=1))
    store.save_materialization(mat("a", "i:3", run_id=new_id("r"), created=0))
    keys = ["i:1", "i:2", "i:3"]
    assert store.successful_partitions(["a"], keys, backfill_id=record.id) == {"i:1"}
    assert store.successful_partitions(["a"], keys) == {"i:1", "i:2", "i:3"}
    assert store.successful_partitions(["a"], keys, backfill_id="other") == set()


def test_successful_partitions_takes_large_batches(store: MetadataStore) -> None:
    run = run_record()
    store.create_run(run, [mat("a", f"i:{i}", run_id=run.id) for i in range(0, 12_000, 1000)])
    keys = [f"i:{i}" for i in range(12_000)]
    assert store.successful_partitions(["a"], keys) == {f"i:{i}" for i in range(0, 12_000, 1000)}
