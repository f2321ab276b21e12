"""A backfill killed mid-way (SIGKILL, in a child process) is resumed from a new process over
the same SQLite file: nothing is lost, nothing stays running, no partition succeeds twice."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from flowstone.backfill import INTERRUPTED_ERROR
from flowstone.backfill_records import BackfillStatus
from flowstone.records import RunStatus, Status

FLOW = """
import datetime as dt
import os
import sys
import time
from pathlib import Path

import flowstone as fs

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")
HERE = Path(__file__).parent


@fs.asset(partitioned_by=DAYS)
def events(ctx: fs.AssetContext) -> int:
    with open(HERE / "calls.log", "a") as log:
        log.write(ctx.partition.isoformat() + "\\n")
    marker = HERE / "blocked"
    if ctx.partition == dt.date(2025, 1, 13) and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(600)  # until the test kills this process
    return ctx.partition.day


pipeline = fs.Pipeline([events], store=os.environ["FLOW_STORE"])

if __name__ == "__main__":
    pipeline.backfill("events", partitions="all", parallel=2, chunk_size=5)
"""


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("killed_flow", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_killed_backfill_resumes_in_a_new_process(tmp_path: Path) -> None:
    flow = tmp_path / "flow.py"
    flow.write_text(FLOW)
    env = {**os.environ, "FLOW_STORE": f"sqlite:///{tmp_path / 'meta.db'}"}
    child = subprocess.Popen([sys.executable, str(flow)], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "blocked").exists():
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the child never reached 2025-01-13"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stderr is not None:
            child.stderr.close()

    os.environ["FLOW_STORE"] = env["FLOW_STORE"]
    try:
        pipeline = load(flow).pipeline
    finally:
        del os.environ["FLOW_STORE"]
    with pipeline:
        [backfill] = pipeline.backfills()
        report = pipeline.backfill_status(backfill.id)
        assert backfill.status == BackfillStatus.RUNNING
        assert not report.active  # its process is gone: no waiting for a lease
        assert 0 < backfill.cursor < 31  # some chunks were recorded before the kill

        resumed = pipeline.resume_backfill(backfill.id)
        assert resumed.ok, resumed.failures
        assert (resumed.backfill.success, resumed.backfill.total) == (31, 31)

        store = pipeline.store
        succeeded = Counter(
            r.partition_key
            for r in store.list_materializations(asset="events", status=Status.SUCCESS, limit=None)
        )
        assert sorted(succeeded.values()) == [1] * 31  # every day, exactly once
        interrupted = store.list_materializations(
            asset="events", partition_key="d:2025-01-13", status=Status.FAILED
        )
        assert [r.error_type for r in interrupted] == [INTERRUPTED_ERROR]
        for status in (Status.PENDING, Status.RUNNING):
            assert store.list_materializations(status=status) == []
        runs = [r for r in store.list_runs(limit=100) if r.tags.get("backfill") == backfill.id]
        assert all(r.status != RunStatus.RUNNING for r in runs)
        assert RunStatus.FAILED in {r.status for r in runs}  # the one the kill cut short

    calls = Counter((tmp_path / "calls.log").read_text().split())
    assert calls["2025-01-13"] == 2  # cut short, then run again
    assert calls["2025-01-01"] == 1  # recorded before the kill: not run again
