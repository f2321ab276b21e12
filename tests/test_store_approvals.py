"""The store contract for approval requests, over memory, SQLite and PostgreSQL.

Same stores as ``test_store_contract.py`` (PostgreSQL runs when a server answers, and must on
CI). What matters most: a request and its waiting materialization are stored together or not
at all, a decision is a compare and set (of concurrent deciders exactly one wins), and a claim
hands each step to exactly one caller.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.errors import StoreError
from flowstone.records import MaterializationRecord, Status
from flowstone.store import MetadataStore
from test_store_contract import STORE_KINDS, event, mat, new_id, open_test_store, run_record

T0 = datetime(2025, 3, 9, 6, 0, tzinfo=UTC)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    with open_test_store(request.param, tmp_path) as opened:
        yield opened


def waiting(asset: str = "publish", partition_key: str = "d:2025-01-01", **fields: Any) -> Any:
    fields.setdefault("status", Status.WAITING_APPROVAL)
    fields.setdefault("run_id", new_id("r"))  # one materialization per (run, asset, partition)
    return mat(asset, partition_key, **fields)


def approval(record: MaterializationRecord, minutes: float = 0, **fields: Any) -> ApprovalRecord:
    fields.setdefault("timeout_at", T0 + timedelta(hours=1))
    return ApprovalRecord(
        id=fields.pop("id", None) or new_id("a"),
        run_id=record.run_id,
        materialization_id=record.id,
        asset=record.asset,
        partition_key=record.partition_key,
        status=ApprovalStatus.PENDING,
        message=fields.pop("message", "Publish?"),
        attempt=record.attempt,
        requested_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


def requested(
    store: MetadataStore, minutes: float = 0, **fields: Any
) -> tuple[ApprovalRecord, MaterializationRecord]:
    record = waiting(**fields.pop("mat", {}))
    request = approval(record, minutes, **fields)
    store.request_approval(request, record, [event("approval.requested", resource_id="publish")])
    return request, record


def decided(
    request: ApprovalRecord, status: ApprovalStatus, at: datetime = T0, **fields: Any
) -> ApprovalRecord:
    fields.setdefault("decided_by", None if status == ApprovalStatus.EXPIRED else "ana")
    return replace(request, status=status, decided_at=at, **fields)


# --- requests ------------------------------------------------------------------------------


def test_a_request_is_stored_with_its_waiting_materialization_and_audit(
    store: MetadataStore,
) -> None:
    context = {"total": 12.5, "rows": [1, 2], "note": "ünïcode", "nested": {"ok": True}}
    request, record = requested(store, context=context)
    assert store.get_approval(request.id) == request
    assert store.get_materialization(record.id) == record
    assert [e.action for e in store.list_audit()] == ["approval.requested"]
    back = store.get_approval(request.id)
    assert back is not None
    assert back.context == context
    assert back.requested_at.tzinfo is not None and back.input == {}


def test_get_approval_of_an_unknown_id_is_none(store: MetadataStore) -> None:
    assert store.get_approval("f" * 32) is None


def test_a_request_id_stored_twice_raises_and_stores_nothing(store: MetadataStore) -> None:
    request, _ = requested(store)
    other = waiting("other")
    with pytest.raises(StoreError):
        store.request_approval(replace(request, message="again"), other, [event("x")])
    assert store.get_materialization(other.id) is None
    assert store.get_approval(request.id) == request
    assert [e.action for e in store.list_audit()] == ["approval.requested"]


def test_a_request_whose_materialization_conflicts_stores_nothing(store: MetadataStore) -> None:
    first = waiting()
    store.save_materialization(first)
    clash = replace(first, id=new_id())  # same (run, asset, partition), another id
    with pytest.raises(StoreError):
        store.request_approval(approval(clash), clash, [event("x")])
    assert store.list_approvals(limit=None) == []
    assert store.list_audit() == []


def test_list_filters_and_orders_oldest_first(store: MetadataStore) -> None:
    late, _ = requested(store, 5, mat={"run_id": "r2" + "0" * 30})
    early, _ = requested(store, 1, mat={"asset": "send"})
    no_timeout, _ = requested(store, 3, timeout_at=None)
    tie_a, _ = requested(store, 4, id="a" + "0" * 31, mat={"partition_key": "d:2025-01-02"})
    tie_b, _ = requested(store, 4, id="b" + "0" * 31, mat={"partition_key": "d:2025-01-03"})
    assert [a.id for a in store.list_approvals()] == [
        early.id,
        no_timeout.id,
        tie_a.id,
        tie_b.id,
        late.id,
    ]
    assert [a.id for a in store.list_approvals(asset="send")] == [early.id]
    assert [a.id for a in store.list_approvals(run_id=late.run_id)] == [late.id]
    assert [a.id for a in store.list_approvals(id_prefix="b000")] == [tie_b.id]
    assert store.list_approvals(id_prefix="b%") == []
    assert store.list_approvals(id_prefix="B000") == []  # ids are compared as they are
    assert len(store.list_approvals(limit=2)) == 2
    store.decide_approval(decided(early, ApprovalStatus.APPROVED))
    assert [a.id for a in store.list_approvals(status=ApprovalStatus.APPROVED)] == [early.id]
    assert early.id not in [a.id for a in store.list_approvals(status=ApprovalStatus.PENDING)]


def test_due_before_lists_requests_whose_timeout_has_passed(store: MetadataStore) -> None:
    soon, _ = requested(store, timeout_at=T0 + timedelta(minutes=10))
    later, _ = requested(store, timeout_at=T0 + timedelta(hours=5))
    requested(store, timeout_at=None)
    assert store.list_approvals(due_before=T0) == []
    assert [a.id for a in store.list_approvals(due_before=T0 + timedelta(minutes=10))] == [soon.id]
    due = store.list_approvals(due_before=T0 + timedelta(days=1))
    assert [a.id for a in due] == [soon.id, later.id]


# --- decisions -----------------------------------------------------------------------------


def test_approving_records_who_when_why_and_input(store: MetadataStore) -> None:
    request, record = requested(store)
    decision = decided(request, ApprovalStatus.APPROVED, reason="checked", input={"channel": "web"})
    assert store.decide_approval(decision, audit=[event("approval.approved", actor="ana")])
    assert store.get_approval(request.id) == decision
    assert store.get_materialization(record.id) == record  # approving leaves it to the resume
    assert [e.action for e in store.list_audit()][-1] == "approval.approved"


def test_a_decision_keeps_the_request_fields(store: MetadataStore) -> None:
    request, _ = requested(store, context={"total": 3})
    tampered = replace(
        decided(request, ApprovalStatus.APPROVED), message="changed", context={}, attempt=9
    )
    assert store.decide_approval(tampered)
    back = store.get_approval(request.id)
    assert back is not None
    assert (back.message, back.context, back.attempt) == ("Publish?", {"total": 3}, 1)


def test_rejecting_fails_the_materialization_in_the_same_call(store: MetadataStore) -> None:
    request, record = requested(store)
    failed = replace(
        record, status=Status.FAILED, error_type="ApprovalRejectedError", completed_at=T0
    )
    decision = decided(request, ApprovalStatus.REJECTED, reason="wrong totals")
    assert store.decide_approval(decision, materialization=failed, audit=[event("rejected")])
    assert store.get_materialization(record.id) == failed
    assert store.get_approval(request.id) == decision


def test_a_second_decision_stores_nothing(store: MetadataStore) -> None:
    request, record = requested(store)
    first = decided(request, ApprovalStatus.APPROVED)
    assert store.decide_approval(first)
    audit_before = store.list_audit()
    failed = replace(record, status=Status.FAILED)
    second = decided(request, ApprovalStatus.REJECTED, decided_by="bob", reason="no")
    assert not store.decide_approval(second, materialization=failed, audit=[event("late")])
    assert store.get_approval(request.id) == first
    assert store.get_materialization(record.id) == record
    assert store.list_audit() == audit_before


def test_deciding_an_unknown_request_stores_nothing(store: MetadataStore) -> None:
    ghost = approval(waiting())
    assert not store.decide_approval(decided(ghost, ApprovalStatus.APPROVED), audit=[event()])
    assert store.list_audit() == []


def test_a_due_request_can_only_expire(store: MetadataStore) -> None:
    request, _ = requested(store, timeout_at=T0 + timedelta(minutes=5))
    at_timeout = T0 + timedelta(minutes=5)
    assert not store.decide_approval(decided(request, ApprovalStatus.APPROVED, at_timeout))
    assert not store.decide_approval(
        decided(request, ApprovalStatus.REJECTED, at_timeout, reason="late")
    )
    assert store.decide_approval(decided(request, ApprovalStatus.EXPIRED, at_timeout))
    back = store.get_approval(request.id)
    assert back is not None and back.status == ApprovalStatus.EXPIRED


def test_a_request_cannot_expire_before_its_timeout_or_without_one(store: MetadataStore) -> None:
    timed, _ = requested(store, timeout_at=T0 + timedelta(minutes=5))
    endless, _ = requested(store, timeout_at=None)
    before = T0 + timedelta(minutes=4)
    assert not store.decide_approval(decided(timed, ApprovalStatus.EXPIRED, before))
    much_later = T0 + timedelta(days=9)
    assert not store.decide_approval(decided(endless, ApprovalStatus.EXPIRED, much_later))
    assert store.decide_approval(decided(endless, ApprovalStatus.APPROVED, much_later))


def test_pending_is_not_a_decision(store: MetadataStore) -> None:
    request, _ = requested(store)
    with pytest.raises(StoreError, match="approves, rejects or expires"):
        store.decide_approval(replace(request, decided_by="ana", decided_at=T0))


def test_concurrent_decisions_store_exactly_one(store: MetadataStore) -> None:
    deciders = 8
    for _ in range(3):
        request, _ = requested(store)
        barrier = threading.Barrier(deciders)

        def decide(i: int, request: ApprovalRecord = request, barrier: Any = barrier) -> bool:
            status = ApprovalStatus.APPROVED if i % 2 else ApprovalStatus.REJECTED
            barrier.wait()
            return store.decide_approval(
                decided(request, status, decided_by=f"person-{i}", reason="r"),
                audit=[event("approval.decided", actor=f"person-{i}")],
            )

        with ThreadPoolExecutor(deciders) as pool:
            won = list(pool.map(decide, range(deciders)))
        assert won.count(True) == 1
        winner = f"person-{won.index(True)}"
        back = store.get_approval(request.id)
        assert back is not None and back.decided_by == winner
        decisions = store.list_audit(action="approval.decided", limit=None)
        assert [e.actor for e in decisions][-1] == winner
    assert len(store.list_audit(action="approval.decided", limit=None)) == 3


# --- claims --------------------------------------------------------------------------------


def test_claims_take_pending_and_waiting_steps_only(store: MetadataStore) -> None:
    run = run_record()
    records = {
        status: mat(f"asset-{status.value}", run_id=run.id, status=status) for status in Status
    }
    store.create_run(run, list(records.values()))
    order = [records[s].id for s in reversed(Status)]
    claimed = store.claim_materializations([*order, order[0], "x" * 32])
    expected = [records[Status.WAITING_APPROVAL].id, records[Status.PENDING].id]
    assert claimed == [i for i in order if i in expected]
    for status, record in records.items():
        back = store.get_materialization(record.id)
        assert back is not None
        moved = status in (Status.PENDING, Status.WAITING_APPROVAL)
        assert back == (replace(record, status=Status.RUNNING) if moved else record)
    assert store.claim_materializations(expected) == []
    assert store.claim_materializations([]) == []


def test_concurrent_claims_hand_each_step_to_one_caller(store: MetadataStore) -> None:
    run = run_record()
    records = [mat(f"a{i}", run_id=run.id, status=Status.PENDING) for i in range(20)]
    store.create_run(run, records)
    ids = [r.id for r in records]
    barrier = threading.Barrier(4)

    def claim(offset: int) -> list[str]:
        barrier.wait()
        return store.claim_materializations(ids[offset:] + ids[:offset])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(claim, [0, 5, 10, 15]))
    everything = [i for result in results for i in result]
    assert sorted(everything) == sorted(ids)
