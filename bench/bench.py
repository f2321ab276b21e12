"""FlowStone orchestration benchmark, with an optional side-by-side run of Dagster.

A benchmark, not a test: it asserts nothing about time, it prints a table. Each case runs on
the in-memory metadata store and on a fresh SQLite file, both with the in-memory I/O manager
(so the numbers are orchestration: planning, status, lineage, audit, telemetry), plus one row on
SQLite with the filesystem I/O manager.

    python bench/bench.py                  # full run (Dagster too, if importable)
    python bench/bench.py --quick          # small sizes: a smoke run
    python bench/bench.py --repeat 5 --json results.json
    python bench/bench.py --dagster-cases chain,fan-200:memory
    python bench/bench.py --no-dagster

See bench/README.md for how to read the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import flowstone as fs

# --- the workloads ---------------------------------------------------------------------------

START = dt.date(2025, 1, 1)


@dataclass(frozen=True)
class Case:
    """One workload: ``kind`` is ``chain``, ``fan`` or ``daily``; ``size`` its parameter."""

    kind: str
    size: int
    stores: tuple[str, ...] = ("memory", "sqlite")

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.size}"

    @property
    def materializations(self) -> int:
        """How many asset materializations one run of the case performs."""
        return self.size + 2 if self.kind == "fan" else self.size

    @property
    def label(self) -> str:
        return {
            "chain": f"chain of {self.size}",
            "fan": f"fan-out/in {self.size}",
            "daily": f"{self.size} daily partitions",
        }[self.kind]


def cases(quick: bool) -> list[Case]:
    if quick:
        return [
            Case("chain", 10),
            Case("chain", 50, ("memory", "sqlite", "sqlite+files")),
            Case("fan", 20),
            Case("daily", 30),
        ]
    return [
        Case("chain", 10),
        Case("chain", 100),
        Case("chain", 500, ("memory", "sqlite", "sqlite+files")),
        Case("fan", 200),
        Case("daily", 365),
    ]


def make_function(name: str, params: Sequence[str], expr: str) -> Callable[..., Any]:
    """A plain function ``name(*params): return expr``. Both libraries learn an asset's
    upstream assets from its parameter names, so generated graphs need generated signatures."""
    namespace: dict[str, Any] = {"dt": dt}
    exec(f"def {name}({', '.join(params)}):\n    return {expr}\n", namespace)
    return namespace[name]  # type: ignore[no-any-return]


def functions(case: Case) -> list[tuple[str, Callable[..., Any]]]:
    """The case's asset functions, shared by FlowStone and Dagster (the daily asset is built
    per library: it reads the partition from the library's own context)."""
    if case.kind == "chain":
        return [("a0", make_function("a0", [], "0"))] + [
            (f"a{i}", make_function(f"a{i}", [f"a{i - 1}"], f"a{i - 1} + 1"))
            for i in range(1, case.size)
        ]
    if case.kind == "fan":
        middles = [f"m{i}" for i in range(case.size)]
        return [
            ("root", make_function("root", [], "0")),
            *((m, make_function(m, ["root"], f"root + {i}")) for i, m in enumerate(middles)),
            # The sink takes all its upstream values as parameters: a real fan-in that loads
            # every value, not just an ordering (`depends_on`).
            ("sink", make_function("sink", middles, " + ".join(middles))),
        ]
    raise ValueError(case.kind)


def expected(case: Case) -> int:
    """The value of the last asset, checked after each run (correctness, not timing)."""
    if case.kind == "chain":
        return case.size - 1
    return sum(range(case.size))


def days(case: Case) -> list[dt.date]:
    return [START + dt.timedelta(days=i) for i in range(case.size)]


# --- timing ----------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    label: str
    store: str
    materializations: int
    flowstone_s: list[float] = field(default_factory=list)
    dagster_s: list[float] = field(default_factory=list)

    @property
    def flowstone_best(self) -> float | None:
        return min(self.flowstone_s) if self.flowstone_s else None

    @property
    def dagster_best(self) -> float | None:
        return min(self.dagster_s) if self.dagster_s else None


Setup = Callable[[Case, str], Any]  # a context manager factory yielding something to run


def best_of(
    repeat: int, setup: Setup, run: Callable[[Case, Any], None], case: Case, store: str
) -> list[float]:
    """Time ``run`` ``repeat`` times, each on a fresh ``setup`` (built outside the timing)."""
    times = []
    for _ in range(repeat):
        with setup(case, store) as target:
            gc.collect()
            start = time.perf_counter()
            run(case, target)
            times.append(time.perf_counter() - start)
    return times


# --- FlowStone -------------------------------------------------------------------------------


def flowstone_assets(case: Case) -> list[fs.AssetDef]:
    if case.kind == "daily":
        fn = make_function("x", ["ctx"], "ctx.partition.toordinal()")
        return [fs.asset(name="x", partitioned_by=fs.DailyPartitions(start=START.isoformat()))(fn)]
    return [fs.asset(name=name)(fn) for name, fn in functions(case)]


@fs.asset(name="bench_warmup")
def _warmup() -> int:
    return 1


@contextmanager
def flowstone_pipeline(case: Case, store: str) -> Iterator[fs.Pipeline]:
    """A fresh pipeline on a fresh store, opened and warmed up.

    Opening the store (SQLAlchemy import, engine, migrations) and a first materialization of an
    unrelated one-asset pipeline on the same store happen here, outside the timing.
    """
    tmp = Path(tempfile.mkdtemp(prefix="flowstone-bench-"))
    try:
        spec = "memory" if store == "memory" else f"sqlite:///{tmp / 'flowstone.db'}"
        io = "filesystem" if store == "sqlite+files" else "memory"
        # The built-in "filesystem" manager, rooted in the temp dir instead of ./.flowstone.
        managers = {"filesystem": fs.FilesystemIOManager(tmp / "storage")}
        pipeline = fs.Pipeline(
            flowstone_assets(case), store=spec, io_managers=managers, default_io_manager=io
        )
        with fs.Pipeline(
            [_warmup], store=pipeline.store, io_managers=managers, default_io_manager=io
        ) as warm:
            warm.materialize_all().raise_for_status()
        try:
            yield pipeline
        finally:
            pipeline.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def flowstone_run(case: Case, pipeline: fs.Pipeline) -> None:
    if case.kind == "daily":
        for day in days(case):
            pipeline.materialize("x", partition=day).raise_for_status()
        return
    pipeline.materialize_all().raise_for_status()


def flowstone_check(case: Case, pipeline: fs.Pipeline) -> None:
    if case.kind == "daily":
        last = days(case)[-1]
        got, want = pipeline.load("x", last), last.toordinal()
    else:
        got, want = pipeline.load(functions(case)[-1][0]), expected(case)
    if got != want:
        raise RuntimeError(f"FlowStone {case.id}: got {got!r}, expected {want!r}")


# --- Dagster ---------------------------------------------------------------------------------

DAGSTER_QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def dagster_available() -> bool:
    return importlib.util.find_spec("dagster") is not None


def dagster_assets(case: Case) -> list[Any]:
    import dagster as dg

    if case.kind == "daily":
        # Unannotated `context`: Dagster resolves annotations, and they are strings here.
        fn = make_function(
            "x", ["context"], "dt.date.fromisoformat(context.partition_key).toordinal()"
        )
        daily = dg.DailyPartitionsDefinition(start_date=START.isoformat())
        return [dg.asset(name="x", partitions_def=daily)(fn)]
    return [dg.asset(name=name)(fn) for name, fn in functions(case)]


@dataclass
class DagsterTarget:
    assets: list[Any]
    instance: Any
    resources: dict[str, Any]


@contextmanager
def dagster_instance(case: Case, store: str) -> Iterator[DagsterTarget]:
    """A fresh instance (ephemeral: in-memory storage; local_temp: SQLite files), warmed up by
    materializing an unrelated one-asset job on it, outside the timing."""
    import dagster as dg

    tmp = tempfile.mkdtemp(prefix="dagster-bench-")
    try:
        if store == "memory":
            instance = dg.DagsterInstance.ephemeral(tempdir=tmp)
        else:
            instance = dg.DagsterInstance.local_temp(
                tempdir=tmp, overrides={"telemetry": {"enabled": False}}
            )
        # Default I/O manager of `materialize` is fs_io_manager (pickle files under the
        # instance's storage folder): used for the "sqlite+files" row only.
        resources = {} if store == "sqlite+files" else {"io_manager": dg.mem_io_manager}

        @dg.asset(name="bench_warmup")
        def warmup() -> int:
            return 1

        dg.materialize([warmup], instance=instance, resources=resources, run_config=DAGSTER_QUIET)
        try:
            yield DagsterTarget(dagster_assets(case), instance, resources)
        finally:
            instance.dispose()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def dagster_run(case: Case, target: DagsterTarget) -> None:
    import dagster as dg

    keys = [day.isoformat() for day in days(case)] if case.kind == "daily" else [None]
    for key in keys:
        dg.materialize(
            target.assets,
            instance=target.instance,
            resources=target.resources,
            run_config=DAGSTER_QUIET,
            partition_key=key,
        )  # raise_on_error=True: a failure raises


# --- import time and memory ------------------------------------------------------------------


def best_subprocess(code: str, repeat: int, env: dict[str, str], *, wall: bool) -> float:
    """Best of ``repeat`` fresh interpreters: printed in-process seconds, or wall seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
        ).stdout
        elapsed = time.perf_counter() - start
        best = min(best, elapsed if wall else float(out.strip().splitlines()[-1]))
    return best


@contextmanager
def warm_bytecode_env() -> Iterator[dict[str, str]]:
    """An environment whose interpreters read and write bytecode in a private cache.

    Without it, ``PYTHONDONTWRITEBYTECODE`` or a source file edited since its ``.pyc`` was
    written makes every import compile that module again, and the import time measures the
    compiler. The private cache (outside the checkout) is filled by one untimed import first.
    """
    cache = tempfile.mkdtemp(prefix="bench-pycache-")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = cache
    try:
        yield env
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def import_times(module: str, repeat: int, env: dict[str, str]) -> dict[str, float]:
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=env)  # warm
    timed = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    return {
        "in_process_s": best_subprocess(timed, repeat, env, wall=False),
        "wall_minus_bare_s": best_subprocess(f"import {module}", repeat, env, wall=True)
        - best_subprocess("pass", repeat, env, wall=True),
    }


def traced_peak(setup: Setup, run: Callable[[Case, Any], None], case: Case, store: str) -> int:
    """Peak bytes allocated by Python during one run (tracemalloc; started after setup)."""
    with setup(case, store) as target:
        gc.collect()
        tracemalloc.start()
        try:
            run(case, target)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()


def max_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # macOS: bytes; Linux: KiB


# --- reporting -------------------------------------------------------------------------------


def selected(selectors: Sequence[str], case: Case, store: str) -> bool:
    """``--dagster-cases`` matching: ``all``, a kind (``chain``), an id (``chain-500``), either
    with ``:store`` (``daily-365:memory``), or a bare ``:store``."""
    names = {"all", case.kind, case.id, f":{store}", f"{case.kind}:{store}", f"{case.id}:{store}"}
    return any(s in names for s in selectors)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}" if value < 10 else f"{value:.2f}"


def per_mat_ms(value: float | None, n: int) -> str:
    return "-" if value is None else f"{value / n * 1000:.3f}"


def ratio(dagster: float | None, flowstone: float | None) -> str:
    if dagster is None or not flowstone:
        return "-"
    r = dagster / flowstone
    return f"{r:.0f}x" if r >= 10 else f"{r:.1f}x"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + (" (uncommitted changes)" if dirty else "")


def print_table(rows: list[Row], repeat: int, dagster_repeat: int, with_dagster: bool) -> None:
    header = ["case", "store", "mats", "flowstone s", "ms/mat"]
    if with_dagster:
        header += ["dagster s", "ms/mat", "dagster/flowstone"]
    table = [header]
    for row in rows:
        n = row.materializations
        line = [
            row.label,
            row.store,
            str(n),
            seconds(row.flowstone_best),
            per_mat_ms(row.flowstone_best, n),
        ]
        if with_dagster:
            line += [
                seconds(row.dagster_best),
                per_mat_ms(row.dagster_best, n),
                ratio(row.dagster_best, row.flowstone_best),
            ]
        table.append(line)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print()
    note = f"FlowStone best of {repeat}"
    if with_dagster:
        note += f", Dagster best of {dagster_repeat}; '-' = not run"
    print(f"Timed section only ({note}). mats = materializations per run.")
    for i, r in enumerate(table):
        cells = [
            c.ljust(w) if j < 2 else c.rjust(w)
            for j, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="FlowStone repetitions (best of)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-dagster", action="store_true", help="skip the Dagster comparison")
    parser.add_argument(
        "--dagster-cases",
        default="all",
        metavar="SEL",
        help="comma-separated Dagster rows to run: all, none, a kind (chain, fan, daily), "
        "a case id (chain-500), optionally with :store (daily-365:memory, :sqlite). "
        "Default: all",
    )
    parser.add_argument(
        "--dagster-repeat", type=int, default=1, help="Dagster repetitions (default 1: slow)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.dagster_repeat < 1:
        parser.error("--repeat and --dagster-repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", module="dagster")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    all_cases = cases(args.quick)
    import_repeat = 3 if args.quick else 10

    have_dagster = dagster_available()
    dagster_selectors = [s.strip() for s in args.dagster_cases.split(",") if s.strip()]
    with_dagster = have_dagster and not args.no_dagster and dagster_selectors != ["none"]
    dagster_version = importlib.metadata.version("dagster") if have_dagster else None

    print(
        f"FlowStone {fs.__version__} (git {git_revision() or 'unknown'}) | Python "
        f"{platform.python_version()} | {platform.system()} {platform.machine()} | "
        f"{os.cpu_count()} CPUs"
    )
    if not have_dagster:
        print("dagster not installed (pip install dagster to compare)")
    elif not with_dagster:
        print(f"dagster {dagster_version}: skipped (--no-dagster or --dagster-cases none)")
    else:
        print(f"dagster {dagster_version}: comparing ({args.dagster_cases})")

    rows = [Row(c.id, c.label, s, c.materializations) for c in all_cases for s in c.stores]
    by_key = {(r.case, r.store): r for r in rows}

    # FlowStone first, so its memory numbers are not inflated by Dagster being loaded.
    for case in all_cases:
        for store in case.stores:
            row = by_key[case.id, store]
            row.flowstone_s = best_of(args.repeat, flowstone_pipeline, flowstone_run, case, store)
            with flowstone_pipeline(case, store) as pipeline:  # an untimed correctness check
                flowstone_run(case, pipeline)
                flowstone_check(case, pipeline)
            print(f"  flowstone {row.label:<20} {store:<13} {seconds(row.flowstone_best)} s")

    peak_case = next(c for c in reversed(all_cases) if c.kind == "chain")
    memory: dict[str, Any] = {"peak_case": peak_case.id}
    for store in ("memory", "sqlite"):
        memory[f"flowstone_tracemalloc_peak_{store}"] = traced_peak(
            flowstone_pipeline, flowstone_run, peak_case, store
        )
    memory["max_rss_after_flowstone"] = max_rss_bytes()

    modules = ["flowstone", "dagster"] if with_dagster else ["flowstone"]
    with warm_bytecode_env() as env:
        imports = {module: import_times(module, import_repeat, env) for module in modules}

    if with_dagster:
        for case in all_cases:
            for store in case.stores:
                if not selected(dagster_selectors, case, store):
                    continue
                row = by_key[case.id, store]
                row.dagster_s = best_of(
                    args.dagster_repeat, dagster_instance, dagster_run, case, store
                )
                print(f"  dagster   {row.label:<20} {store:<13} {seconds(row.dagster_best)} s")
        memory["max_rss_after_dagster"] = max_rss_bytes()

    print_table(rows, args.repeat, args.dagster_repeat, with_dagster)

    print()
    print(f"import time (best of {import_repeat} fresh interpreters, warm bytecode cache):")
    for module, t in imports.items():
        print(
            f"  import {module:<10} {t['in_process_s'] * 1000:7.1f} ms in-process, "
            f"{t['wall_minus_bare_s'] * 1000:7.1f} ms wall minus `python -c pass`"
        )
    print()
    print("memory:")
    for store in ("memory", "sqlite"):
        peak = memory[f"flowstone_tracemalloc_peak_{store}"]
        print(f"  tracemalloc peak, FlowStone {peak_case.label}, {store} store: {mib(peak)}")
    rss = memory["max_rss_after_flowstone"]
    print(f"  max RSS of this process after the FlowStone cases: {mib(rss)}")
    if "max_rss_after_dagster" in memory:
        print(f"  max RSS after the Dagster cases too: {mib(memory['max_rss_after_dagster'])}")

    if args.json:
        result = {
            "flowstone_version": fs.__version__,
            "git": git_revision(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "dagster_version": dagster_version if with_dagster else None,
            "repeat": args.repeat,
            "dagster_repeat": args.dagster_repeat if with_dagster else None,
            "quick": args.quick,
            "rows": [
                {
                    **asdict(row),
                    "flowstone_best_s": row.flowstone_best,
                    "dagster_best_s": row.dagster_best,
                }
                for row in rows
            ],
            "import": imports,
            "memory": memory,
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
