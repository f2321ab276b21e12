"""The pipeline and its one materializer path, over the memory and SQLite stores."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import flowstone as fs
from flowstone.errors import (
    DefinitionError,
    NotMaterializedError,
    PartitionError,
    RunFailedError,
    UnknownAssetError,
)
from flowstone.records import Status
from flowstone.telemetry import TelemetryEvent


def test_the_issue_example_runs_on_the_sqlite_default(flowstone_home: Path) -> None:
    @fs.asset(description="Raw events from source systems")
    def raw_events(ctx):
        return [{"user": "a", "n": 3}, {"user": "b", "n": 5}]

    @fs.asset(depends_on=["raw_events"], partitioned_by=fs.DailyPartitions(start="2025-01-01"))
    def daily_report(ctx, raw_events):
        return {"day": ctx.partition.isoformat(), "total": sum(e["n"] for e in raw_events)}

    with fs.Pipeline([raw_events, daily_report]) as pipeline:
        run = pipeline.materialize_all("daily_report", partition=dt.date(2025, 1, 15))
        assert run.status == "success"
        assert pipeline.load("daily_report", dt.date(2025, 1, 15)) == {
            "day": "2025-01-15",
            "total": 8,
        }
    assert (flowstone_home / "flowstone.db").is_file()
    assert any((flowstone_home / "storage" / "daily_report").iterdir())


def test_statuses_timing_lineage_and_audit_are_recorded(store_url: str) -> None:
    @fs.asset
    def raw():
        return [1, 2, 3]

    @fs.asset
    def doubled(ctx, raw):
        ctx.metadata["rows"] = len(raw)
        return [x * 2 for x in raw]

    pipeline = fs.Pipeline([raw, doubled], store=store_url)
    run = pipeline.materialize_all()
    assert run.ok and len(run.materializations) == 2
    record = run["doubled"]
    assert record.status == Status.SUCCESS
    assert record.metadata["rows"] == 3
    assert record.started_at is not None and record.completed_at is not None
    assert record.duration_ms is not None and record.duration_ms >= 0
    assert record.run_id == run.run_id and record.attempt == 1
    assert record.io_manager == ("memory" if store_url == "memory" else "filesystem")

    stored = pipeline.store.get_materialization(record.id)
    assert stored is not None and stored.status == Status.SUCCESS

    upstream = pipeline.upstream_lineage("doubled")
    assert [(n.asset, n.materialization_id, n.depth) for n in upstream] == [
        ("raw", run["raw"].id, 1)
    ]
    downstream = pipeline.downstream_lineage("raw")
    assert [(n.asset, n.depth) for n in downstream] == [("doubled", 1)]
    impact = pipeline.impact("raw")
    assert [n.status for n in impact] == [Status.SUCCESS]

    actions = [e.action for e in pipeline.audit_log(run_id=run.run_id)]
    assert actions[0] == "run.started" and actions[-1] == "run.success"
    assert actions.count("materialization.success") == 2
    run_record = pipeline.store.get_run(run.run_id)
    assert run_record is not None and run_record.status == "success"
    assert run_record.completed_at is not None
    pipeline.close()


def test_diamond_runs_shared_parent_once_and_branches_in_parallel() -> None:
    calls: Counter[str] = Counter()
    barrier = threading.Barrier(2, timeout=5)

    @fs.asset
    def root():
        calls["root"] += 1
        return 1

    @fs.asset
    def left(root):
        calls["left"] += 1
        barrier.wait()  # only returns if `right` runs at the same time
        return root + 1

    @fs.asset
    def right(root):
        calls["right"] += 1
        barrier.wait()
        return root + 2

    @fs.asset
    def join(left, right):
        calls["join"] += 1
        return left + right

    pipeline = fs.Pipeline([root, left, right, join], store="memory", max_workers=4)
    run = pipeline.materialize_all("join")
    assert run.ok
    assert calls == Counter(root=1, left=1, right=1, join=1)
    assert pipeline.load("join") == 5


def test_failure_skips_downstream_and_unrelated_branches_finish(store_url: str) -> None:
    @fs.asset
    def source():
        return 1

    @fs.asset
    def broken(source):
        raise ValueError("bad row 7")

    @fs.asset
    def below(broken):
        return broken

    @fs.asset
    def further(below):
        return below

    @fs.asset
    def sibling(source):
        time.sleep(0.05)
        return source

    pipeline = fs.Pipeline([source, broken, below, further, sibling], store=store_url)
    run = pipeline.materialize_all()
    assert run.status == "failed"
    statuses = {r.asset: r.status for r in run.materializations}
    assert statuses == {
        "source": "success",
        "broken": "failed",
        "below": "skipped",
        "further": "skipped",
        "sibling": "success",
    }
    failed = run["broken"]
    assert failed.error_type == "ValueError"
    assert failed.error_message == "bad row 7"
    assert failed.error_traceback is not None and "bad row 7" in failed.error_traceback
    assert run["further"].error_message == "upstream asset 'broken' failed"
    # Nothing stays pending or running in the store.
    for record in pipeline.store.list_materializations(run_id=run.run_id):
        assert record.status in (Status.SUCCESS, Status.FAILED, Status.SKIPPED)
    with pytest.raises(RunFailedError, match="broken"):
        run.raise_for_status()
    pipeline.close()


def test_materialize_without_deps_reads_latest_success(store_url: str) -> None:
    @fs.asset
    def base():
        return 10

    @fs.asset
    def top(base):
        return base + 1

    pipeline = fs.Pipeline([base, top], store=store_url)
    with pytest.raises(NotMaterializedError, match="has no successful materialization"):
        pipeline.load("top")
    first = pipeline.materialize("top")
    assert not first.ok
    assert first["top"].error_type == "MissingUpstreamError"
    assert "with-deps" in (first["top"].error_message or "")

    base_run = pipeline.materialize("base")
    top_run = pipeline.materialize("top")
    assert top_run.ok
    [edge] = pipeline.upstream_lineage("top")
    assert edge.materialization_id == base_run["base"].id
    pipeline.close()


def test_partitions_flow_to_partitioned_assets_only() -> None:
    seen: list[object] = []

    @fs.asset
    def lookup():
        return {"a": 1}

    @fs.asset(partitioned_by=fs.StaticPartitions(["us", "eu"]))
    def region(ctx, lookup):
        seen.append(ctx.partition)
        return ctx.partition

    pipeline = fs.Pipeline([lookup, region], store="memory")
    run = pipeline.materialize_all("region", partition="eu")
    assert run.ok and seen == ["eu"]
    assert run["lookup"].partition_key == "n:"
    assert run["region"].partition_key == "s:eu"

    with pytest.raises(PartitionError, match="is partitioned"):
        pipeline.materialize_all("region")
    with pytest.raises(PartitionError):
        pipeline.materialize_all("region", partition="fr")
    with pytest.raises(PartitionError, match="None of 'lookup' is partitioned"):
        pipeline.materialize("lookup", partition="eu")


def test_reads_accept_asset_defs_and_reject_partitions_of_unpartitioned_assets() -> None:
    @fs.asset
    def plain():
        return 1

    pipeline = fs.Pipeline([plain], store="memory")
    pipeline.materialize_all()
    assert [r.asset for r in pipeline.status(plain)] == ["plain"]
    assert len(pipeline.history(plain)) == 1
    assert pipeline.load(plain) == 1
    assert pipeline.upstream_lineage(plain) == []
    with pytest.raises(PartitionError, match="not partitioned"):
        pipeline.load("plain", "2025-01-01")
    with pytest.raises(PartitionError, match="not partitioned"):
        pipeline.parse_partition("plain", "2025-01-01")


def test_partition_strings_are_parsed_by_reads_and_runs() -> None:
    @fs.asset(partitioned_by=fs.DailyPartitions(start="2025-01-01", end="2025-02-01"))
    def daily(ctx):
        return ctx.partition.isoformat()

    pipeline = fs.Pipeline([daily], store="memory")
    assert pipeline.parse_partition("daily", "2025-01-05") == dt.date(2025, 1, 5)
    assert pipeline.materialize("daily", partition=dt.date(2025, 1, 5)).ok
    assert pipeline.load(daily, dt.date(2025, 1, 5)) == "2025-01-05"


def test_unknown_asset_names_suggest() -> None:
    @fs.asset
    def orders():
        return []

    pipeline = fs.Pipeline([orders], store="memory")
    with pytest.raises(UnknownAssetError, match="Did you mean 'orders'"):
        pipeline.materialize("order")


def test_io_manager_selection_default_asset_and_call() -> None:
    default, special, per_call = fs.MemoryIOManager(), fs.MemoryIOManager(), fs.MemoryIOManager()

    @fs.asset
    def plain():
        return "p"

    @fs.asset(io_manager="special")
    def chosen():
        return "c"

    pipeline = fs.Pipeline(
        [plain, chosen],
        store="memory",
        io_managers={"default": default, "special": special, "call": per_call},
    )
    pipeline.materialize_all()
    key = fs.StorageKey("plain", None, "n:")
    assert default.load(key) == "p" and not special.exists(key)
    assert special.load(fs.StorageKey("chosen", None, "n:")) == "c"

    run = pipeline.materialize_all(io_manager="call")
    assert {r.io_manager for r in run.materializations} == {"call"}
    assert per_call.load(key) == "p" and per_call.load(fs.StorageKey("chosen", None, "n:")) == "c"


def test_io_manager_failure_fails_the_materialization(store_url: str, tmp_path: Path) -> None:
    @fs.asset
    def not_json():
        return {1, 2}  # a set: JSON cannot store it

    pipeline = fs.Pipeline(
        [not_json],
        store=store_url,
        io_managers={"default": fs.FilesystemIOManager(tmp_path / "values")},
    )
    run = pipeline.materialize("not_json")
    record = run["not_json"]
    assert record.status == Status.FAILED
    assert record.error_type == "IOManagerError"
    assert "JSON cannot store" in (record.error_message or "")
    assert not list((tmp_path / "values").rglob("*.json"))
    pipeline.close()


def test_telemetry_events_in_order() -> None:
    @fs.asset
    def a():
        return 1

    @fs.asset
    def b(a):
        return a

    pipeline = fs.Pipeline([a, b], store="memory")
    events: list[TelemetryEvent] = []
    unsubscribe = pipeline.subscribe(events.append)
    pipeline.materialize_all()
    names = [e.name for e in events]
    assert [(e.name, e.metadata.get("asset")) for e in events] == [
        ("run.start", None),
        ("materialization.start", "a"),
        ("io.store.start", "a"),
        ("io.store.stop", "a"),
        ("materialization.stop", "a"),
        ("materialization.start", "b"),
        ("io.load.start", "a"),
        ("io.load.stop", "a"),
        ("io.store.start", "b"),
        ("io.store.stop", "b"),
        ("materialization.stop", "b"),
        ("run.stop", None),
    ]
    stop = next(e for e in events if e.name == "materialization.stop")
    assert stop.measurements["duration_ms"] >= 0
    unsubscribe()
    pipeline.materialize_all()
    assert len(events) == len(names)


def test_a_failing_telemetry_handler_never_fails_a_run(caplog: pytest.LogCaptureFixture) -> None:
    @fs.asset
    def a():
        return 1

    pipeline = fs.Pipeline([a], store="memory")

    def explode(event: TelemetryEvent) -> None:
        raise RuntimeError("handler bug")

    pipeline.subscribe(explode)
    assert pipeline.materialize_all().ok
    assert "handler bug" in caplog.text


def test_interrupt_is_recorded_then_raised(store_url: str) -> None:
    @fs.asset
    def slow():
        raise KeyboardInterrupt

    pipeline = fs.Pipeline([slow], store=store_url)
    with pytest.raises(KeyboardInterrupt):
        pipeline.materialize("slow")
    [record] = pipeline.store.list_materializations(asset="slow")
    assert record.status == Status.FAILED
    assert record.error_message == "interrupted by KeyboardInterrupt"
    [run] = pipeline.store.list_runs()
    assert run.status == "failed" and run.completed_at is not None
    pipeline.close()


def test_pending_records_exist_while_a_run_is_in_flight() -> None:
    observed: list[list[str]] = []
    holder: dict[str, fs.Pipeline] = {}

    @fs.asset
    def first(ctx):
        records = holder["p"].store.list_materializations(run_id=ctx.run_id)
        observed.append(sorted(f"{r.asset}:{r.status}" for r in records))
        return 1

    @fs.asset
    def second(first):
        return first

    holder["p"] = pipeline = fs.Pipeline([first, second], store="memory")
    pipeline.materialize_all()
    assert observed == [["first:running", "second:pending"]]


def test_a_failure_atop_a_long_chain_skips_everything_below() -> None:
    assets = [fs.asset(name="a0")(lambda: 1 / 0)]
    for i in range(1, 1500):
        assets.append(fs.asset(name=f"a{i}", depends_on=[f"a{i - 1}"])(lambda: None))
    pipeline = fs.Pipeline(assets, store="memory")
    run = pipeline.materialize_all()
    assert run["a0"].status == Status.FAILED
    assert {r.status for r in run.materializations[1:]} == {Status.SKIPPED}
    assert run["a1499"].error_message == "upstream asset 'a0' failed"


def test_base_exception_in_a_worker_thread_leaves_nothing_pending(store_url: str) -> None:
    class Stop(BaseException):
        pass

    sibling_started = threading.Event()

    @fs.asset
    def root():
        return 1

    @fs.asset
    def explodes(root):
        assert sibling_started.wait(5)
        raise Stop("halt")

    @fs.asset
    def slow_sibling(root):
        sibling_started.set()
        time.sleep(0.2)
        return 2

    @fs.asset
    def below(explodes, slow_sibling):
        return 3

    pipeline = fs.Pipeline([root, explodes, slow_sibling, below], store=store_url, max_workers=2)
    with pytest.raises(Stop):
        pipeline.materialize_all()
    records = {r.asset: r for r in pipeline.store.list_materializations(limit=None)}
    assert records["explodes"].status == Status.FAILED
    assert records["slow_sibling"].status == Status.SUCCESS  # finished, not abandoned
    assert records["below"].status == Status.SKIPPED
    assert "interrupted by Stop" in (records["below"].error_message or "")
    [run] = pipeline.runs()
    assert run.status == "failed" and run.completed_at is not None
    pipeline.close()


def test_failure_and_skip_telemetry() -> None:
    @fs.asset
    def bad():
        raise ValueError("nope")

    @fs.asset
    def child(bad):
        return bad

    pipeline = fs.Pipeline([bad, child], store="memory")
    events: list[TelemetryEvent] = []
    pipeline.subscribe(events.append, prefix="materialization.")
    pipeline.materialize_all()
    by_name = {e.name: e for e in events}
    assert by_name["materialization.exception"].metadata["error_type"] == "ValueError"
    assert by_name["materialization.exception"].measurements["duration_ms"] >= 0
    assert by_name["materialization.skipped"].metadata["asset"] == "child"
    assert "bad" in by_name["materialization.skipped"].metadata["reason"]


def test_partitioned_lineage_names_exact_partitions(store_url: str) -> None:
    days = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")

    @fs.asset
    def rates():
        return 2

    @fs.asset(partitioned_by=days)
    def sales(ctx):
        return ctx.partition.day

    @fs.asset(partitioned_by=days)
    def revenue(sales, rates):
        return sales * rates

    pipeline = fs.Pipeline([rates, sales, revenue], store=store_url)
    first = pipeline.materialize_all("revenue", partition=dt.date(2025, 1, 3))
    second = pipeline.materialize_all("revenue", partition=dt.date(2025, 1, 4))
    assert pipeline.load("revenue", dt.date(2025, 1, 4)) == 8
    nodes = pipeline.upstream_lineage("revenue", dt.date(2025, 1, 3))
    assert {(n.asset, n.partition_key, n.materialization_id) for n in nodes} == {
        ("sales", "d:2025-01-03", first.get("sales", "d:2025-01-03").id),  # type: ignore[union-attr]
        ("rates", "n:", first["rates"].id),
    }
    # The unpartitioned upstream fed both days.
    downstream = pipeline.downstream_lineage("rates")
    assert {(n.asset, n.partition_key) for n in downstream} == {
        ("revenue", "d:2025-01-03"),
        ("revenue", "d:2025-01-04"),
    }
    assert second.ok
    pipeline.close()


def test_upstream_is_read_through_the_manager_that_stored_it() -> None:
    first, other = fs.MemoryIOManager(), fs.MemoryIOManager()

    @fs.asset
    def up():
        return 41

    @fs.asset
    def down(up):
        return up + 1

    pipeline = fs.Pipeline(
        [up, down], store="memory", io_managers={"default": first, "other": other}
    )
    assert pipeline.materialize("up").ok
    run = pipeline.materialize("down", io_manager="other")
    assert run.ok, run["down"].error_message
    assert other.load(fs.StorageKey("down", None, "n:")) == 42
    assert not other.exists(fs.StorageKey("up", None, "n:"))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [({"when": dt.datetime(2025, 1, 1)}, "JSON-compatible"), ("rows=3", "must be a mapping")],
)
def test_metadata_that_cannot_be_recorded_fails_cleanly(
    store_url: str, metadata: object, message: str
) -> None:
    class Odd(fs.MemoryIOManager):
        def store(self, key: fs.StorageKey, value: object) -> object:  # type: ignore[override]
            super().store(key, value)
            return metadata

    @fs.asset
    def a(ctx):
        return 1

    @fs.asset
    def b(a):
        return a

    pipeline = fs.Pipeline([a, b], store=store_url, io_managers={"default": Odd()})
    run = pipeline.materialize_all()
    assert run["a"].status == Status.FAILED
    assert message in (run["a"].error_message or "")
    assert run["b"].status == Status.SKIPPED
    assert {r.status for r in pipeline.store.list_materializations(limit=None)} == {
        Status.FAILED,
        Status.SKIPPED,
    }
    pipeline.close()


def test_user_metadata_that_is_not_json_fails_before_storing() -> None:
    io = fs.MemoryIOManager()

    @fs.asset
    def a(ctx):
        ctx.metadata["when"] = dt.datetime(2025, 1, 1)
        return 1

    pipeline = fs.Pipeline([a], store="memory", io_managers={"default": io})
    run = pipeline.materialize_all()
    assert run["a"].status == Status.FAILED
    assert "ctx.metadata must be JSON-compatible" in (run["a"].error_message or "")
    assert not io.exists(fs.StorageKey("a", None, "n:"))


def test_close_releases_io_managers_that_can_close(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []

    class Closing(fs.MemoryIOManager):
        def __init__(self, name: str, *, fail: bool = False) -> None:
            super().__init__()
            self.name, self.fail = name, fail

        def close(self) -> None:
            closed.append(self.name)
            if self.fail:
                raise RuntimeError("connection already gone")

    @fs.asset
    def one():  # type: ignore[no-untyped-def]
        return 1

    pipeline = fs.Pipeline(
        [one],
        store="memory",
        io_managers={
            "a": Closing("a", fail=True),
            "b": Closing("b"),
            "plain": fs.MemoryIOManager(),
        },
        default_io_manager="b",
    )
    pipeline.materialize_all().raise_for_status()
    store = pipeline.store
    monkeypatch.setattr(store, "close", lambda: closed.append("store"))
    pipeline.close()
    # A failing close is logged, and the others (and the store) are still closed.
    assert sorted(closed) == ["a", "b", "store"]
    assert "I/O manager 'a' failed to close" in caplog.text


def test_materialize_takes_names_assets_or_one_list_of_them() -> None:
    @fs.asset
    def a() -> int:
        return 1

    @fs.asset
    def b(a: int) -> int:
        return a + 1

    pipeline = fs.Pipeline([a, b], store="memory")
    assert [r.asset for r in pipeline.materialize(["a", b]).materializations] == ["a", "b"]
    assert [r.asset for r in pipeline.materialize(a).materializations] == ["a"]
    with pytest.raises(DefinitionError, match="Expected an asset name or an @asset function"):
        pipeline.materialize(5)  # type: ignore[arg-type]
    pipeline.close()
