"""The metadata store contract: every behaviour promised in ``flowstone/store/base.py``.

One suite, run over every store: the in-memory twin, SQLite (a file in ``tmp_path``) and
PostgreSQL (a schema of its own per test, in the server named by ``FLOWSTONE_TEST_POSTGRES_URL``;
skipped when no server answers, except on CI where that fails).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributed_fixtures.harness import POSTGRES_URL
from flowstone.errors import StoreError
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
)
from flowstone.store import MAX_LINEAGE_DEPTH, MemoryStore, MetadataStore

T0 = datetime(2024, 1, 1, tzinfo=UTC)


# --- stores --------------------------------------------------------------------------------


@cache
def postgres_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when a server answers."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'flowstone[postgres]')"
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as exc:
        return f"no PostgreSQL server answers at {POSTGRES_URL}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


def require_postgres() -> None:
    """Skip the calling test without PostgreSQL; on CI (CI=true), fail it instead."""
    reason = postgres_unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is required on CI: {reason}")
    pytest.skip(reason)


@contextmanager
def postgres_schema() -> Iterator[dict[str, Any]]:
    """A fresh PostgreSQL schema; yields the engine options that make it the search path."""
    import sqlalchemy as sa

    require_postgres()
    name = f"flowstone_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
    try:
        # The application name tells this test's sessions from others' in pg_locks.
        yield {"connect_args": {"options": f"-csearch_path={name}", "application_name": name}}
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
        admin.dispose()


@contextmanager
def open_test_store(kind: str, tmp_path: Path) -> Iterator[MetadataStore]:
    """A new, empty store of ``kind`` ("memory", "sqlite" or "postgres")."""
    if kind == "memory":
        yield MemoryStore()
        return
    from flowstone.store.sql import SQLStore

    if kind == "sqlite":
        store = SQLStore(f"sqlite:///{tmp_path / f'meta-{uuid.uuid4().hex[:8]}.db'}")
        try:
            yield store
        finally:
            store.close()
        return
    with postgres_schema() as options:
        store = SQLStore(POSTGRES_URL, engine_options=options)
        try:
            yield store
        finally:
            store.close()


STORE_KINDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    with open_test_store(request.param, tmp_path) as opened:
        yield opened


# --- record builders -----------------------------------------------------------------------

_counter = iter(range(10**9))


def new_id(prefix: str = "m") -> str:
    return f"{prefix}{next(_counter):031d}"[:32]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def mat(
    asset: str = "a",
    partition_key: str = "n:",
    *,
    run_id: str = "r" * 32,
    status: Status = Status.SUCCESS,
    created: float = 0,
    **fields: Any,
) -> MaterializationRecord:
    return MaterializationRecord(
        id=fields.pop("id", None) or new_id(),
        run_id=run_id,
        asset=asset,
        partition_key=partition_key,
        status=status,
        created_at=at(created),
        **fields,
    )


def edge(upstream: MaterializationRecord, downstream: MaterializationRecord) -> LineageEdge:
    return LineageEdge(
        materialization_id=downstream.id,
        run_id=downstream.run_id,
        asset=downstream.asset,
        partition_key=downstream.partition_key,
        upstream_materialization_id=upstream.id,
        upstream_asset=upstream.asset,
        upstream_partition_key=upstream.partition_key,
        consumed_at=downstream.created_at,
    )


def event(action: str = "run.started", **fields: Any) -> AuditEvent:
    fields.setdefault("resource_type", "run")
    fields.setdefault("resource_id", "r1")
    fields.setdefault("occurred_at", T0)
    return AuditEvent(action=action, **fields)


def run_record(created: float = 0, **fields: Any) -> RunRecord:
    fields.setdefault("id", new_id("r"))
    fields.setdefault("status", RunStatus.RUNNING)
    fields.setdefault("targets", ("a", "b"))
    fields.setdefault("partition_key", "n:")
    return RunRecord(created_at=at(created), **fields)


def save_chain(store: MetadataStore, *records: MaterializationRecord) -> None:
    """Save records in order, each consuming the one before."""
    for before, record in zip((None, *records), records, strict=False):
        store.save_materialization(record, lineage=() if before is None else [edge(before, record)])


def ids(records: list[MaterializationRecord]) -> list[str]:
    return [r.id for r in records]


def keys(nodes: list[LineageNode]) -> list[tuple[str, str, int]]:
    return [(n.asset, n.partition_key, n.depth) for n in nodes]


# --- the protocol --------------------------------------------------------------------------


def test_stores_satisfy_the_protocol(store: MetadataStore) -> None:
    assert isinstance(store, MetadataStore)


# --- runs ----------------------------------------------------------------------------------


def test_create_run_stores_run_materializations_and_audit(store: MetadataStore) -> None:
    run = run_record(tags={"team": "data", "env": "test"})
    planned = [mat("a", run_id=run.id, status=Status.PENDING), mat("b", run_id=run.id)]
    store.create_run(run, planned, [event("run.created", resource_id=run.id)])

    assert store.get_run(run.id) == run
    assert sorted(ids(store.list_materializations(run_id=run.id))) == sorted(ids(planned))
    assert store.get_materialization(planned[0].id) == planned[0]
    assert [e.action for e in store.list_audit(resource_id=run.id)] == ["run.created"]


def test_create_run_without_partition_key(store: MetadataStore) -> None:
    run = run_record(partition_key=None, tags={})
    store.create_run(run)
    assert store.get_run(run.id) == run


def test_create_run_is_atomic(store: MetadataStore) -> None:
    run = run_record()
    clash = [mat("a", run_id=run.id), mat("a", run_id=run.id)]  # one (run, asset, partition)
    with pytest.raises(StoreError):
        store.create_run(run, clash, [event(resource_id=run.id)])
    assert store.get_run(run.id) is None
    assert store.list_materializations(run_id=run.id) == []
    assert store.list_audit(resource_id=run.id) == []


def test_update_run_replaces_status_and_completion_only(store: MetadataStore) -> None:
    run = run_record(tags={"k": "v"})
    store.create_run(run)
    finished = replace(
        run,
        status=RunStatus.SUCCESS,
        completed_at=at(5),
        targets=("other",),
        tags={"changed": "yes"},
        created_at=at(99),
    )
    store.update_run(finished, [event("run.finished", resource_id=run.id)])

    assert store.get_run(run.id) == replace(run, status=RunStatus.SUCCESS, completed_at=at(5))
    assert [e.action for e in store.list_audit(resource_id=run.id)] == ["run.finished"]


def test_update_run_inserts_a_run_not_stored_yet(store: MetadataStore) -> None:
    run = run_record(status=RunStatus.FAILED, completed_at=at(1))
    store.update_run(run)
    assert store.get_run(run.id) == run


def test_get_run_of_unknown_id_is_none(store: MetadataStore) -> None:
    assert store.get_run("nope") is None


def test_list_runs_newest_first(store: MetadataStore) -> None:
    old, new, tie_first, tie_second = (
        run_record(created=1),
        run_record(created=9),
        run_record(created=5),
        run_record(created=5),
    )
    for run in (new, tie_first, old, tie_second):
        store.create_run(run)

    assert [r.id for r in store.list_runs()] == [new.id, tie_second.id, tie_first.id, old.id]
    assert [r.id for r in store.list_runs(limit=2)] == [new.id, tie_second.id]


# --- materializations ----------------------------------------------------------------------


def test_materialization_round_trips_every_field(store: MetadataStore) -> None:
    record = mat(
        "orders",
        "d:2024-01-01",
        status=Status.FAILED,
        attempt=3,
        started_at=at(1),
        completed_at=at(2.5),
        duration_ms=1500.25,
        error_type="ValueError",
        error_message="bad row 7 — ünïcode",
        error_traceback="Traceback (most recent call last):\n  ...\nValueError: bad row 7\n",
        code_version="v2",
        io_manager="fs",
        metadata={"rows": 10, "ratio": 0.5, "ok": True, "none": None, "tags": ["x", "y"]},
    )
    store.save_materialization(record)
    assert store.get_materialization(record.id) == record


def test_get_materialization_of_unknown_id_is_none(store: MetadataStore) -> None:
    assert store.get_materialization("nope") is None


def test_save_replaces_by_id(store: MetadataStore) -> None:
    pending = mat(status=Status.PENDING)
    store.save_materialization(pending)
    done = replace(pending, status=Status.SUCCESS, completed_at=at(3), metadata={"rows": 1})
    store.save_materialization(done)

    assert store.get_materialization(pending.id) == done
    assert store.list_materializations(asset="a") == [done]


def test_replacing_keeps_the_place_in_creation_order(store: MetadataStore) -> None:
    first, second = mat(run_id="r1" * 16), mat(run_id="r2" * 16)  # same created_at
    store.save_materialization(first)
    store.save_materialization(second)
    store.save_materialization(replace(first, status=Status.FAILED))

    latest = store.latest_materialization("a", "n:")
    assert latest is not None and latest.id == second.id


def test_a_materializations_identity_is_fixed_by_its_first_save(store: MetadataStore) -> None:
    record = mat()
    store.save_materialization(record)
    for changed in (
        replace(record, asset="b"),
        replace(record, partition_key="s:x"),
        replace(record, run_id="x" * 32),
        replace(record, created_at=at(60)),
    ):
        with pytest.raises(StoreError):
            store.save_materialization(changed, audit=[event()])
    assert store.get_materialization(record.id) == record
    assert store.list_audit() == []


def test_one_materialization_per_run_asset_and_partition(store: MetadataStore) -> None:
    store.save_materialization(mat("a", "s:x"))
    with pytest.raises(StoreError):
        store.save_materialization(mat("a", "s:x"))
    store.save_materialization(mat("a", "s:y"))  # another partition is fine
    store.save_materialization(mat("a", "s:x", run_id="o" * 32))  # so is another run
    assert len(store.list_materializations(asset="a")) == 3


def test_save_is_atomic_with_lineage_and_audit(store: MetadataStore) -> None:
    upstream = mat("up")
    store.save_materialization(upstream)
    record = mat("down")
    dangling = replace(edge(upstream, record), materialization_id="not-saved")
    with pytest.raises(StoreError):
        store.save_materialization(
            record, lineage=[edge(upstream, record), dangling], audit=[event()]
        )
    assert store.get_materialization(record.id) is None
    assert store.downstream("up", "n:") == []
    assert store.list_audit() == []


def test_save_records_lineage_and_audit(store: MetadataStore) -> None:
    upstream, record = mat("up"), mat("down")
    store.save_materialization(upstream)
    store.save_materialization(
        record, lineage=[edge(upstream, record)], audit=[event("materialization.success")]
    )
    assert keys(store.upstream(record.id)) == [("up", "n:", 1)]
    assert [e.action for e in store.list_audit()] == ["materialization.success"]


def test_an_edge_may_point_at_an_earlier_materialization(store: MetadataStore) -> None:
    up, down = mat("up"), mat("down")
    store.save_materialization(up)
    store.save_materialization(down)
    store.save_materialization(mat("other"), lineage=[edge(up, down)])
    assert keys(store.downstream("up", "n:")) == [("down", "n:", 1)]


def test_latest_materialization_is_the_newest_created(store: MetadataStore) -> None:
    newest = mat(run_id="r2" * 16, created=10)
    older = mat(run_id="r1" * 16, created=5)
    store.save_materialization(newest)
    store.save_materialization(older)  # saved later, created earlier
    assert store.latest_materialization("a", "n:") == newest


def test_latest_materialization_ties_go_to_the_later_saved(store: MetadataStore) -> None:
    records = [mat(run_id=f"{i}" * 32, created=7) for i in range(3)]
    for record in records:
        store.save_materialization(record)
    assert store.latest_materialization("a", "n:") == records[-1]


def test_latest_materialization_of_one_status(store: MetadataStore) -> None:
    ok = mat(run_id="1" * 32, created=1, status=Status.SUCCESS)
    failed = mat(run_id="2" * 32, created=2, status=Status.FAILED)
    store.save_materialization(ok)
    store.save_materialization(failed)
    assert store.latest_materialization("a", "n:") == failed
    assert store.latest_materialization("a", "n:", status=Status.SUCCESS) == ok
    assert store.latest_materialization("a", "n:", status=Status.SKIPPED) is None
    assert store.latest_materialization("a", "s:other") is None
    assert store.latest_materialization("nope", "n:") is None


def test_latest_materializations_of_many_partitions_match_one_by_one(
    store: MetadataStore,
) -> None:
    r1, r2, r3 = "1" * 32, "2" * 32, "3" * 32
    saved = [
        mat("a", "s:1", run_id=r1, created=1),
        mat("a", "s:1", run_id=r2, created=2, status=Status.FAILED),  # newer, failed
        mat("a", "s:2", run_id=r1, created=5),
        mat("a", "s:2", run_id=r2, created=5),  # a tie: the later saved wins
        mat("a", "s:3", run_id=r3, created=1, status=Status.FAILED),  # no success at all
        mat("b", "s:1", run_id=r3, created=9),  # another asset
    ]
    for record in saved:
        store.save_materialization(record)
    keys = ["s:1", "s:2", "s:3", "s:4", "s:1"]  # s:4 never recorded; s:1 asked twice
    for status in (None, Status.SUCCESS, Status.FAILED):
        one_by_one = {
            key: found
            for key in keys
            if (found := store.latest_materialization("a", key, status=status)) is not None
        }
        assert store.latest_materializations("a", keys, status=status) == one_by_one
    assert store.latest_materializations("a", keys, status=Status.SUCCESS) == {
        "s:1": saved[0],
        "s:2": saved[3],
    }
    assert store.latest_materializations("a", []) == {}
    assert store.latest_materializations("nope", keys) == {}


def test_list_materializations_filters_and_orders_newest_first(store: MetadataStore) -> None:
    r1, r2 = "1" * 32, "2" * 32
    a1 = mat("a", "s:1", run_id=r1, created=1)
    a2 = mat("a", "s:2", run_id=r1, created=2, status=Status.FAILED)
    b1 = mat("b", "s:1", run_id=r1, created=3)
    a1_again = mat("a", "s:1", run_id=r2, created=4, status=Status.FAILED)
    tie = mat("c", "s:1", run_id=r2, created=4)
    for record in (a1, a2, b1, a1_again, tie):
        store.save_materialization(record)

    assert ids(store.list_materializations()) == ids([tie, a1_again, b1, a2, a1])
    assert ids(store.list_materializations(asset="a")) == ids([a1_again, a2, a1])
    assert ids(store.list_materializations(partition_key="s:1")) == ids([tie, a1_again, b1, a1])
    assert ids(store.list_materializations(run_id=r1)) == ids([b1, a2, a1])
    assert ids(store.list_materializations(status=Status.FAILED)) == ids([a1_again, a2])
    assert ids(
        store.list_materializations(asset="a", partition_key="s:1", status=Status.SUCCESS)
    ) == ids([a1])
    assert ids(store.list_materializations(limit=2)) == ids([tie, a1_again])
    assert len(store.list_materializations(limit=None)) == 5
    assert store.list_materializations(asset="nope") == []


def test_list_materializations_default_limit_is_100(store: MetadataStore) -> None:
    run = run_record()
    store.create_run(run, [mat(f"asset{i:03d}", run_id=run.id) for i in range(120)])
    assert len(store.list_materializations()) == 100
    assert len(store.list_materializations(limit=None)) == 120


def test_latest_per_partition(store: MetadataStore) -> None:
    r1, r2 = "1" * 32, "2" * 32
    old_a1 = mat("a", "s:1", run_id=r1, created=1)
    a2 = mat("a", "s:2", run_id=r1, created=1)
    new_a1 = mat("a", "s:1", run_id=r2, created=2, status=Status.FAILED)
    b = mat("b", "n:", run_id=r1, created=0)
    tie_b = mat("b", "n:", run_id=r2, created=0)
    for record in (new_a1, old_a1, a2, b, tie_b):
        store.save_materialization(record)

    assert store.latest_per_partition() == [new_a1, a2, tie_b]
    assert store.latest_per_partition(["b"]) == [tie_b]
    assert store.latest_per_partition(["a", "nope"]) == [new_a1, a2]
    assert store.latest_per_partition([]) == []


def test_latest_per_partition_orders_by_code_point(store: MetadataStore) -> None:
    names = ["b", "B", "a_1", "a1", "ä", "a", "Z"]
    for name in names:
        store.save_materialization(mat(name, f"s:{name}"))
    assert [r.asset for r in store.latest_per_partition()] == sorted(names)


# --- lineage: upstream ---------------------------------------------------------------------


def test_upstream_walks_exact_materializations(store: MetadataStore) -> None:
    a, b, c, d = (mat(x, run_id="1" * 32, created=i) for i, x in enumerate("abcd"))
    save_chain(store, a, b, c, d)

    nodes = store.upstream(d.id)
    assert keys(nodes) == [("c", "n:", 1), ("b", "n:", 2), ("a", "n:", 3)]
    assert [n.materialization_id for n in nodes] == [c.id, b.id, a.id]
    assert {(n.run_id, n.status) for n in nodes} == {("1" * 32, Status.SUCCESS)}
    assert keys(store.upstream(d.id, depth=2)) == [("c", "n:", 1), ("b", "n:", 2)]
    assert store.upstream(a.id) == []
    assert store.upstream("unknown") == []


def test_upstream_lists_a_shared_ancestor_once_at_its_smallest_depth(
    store: MetadataStore,
) -> None:
    # root -> left -> sink, root -> right -> sink, root -> sink
    root, left, right = mat("root"), mat("left"), mat("right")
    sink = mat("sink")
    store.save_materialization(root)
    store.save_materialization(left, lineage=[edge(root, left)])
    store.save_materialization(right, lineage=[edge(root, right)])
    store.save_materialization(
        sink, lineage=[edge(left, sink), edge(right, sink), edge(root, sink)]
    )
    assert keys(store.upstream(sink.id)) == [
        ("left", "n:", 1),
        ("right", "n:", 1),
        ("root", "n:", 1),
    ]
    store2_sink = mat("sink2")
    store.save_materialization(
        store2_sink, lineage=[edge(left, store2_sink), edge(right, store2_sink)]
    )
    assert keys(store.upstream(store2_sink.id)) == [
        ("left", "n:", 1),
        ("right", "n:", 1),
        ("root", "n:", 2),
    ]


def test_upstream_orders_by_depth_asset_partition_then_id(store: MetadataStore) -> None:
    sink = mat("sink")
    ups = [
        mat("b", "s:1", id="c" * 32, run_id="1" * 32),
        mat("a", "s:2", run_id="1" * 32),
        mat("b", "s:1", id="a" * 32, run_id="2" * 32),
        mat("a", "s:1", run_id="1" * 32),
    ]
    for up in ups:
        store.save_materialization(up)
    store.save_materialization(sink, lineage=[edge(up, sink) for up in ups])

    nodes = store.upstream(sink.id)
    assert [(n.asset, n.partition_key, n.materialization_id) for n in nodes] == [
        ("a", "s:1", ups[3].id),
        ("a", "s:2", ups[1].id),
        ("b", "s:1", "a" * 32),
        ("b", "s:1", "c" * 32),
    ]


def test_upstream_names_materializations_the_store_does_not_hold(store: MetadataStore) -> None:
    record = mat("down")
    ghost = mat("ghost", "s:1")  # never saved
    store.save_materialization(record, lineage=[edge(ghost, record)])
    assert store.upstream(record.id) == [
        LineageNode(
            asset="ghost",
            partition_key="s:1",
            depth=1,
            materialization_id=ghost.id,
            run_id=None,
            status=None,
        )
    ]


def test_upstream_reports_the_current_status_and_run(store: MetadataStore) -> None:
    up, down = mat("up", status=Status.RUNNING, run_id="9" * 32), mat("down")
    store.save_materialization(up)
    store.save_materialization(down, lineage=[edge(up, down)])
    store.save_materialization(replace(up, status=Status.SUCCESS))
    [node] = store.upstream(down.id)
    assert (node.run_id, node.status) == ("9" * 32, Status.SUCCESS)


def test_lineage_depth_is_clamped(store: MetadataStore) -> None:
    run = run_record()
    chain = [mat(f"a{i:03d}", run_id=run.id, created=i) for i in range(MAX_LINEAGE_DEPTH + 5)]
    save_chain(store, *chain)

    assert len(store.upstream(chain[-1].id, depth=10_000)) == MAX_LINEAGE_DEPTH
    assert keys(store.upstream(chain[-1].id, depth=0)) == [(chain[-2].asset, "n:", 1)]
    assert keys(store.upstream(chain[-1].id, depth=-3)) == [(chain[-2].asset, "n:", 1)]
    assert len(store.downstream(chain[0].asset, "n:", depth=10_000)) == MAX_LINEAGE_DEPTH
    assert keys(store.downstream(chain[0].asset, "n:", depth=0)) == [(chain[1].asset, "n:", 1)]
    assert len(store.impact(chain[0].asset, "n:", depth=10_000)) == MAX_LINEAGE_DEPTH


# --- lineage: downstream and impact --------------------------------------------------------


def test_downstream_lists_dependents_transitively(store: MetadataStore) -> None:
    a, b, c = mat("a", "s:1"), mat("b", "s:1"), mat("c", "n:")
    save_chain(store, a, b, c)
    nodes = store.downstream("a", "s:1")
    assert keys(nodes) == [("b", "s:1", 1), ("c", "n:", 2)]
    assert [n.materialization_id for n in nodes] == [b.id, c.id]
    assert [n.run_id for n in nodes] == [b.run_id, c.run_id]
    assert all(n.status is None for n in nodes)
    assert keys(store.downstream("a", "s:1", depth=1)) == [("b", "s:1", 1)]
    assert store.downstream("a", "s:2") == []
    assert store.downstream("c", "n:") == []


def test_downstream_lists_each_dependent_once_at_its_smallest_depth(
    store: MetadataStore,
) -> None:
    # a -> b -> c and a -> c: c is one step from a.
    a, b, c = mat("a"), mat("b"), mat("c")
    store.save_materialization(a)
    store.save_materialization(b, lineage=[edge(a, b)])
    store.save_materialization(c, lineage=[edge(b, c), edge(a, c)])
    assert keys(store.downstream("a", "n:")) == [("b", "n:", 1), ("c", "n:", 1)]


def test_downstream_names_the_newest_consuming_materialization(store: MetadataStore) -> None:
    a = mat("a", run_id="0" * 32)
    store.save_materialization(a)
    newest = mat("b", run_id="2" * 32, created=20)
    older = mat("b", run_id="1" * 32, created=10)
    tie = mat("b", run_id="3" * 32, created=20)
    # Saved out of creation order: "newest" is decided by created_at, then save order.
    store.save_materialization(newest, lineage=[edge(a, newest)])
    store.save_materialization(older, lineage=[edge(a, older)])
    [node] = store.downstream("a", "n:")
    assert (node.materialization_id, node.run_id) == (newest.id, newest.run_id)

    store.save_materialization(tie, lineage=[edge(a, tie)])
    [node] = store.downstream("a", "n:")
    assert (node.materialization_id, node.run_id) == (tie.id, tie.run_id)


def test_downstream_takes_the_consumer_from_the_shortest_paths(store: MetadataStore) -> None:
    # c read a directly (old run) and, later, read b (which read a). c is at depth 1, and its
    # node names the materialization that read a directly: only depth-0 inputs count there.
    a, b = mat("a", run_id="1" * 32), mat("b", run_id="1" * 32, created=1)
    direct = mat("c", run_id="1" * 32, created=2)
    via_b = mat("c", run_id="2" * 32, created=50)
    store.save_materialization(a)
    store.save_materialization(b, lineage=[edge(a, b)])
    store.save_materialization(direct, lineage=[edge(a, direct)])
    store.save_materialization(via_b, lineage=[edge(b, via_b)])

    nodes = store.downstream("a", "n:")
    assert keys(nodes) == [("b", "n:", 1), ("c", "n:", 1)]
    assert nodes[1].materialization_id == direct.id


def test_downstream_never_lists_the_start(store: MetadataStore) -> None:
    # Lineage keys can form a loop across runs: a(1) -> b(1) -> a(2).
    a1, b1 = mat("a", run_id="1" * 32), mat("b", run_id="1" * 32, created=1)
    a2 = mat("a", run_id="2" * 32, created=2)
    save_chain(store, a1, b1, a2)
    assert keys(store.downstream("a", "n:")) == [("b", "n:", 1)]
    assert keys(store.downstream("b", "n:")) == [("a", "n:", 1)]


def test_downstream_orders_by_depth_asset_then_partition(store: MetadataStore) -> None:
    root = mat("root")
    store.save_materialization(root)
    deps = [mat("z", "s:1"), mat("b", "s:2"), mat("b", "s:1"), mat("c", "n:")]
    for dep in deps:
        store.save_materialization(dep, lineage=[edge(root, dep)])
    grandchild = mat("a", "n:")
    store.save_materialization(grandchild, lineage=[edge(deps[0], grandchild)])
    assert keys(store.downstream("root", "n:")) == [
        ("b", "s:1", 1),
        ("b", "s:2", 1),
        ("c", "n:", 1),
        ("z", "s:1", 1),
        ("a", "n:", 2),
    ]


def test_impact_adds_the_latest_status_whichever_run_produced_it(store: MetadataStore) -> None:
    a, b, c = (mat(x, run_id="1" * 32, created=i) for i, x in enumerate("abc"))
    save_chain(store, a, b, c)
    # A later run failed b without reading a; b's latest status is that failure.
    store.save_materialization(mat("b", run_id="2" * 32, created=10, status=Status.FAILED))

    nodes = store.impact("a", "n:")
    assert [(n.asset, n.depth, n.status) for n in nodes] == [
        ("b", 1, Status.FAILED),
        ("c", 2, Status.SUCCESS),
    ]
    # The node still names the materialization that read a.
    assert nodes[0].materialization_id == b.id
    assert [replace(n, status=None) for n in nodes] == store.downstream("a", "n:")
    assert keys(store.impact("a", "n:", depth=1)) == [("b", "n:", 1)]
    assert store.impact("nope", "n:") == []


# --- audit ---------------------------------------------------------------------------------


def test_audit_log_is_append_only_and_oldest_first(store: MetadataStore) -> None:
    first = event(
        "approval.approved",
        actor="ada",
        actor_type="user",
        resource_type="approval",
        resource_id="ap1",
        details={"reason": "looks good", "n": [1, 2]},
        correlation_id="run-1",
        occurred_at=at(1),
        id=999,  # ignored: the store numbers events
    )
    second = event("run.finished", resource_id="r2", correlation_id="run-1", occurred_at=at(0))
    third = event("run.finished", resource_id="r3", occurred_at=at(2))
    store.append_audit([first, second])
    store.append_audit([third])
    store.append_audit([])

    logged = store.list_audit()
    assert [replace(e, id=None) for e in logged] == [replace(first, id=None), second, third]
    numbers = [e.id for e in logged if isinstance(e.id, int)]
    assert len(numbers) == 3
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


def test_list_audit_filters_and_limits(store: MetadataStore) -> None:
    events = [
        event("a.one", resource_id="x", correlation_id="c1"),
        event("a.two", resource_id="y", correlation_id="c1"),
        event("a.one", resource_id="y", correlation_id="c2"),
        event("a.one", resource_id="x"),
    ]
    store.append_audit(events)

    def actions(found: list[AuditEvent]) -> list[tuple[str, str]]:
        return [(e.action, e.resource_id) for e in found]

    assert actions(store.list_audit(correlation_id="c1")) == [("a.one", "x"), ("a.two", "y")]
    assert actions(store.list_audit(resource_id="y")) == [("a.two", "y"), ("a.one", "y")]
    assert actions(store.list_audit(action="a.one")) == [
        ("a.one", "x"),
        ("a.one", "y"),
        ("a.one", "x"),
    ]
    assert actions(store.list_audit(action="a.one", resource_id="x")) == [
        ("a.one", "x"),
        ("a.one", "x"),
    ]
    assert actions(store.list_audit(limit=1)) == [("a.one", "x")]
    assert len(store.list_audit(limit=None)) == 4
    assert store.list_audit(correlation_id="none") == []


def test_audit_from_every_write_lands_in_call_order(store: MetadataStore) -> None:
    run = run_record()
    record = mat(run_id=run.id, status=Status.PENDING)
    store.create_run(run, [record], [event("run.created")])
    store.save_materialization(replace(record, status=Status.RUNNING), audit=[event("m.running")])
    store.update_run(replace(run, status=RunStatus.SUCCESS), [event("run.finished")])
    store.append_audit([event("user.note")])
    assert [e.action for e in store.list_audit()] == [
        "run.created",
        "m.running",
        "run.finished",
        "user.note",
    ]


def test_close(store: MetadataStore) -> None:
    store.close()


# --- the SQL stores answer like the memory store -------------------------------------------

ASSETS = ["a", "b", "c", "d"]
PARTITIONS = ["n:", "s:1"]

materialization_plans = st.lists(
    st.tuples(
        st.integers(0, len(ASSETS) - 1),
        st.sampled_from(PARTITIONS),
        st.integers(0, 3),  # created_at: few values, so ties happen
        st.sampled_from([Status.SUCCESS, Status.FAILED, Status.RUNNING]),
        st.lists(st.integers(0, 50), max_size=3),  # inputs: indexes of earlier records
        st.integers(0, 2),  # run
    ),
    min_size=1,
    max_size=14,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    with open_test_store(request.param, tmp_path) as opened:
        yield opened


# One SQL store serves every example (a new database each would be slow); each example names
# its assets and runs with a prefix of its own, so examples never see each other's records.
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plans=materialization_plans, depth=st.integers(1, 4))
def test_sql_answers_like_memory(
    sql_store: MetadataStore, plans: list[tuple[Any, ...]], depth: int
) -> None:
    sql, memory = sql_store, MemoryStore()
    prefix = uuid.uuid4().hex[:8]
    assets = [f"{prefix}-{a}" for a in ASSETS]
    records: list[MaterializationRecord] = []
    taken: set[tuple[int, str, str]] = set()
    for asset_index, partition, created, status, inputs, run in plans:
        asset = assets[asset_index]
        if (run, asset, partition) in taken:
            continue  # one materialization per (run, asset, partition)
        taken.add((run, asset, partition))
        run_id = f"{prefix}{run}".ljust(32, "0")
        record = mat(asset, partition, run_id=run_id, created=created, status=status)
        lineage = [edge(records[i % len(records)], record) for i in inputs if records]
        lineage = list({e.upstream_materialization_id: e for e in lineage}.values())
        for store in (memory, sql):
            store.save_materialization(record, lineage=lineage)
        records.append(record)

    assert sql.latest_per_partition(assets) == memory.latest_per_partition()
    assert sql.latest_per_partition(assets[::2]) == memory.latest_per_partition(assets[::2])
    for asset in assets:
        assert sql.list_materializations(asset=asset, limit=None) == (
            memory.list_materializations(asset=asset, limit=None)
        )
        for partition in PARTITIONS:
            for status in (None, Status.SUCCESS):
                assert sql.latest_materialization(
                    asset, partition, status=status
                ) == memory.latest_materialization(asset, partition, status=status)
            assert sql.downstream(asset, partition, depth=depth) == memory.downstream(
                asset, partition, depth=depth
            )
            assert sql.impact(asset, partition, depth=depth) == memory.impact(
                asset, partition, depth=depth
            )
    for record in records:
        assert sql.upstream(record.id, depth=depth) == memory.upstream(record.id, depth=depth)
