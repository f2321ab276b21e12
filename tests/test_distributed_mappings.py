"""Partition mappings on the distributed executor: a day is enqueued once its last hour
succeeded, on real workers against the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from distributed_fixtures.harness import Cluster
from flowstone.execution import InProcessExecutor
from flowstone.records import RunStatus

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_two_days_of_hours_run_across_two_workers_as_embedded(pg_cluster: Cluster) -> None:
    pipeline = pg_cluster.pipeline("hours_into_days")
    pg_cluster.start_worker("hours_into_days", "--concurrency", "2")
    pg_cluster.start_worker("hours_into_days", "--concurrency", "2")
    days = [dt.date(2025, 3, 3), dt.date(2025, 3, 4)]
    run_ids = [pipeline.materialize_all("daily_events", partition=day).run_id for day in days]
    embedded = pg_cluster.pipeline("hours_into_days", store="memory", executor=InProcessExecutor())
    for day, run_id in zip(days, run_ids, strict=True):
        result = pipeline.wait_for_run(run_id, timeout=120, poll_interval=0.1)
        if result.status != RunStatus.SUCCESS:
            pytest.fail(f"run {run_id} is {result.status.value}\n{pg_cluster.worker_logs()}")
        embedded.materialize_all("daily_events", partition=day).raise_for_status()
        assert pipeline.load("daily_events", day) == embedded.load("daily_events", day) == 276
        [daily] = [r for r in result.materializations if r.asset == "daily_events"]
        upstream = pipeline.store.upstream(daily.id, depth=1)
        assert len(upstream) == 24 and {n.run_id for n in upstream} == {run_id}
        done = Counter(e.asset for e in pg_cluster.executions(run_id) if e.event == "done")
        assert done == Counter({"hourly_events": 24, "daily_events": 1})
