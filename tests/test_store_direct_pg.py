"""PostgreSQL's direct path (``flowstone.store.direct_pg``): a worker's step session.

The run-transaction contract also runs inside step sessions (``test_store_run_transaction.py``,
store kind ``postgres-session``); here: both paths write identical rows, and the step lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import flowstone as fs
from distributed_fixtures.harness import wait_until
from flowstone.errors import StepFailedError, StoreError
from flowstone.execution.queue import StepJob
from flowstone.execution.steps import StepRunner
from flowstone.records import RunStatus, Status
from flowstone.store.direct_pg import PgConnection
from flowstone.store.schema import audit_log, lineage, materializations, runs
from flowstone.store.sql import SQLStore
from test_store_contract import edge, event, mat, open_test_store, run_record

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[SQLStore]:
    with open_test_store("postgres", tmp_path) as store:
        assert isinstance(store, SQLStore)
        yield store


def rows(store: SQLStore, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row a run left, without the columns the database numbers itself."""

    def read(table: sa.Table, where: sa.ColumnElement[bool], order: str) -> list[tuple[Any, ...]]:
        numbered = ("seq", "id") if table in (lineage, audit_log) else ("seq",)
        columns = [c for c in table.c if c.name not in numbered]
        with store.engine.connect() as conn:
            found = conn.execute(sa.select(*columns).where(where).order_by(table.c[order])).all()
        return [tuple(row) for row in found]

    return {
        "run": read(runs, runs.c.id == run_id, "id"),
        "materializations": read(materializations, materializations.c.run_id == run_id, "asset"),
        "lineage": read(lineage, lineage.c.run_id == run_id, "asset"),
        "audit": read(audit_log, audit_log.c.correlation_id == run_id, "id"),
    }


def write_a_step(store: SQLStore, run_id: str, *, session: bool) -> None:
    """What a worker writes for one step below another, through either path."""
    run = run_record(id=run_id)
    up = mat("up", run_id=run_id, status=Status.SUCCESS, id=run_id[:16] + "u" * 16)
    down = mat("down", run_id=run_id, status=Status.PENDING, id=run_id[:16] + "d" * 16)
    store.create_run(run, [up, down], [event("run.started", correlation_id=run_id)])
    started = replace(
        down, status=Status.RUNNING, attempt=2, started_at=down.created_at + timedelta(seconds=1)
    )
    done = replace(
        started,
        status=Status.SUCCESS,
        completed_at=started.created_at + timedelta(seconds=2),
        duration_ms=12.5,
        metadata={"rows": 3, "nested": {"ok": True, "list": [1, "x", None]}},
        code_version="v1",
        io_manager="filesystem",
    )
    finished = replace(run, status=RunStatus.SUCCESS, completed_at=done.completed_at)

    def final(tx: Any) -> None:
        tx.save_materialization(
            done,
            lineage=[edge(up, done)],
            audit=[event("materialization.success", correlation_id=run_id, details={"a": [1]})],
        )
        tx.update_run(finished, [event("run.success", correlation_id=run_id)])

    if not session:
        store.save_materialization(started)
        store.run_transaction(run_id, final)
        return
    with store.step_session(run_id, "down", "n:", lock=f"test:{run_id}") as (record, status, _):
        assert record == down and status == RunStatus.RUNNING
        store.save_materialization(started)
        store.run_transaction(run_id, final)


def test_both_paths_write_identical_rows(pg: SQLStore) -> None:
    plain, direct = "a" * 32, "b" * 32
    write_a_step(pg, plain, session=False)
    write_a_step(pg, direct, session=True)

    def normalized(run_id: str) -> dict[str, list[tuple[Any, ...]]]:
        found = rows(pg, run_id)
        return {
            table: [
                tuple(v.replace(run_id[:16], "#") if isinstance(v, str) else v for v in row)
                for row in values
            ]
            for table, values in found.items()
        }

    assert normalized(plain) == normalized(direct)
    assert len(normalized(direct)["lineage"]) == 1
    assert len(normalized(direct)["audit"]) == 3
    # And they read back the same through either path.
    with pg.step_session(direct, "down", "n:", lock="test:read") as (record, status, _):
        assert record == pg.get_materialization(direct[:16] + "d" * 16)
        assert status == RunStatus.SUCCESS
        assert pg.find_in_run(direct, [("down", "n:"), ("up", "n:"), ("gone", "n:")]) == {
            ("down", "n:"): record,
            ("up", "n:"): pg.get_materialization(direct[:16] + "u" * 16),
        }
        assert pg.find_in_run(direct, []) == {}
    with pytest.raises(StoreError, match="No step session is open"):
        pg.find_in_run(direct, [("down", "n:")])


def advisory_locks(store: SQLStore, *, granted: bool, namespace: int | None = None) -> int:
    """Advisory locks held (or waited for) by this test's sessions: those of its schema's
    application name, so other tests on the same database do not count."""
    query = (
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted = %(granted)s "
        "AND a.application_name = current_setting('application_name')"
    )
    if namespace is not None:  # two-key locks of one namespace
        query += f" AND l.classid = {namespace} AND l.objsubid = 2"
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql(query, {"granted": granted}).scalar_one())


def advisory_waiters(store: SQLStore) -> int:
    return advisory_locks(store, granted=False)


def step_locks_held(store: SQLStore) -> int:
    from flowstone.store.sql import STEP_LOCK_NAMESPACE

    return advisory_locks(store, granted=True, namespace=STEP_LOCK_NAMESPACE)


def lock_waiters(store: SQLStore) -> int:
    """This test's sessions waiting for a run's lock."""
    from flowstone.store.sql.transaction import RUN_LOCK_NAMESPACE

    return advisory_locks(store, granted=False, namespace=RUN_LOCK_NAMESPACE)


def test_a_session_claims_only_a_step_that_never_ran(pg: SQLStore) -> None:
    from flowstone.store.base import StepClaim

    run = run_record()
    step = mat("a", run_id=run.id, status=Status.PENDING)
    pg.create_run(run, [step])
    claim = StepClaim(
        attempt=3,
        started_at=step.created_at + timedelta(seconds=1),
        code_version="v2",
        io_manager="files",
    )
    with pg.step_session(run.id, "a", "n:", lock="t:a", claim=claim) as (record, status, claimed):
        assert claimed and status == RunStatus.RUNNING
        # Written, and visible to others, as the session starts (before the block's end).
        assert pg.get_materialization(step.id) == record
    assert record is not None
    assert (record.status, record.attempt, record.started_at) == (
        Status.RUNNING,
        3,
        claim.started_at,
    )
    assert (record.code_version, record.io_manager) == ("v2", "files")
    # Started once: a later job finds it running (its attempt died, or still runs) and decides.
    later = replace(claim, attempt=4, started_at=claim.started_at + timedelta(seconds=1))
    with pg.step_session(run.id, "a", "n:", lock="t:a", claim=later) as (again, _, claimed):
        assert not claimed and again == record
    # A step retried after a failure is `pending` again with a start time: not claimed either.
    pg.save_materialization(replace(record, status=Status.PENDING))
    with pg.step_session(run.id, "a", "n:", lock="t:a", claim=later) as (again, _, claimed):
        assert not claimed and again is not None and again.status == Status.PENDING


def test_the_step_lock_lets_one_session_in_at_a_time(pg: SQLStore) -> None:
    run = run_record()
    pg.create_run(run, [mat("a", run_id=run.id, status=Status.PENDING)])
    inside: list[str] = []
    second_in = threading.Event()

    def second() -> None:
        with pg.step_session(run.id, "a", "n:", lock="flowstone:a:n:") as (record, _, _):
            assert record is not None
            inside.append("second")
            second_in.set()

    with pg.step_session(run.id, "a", "n:", lock="flowstone:a:n:"):
        inside.append("first")
        thread = threading.Thread(target=second)
        thread.start()
        # The second session waits on the lock (seen in pg_locks); a hang guard, not a timing.
        for _ in range(500):
            if advisory_waiters(pg):
                break
            second_in.wait(0.02)
        assert advisory_waiters(pg) == 1
        assert inside == ["first"]
    thread.join(timeout=30)
    assert inside == ["first", "second"]
    assert step_locks_held(pg) == 0


def test_the_commit_of_the_step_s_outcome_releases_the_lock(pg: SQLStore) -> None:
    run = run_record()
    step = mat("a", run_id=run.id, status=Status.PENDING)
    pg.create_run(run, [step])
    with pg.step_session(run.id, "a", "n:", lock="flowstone:a:n:"):
        assert step_locks_held(pg) == 1
        pg.run_transaction(run.id, lambda tx: tx.save_materialization(replace(step, attempt=2)))
        assert step_locks_held(pg) == 1  # still pending, never started: not an outcome
        done = replace(step, status=Status.SUCCESS)
        pg.run_transaction(run.id, lambda tx: tx.save_materialization(done))
        assert step_locks_held(pg) == 0
    assert step_locks_held(pg) == 0


def test_a_failing_session_closes_its_connection_and_the_lock_with_it(pg: SQLStore) -> None:
    run = run_record()
    pg.create_run(run, [mat("a", run_id=run.id, status=Status.PENDING)])
    clash = mat("a", run_id=run.id, status=Status.SUCCESS)  # a second record of (run, a, n:)
    with (
        pytest.raises(StoreError, match="conflicts with what the store holds"),
        pg.step_session(run.id, "a", "n:", lock="flowstone:a:n:"),
    ):
        pg.save_materialization(clash)
    assert step_locks_held(pg) == 0
    assert pg.get_materialization(clash.id) is None
    # The next session works (on a new connection).
    with pg.step_session(run.id, "a", "n:", lock="flowstone:a:n:") as (record, status, _):
        assert record is not None and record.status == Status.PENDING
        assert status == RunStatus.RUNNING


def test_sessions_do_not_nest(pg: SQLStore) -> None:
    run = run_record()
    with (
        pytest.raises(StoreError, match="already open"),
        pg.step_session(run.id, "a", "n:", lock="x"),
        pg.step_session(run.id, "b", "n:", lock="y"),
    ):
        pass


# --- a worker's step, end to end (StepRunner on the direct path) -----------------------------
class NullIO:
    """Stores nothing (the steps here are about what the store records)."""

    def store(self, key: Any, value: Any) -> None:
        return None

    def load(self, key: Any) -> Any:
        return None

    def exists(self, key: Any) -> bool:
        return True

    def delete(self, key: Any) -> None:
        return None


@contextmanager
def step_runner(store: SQLStore, *assets: Any) -> Iterator[StepRunner]:
    pipeline = fs.Pipeline(list(assets), store=store, io_managers={"default": NullIO()})
    with pipeline.resource_scope() as resources:
        materializer = pipeline.step_runtime("", resources=resources)[0]

        def scope_for(run_id: str, io_manager: str | None) -> Any:
            return pipeline.step_runtime(run_id, resources=resources, io_manager=io_manager)[1]

        yield StepRunner(pipeline.graph, store, materializer, scope_for)


def run_step(runner: StepRunner, run_id: str, asset: str) -> str:
    job = StepJob(run_id=run_id, asset=asset, partition_key="n:")
    return runner.run(job.to_args(), job_id=None, retries=0, queue_name="default")


class RoundTrips:
    """Counts the round trips of every step session from its creation on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        send = PgConnection._send

        def counting(conn: PgConnection) -> None:
            self.count += 1
            send(conn)

        monkeypatch.setattr(PgConnection, "_send", counting)


def test_a_step_nothing_waits_on_costs_two_round_trips(
    pg: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Status] = []

    @fs.asset(code_version="v3")
    def a(context: fs.AssetContext) -> int:
        # The claim made the step `running`, visible to others while it runs.
        seen[:] = [r.status for r in pg.list_materializations(asset="a")]
        context.metadata["rows"] = 7
        return 1

    @fs.asset
    def b() -> int:
        return 2

    run = run_record(targets=("a", "b"))
    pg.create_run(run, [mat(name, run_id=run.id, status=Status.PENDING) for name in ("a", "b")])
    with step_runner(pg, a, b) as runner:
        trips = RoundTrips(monkeypatch)
        done = run_step(runner, run.id, "a")
        # The step lock, the claim and the step's read; then its outcome, committed with the
        # read of what is left and the lock's release (no run lock: nothing waits on a
        # leaf). No `running` write of its own: the claim was it.
        assert (trips.count, seen) == (2, [Status.RUNNING])
        assert done == "a success (attempt 1); 0 enqueued"
        # The row the lock-free commit wrote holds the whole outcome.
        (saved,) = pg.list_materializations(asset="a")
        assert (saved.status, saved.attempt, saved.code_version) == (Status.SUCCESS, 1, "v3")
        assert saved.metadata == {"rows": 7}
        assert saved.started_at is not None and saved.completed_at is not None
        assert saved.completed_at >= saved.started_at and saved.duration_ms is not None
        trips.count = 0
        run_step(runner, run.id, "b")
        # The last step then closes the run under its lock: the run with what is left, the
        # run's records (for its final status), the COMMIT.
        assert trips.count == 5
    finished = pg.get_run(run.id)
    assert finished is not None and finished.status == RunStatus.SUCCESS
    records = pg.list_materializations(run_id=run.id)
    assert sorted((r.asset, r.status, r.attempt) for r in records) == [
        ("a", Status.SUCCESS, 1),
        ("b", Status.SUCCESS, 1),
    ]
    assert step_locks_held(pg) == 0


def test_a_step_reads_its_in_run_dependencies_in_one_round_trip(
    pg: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    @fs.asset
    def a() -> int:
        return 1

    @fs.asset
    def b() -> int:
        return 2

    @fs.asset
    def c(a: None, b: None) -> int:  # the null I/O manager here loads None
        return 3

    run = run_record(targets=("a", "b", "c"))
    done = {name: mat(name, run_id=run.id, status=Status.SUCCESS) for name in ("a", "b")}
    pg.create_run(run, [*done.values(), mat("c", run_id=run.id, status=Status.PENDING)])
    with step_runner(pg, a, b, c) as runner:
        trips = RoundTrips(monkeypatch)
        assert run_step(runner, run.id, "c") == "c success (attempt 1); 0 enqueued"
    # Lock, claim and read; both dependencies' records; the outcome. Then the run closes.
    assert trips.count == 3 + 3
    (saved,) = pg.list_materializations(run_id=run.id, asset="c")
    read = {node.asset for node in pg.upstream(saved.id, depth=1)}
    assert read >= {"a", "b"}


def test_the_retried_job_of_a_worker_that_died_before_closing_the_run_closes_it(
    pg: SQLStore,
) -> None:
    # A leaf's outcome commits without the run's lock, and the run is closed after it: a
    # worker killed in between leaves the last step `success` and the run `running`. The job
    # was not acknowledged, so it is retried: finding the step done, it closes the run.
    @fs.asset
    def a() -> int:
        return 1

    run = run_record(targets=("a",))
    step = mat("a", run_id=run.id, status=Status.PENDING)
    pg.create_run(run, [step])
    pg.save_materialization(replace(step, status=Status.SUCCESS, completed_at=step.created_at))
    with step_runner(pg, a) as runner:
        said = run_step(runner, run.id, "a")
    assert said == "nothing to do: a is already success"
    closed = pg.get_run(run.id)
    assert closed is not None and closed.status == RunStatus.SUCCESS
    assert [e.action for e in pg.list_audit(correlation_id=run.id, limit=None)][-1] == (
        "run.success"
    )
    assert step_locks_held(pg) == 0


def test_a_leaf_finishing_during_another_step_s_run_transaction_still_closes_the_run(
    pg: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `a` fails: recorded under the run's lock, where it reads `b` as unfinished. `b`, a leaf,
    # commits meanwhile without that lock; its read of what is left must wait for `a`'s
    # transaction (the run's lock in shared mode), or each sees the other unfinished and the
    # run stays `running` for good (73 runs in 300 raced without this).
    import flowstone.execution.steps as steps

    @fs.asset
    def a() -> int:
        raise RuntimeError("boom")

    @fs.asset
    def b() -> int:
        return 2

    run = run_record(targets=("a", "b"))
    pg.create_run(run, [mat(name, run_id=run.id, status=Status.PENDING) for name in ("a", "b")])
    real_after_final = steps.after_final
    leaf: list[Future[str]] = []

    with step_runner(pg, a, b) as runner, ThreadPoolExecutor(max_workers=1) as pool:

        def after_final(tx: Any, graph: Any, materializer: Any, record: Any) -> Any:
            outcome = real_after_final(tx, graph, materializer, record)  # `b` is left
            leaf.append(pool.submit(run_step, runner, run.id, "b"))
            # `b` commits, then waits for this transaction.
            wait_until(lambda: lock_waiters(pg) == 1, "`b` to wait for the run's lock")
            return outcome

        monkeypatch.setattr(steps, "after_final", after_final)
        with pytest.raises(StepFailedError):
            run_step(runner, run.id, "a")
        # Its own error, if it raised, comes through here.
        said = leaf[0].result(timeout=30)
    assert said == "b success (attempt 1); 0 enqueued"
    records = {r.asset: r.status for r in pg.list_materializations(run_id=run.id)}
    assert records == {"a": Status.FAILED, "b": Status.SUCCESS}
    closed = pg.get_run(run.id)
    assert closed is not None and closed.status == RunStatus.FAILED


def test_a_failure_to_close_the_run_leaves_the_committed_success_alone(
    pg: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowstone.execution.steps as steps

    @fs.asset
    def a() -> int:
        return 1

    run = run_record(targets=("a",))
    pg.create_run(run, [mat("a", run_id=run.id, status=Status.PENDING)])
    real_close = steps.close_if_moving

    def timed_out(tx: Any) -> Any:
        raise StoreError("Could not update the run: canceling statement due to lock timeout")

    with step_runner(pg, a) as runner:
        monkeypatch.setattr(steps, "close_if_moving", timed_out)
        # The job fails with a store error, which the worker's queue retries...
        with pytest.raises(StoreError, match="lock timeout"):
            run_step(runner, run.id, "a")
        (record,) = pg.list_materializations(run_id=run.id)
        assert record.status == Status.SUCCESS  # ...and the success stands
        monkeypatch.setattr(steps, "close_if_moving", real_close)
        assert run_step(runner, run.id, "a") == "nothing to do: a is already success"
    closed = pg.get_run(run.id)
    assert closed is not None and closed.status == RunStatus.SUCCESS
    actions = [e.action for e in pg.list_audit(correlation_id=run.id, limit=None)]
    assert "materialization.failed" not in actions


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_a_superseded_attempt_writes_nothing_over_the_newer_one(pg: SQLStore, outcome: str) -> None:
    run = run_record(targets=("a",))
    step = mat("a", run_id=run.id, status=Status.PENDING)
    pg.create_run(run, [step])

    @fs.asset
    def a() -> int:
        # A newer attempt takes the step over meanwhile (written outside this step's session:
        # from another thread, through the store's engine).
        def take_over() -> None:
            current = pg.get_materialization(step.id)
            assert current is not None and current.status == Status.RUNNING
            pg.save_materialization(replace(current, attempt=current.attempt + 1))

        thread = threading.Thread(target=take_over)
        thread.start()
        thread.join()
        if outcome == "failure":
            raise RuntimeError("boom")
        return 1

    with step_runner(pg, a) as runner:
        said = run_step(runner, run.id, "a")
    assert "superseded (the step is now running, attempt 2)" in said
    current = pg.get_materialization(step.id)
    assert current is not None and (current.status, current.attempt) == (Status.RUNNING, 2)
    actions = [e.action for e in pg.list_audit(correlation_id=run.id, limit=None)]
    assert not [action for action in actions if action.startswith("materialization.")]
    still = pg.get_run(run.id)
    assert still is not None and still.status == RunStatus.RUNNING
    assert step_locks_held(pg) == 0


def test_a_gate_that_ran_before_asks_again_as_its_next_attempt(pg: SQLStore) -> None:
    # A gate asks before anything runs: its request is written on another connection right
    # after the step's `running` record, so that record must be committed first, or it could
    # overwrite `waiting_approval` and the run would wait forever (it once was sent without
    # waiting, and did, 1-13 times in 300 steps under load). The write now waits for its
    # commit; this test holds the outcome (asked again, as the next attempt), not the race.

    @fs.asset(approval=fs.Approval("Go?"))
    def gate() -> int:
        return 1

    with step_runner(pg, gate) as runner:
        run = run_record(targets=("gate",))
        # A step that ran before (its worker died, say) is not claimed: its `running` write
        # is the materializer's own.
        ran = mat("gate", run_id=run.id, status=Status.PENDING)
        pg.create_run(run, [replace(ran, started_at=ran.created_at)])
        assert run_step(runner, run.id, "gate").startswith("gate waiting for approval")
        (record,) = pg.list_materializations(run_id=run.id)
        assert (record.status, record.attempt) == (Status.WAITING_APPROVAL, 2)


# --- statistics after a wide run -------------------------------------------------------------
def counted_rows(store: SQLStore) -> float:
    with store.engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE oid = to_regclass('flowstone_materializations')"
        ).scalar_one()
    return float(found)


def test_a_table_that_grew_by_a_large_share_is_analyzed(pg: SQLStore) -> None:
    from flowstone.store.sql.store import ANALYZE_MIN_ROWS

    with pg.engine.begin() as conn:  # or autovacuum could analyze it under the test
        conn.exec_driver_sql(
            "ALTER TABLE flowstone_materializations SET (autovacuum_enabled = false)"
        )
    run = run_record()
    wide = 6 * ANALYZE_MIN_ROWS
    pg.create_run(run, [mat(f"a{i}", run_id=run.id, status=Status.PENDING) for i in range(wide)])
    assert counted_rows(pg) <= 0  # never analyzed: the planner sees an empty table
    table = materializations.name
    # Too few rows to matter, and a table that is not there, are left alone.
    assert pg.refresh_statistics({table: ANALYZE_MIN_ROWS - 1, "no_such_table": 10**6}) == []
    assert counted_rows(pg) <= 0
    assert pg.refresh_statistics({table: wide}) == [table]
    assert counted_rows(pg) == wide
    # Less than a fifth of what the statistics now count: not a large share.
    assert pg.refresh_statistics({table: ANALYZE_MIN_ROWS}) == []
    assert pg.refresh_statistics({table: wide // 5}) == [table]


def test_a_refresh_that_cannot_get_its_lock_gives_up_and_keeps_the_others(
    pg: SQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    from flowstone.store.sql.store import ANALYZE_MIN_ROWS

    table = materializations.name
    with pg.engine.begin() as conn:
        # No autovacuum: it could analyze the table itself and hide a rolled-back ANALYZE.
        conn.exec_driver_sql("CREATE TABLE other_table (x int) WITH (autovacuum_enabled = false)")
        conn.exec_driver_sql("INSERT INTO other_table SELECT generate_series(1, 1000)")
    grown = {"other_table": ANALYZE_MIN_ROWS, table: ANALYZE_MIN_ROWS}
    result: list[list[str]] = []
    refresh = threading.Thread(target=lambda: result.append(pg.refresh_statistics(grown)))
    with pg.engine.begin() as holder:
        # What a VACUUM or an index build holds: ANALYZE waits for it, a few seconds at most.
        holder.exec_driver_sql(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE")
        refresh.start()
        refresh.join(timeout=30)
        gave_up = not refresh.is_alive()
    refresh.join()
    assert gave_up, "the refresh waited for the lock until its holder let go"
    assert result == [["other_table"]]
    assert f"Could not ANALYZE {table}" in caplog.text
    with pg.engine.connect() as conn:  # the other table's analysis was not rolled back
        kept = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stats"
            " WHERE schemaname = current_schema() AND tablename = 'other_table'"
        )
        assert kept.scalar_one() == 1
    assert pg.refresh_statistics({table: ANALYZE_MIN_ROWS}) == [table]  # the store is fine


def test_a_table_the_role_may_not_analyze_is_named_once(
    pg: SQLStore, caplog: pytest.LogCaptureFixture
) -> None:
    import uuid

    from flowstone.store.sql.store import ANALYZE_MIN_ROWS

    role = f"flowstone_test_{uuid.uuid4().hex[:8]}"
    with pg.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
    try:
        with pg.engine.begin() as conn:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
            conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
            conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
        url = pg.engine.url.set(username=role)
        store = SQLStore(
            url.render_as_string(hide_password=False),
            auto_migrate=False,
            engine_options={"connect_args": {"options": f"-csearch_path={schema}"}},
        )
        try:
            grown = {materializations.name: ANALYZE_MIN_ROWS}
            assert store.refresh_statistics(grown) == []
            assert store.refresh_statistics(grown) == []
        finally:
            store.close()
        assert caplog.text.count("Cannot ANALYZE flowstone_materializations") == 1
    finally:
        with pg.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


def test_a_success_reads_its_fan_out_in_as_many_round_trips_however_wide(
    pg: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the run's lock a success reads the children it may make ready, then their other
    dependencies, in one statement each: a child read one at a time shows as a round trip
    more per child."""
    from flowstone.execution import queue
    from flowstone.execution.distributed import postgres_dsn

    queue.ensure_schema(postgres_dsn(pg))  # the children's jobs are deferred on this database

    def root_and_children(width: int) -> tuple[list[Any], str]:
        @fs.asset(name=f"root{width}")
        def root() -> int:
            return 1

        @fs.asset(name=f"other{width}")
        def other() -> int:
            return 2

        def child() -> int:
            return 3

        children = [
            fs.asset(name=f"c{width}_{i}", depends_on=[root.name, other.name])(child)
            for i in range(width)
        ]
        run = run_record(targets=tuple(a.name for a in [root, other, *children]))
        pg.create_run(
            run,
            [
                mat(root.name, run_id=run.id, status=Status.PENDING),
                mat(other.name, run_id=run.id, status=Status.SUCCESS),
                *(mat(c.name, run_id=run.id, status=Status.PENDING) for c in children),
            ],
        )
        return [root, other, *children], run.id

    counts = []
    for width in (3, 30):
        assets, run_id = root_and_children(width)
        with step_runner(pg, *assets) as runner:
            trips = RoundTrips(monkeypatch)
            said = run_step(runner, run_id, f"root{width}")
        assert said == f"root{width} success (attempt 1); {width} enqueued"
        counts.append(trips.count)
    assert counts[0] == counts[1]
