"""A PostgreSQL schema of its own, real ``flowstone worker`` subprocesses, and what they did.

Used by the tests of distributed execution (and, for its server URL, every PostgreSQL test).
Every cluster lives in a fresh schema (FlowStone's tables and procrastinate's side by side, found
through ``search_path``), dropped at the end; its workers are stopped first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import flowstone as fs
from flowstone.records import RunResult, RunStatus

REPO = Path(__file__).resolve().parents[2]
PIPELINES = Path(__file__).with_name("pipelines.py")
#: The test PostgreSQL server (tests make a schema of their own in it).
POSTGRES_URL = os.environ.get(
    "FLOWSTONE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: Worker timings that keep tests short: a killed worker's job is handed back within ~3 s.
FAST_RECOVERY = (
    "--heartbeat-interval",
    "0.5",
    "--stalled-after",
    "2",
    "--recovery-interval",
    "1",
    "--poll-interval",
    "0.2",
)


@dataclass(frozen=True, slots=True)
class Execution:
    """One line of the assets' execution log."""

    at: float
    run_id: str
    asset: str
    partition_key: str
    attempt: int
    event: str


@dataclass
class Cluster:
    """A schema, its environment, and the worker processes started in it."""

    root: Path
    schema: str
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pipeline(self, factory: str, **options: Any) -> fs.Pipeline:
        """A pipeline of tests/distributed_fixtures/pipelines.py, in this cluster."""
        from distributed_fixtures import pipelines

        build: Callable[..., fs.Pipeline] = getattr(pipelines, factory)
        return build(**options)

    def start_worker(self, factory: str, *args: str) -> subprocess.Popen[bytes]:
        """``flowstone worker`` serving ``factory``'s pipeline, output in a log file."""
        number = len(self.workers)
        out = (self.root / f"worker-{number}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "flowstone",
            "worker",
            "-p",
            f"{PIPELINES}:{factory}",
            "--name",
            f"w{number}",
            *FAST_RECOVERY,
            *args,
        ]
        process = subprocess.Popen(
            command, env=self.env, cwd=self.root, stdout=out, stderr=subprocess.STDOUT
        )
        self.workers.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
        """Signal a worker and wait for it to exit; return its exit code."""
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def executions(self, run_id: str | None = None) -> list[Execution]:
        """What the assets logged, oldest first (optionally of one run)."""
        path = Path(self.env["FLOWSTONE_TEST_LOG"])
        if not path.exists():
            return []
        found = []
        for line in path.read_text().splitlines():
            at, run, asset, key, attempt, event = line.split(" ")
            if run_id is None or run == run_id:
                found.append(Execution(float(at), run, asset, key, int(attempt), event))
        return sorted(found, key=lambda e: e.at)

    def finish(self, pipeline: fs.Pipeline, run_id: str, timeout: float = 90) -> RunResult:
        """The run's result once it ended or rests on approvals (fails with the workers' logs
        when it is still running after ``timeout``: a hang guard)."""
        result = pipeline.wait_for_run(run_id, timeout=timeout, poll_interval=0.1)
        if result.status == RunStatus.RUNNING:
            pytest.fail(f"run {run_id} still running after {timeout} s\n{self.worker_logs()}")
        return result

    def worker_logs(self) -> str:
        """Every worker's output, for failure messages."""
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-4000:]}"
            for p in sorted(self.root.glob("worker-*.log"))
        )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` (a hang guard)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def cluster(root: Path, **extra_env: str) -> Iterator[Cluster]:
    """A fresh schema with its environment set in ``os.environ`` (restored afterwards)."""
    import sqlalchemy as sa

    schema = f"flowstone_dist_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    root.mkdir(parents=True, exist_ok=True)
    url = f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    env_vars = {
        "FLOWSTONE_DATABASE_URL": url,
        "FLOWSTONE_HOME": str(root / "home"),
        "FLOWSTONE_EXECUTOR": "distributed",
        "FLOWSTONE_TEST_LOG": str(root / "executions.log"),
        "FLOWSTONE_TEST_SENTINEL": str(root / "sentinel-imported"),
        "PYTHONPATH": os.pathsep.join(
            [str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
        ),
        **extra_env,
    }
    saved = {name: os.environ.get(name) for name in env_vars}
    os.environ.update(env_vars)
    made = Cluster(root=root, schema=schema, env=dict(os.environ))
    try:
        yield made
    finally:
        for process in made.workers:
            if process.poll() is None:
                process.kill()
                process.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
