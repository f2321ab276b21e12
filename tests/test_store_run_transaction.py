"""The store contract for run transactions (``MetadataStore.run_transaction``).

Run over the in-memory store, SQLite and PostgreSQL with the fixtures of the main contract
suite: the distributed executor records a step's final status, enqueues the steps it made ready
and closes the run in one of these transactions, so every store must give the same answers and
the same all-or-nothing behaviour.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from flowstone.errors import StoreError
from flowstone.records import RunStatus, Status
from flowstone.store import MetadataStore
from flowstone.store.base import RunTransaction
from flowstone.store.sql import SQLStore
from test_store_contract import STORE_KINDS, edge, event, mat, open_test_store, run_record

T = TypeVar("T")


class InStepSessions:
    """A PostgreSQL store whose run transactions each run in a worker's step session, so they
    take the direct path (flowstone.store.direct_pg); everything else is the store's own."""

    def __init__(self, store: SQLStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def run_transaction(self, run_id: str, work: Callable[[RunTransaction], T]) -> T:
        with self._store.step_session(run_id, "-", "-", lock=f"test:{threading.get_ident()}"):
            return self._store.run_transaction(run_id, work)


@pytest.fixture(params=[*STORE_KINDS, pytest.param("postgres-session", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetadataStore]:
    kind = request.param.removesuffix("-session")
    with open_test_store(kind, tmp_path) as opened:
        if kind != request.param:
            assert isinstance(opened, SQLStore)
            yield cast("MetadataStore", InStepSessions(opened))
        else:
            yield opened


class Boom(Exception):
    pass


def test_writes_commit_together_and_reads_see_them(store: MetadataStore) -> None:
    run = run_record()
    a = mat("a", run_id=run.id, status=Status.PENDING, created=1)
    b = mat("b", run_id=run.id, status=Status.PENDING, created=1)

    def work(tx: RunTransaction) -> bool:
        assert tx.run_id == run.id
        assert tx.get_run() is None
        assert tx.run_status() is None
        tx.create_run(run, [a, b], [event("run.started", resource_id=run.id)])
        assert tx.run_status() == run.status
        assert tx.get_run() == run
        assert tx.has_unfinished()
        done = replace(a, status=Status.SUCCESS, attempt=2)
        tx.save_materialization(done, audit=[event("materialization.success")])
        tx.save_materialization(replace(b, status=Status.RUNNING), lineage=[edge(done, b)])
        return tx.has_unfinished()

    assert store.run_transaction(run.id, work) is True
    assert store.get_run(run.id) == run
    saved = store.get_materialization(a.id)
    assert saved is not None and (saved.status, saved.attempt) == (Status.SUCCESS, 2)
    assert [n.materialization_id for n in store.upstream(b.id)] == [a.id]
    assert [e.action for e in store.list_audit()] == ["run.started", "materialization.success"]


def test_a_raising_work_stores_nothing(store: MetadataStore) -> None:
    run = run_record()
    a = mat("a", run_id=run.id, status=Status.PENDING)
    store.create_run(run, [a])

    def work(tx: RunTransaction) -> None:
        tx.save_materialization(replace(a, status=Status.SUCCESS), audit=[event("x")])
        tx.update_run(replace(run, status=RunStatus.SUCCESS))
        raise Boom

    with pytest.raises(Boom):
        store.run_transaction(run.id, work)
    assert store.get_materialization(a.id) == a
    assert store.get_run(run.id) == run
    assert store.list_audit() == []
    # The store is still usable afterwards.
    store.run_transaction(run.id, lambda tx: tx.save_materialization(replace(a, attempt=3)))
    saved = store.get_materialization(a.id)
    assert saved is not None and saved.attempt == 3


def test_a_rejected_write_stores_nothing(store: MetadataStore) -> None:
    run = run_record()
    a = mat("a", run_id=run.id, status=Status.PENDING)
    store.create_run(run, [a])
    clash = mat("a", run_id=run.id, status=Status.SUCCESS)  # a second record of (run, a, n:)

    def work(tx: RunTransaction) -> None:
        tx.update_run(replace(run, status=RunStatus.FAILED))
        tx.save_materialization(clash)

    with pytest.raises(StoreError):
        store.run_transaction(run.id, work)
    assert store.get_run(run.id) == run
    assert store.get_materialization(clash.id) is None


def test_writes_for_another_run_are_refused(store: MetadataStore) -> None:
    run, other = run_record(), run_record()
    store.create_run(run)
    stray = mat("a", run_id=other.id)
    with pytest.raises(StoreError, match="belongs to run"):
        store.run_transaction(run.id, lambda tx: tx.save_materialization(stray))
    with pytest.raises(StoreError, match="belongs to run"):
        store.run_transaction(run.id, lambda tx: tx.update_run(other))
    assert store.get_materialization(stray.id) is None


def test_materializations_of_the_run_in_creation_order(store: MetadataStore) -> None:
    run, other = run_record(), run_record()
    planned = [
        mat("c", run_id=run.id, status=Status.PENDING, created=1),
        mat("a", "s:eu", run_id=run.id, status=Status.PENDING, created=1),
        mat("a", "s:us", run_id=run.id, status=Status.SKIPPED, created=1),
        mat("b", run_id=run.id, status=Status.CANCELLED, created=0),
    ]
    store.create_run(run, planned)
    store.create_run(other, [mat("a", "s:eu", run_id=other.id, created=2)])

    def read(tx: RunTransaction) -> tuple[list[str], list[str], list[str], bool]:
        every = [f"{r.asset}/{r.partition_key}" for r in tx.materializations()]
        of_a = [r.id for r in tx.materializations(["a"])]
        none = [r.id for r in tx.materializations([])]
        return every, of_a, none, tx.has_unfinished()

    every, of_a, none, unfinished = store.run_transaction(run.id, read)
    assert every == ["b/n:", "c/n:", "a/s:eu", "a/s:us"]
    assert of_a == [planned[1].id, planned[2].id]
    assert none == []
    assert unfinished  # c and a/s:eu; skipped and cancelled are final

    def finish_all(tx: RunTransaction) -> bool:
        for record in tx.materializations():
            if not record.status.is_final:
                tx.save_materialization(replace(record, status=Status.SUCCESS))
        return tx.has_unfinished()

    assert store.run_transaction(run.id, finish_all) is False
    # Waiting for an approval is not final: the run is not over.
    waiting = replace(planned[0], status=Status.WAITING_APPROVAL)
    assert store.run_transaction(
        run.id, lambda tx: (tx.save_materialization(waiting), tx.has_unfinished())[1]
    )


def test_find_many_reads_the_run_s_steps_and_its_own_writes(store: MetadataStore) -> None:
    run, other = run_record(), run_record()
    planned = [
        mat("a", "s:eu", run_id=run.id, status=Status.PENDING),
        mat("a", "s:us", run_id=run.id, status=Status.PENDING),
        mat("b", run_id=run.id, status=Status.PENDING),
    ]
    store.create_run(run, planned)
    store.create_run(other, [mat("c", run_id=other.id)])  # another run's step is not found
    wide = [mat(f"w{i:04d}", run_id=run.id, status=Status.PENDING) for i in range(450)]
    store.run_transaction(run.id, lambda tx: [tx.save_materialization(r) for r in wide])

    def read(tx: RunTransaction) -> tuple[dict[tuple[str, str], Any], ...]:
        before = tx.find_many([("b", "n:"), ("a", "s:us"), ("c", "n:"), ("a", "s:xx")])
        tx.save_materialization(replace(planned[2], status=Status.SUCCESS))
        after = tx.find_many([("b", "n:"), ("b", "n:")])  # sees the write; a repeat is one
        everything = tx.find_many([(r.asset, r.partition_key) for r in [*planned, *wide]])
        return before, after, everything, tx.find_many([])

    before, after, everything, nothing = store.run_transaction(run.id, read)
    assert before == {("b", "n:"): planned[2], ("a", "s:us"): planned[1]}
    assert after == {("b", "n:"): replace(planned[2], status=Status.SUCCESS)}
    assert len(everything) == 453
    assert everything[("w0449", "n:")] == wide[-1]
    assert nothing == {}


def test_transactions_on_one_run_take_turns(store: MetadataStore) -> None:
    """Read-modify-write under the run lock never loses an update, whatever the store."""
    run = run_record()
    counter = mat("counter", run_id=run.id, status=Status.PENDING)
    store.create_run(run, [counter])

    def bump(tx: RunTransaction) -> None:
        (current,) = tx.materializations(["counter"])
        tx.save_materialization(replace(current, attempt=current.attempt + 1))

    threads = [
        threading.Thread(target=lambda: [store.run_transaction(run.id, bump) for _ in range(5)])
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    saved = store.get_materialization(counter.id)
    assert saved is not None and saved.attempt == 1 + 4 * 5


def test_connection_is_the_drivers(store: MetadataStore) -> None:
    run = run_record()
    connection = store.run_transaction(run.id, lambda tx: tx.connection)
    if type(store).__name__ == "MemoryStore":
        assert connection is None
    else:
        # A DB-API connection of the driver (sqlite3 or psycopg), usable by a job queue.
        assert hasattr(connection, "cursor") and hasattr(connection, "commit")
