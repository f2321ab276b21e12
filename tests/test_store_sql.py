"""The SQL store's own concerns: migrations, SQLite setup, concurrent writers, errors, types.

What every store must do is in ``test_store_contract.py``.
"""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from flowstone.errors import SchemaOutdatedError, StoreError, StoreUnavailableError
from flowstone.records import AuditEvent, MaterializationRecord, Status, new_id
from flowstone.store import migrate, open_store
from flowstone.store.schema import VERSION_TABLE, metadata
from flowstone.store.sql import SQLStore, _mat_params, create_engine
from test_store_contract import POSTGRES_URL, edge, event, mat, postgres_schema, run_record


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'meta.db'}"


@pytest.fixture
def sqlite_store(db_url: str) -> Iterator[SQLStore]:
    store = SQLStore(db_url)
    yield store
    store.close()


# --- migrations ----------------------------------------------------------------------------


def test_head_revision_is_alembics_head() -> None:
    script = ScriptDirectory(str(migrate.SCRIPT_LOCATION))
    assert script.get_heads() == [migrate.HEAD_REVISION]


def test_opening_a_new_database_migrates_it_to_head(db_url: str) -> None:
    SQLStore(db_url).close()
    assert migrate.current_revision(db_url) == migrate.HEAD_REVISION
    engine = sa.create_engine(db_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == {*metadata.tables, VERSION_TABLE}


def _schema_diffs(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        return list(compare_metadata(context, metadata))


def test_migrations_and_schema_module_never_drift_sqlite(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url)
    try:
        assert _schema_diffs(engine) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_migrations_and_schema_module_never_drift_postgres() -> None:
    with postgres_schema() as options:
        engine = sa.create_engine(POSTGRES_URL, **options)
        try:
            migrate.upgrade(engine)
            assert migrate.current_revision(engine) == migrate.HEAD_REVISION
            assert _schema_diffs(engine) == []
        finally:
            engine.dispose()


def test_upgrade_accepts_a_url_an_engine_or_a_connection(tmp_path: Path) -> None:
    by_url = f"sqlite:///{tmp_path / 'nested' / 'by-url.db'}"
    migrate.upgrade(by_url)
    assert migrate.current_revision(by_url) == migrate.HEAD_REVISION

    engine = create_engine(f"sqlite:///{tmp_path / 'by-engine.db'}")
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        migrate.upgrade(engine)  # already at head: nothing to do
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    finally:
        engine.dispose()

    engine = create_engine(f"sqlite:///{tmp_path / 'by-connection.db'}")
    try:
        with engine.connect() as conn:
            migrate.upgrade(conn)
            assert migrate.current_revision(conn) == migrate.HEAD_REVISION
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url, "head")
    engine = create_engine(db_url)
    try:
        migrate.downgrade(engine, "base")
        assert migrate.current_revision(engine) is None
        assert set(sa.inspect(engine).get_table_names()) == {VERSION_TABLE}
        migrate.upgrade(engine)
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    finally:
        engine.dispose()


def test_outdated_schema_without_auto_migrate_says_how_to_upgrade(db_url: str) -> None:
    with pytest.raises(SchemaOutdatedError, match="flowstone db upgrade"):
        SQLStore(db_url, auto_migrate=False)
    migrate.upgrade(db_url)
    SQLStore(db_url, auto_migrate=False).close()


def _stamp(db_url: str, revision: str) -> None:
    connection = sqlite3.connect(db_url.removeprefix("sqlite:///"))
    with connection:
        connection.execute(f"UPDATE {VERSION_TABLE} SET version_num = ?", (revision,))
    connection.close()


def test_database_from_a_newer_flowstone_is_refused(db_url: str) -> None:
    migrate.upgrade(db_url)
    _stamp(db_url, "9999_from_the_future")
    for auto_migrate in (True, False):
        with pytest.raises(SchemaOutdatedError, match="newer FlowStone") as raised:
            SQLStore(db_url, auto_migrate=auto_migrate)
        assert "9999_from_the_future" in str(raised.value)
    with pytest.raises(SchemaOutdatedError, match="newer FlowStone"):
        migrate.upgrade(db_url)


def test_opening_an_up_to_date_store_does_not_import_alembic(db_url: str) -> None:
    migrate.upgrade(db_url)
    code = (
        "import sys\n"
        "from flowstone.store.sql import SQLStore\n"
        f"SQLStore({db_url!r}).close()\n"
        "assert 'alembic' not in sys.modules, 'alembic was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- SQLite setup --------------------------------------------------------------------------


def test_sqlite_connections_get_wal_busy_timeout_and_foreign_keys(sqlite_store: SQLStore) -> None:
    with sqlite_store.engine.connect() as conn:

        def pragma(name: str) -> Any:
            return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

        assert pragma("journal_mode") == "wal"
        assert pragma("busy_timeout") == 30_000
        assert pragma("foreign_keys") == 1
        assert pragma("synchronous") == 1  # NORMAL


def test_busy_timeout_is_configurable(db_url: str) -> None:
    store = SQLStore(db_url, busy_timeout_ms=1234)
    try:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    finally:
        store.close()


def test_sqlite_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "meta.db"
    store = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(store, SQLStore)
        assert path.is_file()
    finally:
        store.close()


def test_write_transactions_take_the_write_lock_at_begin(
    sqlite_store: SQLStore, db_url: str
) -> None:
    other = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        # Nothing written yet, and still no other writer can start: BEGIN IMMEDIATE.
        with (
            sqlite_store.engine.begin(),
            pytest.raises(sqlite3.OperationalError, match="locked"),
        ):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_reads_do_not_wait_for_a_writer(sqlite_store: SQLStore, db_url: str) -> None:
    record = mat()
    sqlite_store.save_materialization(record)
    writer = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM flowstone_audit_log")
        assert sqlite_store.get_materialization(record.id) == record
        assert sqlite_store.list_materializations() == [record]
        writer.execute("ROLLBACK")
    finally:
        writer.close()


def test_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    store = SQLStore("sqlite://")
    try:
        records = [mat(f"asset{i}") for i in range(8)]
        threads = [threading.Thread(target=store.save_materialization, args=(r,)) for r in records]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(store.list_materializations()) == 8
    finally:
        store.close()


# --- concurrent writers --------------------------------------------------------------------


def _write_many(store: SQLStore, run_id: str, worker: int, count: int) -> None:
    previous: MaterializationRecord | None = None
    for i in range(count):
        record = mat(f"w{worker}-{i}", run_id=run_id, status=Status.RUNNING, id=new_id())
        store.save_materialization(record)
        # A read, then a write: the pattern that upgrades a deferred transaction and fails.
        assert store.get_materialization(record.id) == record
        store.save_materialization(
            replace(record, status=Status.SUCCESS),
            lineage=[] if previous is None else [edge(previous, record)],
            audit=[event("materialization.success", resource_id=record.id)],
        )
        previous = record


def test_threads_writing_at_once_never_see_database_is_locked(sqlite_store: SQLStore) -> None:
    errors: list[BaseException] = []
    run = run_record()
    sqlite_store.create_run(run)

    def worker(n: int) -> None:
        try:
            _write_many(sqlite_store, run.id, n, 200)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(sqlite_store.list_materializations(run_id=run.id, limit=None)) == 8 * 200
    assert len(sqlite_store.list_audit(limit=None)) == 8 * 200


def _process_writer(url: str, worker: int, count: int, start: Any) -> None:
    start.wait()
    # Each process opens the store itself, on a database nobody has migrated yet.
    store = SQLStore(url)
    try:
        _write_many(store, f"process{worker}".ljust(32, "0"), worker, count)
    finally:
        store.close()


@pytest.mark.slow
def test_processes_writing_one_file_never_see_database_is_locked(db_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [
        context.Process(target=_process_writer, args=(db_url, n, 200, start)) for n in range(2)
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=240)
    assert [p.exitcode for p in processes] == [0, 0]

    store = SQLStore(db_url)
    try:
        assert len(store.list_materializations(limit=None)) == 2 * 200
        assert len(store.list_audit(limit=None)) == 2 * 200
    finally:
        store.close()


# --- stores that cannot be opened ----------------------------------------------------------


def test_sqlite_path_under_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(StoreUnavailableError, match="Cannot create the folder") as raised:
        SQLStore(f"sqlite:///{blocker / 'meta.db'}")
    assert str(blocker) in str(raised.value)
    assert "writable folder" in str(raised.value)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a SQLite database, just some bytes " * 100)
    with pytest.raises(StoreUnavailableError, match="SQLite database file"):
        SQLStore(f"sqlite:///{path}")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://somewhere/x", "Unknown database"),
        ("not a url at all", "is not a database URL"),
        ("postgresql+nosuchdriver://u@h/db", "Unknown database"),
    ],
)
def test_bad_urls_say_what_to_use(url: str, message: str) -> None:
    with pytest.raises(StoreUnavailableError, match=message) as raised:
        open_store(url)
    assert "sqlite:///" in str(raised.value)


def test_postgres_server_that_does_not_answer() -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(StoreUnavailableError, match="database server is running") as raised:
        SQLStore("postgresql+psycopg://postgres:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(raised.value)


# --- types ---------------------------------------------------------------------------------


def test_timestamps_come_back_as_aware_utc(sqlite_store: SQLStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2024, 3, 31, 2, 30, 15, 123456, tzinfo=plus_two)
    record = mat(created=0)
    record = replace(record, created_at=created, started_at=created + timedelta(seconds=1))
    sqlite_store.save_materialization(record)

    loaded = sqlite_store.get_materialization(record.id)
    assert loaded is not None
    assert loaded.created_at == created and loaded.created_at.tzinfo is UTC
    assert loaded.started_at is not None and loaded.started_at.tzinfo is UTC
    assert loaded.completed_at is None


def test_naive_timestamps_are_taken_as_utc(sqlite_store: SQLStore) -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    sqlite_store.append_audit([event(occurred_at=naive)])
    [logged] = sqlite_store.list_audit()
    assert logged.occurred_at == naive.replace(tzinfo=UTC)


def test_json_round_trips(sqlite_store: SQLStore) -> None:
    details: dict[str, Any] = {
        "unicode": "héllo ✓ 日本",
        "nested": {"list": [1, 2.5, None, True, {"deep": []}], "empty": {}},
        "big": 2**53,
        "quote": 'a "quoted" \\ string',
    }
    record = mat(metadata=details)
    sqlite_store.save_materialization(record, audit=[event(details=details)])
    loaded = sqlite_store.get_materialization(record.id)
    assert loaded is not None and loaded.metadata == details
    assert sqlite_store.list_audit()[0].details == details


def test_values_that_are_not_json_raise_store_error(sqlite_store: SQLStore) -> None:
    with pytest.raises(StoreError, match="save the materialization"):
        sqlite_store.save_materialization(mat(metadata={"when": datetime.now(UTC)}))
    assert sqlite_store.list_materializations() == []


def test_audit_rows_are_numbered_by_the_database(sqlite_store: SQLStore) -> None:
    sqlite_store.append_audit([event(id=5), event(id=5)])
    assert [e.id for e in sqlite_store.list_audit()] == [1, 2]
    assert all(isinstance(e, AuditEvent) for e in sqlite_store.list_audit())


@pytest.mark.parametrize(
    "created_at",
    [datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC)],
)
def test_sqlalchemy_and_direct_writes_store_identical_rows(
    sqlite_store: SQLStore, created_at: datetime
) -> None:
    # SQLite's hot writes bypass SQLAlchemy (store/direct.py) while other writes go through
    # it; the upsert compares fixed columns as stored text, so both paths must write the
    # same text, or a status change of a row written by the other path is refused.
    run = run_record()
    sqlite_store.create_run(run)
    record = replace(mat("a", run_id=run.id), created_at=created_at)
    with sqlite_store.engine.begin() as conn:
        conn.execute(sqlite_store._upsert_mat, _mat_params(record))
    sqlite_store.save_materialization(replace(record, status=Status.SUCCESS))
    via_direct = replace(mat("b", run_id=run.id), created_at=created_at)
    sqlite_store.save_materialization(via_direct)
    with sqlite_store.engine.begin() as conn:
        changed = conn.execute(
            sqlite_store._upsert_mat, _mat_params(replace(via_direct, status=Status.FAILED))
        ).rowcount
    assert changed == 1
    stored = {r.id: r.status for r in sqlite_store.list_materializations(limit=None)}
    assert stored == {record.id: Status.SUCCESS, via_direct.id: Status.FAILED}
    with sqlite3.connect(sqlite_store.engine.url.database or "") as raw:
        texts = {row[0] for row in raw.execute("SELECT created_at FROM flowstone_materializations")}
    assert len(texts) == 1, texts


def test_threads_opening_a_new_file_at_once_never_see_locked(tmp_path: Path) -> None:
    # On a new file, connections switching it to WAL at the same moment can get "database is
    # locked" without SQLite waiting; the store must wait that out. The race is rare per try
    # (a few percent), so it is tried many times.
    for attempt in range(30):
        url = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_store_now(
            url: str = url,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait()
                store = SQLStore(url)
                store.list_runs()
                store.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_store_now) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], errors


# --- the partial index of unfinished steps (revision 0006) ---------------------------------
UNFINISHED_INDEX = "ix_flowstone_materializations_unfinished"


def _quoted(sql: str) -> set[str]:
    return set(re.findall(r"'(\w+)'", sql))


def _probe_sql(dialect: sa.Dialect) -> str:
    from flowstone.store.sql.transaction import _HAS_UNFINISHED

    return str(_HAS_UNFINISHED.compile(dialect=dialect))


def test_the_unfinished_index_serves_the_run_s_probe_sqlite(db_url: str) -> None:
    """The migration's predicate names every status that is not final, and the probe of
    "a step left?" uses the index (SQLite proves it from the query's text)."""
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            created = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (UNFINISHED_INDEX,)
            ).scalar_one()
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + _probe_sql(engine.dialect), ("some-run",)
            ).all()
    finally:
        engine.dispose()
    assert _quoted(created) == {s.value for s in Status if not s.is_final}
    assert any(UNFINISHED_INDEX in str(row[-1]) for row in plan), plan


@pytest.mark.postgres
def test_the_unfinished_index_serves_the_run_s_probe_postgres() -> None:
    with postgres_schema() as options:
        engine = sa.create_engine(POSTGRES_URL, **options)
        try:
            migrate.upgrade(engine)
            with engine.begin() as conn:
                created = conn.execute(
                    sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                    {"name": UNFINISHED_INDEX},
                ).scalar_one()
                # Whether the index can serve the probe at all, not whether an empty table
                # would rather be scanned; and as a prepared statement's generic plan would.
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
                probe = _probe_sql(engine.dialect).replace("%(run_id)s", "$1")
                conn.exec_driver_sql(f"PREPARE probe(text) AS {probe}")
                plan = conn.exec_driver_sql("EXPLAIN EXECUTE probe('some-run')").scalars().all()
        finally:
            engine.dispose()
    assert _quoted(created) == {s.value for s in Status if not s.is_final}
    assert any(UNFINISHED_INDEX in line for line in plan), plan


def test_refreshing_statistics_is_postgresql_only(tmp_path: Path) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'meta.db'}")
    try:
        assert store.refresh_statistics({"flowstone_materializations": 10**6}) == []
    finally:
        store.close()
