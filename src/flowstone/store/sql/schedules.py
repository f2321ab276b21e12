"""The SQL store's schedules and sensors, and their ticks: a tick and the runs it launches are
one transaction, so two schedulers never launch a tick twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from flowstone.records import AuditEvent, RunStatus, Status, utcnow
from flowstone.schedule_records import (
    ScheduleRecord,
    SensorRecord,
    TickKind,
    TickLaunch,
    TickRecord,
    TickRun,
)
from flowstone.store.schema import UTCDateTime, materializations, runs
from flowstone.store.schema import schedules as schedules_table
from flowstone.store.schema import sensors as sensors_table
from flowstone.store.schema import tick_runs as tick_runs_table
from flowstone.store.schema import ticks as ticks_table
from flowstone.store.sql.core import SQLStoreCore
from flowstone.store.sql.errors import _identity_error, _wraps_errors
from flowstone.store.sql.rows import (
    _mat_params,
    _run_params,
    _schedule_params,
    _schedule_record,
    _sensor_params,
    _sensor_record,
    _tick_params,
    _tick_record,
)


class _TickTaken(Exception):
    """Inside a tick's transaction: another scheduler got there first; roll back."""


def _later_cursor(column: sa.ColumnElement[Any], value: datetime) -> sa.ColumnElement[Any]:
    """SQL for "the cursor moved forward to value, never back"."""
    bound = sa.literal(value, UTCDateTime())
    return sa.case((sa.or_(column.is_(None), column < bound), bound), else_=column)


class ScheduleQueries(SQLStoreCore):
    """Schedules, sensors and their ticks (each tick with the runs it launched)."""

    # --- schedules and sensors --------------------------------------------------------------
    @_wraps_errors("save the schedule")
    def save_schedule(self, schedule: ScheduleRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._upsert_schedule, _schedule_params(schedule))
            self._write_audit(conn, audit)

    @_wraps_errors("read the schedule")
    def get_schedule(self, name: str) -> ScheduleRecord | None:
        t = schedules_table
        with self._serial, self._read.connect() as conn:
            row = conn.execute(sa.select(*t.c).where(t.c.name == name)).first()
        return None if row is None else _schedule_record(row)

    @_wraps_errors("list schedules")
    def list_schedules(self) -> list[ScheduleRecord]:
        t = schedules_table
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(sa.select(*t.c).order_by(self._text_order(t.c.name))).all()
        return [_schedule_record(row) for row in rows]

    @_wraps_errors("pause or resume the schedule")
    def set_schedule_paused(
        self,
        name: str,
        paused: bool,
        *,
        cursor: datetime | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        t = schedules_table
        values: dict[str, Any] = {"paused": paused, "updated_at": utcnow()}
        if cursor is not None:
            values["cursor"] = _later_cursor(t.c.cursor, cursor)
        with self._serial, self._engine.begin() as conn:
            if conn.execute(sa.update(t).where(t.c.name == name).values(values)).rowcount != 1:
                return False
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("delete the schedule")
    def delete_schedule(self, name: str, audit: Sequence[AuditEvent] = ()) -> bool:
        t = schedules_table
        with self._serial, self._engine.begin() as conn:
            if conn.execute(sa.delete(t).where(t.c.name == name)).rowcount != 1:
                return False
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("record the schedule's tick")
    def create_schedule_tick(
        self,
        tick: TickRecord,
        launch: TickLaunch | None = None,
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        t = schedules_table
        try:
            with self._serial, self._engine.begin() as conn:
                self._insert_tick_with_runs(conn, tick, () if launch is None else (launch,))
                conn.execute(
                    sa.update(t)
                    .where(t.c.name == tick.name)
                    .values(cursor=_later_cursor(t.c.cursor, tick.tick_time))
                )
                self._write_audit(conn, audit)
        except _TickTaken:
            return False
        return True

    @_wraps_errors("save the sensor")
    def save_sensor(self, sensor: SensorRecord, audit: Sequence[AuditEvent] = ()) -> None:
        with self._serial, self._engine.begin() as conn:
            conn.execute(self._upsert_sensor, _sensor_params(sensor))
            self._write_audit(conn, audit)

    @_wraps_errors("read the sensor")
    def get_sensor(self, name: str) -> SensorRecord | None:
        t = sensors_table
        with self._serial, self._read.connect() as conn:
            row = conn.execute(sa.select(*t.c).where(t.c.name == name)).first()
        return None if row is None else _sensor_record(row)

    @_wraps_errors("list sensors")
    def list_sensors(self) -> list[SensorRecord]:
        t = sensors_table
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(sa.select(*t.c).order_by(self._text_order(t.c.name))).all()
        return [_sensor_record(row) for row in rows]

    @_wraps_errors("pause or resume the sensor")
    def set_sensor_paused(self, name: str, paused: bool, audit: Sequence[AuditEvent] = ()) -> bool:
        t = sensors_table
        stmt = sa.update(t).where(t.c.name == name).values(paused=paused, updated_at=utcnow())
        with self._serial, self._engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return False
            self._write_audit(conn, audit)
        return True

    @_wraps_errors("record the sensor's tick")
    def create_sensor_tick(
        self,
        name: str,
        *,
        expected_version: int,
        polled_at: datetime,
        cursor: str | None,
        tick: TickRecord | None = None,
        launches: Sequence[TickLaunch] = (),
        audit: Sequence[AuditEvent] = (),
    ) -> bool:
        t = sensors_table
        # The version check comes first: on PostgreSQL the UPDATE locks the sensor's row, so
        # two schedulers applying polls of one sensor take turns, and the second finds the
        # version moved on.
        bump = (
            sa.update(t)
            .where(t.c.name == name, t.c.version == expected_version)
            .values(version=t.c.version + 1, cursor=cursor, last_tick_at=polled_at)
        )
        try:
            with self._serial, self._engine.begin() as conn:
                if conn.execute(bump).rowcount != 1:
                    raise _TickTaken
                if tick is not None:
                    self._insert_tick_with_runs(conn, tick, launches)
                self._write_audit(conn, audit)
        except _TickTaken:
            return False
        return True

    @_wraps_errors("read run keys")
    def seen_run_keys(self, sensor: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        t = tick_runs_table
        stmt = sa.select(t.c.run_key).where(
            t.c.kind == TickKind.SENSOR.value, t.c.name == sensor, t.c.run_key.in_(list(keys))
        )
        with self._serial, self._read.connect() as conn:
            return {row[0] for row in conn.execute(stmt)}

    @_wraps_errors("list ticks")
    def list_ticks(self, kind: TickKind, name: str, *, limit: int = 50) -> list[TickRecord]:
        t = ticks_table
        stmt = (
            sa.select(*t.c)
            .where(t.c.kind == kind.value, t.c.name == name)
            .order_by(t.c.tick_time.desc())
            .limit(limit)
        )
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_tick_record(row) for row in rows]

    @_wraps_errors("find orphaned tick runs")
    def orphaned_tick_runs(self, claimed_before: datetime) -> list[TickRun]:
        c, r, m = tick_runs_table, runs, materializations
        started = sa.exists().where(m.c.run_id == c.c.run_id, m.c.status != Status.PENDING.value)
        stmt = (
            sa.select(*c.c)
            .join(r, r.c.id == c.c.run_id)
            .where(
                r.c.status == RunStatus.RUNNING.value,
                c.c.claimed_at < claimed_before,
                ~started,
            )
            .order_by(c.c.claimed_at, c.c.run_id)
        )
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            TickRun(
                run_id=row[0], kind=TickKind(row[1]), name=row[2], run_key=row[3], claimed_at=row[4]
            )
            for row in rows
        ]

    @_wraps_errors("claim the tick's run")
    def claim_tick_run(self, run_id: str, *, expected: datetime, claimed_at: datetime) -> bool:
        c = tick_runs_table
        stmt = (
            sa.update(c)
            .where(c.c.run_id == run_id, c.c.claimed_at == expected)
            .values(claimed_at=claimed_at)
        )
        with self._serial, self._engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def _insert_tick_with_runs(
        self, conn: sa.Connection, tick: TickRecord, launches: Sequence[TickLaunch]
    ) -> None:
        """Insert a tick and its runs; raise _TickTaken if the tick or a run key exists."""
        if conn.execute(self._insert_tick, _tick_params(tick)).rowcount != 1:
            raise _TickTaken
        for launch in launches:
            conn.execute(self._upsert_run, _run_params(launch.run))
            if launch.materializations:
                params = [_mat_params(m) for m in launch.materializations]
                if self._dialect == "sqlite":
                    saved = conn.execute(self._upsert_mat, params).rowcount
                else:  # a multi-row INSERT's rowcount is unknown: count what it returns
                    saved = len(conn.execute(self._upsert_mat_returning, params).all())
                if saved != len(params):
                    raise _identity_error(launch.materializations)
            claim = {
                "run_id": launch.run.id,
                "kind": tick.kind.value,
                "name": tick.name,
                "run_key": launch.run_key,
                "claimed_at": tick.recorded_at,
            }
            if conn.execute(self._insert_tick_run, claim).rowcount != 1:
                raise _TickTaken

    def _build_schedule_statements(self) -> None:
        pg = self._dialect == "postgresql"

        def insert(table: sa.Table) -> Any:
            return postgresql.insert(table) if pg else sqlite.insert(table)

        def upsert(table: sa.Table, update: Sequence[str]) -> sa.Insert:
            stmt = insert(table)
            return stmt.on_conflict_do_update(  # type: ignore[no-any-return]
                index_elements=[table.c.name],
                set_={name: stmt.excluded[name] for name in update},
            )

        kept = ("name", "paused", "cursor", "created_at")
        self._upsert_schedule = upsert(
            schedules_table, [c.name for c in schedules_table.c if c.name not in kept]
        )
        self._upsert_sensor = upsert(sensors_table, ["interval_s", "updated_at"])
        # DO NOTHING, not an IntegrityError: on PostgreSQL an error aborts the transaction.
        self._insert_tick = (
            insert(ticks_table)
            .on_conflict_do_nothing(index_elements=["kind", "name", "tick_time"])
            .execution_options(preserve_rowcount=True)
        )
        self._insert_tick_run = (
            insert(tick_runs_table)
            .on_conflict_do_nothing()
            .execution_options(preserve_rowcount=True)
        )
