"""Throughput of FlowStone's distributed executor beside procrastinate's own, in the same run.

Not a test: it asserts nothing about time and prints a table. For each number of worker
processes (1 and 2 by default) it measures, on the local PostgreSQL, each case in a new schema
(so both engines start from the same empty tables):

- raw procrastinate: N jobs of a no-op synchronous task, deferred in one batch, run by plain
  procrastinate workers (the same worker settings FlowStone uses: concurrency, polling, and
  deleting succeeded jobs);
- FlowStone: one run of N independent no-op assets submitted with ``materialize_all``, run by
  ``flowstone worker`` processes. Each materialization records ``running`` (the worker's claim
  of the step), then ``success`` with its audit event, and reads whether the run has a step
  left; the last one closes the run: everything a real run records. These assets have no
  dependents, so their outcomes commit without the run's lock (a step with dependents records
  its outcome under it, with the steps it makes ready). The assets return nothing and a null
  I/O manager stores it, so the table shows the orchestration, not the disk.

Throughput is jobs (or materializations) per second, from the moment the work is enqueued to the
moment the last one is recorded, with the workers already started and idle. The ratio column is
FlowStone's share of the raw engine's throughput (the target is at least 70%).

    .venv/bin/python bench/bench_distributed.py                    # 2000 per case, 1 and 2 workers
    .venv/bin/python bench/bench_distributed.py --jobs 500 --workers 1,2,4 --concurrency 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "src")]

import flowstone as fs  # noqa: E402
from flowstone.io import IOManager, StorageKey  # noqa: E402

RAW_TASK = "bench.noop"


# --- what the workers load ------------------------------------------------------------------
class NullIOManager(IOManager):
    """Stores nothing: the no-op assets have no value worth a disk write."""

    def store(self, key: StorageKey, value: Any) -> None:
        return None

    def load(self, key: StorageKey) -> Any:
        return None

    def exists(self, key: StorageKey) -> bool:
        return True

    def delete(self, key: StorageKey) -> None:
        return None


def noop_pipeline() -> fs.Pipeline:
    """``$BENCH_ASSETS`` independent assets that do nothing (``flowstone worker -p``)."""
    count = int(os.environ.get("BENCH_ASSETS", "100"))

    def noop() -> None:
        return None

    assets = [fs.asset(name=f"noop_{i:05d}")(noop) for i in range(count)]
    return fs.Pipeline(
        assets, io_managers={"default": NullIOManager()}, executor=fs.DistributedExecutor()
    )


def raw_worker(dsn: str, concurrency: int) -> None:
    """A plain procrastinate worker of the no-op task (run as a subprocess)."""
    from procrastinate import App, PsycopgConnector

    app = App(connector=PsycopgConnector(conninfo=dsn, min_size=2, max_size=concurrency + 4))

    @app.task(name=RAW_TASK, queue="raw")
    def noop(**_: Any) -> None:
        return None

    app.run_worker(
        queues=["raw"],
        concurrency=concurrency,
        fetch_job_polling_interval=1.0,
        delete_jobs="successful",
    )


# --- measuring -------------------------------------------------------------------------------
def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def check_alive(processes: list[subprocess.Popen[bytes]], logs: Path) -> None:
    """Stop waiting when a worker died (a bad import, say): the work would never end."""
    for process in processes:
        if process.poll() is not None:
            raise SystemExit(f"a worker exited with code {process.returncode}; see {logs}")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


class Stopwatch:
    """Wall time and this machine's busy CPU time (every process: workers, PostgreSQL, this
    one) since it was started; the CPU part is None where /proc/stat is missing (not Linux)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = busy_cpu_s()

    def elapsed(self) -> tuple[float, float | None]:
        cpu = busy_cpu_s()
        used = None if cpu is None or self.cpu is None else cpu - self.cpu
        return time.perf_counter() - self.wall, used


def busy_cpu_s() -> float | None:
    """Seconds the machine's CPUs spent busy since boot (user, nice, system, irq, softirq:
    idle, I/O wait and time stolen by the hypervisor excluded)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def measure_raw(
    dsn: str, env: dict[str, str], jobs: int, workers: int, concurrency: int, logs: Path
) -> tuple[float, float | None]:
    import psycopg
    from procrastinate import App, SyncPsycopgConnector

    procs = [
        start(
            [sys.executable, __file__, "--raw-worker", dsn, "--concurrency", str(concurrency)],
            env,
            logs / f"raw-{workers}-{i}.log",
        )
        for i in range(workers)
    ]
    app = App(connector=SyncPsycopgConnector(conninfo=dsn, min_size=1, max_size=2))
    app.open()
    try:
        time.sleep(3.0)  # the workers import and start
        task = app.configure_task(RAW_TASK, queue="raw")
        clock = Stopwatch()
        task.batch_defer(*({"i": i} for i in range(jobs)))
        # As FlowStone's submit does after a wide run (SQLStore.refresh_statistics): without
        # statistics, procrastinate's fetch sorts every waiting job to take one, and the raw
        # engine measured 166 jobs/s instead of about 350 with 4,000 jobs waiting.
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE procrastinate_jobs")
        while True:
            left = sum(
                int(row["todo"]) + int(row["doing"])
                for row in app.job_manager.list_queues(queue="raw")
            )
            if left == 0:
                break
            check_alive(procs, logs)
            time.sleep(0.02)
        elapsed, cpu = clock.elapsed()
    finally:
        app.close()
        stop(procs)
    return jobs / elapsed, None if cpu is None else cpu * 1000 / jobs


def measure_flowstone(
    env: dict[str, str], workers: int, concurrency: int, logs: Path
) -> tuple[float, float | None]:
    spec = f"{__file__}:noop_pipeline"
    procs = [
        start(
            [
                sys.executable,
                "-m",
                "flowstone",
                "worker",
                "-p",
                spec,
                "--concurrency",
                str(concurrency),
            ],
            env,
            logs / f"flowstone-{workers}-{i}.log",
        )
        for i in range(workers)
    ]
    pipeline = noop_pipeline()
    try:
        pipeline.executor.prepare(pipeline.store)  # type: ignore[attr-defined]
        time.sleep(3.0)
        clock = Stopwatch()
        run = pipeline.materialize_all()
        # Poll the run row only (as the raw case polls queue counts): reading every record
        # each time would compete with the workers for this machine's CPUs.
        while (current := pipeline.store.get_run(run.run_id)) and current.status == "running":
            check_alive(procs, logs)
            time.sleep(0.02)
        elapsed, cpu = clock.elapsed()
        result = pipeline.wait_for_run(run.run_id)
        if result.status != fs.RunStatus.SUCCESS:
            raise SystemExit(f"the FlowStone run ended {result.status.value}; see {logs}")
        done = len(result.materializations)
        return done / elapsed, None if cpu is None else cpu * 1000 / done
    finally:
        pipeline.close()
        stop(procs)


@contextmanager
def fresh_schema(
    admin: Any, base: str, jobs: int, logs: Path
) -> Iterator[tuple[str, dict[str, str]]]:
    """A new schema for one case, its queue tables created; yields its queue DSN and the
    workers' environment (also set in ``os.environ`` for this process), drops it afterwards.

    Each case gets its own so that both engines start from the same empty tables. In one shared
    schema the second case ran on what the first left (the deleted jobs' dead rows, statistics
    taken at another size) and procrastinate's fetch planned differently: the FlowStone case's
    fetches took about 2.5 times as long as the raw case's before it.
    """
    import uuid
    from urllib.parse import quote

    import sqlalchemy as sa

    from flowstone.execution import queue

    schema = f"flowstone_bench_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{base}?options={quote(f'-csearch_path={schema}')}"
        env = {
            **os.environ,
            "FLOWSTONE_DATABASE_URL": url,
            "FLOWSTONE_HOME": str(logs / "home"),
            "BENCH_ASSETS": str(jobs),
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        }
        os.environ.update(
            {k: env[k] for k in ("FLOWSTONE_DATABASE_URL", "FLOWSTONE_HOME", "BENCH_ASSETS")}
        )
        dsn = queue.conninfo(sa.make_url(url))
        queue.ensure_schema(dsn)
        yield dsn, env
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


def cpu_text(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs / assets per case")
    parser.add_argument("--workers", default="1,2", help="worker process counts to try")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once per worker")
    parser.add_argument("--raw-worker", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        raw_worker(args.raw_worker, args.concurrency)
        return

    import sqlalchemy as sa

    base = os.environ.get(
        "FLOWSTONE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    admin = sa.create_engine(base)
    logs = Path(tempfile.mkdtemp(prefix="flowstone-bench-"))
    print(f"{args.jobs} no-op jobs per case, {args.concurrency} at once per worker; logs: {logs}")
    print(
        f"{'workers':>7}  {'procrastinate/s':>15}  {'flowstone/s':>11}  {'ratio':>6}"
        f"  {'CPU ms/job raw':>14}  {'flowstone':>9}"
    )
    try:
        for workers in (int(w) for w in args.workers.split(",")):
            with fresh_schema(admin, base, args.jobs, logs) as (dsn, env):
                raw, raw_cpu = measure_raw(dsn, env, args.jobs, workers, args.concurrency, logs)
            with fresh_schema(admin, base, args.jobs, logs) as (_, env):
                ours, our_cpu = measure_flowstone(env, workers, args.concurrency, logs)
            print(
                f"{workers:>7}  {raw:>15.0f}  {ours:>11.0f}  {ours / raw:>6.0%}"
                f"  {cpu_text(raw_cpu):>14}  {cpu_text(our_cpu):>9}",
                flush=True,
            )
    finally:
        admin.dispose()


if __name__ == "__main__":
    main()
