"""The distributed executor against the real PostgreSQL, with real ``flowstone worker`` processes.

Each test gets a schema of its own (FlowStone's and procrastinate's tables), started workers
are stopped at the end. Skipped with the reason when no PostgreSQL answers; on CI (CI=true) they
must run. The waits here are hang guards, never timing assertions: only the retry test checks a
lower bound, the policy's minimum wait.
"""

from __future__ import annotations

import itertools
import json
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest

import flowstone as fs
from distributed_fixtures import pipelines
from distributed_fixtures.harness import Cluster, wait_until
from flowstone.errors import DistributedSetupError
from flowstone.execution import InProcessExecutor
from flowstone.execution.distributed import DistributedExecutor
from flowstone.records import RunResult, RunStatus, Status

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def shape(pipeline: fs.Pipeline, result: RunResult) -> dict[str, tuple[str, list[str]]]:
    """For each asset of a run: its status and the assets whose materializations (of the same
    run) it read, from the store's lineage."""
    found = {}
    for record in result.materializations:
        upstream = pipeline.store.upstream(record.id, depth=1)
        assert all(node.run_id == result.run_id for node in upstream)
        found[record.asset] = (record.status.value, sorted(n.asset for n in upstream))
    return found


def executed(made: Cluster, run_id: str) -> Counter[str]:
    return Counter(e.asset for e in made.executions(run_id) if e.event == "done")


# --- runs across workers ---------------------------------------------------------------------
@pytest.mark.parametrize("factory", ["diamond", "wide"])
def test_runs_across_two_workers_match_the_embedded_run(pg_cluster: Cluster, factory: str) -> None:
    pipeline = pg_cluster.pipeline(factory)
    assert isinstance(pipeline.executor, DistributedExecutor)  # FLOWSTONE_EXECUTOR=distributed
    pg_cluster.start_worker(factory, "--concurrency", "2")
    pg_cluster.start_worker(factory, "--concurrency", "2")

    submitted = pipeline.materialize_all()
    assert submitted.status == RunStatus.RUNNING
    assert {r.status for r in submitted.materializations} == {Status.PENDING}
    result = pg_cluster.finish(pipeline, submitted.run_id)

    embedded = pg_cluster.pipeline(factory, store="memory", executor=InProcessExecutor())
    expected = embedded.materialize_all()
    assert result.status == expected.status == RunStatus.SUCCESS
    assert shape(pipeline, result) == shape(embedded, expected)
    assert executed(pg_cluster, result.run_id) == Counter({a: 1 for a in pipeline.asset_names()})
    assert {r.attempt for r in result.materializations} == {1}
    # The values went through the shared filesystem I/O manager: any process can read them.
    last = pipeline.asset_names()[-1]
    assert pipeline.load(last) == embedded.load(last)
    events = Counter(e.action for e in pipeline.audit_log(run_id=result.run_id, limit=None))
    assert events["materialization.success"] == len(pipeline.asset_names())
    assert events["run.started"] == events["run.success"] == 1


def test_a_killed_worker_s_step_is_retried_and_succeeds_once(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("slow_chain")
    doomed = pg_cluster.start_worker("slow_chain")
    run_id = pipeline.materialize_all().run_id
    wait_until(
        lambda: any(
            e.asset == "slow" and e.event == "start" for e in pg_cluster.executions(run_id)
        ),
        "the slow step to start",
    )
    pg_cluster.stop(doomed, signal.SIGKILL)
    record = pipeline.history("slow")[0]
    assert (record.status, record.attempt) == (Status.RUNNING, 1)

    pg_cluster.start_worker("slow_chain")
    result = pg_cluster.finish(pipeline, run_id)

    assert result.status == RunStatus.SUCCESS
    slow = result["slow"]
    assert (slow.status, slow.attempt) == (Status.SUCCESS, 2)
    assert executed(pg_cluster, run_id) == Counter({"before": 1, "slow": 1, "after": 1})
    starts = [
        e.attempt for e in pg_cluster.executions(run_id) if e.asset == "slow" and e.event == "start"
    ]
    assert starts == [1, 2]
    assert not pipeline.store.list_materializations(status=Status.RUNNING)
    assert pipeline.load("after") == "before+slow+after"


def test_the_same_step_enqueued_ten_times_at_once_runs_once(pg_cluster: Cluster) -> None:
    from flowstone.execution.queue import StepJob

    pipeline = pg_cluster.pipeline("diamond")
    executor = pipeline.executor
    assert isinstance(executor, DistributedExecutor)

    def enqueue_ten(run_id: str) -> list[int]:
        step = StepJob(run_id=run_id, asset="root", partition_key="n:")
        counts: list[int] = []
        barrier = threading.Barrier(10)

        def enqueue() -> None:
            barrier.wait()
            counts.append(len(executor.enqueue(pipeline.store, [step])))

        threads = [threading.Thread(target=enqueue) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return counts

    # No worker yet: the submitted job is waiting, so every duplicate collapses into it.
    waiting = pipeline.materialize("root").run_id
    assert enqueue_ten(waiting) == [0] * 10
    # With workers racing the enqueues, a duplicate may be enqueued after the first started;
    # it then finds the step done and does nothing.
    pg_cluster.start_worker("diamond", "--concurrency", "2")
    pg_cluster.start_worker("diamond", "--concurrency", "2")
    racing = pipeline.materialize("root").run_id
    enqueue_ten(racing)

    for run_id in (waiting, racing):
        assert pg_cluster.finish(pipeline, run_id).status == RunStatus.SUCCESS
        assert executed(pg_cluster, run_id) == Counter({"root": 1})


def test_bad_jobs_fail_for_good_and_the_worker_keeps_serving(pg_cluster: Cluster) -> None:
    from flowstone.execution import queue
    from flowstone.execution.distributed import postgres_dsn

    pipeline = pg_cluster.pipeline("diamond")
    executor = pipeline.executor
    assert isinstance(executor, DistributedExecutor)
    worker = pg_cluster.start_worker("diamond")
    first = pipeline.materialize("root").run_id
    assert pg_cluster.finish(pipeline, first).status == RunStatus.SUCCESS

    executor.enqueue(
        pipeline.store,
        [
            # A module next to the pipeline file: importing it would write the sentinel file.
            queue.StepJob(run_id=first, asset="flowstone_sentinel_mod", partition_key="n:"),
            queue.StepJob(run_id=first, asset="root", partition_key="zz:not-a-partition"),
        ],
    )
    app = queue.open_app(postgres_dsn(pipeline.store))
    try:
        app.configure_task(queue.TASK_NAME, queue="flowstone").defer(run_id=first, junk=1)

        def failed_jobs() -> list[object]:
            return [j for j in app.job_manager.list_jobs(status="failed")]

        wait_until(lambda: len(failed_jobs()) == 3, "the three bad jobs to fail")
        # One attempt each (procrastinate counts the one that failed), none retried.
        assert {j.attempts for j in app.job_manager.list_jobs(status="failed")} == {1}
        assert app.job_manager.list_jobs(status="todo") == []
    finally:
        app.close()

    reasons = [
        e.details["reason"] for e in pipeline.audit_log(limit=None) if e.action == "job.rejected"
    ]
    assert len(reasons) == 3
    assert any("No asset named 'flowstone_sentinel_mod'" in r for r in reasons)
    assert any("bad partition" in r and "zz:not-a-partition" in r for r in reasons)
    assert any("arguments must be exactly" in r for r in reasons)
    assert not Path(pg_cluster.env["FLOWSTONE_TEST_SENTINEL"]).exists()

    # A run whose step this worker does not know: the step fails with the reason, the run ends.
    other = pg_cluster.pipeline("partitioned").materialize("regional", partition="eu")
    result = pg_cluster.finish(pipeline, other.run_id)
    assert result.status == RunStatus.FAILED
    assert result["regional"].error_type == "JobRejectedError"
    assert "No asset named 'regional'" in (result["regional"].error_message or "")

    # The same worker still serves good jobs.
    assert worker.poll() is None
    good = pipeline.materialize_all()
    assert pg_cluster.finish(pipeline, good.run_id).status == RunStatus.SUCCESS


def test_retryable_failures_retry_with_the_policy_waits(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("retries")
    pg_cluster.start_worker("retries", "--concurrency", "2")
    result = pg_cluster.finish(pipeline, pipeline.materialize_all().run_id)

    assert result.status == RunStatus.FAILED
    flaky = result["flaky"]
    assert (flaky.status, flaky.attempt) == (Status.SUCCESS, 3)
    assert result["below_flaky"].status == Status.SUCCESS
    starts = [
        e for e in pg_cluster.executions(result.run_id) if e.asset == "flaky" and e.event == "start"
    ]
    assert [e.attempt for e in starts] == [1, 2, 3]
    for before, after in itertools.pairwise(starts):
        assert after.at - before.at >= pipelines.POLICY.min_delay(before.attempt)
    retried = [
        e.details
        for e in pipeline.audit_log(run_id=result.run_id, limit=None)
        if e.action == "materialization.retry_scheduled"
    ]
    assert [(d["attempt"], d["next_attempt"]) for d in retried] == [(1, 2), (2, 3)]

    # Not in retry_on: failed on the first attempt, for good; what is below it is skipped.
    broken = result["broken"]
    assert (broken.status, broken.attempt, broken.error_type) == (Status.FAILED, 1, "ValueError")
    for name in ("below_broken", "further_below"):
        assert result[name].status == Status.SKIPPED
        assert result[name].error_message == "upstream asset 'broken' failed"
    assert executed(pg_cluster, result.run_id) == Counter({"flaky": 1, "below_flaky": 1})


def test_cancel_stops_what_has_not_started(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("slow_chain")
    pg_cluster.start_worker("slow_chain")
    run_id = pipeline.materialize_all().run_id
    wait_until(
        lambda: any(
            e.asset == "slow" and e.event == "start" for e in pg_cluster.executions(run_id)
        ),
        "the slow step to start",
    )
    done = pipeline.cancel_run(run_id)
    assert done.run.status == RunStatus.CANCELLED
    assert (done.cancelled_steps, done.jobs_aborting) == (1, 1)

    # The running step finishes (a function cannot be interrupted) and nothing below it runs.
    wait_until(lambda: pipeline.history("slow")[0].status.is_final, "the slow step to end")
    result = pipeline.wait_for_run(run_id, timeout=1)
    assert result.status == RunStatus.CANCELLED
    assert result["after"].status == Status.CANCELLED
    assert result["slow"].status == Status.SUCCESS
    assert "after" not in executed(pg_cluster, run_id)
    assert pipeline.cancel_run(run_id).cancelled_steps == 0  # already over: nothing to do


def test_sigterm_finishes_the_running_step_and_starts_nothing_new(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("slow_chain")
    worker = pg_cluster.start_worker("slow_chain")
    run_id = pipeline.materialize_all().run_id
    wait_until(
        lambda: any(
            e.asset == "slow" and e.event == "start" for e in pg_cluster.executions(run_id)
        ),
        "the slow step to start",
    )
    assert pg_cluster.stop(worker, signal.SIGTERM) == 0
    assert pipeline.history("slow")[0].status == Status.SUCCESS
    assert pipeline.history("after")[0].status == Status.PENDING  # enqueued, not started

    pg_cluster.start_worker("slow_chain")
    assert pg_cluster.finish(pipeline, run_id).status == RunStatus.SUCCESS
    assert executed(pg_cluster, run_id) == Counter({"before": 1, "slow": 1, "after": 1})


# --- the command line ------------------------------------------------------------------------
def test_cli_materialize_wait_and_runs(
    pg_cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    from flowstone.cli import main

    spec = "tests/distributed_fixtures/pipelines.py:diamond"
    pg_cluster.start_worker("diamond")
    assert main(["materialize", "join", "--with-deps", "--wait", "-p", spec]) == 0
    out, err = capsys.readouterr()
    assert "4/4 done: 4 success" in err
    assert "join" in out and "success" in out

    assert main(["runs", "list", "--json", "-p", spec]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["status"], listed["steps"]) == ("success", {"success": 4})
    assert main(["runs", "show", listed["run_id"][:8], "-p", spec]) == 0
    shown = capsys.readouterr().out
    assert "4/4 done" in shown and "root" in shown
    assert main(["runs", "cancel", listed["run_id"], "-p", spec]) == 0
    assert "nothing to cancel" in capsys.readouterr().err
    assert main(["runs", "show", "ffffffff", "-p", spec]) == 1
    assert "No run 'ffffffff'" in capsys.readouterr().err

    # Without --wait: submitted, the table shows the pending steps, exit 0.
    assert main(["materialize", "root", "-p", spec]) == 0
    assert "submitted" in capsys.readouterr().err


# --- configuration ---------------------------------------------------------------------------
def test_values_in_memory_are_refused(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("diamond", default_io_manager="memory")
    with pytest.raises(DistributedSetupError, match="in memory"):
        pipeline.materialize_all()
    assert pipeline.store.list_runs() == []


def test_the_distributed_executor_needs_postgresql(tmp_path: Path) -> None:
    pipeline = pipelines.diamond(
        store=f"sqlite:///{tmp_path / 'meta.db'}", executor=DistributedExecutor()
    )
    with pytest.raises(DistributedSetupError, match="needs a PostgreSQL metadata store"):
        pipeline.materialize_all()
    with pytest.raises(DistributedSetupError, match="distributed executor"):
        pipelines.diamond(store="memory").cancel_run("x")


def test_the_queue_connects_with_every_option_of_the_store_url() -> None:
    """A space in a URL's query value used to reach libpq as a ``+``: ``options`` with two
    ``-c`` settings became one wrong search path, and the queue's tables went missing."""
    import psycopg
    import sqlalchemy as sa

    from flowstone.execution import queue
    from test_store_contract import POSTGRES_URL, require_postgres

    require_postgres()
    url = sa.make_url(POSTGRES_URL).update_query_dict(
        {"options": "-csearch_path=flowstone_two_options -cstatement_timeout=123456"}
    )
    with psycopg.connect(queue.conninfo(url)) as conn:
        assert conn.execute("SHOW search_path").fetchone() == ("flowstone_two_options",)
        assert conn.execute("SHOW statement_timeout").fetchone() == ("123456ms",)
    twice = url.update_query_pairs([("sslmode", "disable"), ("sslmode", "require")])
    with pytest.raises(DistributedSetupError, match="'sslmode' more than once"):
        queue.conninfo(twice)
    unpaired = sa.make_url("postgresql+psycopg://app@/db?host=a&host=b&port=1&port=2")
    with pytest.raises(DistributedSetupError, match="cannot be used by the queue"):
        queue.conninfo(unpaired)
    # Several hosts are SQLAlchemy's way to name a cluster: libpq takes them as lists.
    hosts = sa.make_url("postgresql+psycopg://app@/db?host=a:5432&host=b:5433")
    assert psycopg.conninfo.conninfo_to_dict(queue.conninfo(hosts)) == {
        "dbname": "db",
        "user": "app",
        "host": "a,b",
        "port": "5432,5433",
    }


def test_the_queue_connects_with_the_store_s_connect_args(tmp_path: Path) -> None:
    """A store's engine ``connect_args`` (a search path, TLS settings...) reach the queue too:
    without them its jobs would go to another schema, or over another kind of connection."""
    import psycopg
    import sqlalchemy as sa

    from flowstone.execution import queue
    from flowstone.execution.distributed import postgres_dsn
    from flowstone.store.sql import SQLStore
    from test_store_contract import POSTGRES_URL, postgres_schema

    with postgres_schema() as options:
        args = {**options["connect_args"], "prepare_threshold": None}  # psycopg's, not libpq's
        store = SQLStore(POSTGRES_URL, engine_options={"connect_args": args})
        try:
            dsn = postgres_dsn(store)
            with psycopg.connect(dsn) as conn:
                shown = conn.execute("SELECT current_schema(), current_setting('application_name')")
                assert shown.fetchone() == (options["connect_args"]["application_name"],) * 2
        finally:
            store.close()
    assert "prepare_threshold" not in psycopg.conninfo.conninfo_to_dict(dsn)
    # connect_args win over the URL, as they do when psycopg connects the store.
    url = sa.make_url(POSTGRES_URL).update_query_dict({"application_name": "from-url"})
    chosen = queue.conninfo(url, {"application_name": "from-args"})
    assert psycopg.conninfo.conninfo_to_dict(chosen)["application_name"] == "from-args"


def test_a_wide_run_refreshes_the_statistics_the_workers_plan_with(pg_cluster: Cluster) -> None:
    """procrastinate's fetch sorted every waiting job while the statistics said the queue was
    empty: a submit that grows the tables by a large share ANALYZEs them (no worker needed)."""
    import sqlalchemy as sa

    from flowstone.store.sql.store import ANALYZE_MIN_ROWS

    def noop() -> None:
        return None

    assets = [fs.asset(name=f"a{i:04d}")(noop) for i in range(ANALYZE_MIN_ROWS)]
    pipeline = fs.Pipeline(assets, executor=DistributedExecutor())
    try:
        pipeline.executor.prepare(pipeline.store)  # type: ignore[attr-defined]
        engine = pipeline.store.engine  # type: ignore[attr-defined]
        with engine.begin() as conn:  # or autovacuum could analyze them under the test
            for table in ("flowstone_materializations", "procrastinate_jobs"):
                conn.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        pipeline.materialize_all()
        with engine.connect() as conn:
            counted = dict(
                conn.execute(
                    sa.text(
                        "SELECT relname, reltuples FROM pg_class WHERE oid IN"
                        " (to_regclass('flowstone_materializations'),"
                        " to_regclass('procrastinate_jobs'))"
                    )
                ).all()
            )
    finally:
        pipeline.close()
    assert counted == {
        "flowstone_materializations": ANALYZE_MIN_ROWS,
        "procrastinate_jobs": ANALYZE_MIN_ROWS,
    }
