"""Approvals end to end: request, wait, decide, resume; over memory, SQLite and PostgreSQL.

The store's own promises (atomic requests, compare-and-set decisions, claims) are in
``test_store_approvals.py``; the command line is in ``test_cli_approvals.py``.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import flowstone as fs
from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.errors import (
    ApprovalAlreadyDecidedError,
    ApprovalError,
    ApprovalNotFoundError,
    DefinitionError,
    NotMaterializedError,
    RunFailedError,
    RunWaitingError,
    UnknownAssetError,
)
from flowstone.partitions import encode_partition
from flowstone.planner import plan_run
from flowstone.records import RunStatus, Status, utcnow
from flowstone.store import MetadataStore
from flowstone.telemetry import TelemetryEvent
from test_store_contract import STORE_KINDS, open_test_store

DAYS = fs.DailyPartitions(start="2025-01-01")
DAY = dt.date(2025, 1, 15)
KEY = encode_partition(DAY)


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    with open_test_store(request.param, tmp_path) as opened:
        yield opened


class Flow:
    """The issue's example: daily_report -> publish (asks for approval) -> notify."""

    def __init__(self, timeout: dt.timedelta | None = dt.timedelta(hours=24)) -> None:
        self.calls: list[str] = []
        self.decisions: list[ApprovalRecord] = []
        calls, decisions = self.calls, self.decisions

        @fs.asset(partitioned_by=DAYS)
        def daily_report(ctx: fs.AssetContext) -> dict[str, Any]:
            calls.append("daily_report")
            return {"total": 42, "day": ctx.partition.isoformat()}

        @fs.asset(depends_on=["daily_report"], partitioned_by=DAYS)
        def publish(ctx: fs.AssetContext, daily_report: dict[str, Any]) -> Any:
            calls.append("publish")
            if ctx.approval is None:
                return fs.WaitForApproval(
                    f"Publish {daily_report['total']} for {ctx.partition}?",
                    context={"total": daily_report["total"]},
                    timeout=timeout,
                )
            decisions.append(ctx.approval)
            return {"published": daily_report["total"], **ctx.approval.input}

        @fs.asset(partitioned_by=DAYS)
        def notify(publish: dict[str, Any]) -> str:
            calls.append("notify")
            return f"told everyone: {publish['published']}"

        self.assets = [daily_report, publish, notify]


def only_request(pipeline: fs.Pipeline) -> ApprovalRecord:
    pending = pipeline.approvals()
    assert len(pending) == 1
    return pending[0]


# --- request -------------------------------------------------------------------------------


def test_a_request_leaves_the_asset_waiting_not_failed(store: MetadataStore) -> None:
    flow = Flow()
    told: list[ApprovalRecord] = []
    pipeline = fs.Pipeline(flow.assets, store=store, approval_notifiers=[told.append])
    run = pipeline.materialize_all("notify", partition=DAY)

    assert run.status == RunStatus.WAITING_APPROVAL and not run.ok
    assert [(r.asset, r.status) for r in run.materializations] == [
        ("daily_report", Status.SUCCESS),
        ("publish", Status.WAITING_APPROVAL),
        ("notify", Status.PENDING),
    ]
    assert flow.calls == ["daily_report", "publish"]
    stored_run = store.get_run(run.run_id)
    assert stored_run is not None and stored_run.status == RunStatus.WAITING_APPROVAL
    assert stored_run.completed_at is None
    with pytest.raises(NotMaterializedError):
        pipeline.load("publish", DAY)  # no value is stored while waiting
    with pytest.raises(RunWaitingError, match="waiting for approval of publish") as info:
        run.raise_for_status()
    assert isinstance(info.value, RunFailedError) and info.value.waiting == ("publish",)

    request = only_request(pipeline)
    waiting = run["publish"]
    assert (request.asset, request.partition, request.partition_key) == ("publish", DAY, KEY)
    assert (request.run_id, request.materialization_id) == (run.run_id, waiting.id)
    assert request.message == "Publish 42 for 2025-01-15?"
    assert request.context == {"total": 42}
    assert request.status == ApprovalStatus.PENDING and request.attempt == 1
    assert request.timeout_at == request.requested_at + dt.timedelta(hours=24)
    assert request.decided_by is None and request.input == {}
    assert told == [request]
    actions = [e.action for e in pipeline.audit_log(run_id=run.run_id)]
    assert "materialization.waiting_approval" in actions and "approval.requested" in actions
    assert "run.waiting_approval" in actions


def test_approving_resumes_the_asset_and_its_downstream_with_lineage(
    store: MetadataStore,
) -> None:
    flow = Flow()
    told: list[ApprovalRecord] = []
    pipeline = fs.Pipeline(flow.assets, store=store, approval_notifiers=[told.append])
    events: list[TelemetryEvent] = []
    pipeline.subscribe(events.append, prefix="approval.")
    first = pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)

    run = pipeline.approve(request.id, by="ana", reason="totals checked", input={"to": "web"})

    assert run.ok and run.run_id == first.run_id
    assert flow.calls == ["daily_report", "publish", "publish", "notify"]
    [decision] = flow.decisions
    assert decision.status == ApprovalStatus.APPROVED
    assert (decision.decided_by, decision.reason, decision.input) == (
        "ana",
        "totals checked",
        {"to": "web"},
    )
    assert decision.decided_at is not None
    publish = run["publish"]
    assert publish.id == first["publish"].id and publish.attempt == 2
    assert publish.status == Status.SUCCESS and run["notify"].status == Status.SUCCESS
    assert pipeline.load("notify", DAY) == "told everyone: 42"
    assert pipeline.load("publish", DAY) == {"published": 42, "to": "web"}
    upstream = pipeline.upstream_lineage("notify", DAY)
    assert [(n.asset, n.materialization_id) for n in upstream] == [
        ("publish", publish.id),
        ("daily_report", first["daily_report"].id),
    ]
    stored_run = store.get_run(run.run_id)
    assert stored_run is not None and stored_run.status == RunStatus.SUCCESS
    assert stored_run.completed_at is not None
    assert pipeline.get_approval(request.id).status == ApprovalStatus.APPROVED
    assert pipeline.approvals() == []
    assert [r.status for r in told] == [ApprovalStatus.PENDING, ApprovalStatus.APPROVED]
    assert [e.name for e in events] == ["approval.requested", "approval.approved"]
    approved = pipeline.audit_log(run_id=run.run_id)
    [event] = [e for e in approved if e.action == "approval.approved"]
    assert (event.actor, event.actor_type) == ("ana", "user")
    assert event.details["reason"] == "totals checked"
    assert event.details["input"] == {"to": "web"}


def test_rejecting_fails_the_asset_and_skips_downstream(store: MetadataStore) -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store=store)
    pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)

    run = pipeline.reject(request.id, by="bob", reason="the total looks wrong")

    assert run.status == RunStatus.FAILED
    publish, notify = run["publish"], run["notify"]
    assert publish.status == Status.FAILED and publish.error_type == "ApprovalRejectedError"
    assert "rejected by bob: the total looks wrong" in (publish.error_message or "")
    assert notify.status == Status.SKIPPED
    assert notify.error_message == "upstream asset 'publish' failed"
    assert flow.calls == ["daily_report", "publish"]
    stored_run = store.get_run(run.run_id)
    assert stored_run is not None and stored_run.completed_at is not None
    rejected = [e for e in pipeline.audit_log(limit=None) if e.action == "approval.rejected"]
    assert [(e.actor, e.details["reason"]) for e in rejected] == [("bob", "the total looks wrong")]
    with pytest.raises(ApprovalAlreadyDecidedError, match="already rejected by bob at") as info:
        pipeline.approve(request.id, by="carol")
    assert (info.value.status, info.value.decided_by) == ("rejected", "bob")


def test_a_second_approval_is_a_clear_error_that_changes_nothing(store: MetadataStore) -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store=store)
    pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)
    pipeline.approve(request.id, by="ana")
    audit = pipeline.audit_log(limit=None)
    with pytest.raises(ApprovalAlreadyDecidedError) as info:
        pipeline.approve(request.id, by="bob")
    assert "already approved by ana" in str(info.value)
    assert info.value.decided_at == pipeline.get_approval(request.id).decided_at
    assert flow.calls.count("publish") == 2
    assert pipeline.audit_log(limit=None) == audit


# --- timeouts ------------------------------------------------------------------------------


def test_a_request_past_its_timeout_expires_through_the_sweep(store: MetadataStore) -> None:
    flow = Flow(timeout=dt.timedelta(hours=1))
    pipeline = fs.Pipeline(flow.assets, store=store)
    first = pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)
    assert request.timeout_at is not None

    assert pipeline.expire_approvals(now=request.timeout_at - dt.timedelta(seconds=1)) == []
    [expired] = pipeline.expire_approvals(now=request.timeout_at)

    assert expired.id == request.id and expired.status == ApprovalStatus.EXPIRED
    assert expired.decided_by is None and expired.decided_at == request.timeout_at
    records = {r.asset: r for r in pipeline.history("publish") + pipeline.history("notify")}
    assert records["publish"].status == Status.FAILED
    assert records["publish"].error_type == "ApprovalExpiredError"
    assert "nobody deciding" in (records["publish"].error_message or "")
    assert records["notify"].status == Status.SKIPPED
    stored_run = store.get_run(first.run_id)
    assert stored_run is not None and stored_run.status == RunStatus.FAILED
    [event] = [e for e in pipeline.audit_log(limit=None) if e.action == "approval.expired"]
    assert (event.actor, event.actor_type) == ("system", "system")
    assert pipeline.expire_approvals(now=request.timeout_at + dt.timedelta(days=1)) == []
    with pytest.raises(ApprovalAlreadyDecidedError, match="already expired by its timeout"):
        pipeline.approve(request.id, by="ana")


def test_approving_after_the_timeout_expires_the_request_instead(store: MetadataStore) -> None:
    flow = Flow(timeout=dt.timedelta(microseconds=1))
    pipeline = fs.Pipeline(flow.assets, store=store)
    pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)
    with pytest.raises(ApprovalAlreadyDecidedError) as info:
        pipeline.approve(request.id, by="ana")
    assert info.value.status == "expired"
    assert pipeline.get_approval(request.id).status == ApprovalStatus.EXPIRED
    assert [r.status for r in pipeline.history("notify")] == [Status.SKIPPED]
    assert flow.calls.count("publish") == 1


# --- restarts and races --------------------------------------------------------------------

FLOW_MODULE = """
import datetime as dt
import os

import flowstone as fs

DAYS = fs.DailyPartitions(start="2025-01-01")


@fs.asset(partitioned_by=DAYS)
def daily_report(ctx):
    return {"total": 42}


@fs.asset(depends_on=["daily_report"], partitioned_by=DAYS)
def publish(ctx, daily_report):
    if ctx.approval is None:
        return fs.WaitForApproval("Publish?", context=daily_report)
    return {"published": daily_report["total"], "by": ctx.approval.decided_by}


@fs.asset(partitioned_by=DAYS)
def notify(publish):
    return publish


pipeline = fs.Pipeline([daily_report, publish, notify], store=os.environ["FLOW_STORE"])
"""


def python(code: str, tmp_path: Path, store_url: str) -> str:
    env = {
        "PYTHONPATH": str(tmp_path),
        "FLOW_STORE": store_url,
        "FLOWSTONE_HOME": str(tmp_path / "home"),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_restart_between_request_and_approval_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "flow.py").write_text(FLOW_MODULE)
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    approval_id = python(
        """
        import datetime as dt
        from flow import pipeline
        run = pipeline.materialize_all("notify", partition=dt.date(2025, 1, 15))
        assert run.status == "waiting_approval", run
        print(pipeline.approvals()[0].id)
        """,
        tmp_path,
        url,
    )
    status = python(
        f"""
        from flow import pipeline
        print(pipeline.approve({approval_id!r}, by="ana").status)
        """,
        tmp_path,
        url,
    )
    assert status == "success"
    value = python(
        """
        import datetime as dt
        from flow import pipeline
        print(pipeline.load("notify", dt.date(2025, 1, 15)))
        """,
        tmp_path,
        url,
    )
    assert value == "{'published': 42, 'by': 'ana'}"


def test_a_run_resumes_with_the_io_manager_it_started_with(store: MetadataStore) -> None:
    flow = Flow()
    elsewhere = fs.MemoryIOManager()
    pipeline = fs.Pipeline(flow.assets, store=store, io_managers={"elsewhere": elsewhere})
    pipeline.materialize_all("notify", partition=DAY, io_manager="elsewhere")
    run = pipeline.approve(only_request(pipeline).id, by="ana")
    assert run.ok, run
    assert {r.io_manager for r in run.materializations} == {"elsewhere"}
    assert pipeline.load("notify", DAY) == "told everyone: 42"


def test_a_decision_whose_continuation_died_is_finished_by_resume_run(
    store: MetadataStore,
) -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store=store)
    first = pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)
    # What a process killed right after recording the decision leaves behind.
    decision = replace(
        request, status=ApprovalStatus.APPROVED, decided_by="ana", decided_at=utcnow()
    )
    assert store.decide_approval(decision)
    assert pipeline.get_run(first.run_id).status == RunStatus.WAITING_APPROVAL  # type: ignore[union-attr]

    run = pipeline.resume_run(first.run_id)

    assert run.ok and run["publish"].attempt == 2 and run["notify"].status == Status.SUCCESS
    assert [d.decided_by for d in flow.decisions] == ["ana"]
    assert pipeline.resume_run(first.run_id).ok  # nothing left to do: runs nothing again
    assert flow.calls.count("publish") == 2


def test_concurrent_approve_and_reject_one_wins(store: MetadataStore) -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store=store)
    for day in (1, 2, 3):
        pipeline.materialize_all("notify", partition=dt.date(2025, 1, day))
    for request in pipeline.approvals():
        barrier = threading.Barrier(2)

        def decide(approve: bool, request: ApprovalRecord = request, barrier: Any = barrier) -> Any:
            barrier.wait()
            try:
                if approve:
                    return pipeline.approve(request.id, by="ana")
                return pipeline.reject(request.id, by="bob", reason="no")
            except ApprovalAlreadyDecidedError as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(decide, [True, False]))
        errors = [o for o in outcomes if isinstance(o, ApprovalAlreadyDecidedError)]
        assert len(errors) == 1
        final = pipeline.get_approval(request.id)
        winner = "ana" if final.status == ApprovalStatus.APPROVED else "bob"
        assert final.decided_by == winner and errors[0].decided_by == winner
        assert f"by {winner} at" in str(errors[0])
        publish = store.get_materialization(request.materialization_id)
        assert publish is not None
        expected = Status.SUCCESS if winner == "ana" else Status.FAILED
        assert publish.status == expected


def test_an_approval_given_while_the_run_still_executes_is_picked_up_when_it_ends(
    store: MetadataStore,
) -> None:
    flow = Flow()
    asked, release = threading.Event(), threading.Event()

    @fs.asset(partitioned_by=DAYS)
    def slow() -> int:
        release.wait(timeout=60)
        return 1

    pipeline = fs.Pipeline(
        [*flow.assets, slow],
        store=store,
        max_workers=4,
        approval_notifiers=[lambda record: asked.set()],
    )
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(pipeline.materialize_all, partition=DAY)
        assert asked.wait(timeout=60)
        early = pipeline.approve(only_request(pipeline).id, by="ana")
        assert early.status == RunStatus.RUNNING  # its execution continues it
        assert flow.calls.count("publish") == 1
        release.set()
        run = running.result(timeout=60)
    assert run.ok, run
    assert run["publish"].attempt == 2 and run["notify"].status == Status.SUCCESS
    assert flow.calls.count("publish") == 2 and flow.calls.count("notify") == 1


# --- the gate form -------------------------------------------------------------------------


def gated_assets(calls: list[str]) -> list[fs.AssetDef]:
    @fs.asset
    def tables() -> list[str]:
        calls.append("tables")
        return ["t2023", "t2024"]

    @fs.asset(approval=fs.Approval("Drop last year's tables?", context={"keep": "t2024"}))
    def drop_old(ctx: fs.AssetContext, tables: list[str]) -> str:
        calls.append(f"drop_old by {ctx.approval.decided_by if ctx.approval else None}")
        return f"dropped {tables[0]}"

    return [tables, drop_old]


def test_a_gate_asks_before_the_asset_runs(store: MetadataStore) -> None:
    calls: list[str] = []
    pipeline = fs.Pipeline(gated_assets(calls), store=store)
    first = pipeline.materialize_all()
    assert first["drop_old"].status == Status.WAITING_APPROVAL
    assert calls == ["tables"]  # the gated function was not called
    request = only_request(pipeline)
    assert (request.message, request.context) == ("Drop last year's tables?", {"keep": "t2024"})
    assert request.timeout_at is None

    run = pipeline.approve(request.id, by="ana")

    assert run.ok and calls == ["tables", "drop_old by ana"]
    assert pipeline.load("drop_old") == "dropped t2023"
    again = pipeline.materialize("drop_old")  # every materialization asks anew
    assert again["drop_old"].status == Status.WAITING_APPROVAL
    pipeline.reject(only_request(pipeline).id, by="bob", reason="not today")
    assert calls == ["tables", "drop_old by ana"]


def test_a_gate_needs_an_approval_object() -> None:
    with pytest.raises(DefinitionError, match=r"approval must be fs\.Approval"):

        @fs.asset(approval="yes please")  # type: ignore[arg-type]
        def risky() -> int:
            return 1


def test_an_asset_can_ask_again_after_an_approval(store: MetadataStore) -> None:
    @fs.asset
    def transfer(ctx: fs.AssetContext) -> Any:
        if ctx.approval is None:
            return fs.WaitForApproval("Manager: transfer 1M?")
        if ctx.approval.decided_by == "manager":
            return fs.WaitForApproval("Director: transfer 1M?")
        return f"sent, attempt {ctx.attempt}"

    pipeline = fs.Pipeline([transfer], store=store)
    pipeline.materialize("transfer")
    first = pipeline.approve(only_request(pipeline).id, by="manager")
    assert first["transfer"].status == Status.WAITING_APPROVAL
    second = only_request(pipeline)
    assert (second.message, second.attempt) == ("Director: transfer 1M?", 2)
    done = pipeline.approve(second.id, by="director")
    assert done.ok and done["transfer"].attempt == 3
    assert pipeline.load("transfer") == "sent, attempt 3"


# --- several requests ----------------------------------------------------------------------


def test_bulk_approval_over_a_partition_range(store: MetadataStore) -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store=store)
    days = [dt.date(2025, 1, d) for d in range(1, 6)]
    runs = {day: pipeline.materialize_all("notify", partition=day).run_id for day in days}
    assert len(pipeline.approvals(asset="publish")) == 5

    approved = pipeline.approve_all("publish", between=(days[1], days[3]), by="ana")

    assert sorted(a.partition for a in approved) == days[1:4]
    assert all(a.decided_by == "ana" for a in approved)
    assert sorted(a.partition for a in pipeline.approvals()) == [days[0], days[4]]
    for day in days:
        run = store.get_run(runs[day])
        assert run is not None
        expected = RunStatus.SUCCESS if day in days[1:4] else RunStatus.WAITING_APPROVAL
        assert run.status == expected
    rejected = pipeline.reject_all("publish", partitions=[days[0]], by="bob", reason="holiday")
    assert [a.partition for a in rejected] == [days[0]]
    [rest] = pipeline.approve_all(by="ana")
    assert rest.partition == days[4]
    assert pipeline.approvals() == []
    assert flow.calls.count("notify") == 4


def test_one_run_over_many_partitions_waits_until_every_request_is_decided(
    store: MetadataStore,
) -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store=store, max_workers=4)
    days = [dt.date(2025, 1, d) for d in range(1, 5)]
    plan = plan_run(pipeline.graph, ["notify"], partitions=days, with_upstream=True)
    run = pipeline._execute(plan, pipeline._create_run(plan, tags={}))
    assert run.status == RunStatus.WAITING_APPROVAL
    assert len(pipeline.approvals(run_id=run.run_id)) == 4

    pipeline.approve_all("publish", partitions=days[:2], by="ana")
    stored = store.get_run(run.run_id)
    assert stored is not None and stored.status == RunStatus.WAITING_APPROVAL
    last = pipeline.approve_all("publish", by="ana")
    assert len(last) == 2
    final = store.get_run(run.run_id)
    assert final is not None and final.status == RunStatus.SUCCESS
    assert flow.calls.count("notify") == 4 and flow.calls.count("publish") == 8


def test_a_step_below_two_requests_runs_once_both_are_approved(store: MetadataStore) -> None:
    calls: list[str] = []

    @fs.asset(approval=fs.Approval("Left?"))
    def left() -> int:
        return 1

    @fs.asset(approval=fs.Approval("Right?"))
    def right() -> int:
        return 2

    @fs.asset
    def both(left: int, right: int) -> int:
        calls.append("both")
        return left + right

    pipeline = fs.Pipeline([left, right, both], store=store)
    pipeline.materialize_all()
    requests = {r.asset: r for r in pipeline.approvals()}
    halfway = pipeline.approve(requests["left"].id, by="ana")
    assert halfway.status == RunStatus.WAITING_APPROVAL
    assert halfway["both"].status == Status.PENDING and calls == []
    done = pipeline.approve(requests["right"].id, by="bob")
    assert done.ok and calls == ["both"] and pipeline.load("both") == 3


def test_concurrent_approvals_in_one_run_run_a_shared_step_once(store: MetadataStore) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    @fs.asset(approval=fs.Approval("Left?"))
    def left() -> int:
        return 1

    @fs.asset(approval=fs.Approval("Right?"))
    def right() -> int:
        return 2

    @fs.asset
    def both(left: int, right: int) -> int:
        with lock:
            calls.append("both")
        return left + right

    # Two pipelines over one store (and one place for values): two deciders that share no
    # lock, like two processes.
    values = {"default": fs.MemoryIOManager()}
    deciders = [fs.Pipeline([left, right, both], store=store, io_managers=values) for _ in "ab"]
    for attempt in range(3):
        run = deciders[0].materialize_all()
        requests = {r.asset: r for r in deciders[0].approvals(run_id=run.run_id)}
        barrier = threading.Barrier(2)

        def decide(i: int, requests: dict[str, Any] = requests, barrier: Any = barrier) -> None:
            barrier.wait()
            deciders[i].approve(requests[("left", "right")[i]].id, by=f"person-{i}")

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(decide, [0, 1]))
        assert calls == ["both"] * (attempt + 1)
        both_record = store.latest_materialization("both", "n:")
        assert both_record is not None and both_record.status == Status.SUCCESS


# --- notifications, telemetry, bad input ---------------------------------------------------


def test_a_failing_notifier_is_logged_and_fails_nothing(
    store: MetadataStore, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Flow()
    told: list[ApprovalStatus] = []

    def broken(record: ApprovalRecord) -> None:
        raise RuntimeError("chat is down")

    pipeline = fs.Pipeline(
        flow.assets, store=store, approval_notifiers=[broken, lambda r: told.append(r.status)]
    )
    with caplog.at_level(logging.ERROR, logger="flowstone.approvals"):
        run = pipeline.materialize_all("notify", partition=DAY)
        assert run.status == RunStatus.WAITING_APPROVAL
        assert pipeline.approve(only_request(pipeline).id, by="ana").ok
    assert told == [ApprovalStatus.PENDING, ApprovalStatus.APPROVED]
    assert sum("chat is down" in (r.exc_text or "") for r in caplog.records) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"by": ""}, "Say who decides"),
        ({"by": "x" * 256}, "Say who decides"),
        ({"by": "ana", "input": {"when": dt.date(2025, 1, 1)}}, "only JSON values"),
        ({"by": "ana", "input": ["not", "an", "object"]}, "must be a JSON object"),
    ],
)
def test_bad_decisions_are_refused_and_change_nothing(kwargs: dict[str, Any], message: str) -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store="memory")
    pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)
    with pytest.raises(ApprovalError, match=message):
        pipeline.approve(request.id, **kwargs)
    with pytest.raises(ApprovalError, match="reason= is required"):
        pipeline.reject(request.id, by="bob", reason="  ")
    assert pipeline.get_approval(request.id) == request
    assert flow.calls.count("publish") == 1


def test_ids_unknown_ambiguous_and_by_prefix() -> None:
    flow = Flow()
    pipeline = fs.Pipeline(flow.assets, store="memory")
    pipeline.materialize_all("notify", partition=DAY)
    request = only_request(pipeline)
    assert pipeline.get_approval(request.id[:6].upper()) == request
    with pytest.raises(ApprovalNotFoundError, match="flowstone approvals list"):
        pipeline.get_approval("0123456789")
    with pytest.raises(ApprovalNotFoundError):
        pipeline.approve(request.id[:3], by="ana")  # too short to be taken as a prefix
    with pytest.raises(ApprovalError, match="Unknown approval status 'open'"):
        pipeline.approvals(status="open")
    with pytest.raises(UnknownAssetError):
        pipeline.approvals(asset="pubish")


def test_a_request_with_context_that_is_not_json_fails_the_asset_clearly() -> None:
    @fs.asset
    def asks() -> Any:
        return fs.WaitForApproval("Go?", context={"when": dt.date(2025, 1, 1)})

    pipeline = fs.Pipeline([asks], store="memory")
    run = pipeline.materialize("asks")
    assert run["asks"].status == Status.FAILED
    assert run["asks"].error_type == "ApprovalError"
    assert "only JSON values" in (run["asks"].error_message or "")
    assert pipeline.approvals(status=None) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: fs.WaitForApproval(""), "needs a message"),
        (lambda: fs.WaitForApproval("Go?", timeout=dt.timedelta(0)), "positive"),
        (lambda: fs.WaitForApproval("Go?", timeout=3600), "positive datetime.timedelta"),  # type: ignore[arg-type]
        (lambda: fs.Approval("Go?", context={1: "x"}), "str keys"),  # type: ignore[dict-item]
    ],
)
def test_requests_are_checked_when_made(make: Any, message: str) -> None:
    with pytest.raises(ApprovalError, match=message):
        make()


def test_an_asset_that_asks_again_after_approval_keeps_its_downstream_pending(
    store: MetadataStore,
) -> None:
    asked = {"n": 0}

    @fs.asset
    def gate(ctx):
        asked["n"] += 1
        if asked["n"] < 3:  # two stages of sign-off
            return fs.WaitForApproval(f"stage {asked['n']}")
        return 1

    @fs.asset
    def below(gate):
        return gate + 1

    pipeline = fs.Pipeline([gate, below], store=store)
    run = pipeline.materialize_all("below")
    for _ in range(2):
        [request] = [a for a in pipeline.approvals() if a.status == "pending"]
        pipeline.approve(request.id, by="ana")
        statuses = {r.asset: r.status for r in store.list_materializations(run_id=run.run_id)}
        # Never `running` between stages: the step below was not claimed too early.
        assert statuses["below"] in (Status.PENDING, Status.SUCCESS)
    assert statuses == {"gate": Status.SUCCESS, "below": Status.SUCCESS}
    assert pipeline.load("below") == 2


def test_a_distributed_pipeline_without_postgresql_refuses_decisions_before_recording() -> None:
    from flowstone.errors import DistributedSetupError
    from flowstone.store.memory import MemoryStore

    @fs.asset
    def gate(ctx):
        return 1 if ctx.approval else fs.WaitForApproval("ok?")

    @fs.asset
    def below(gate):
        return gate

    store = MemoryStore()
    run = fs.Pipeline([gate, below], store=store).materialize_all("below")
    distributed = fs.Pipeline([gate, below], store=store, executor=fs.DistributedExecutor())
    [request] = store.list_approvals(limit=None)
    with pytest.raises(DistributedSetupError, match="needs a PostgreSQL metadata store"):
        distributed.approve(request.id, by="ana")
    with pytest.raises(DistributedSetupError):
        distributed.expire_approvals()
    assert [a.status for a in store.list_approvals(limit=None)] == [ApprovalStatus.PENDING]
    statuses = {r.asset: r.status for r in store.list_materializations(run_id=run.run_id)}
    assert statuses == {"gate": Status.WAITING_APPROVAL, "below": Status.PENDING}
