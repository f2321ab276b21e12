"""The metadata store's tables: one SQLAlchemy Core schema for SQLite and PostgreSQL.

Alembic migrations (``flowstone/store/migrations``) create and evolve these tables; a test
compares a migrated database with this module, so the two never drift. Only
:mod:`flowstone.store.sql` queries them.

Portability choices:

- Statuses are plain strings, not database enums, so a new status needs no migration.
- JSON is ``JSON`` on SQLite and ``JSONB`` on PostgreSQL.
- Timestamps go through :class:`UTCDateTime`, which always hands back aware UTC datetimes
  (SQLite itself has no time zones and returns naive ones).
- ``seq`` columns record creation order. Ids are random and ``created_at`` may tie, so "latest"
  means newest ``created_at``, ties broken by ``seq``. PostgreSQL fills ``seq`` from an identity
  column; SQLite has no identity columns (only the rowid), so the store writes
  ``max(seq) + 1`` itself, which is safe because SQLite writers hold the database's write lock.
- A naming convention gives constraints the same names on both databases, so migrations can
  refer to them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

from flowstone.records import Status

#: The table where Alembic records the schema revision of a database.
VERSION_TABLE = "flowstone_alembic_version"

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back as an aware UTC datetime.

    Naive datetimes written to it are taken to be UTC already.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # SQLite stores text without an offset: drop the (UTC) zone so the text sorts in time
        # order and reads back unambiguously.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: JSON values: portable JSON, binary JSONB on PostgreSQL (indexable, compact).
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

#: Row ids that autoincrement everywhere: SQLite only autoincrements ``INTEGER PRIMARY KEY``.
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ID = sa.String(32)
NAME = sa.String(255)
KEY = sa.Text()  # encoded partitions can be long (multi-dimensional, nested tuples)
STATUS = sa.String(32)

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

runs = sa.Table(
    "flowstone_runs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("status", STATUS, nullable=False),
    sa.Column("targets", JSONType, nullable=False),
    sa.Column("partition_key", KEY),  # None for a run over several partitions
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime),
    sa.Column("tags", JSONType, nullable=False),
    sa.UniqueConstraint("seq"),
)
sa.Index("ix_flowstone_runs_created", runs.c.created_at, runs.c.seq)

materializations = sa.Table(
    "flowstone_materializations",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("asset", NAME, nullable=False),
    sa.Column("partition_key", KEY, nullable=False),
    sa.Column("status", STATUS, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime),
    sa.Column("completed_at", UTCDateTime),
    sa.Column("duration_ms", sa.Float),
    sa.Column("error_type", NAME),
    sa.Column("error_message", sa.Text),
    sa.Column("error_traceback", sa.Text),
    sa.Column("code_version", NAME),
    sa.Column("io_manager", NAME),
    sa.Column("metadata", JSONType, nullable=False),
    # Its index also serves lookups by run_id (leftmost column), so run_id needs no other.
    sa.UniqueConstraint("run_id", "asset", "partition_key"),
    sa.UniqueConstraint("seq"),
)
# "Latest materialization of (asset, partition)": an index scan read backwards, no sort.
sa.Index(
    "ix_flowstone_materializations_latest",
    materializations.c.asset,
    materializations.c.partition_key,
    materializations.c.created_at,
    materializations.c.seq,
)
sa.Index("ix_flowstone_materializations_status", materializations.c.status)
#: A step not finished yet (pending, running, waiting for approval), its statuses written as
#: SQL literals: PostgreSQL and SQLite use a partial index only for a query whose condition
#: implies the index's, which they prove from the text, not from bound values.
UNFINISHED = materializations.c.status.in_(
    [sa.literal_column(f"'{s.value}'") for s in Status if not s.is_final]
)
# "Has this run a step left?" after every distributed step: one probe of an index that holds
# only unfinished steps (revision 0006; 0005's (run_id, status) index also held every finished
# step, and with fresh statistics PostgreSQL read a step through it, scanning the whole run).
sa.Index(
    "ix_flowstone_materializations_unfinished",
    materializations.c.run_id,
    postgresql_where=UNFINISHED,
    sqlite_where=UNFINISHED,
)

lineage = sa.Table(
    "flowstone_lineage",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column(
        "materialization_id",
        ID,
        sa.ForeignKey(materializations.c.id, ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("asset", NAME, nullable=False),
    sa.Column("partition_key", KEY, nullable=False),
    # No foreign key: an upstream value may come from a store that was since cleaned up, and
    # lineage must still say what was read.
    sa.Column("upstream_materialization_id", ID, nullable=False),
    sa.Column("upstream_asset", NAME, nullable=False),
    sa.Column("upstream_partition_key", KEY, nullable=False),
    sa.Column("consumed_at", UTCDateTime, nullable=False),
)
sa.Index("ix_flowstone_lineage_materialization", lineage.c.materialization_id)
sa.Index("ix_flowstone_lineage_upstream_materialization", lineage.c.upstream_materialization_id)
sa.Index(
    "ix_flowstone_lineage_upstream",
    lineage.c.upstream_asset,
    lineage.c.upstream_partition_key,
)
sa.Index("ix_flowstone_lineage_downstream", lineage.c.asset, lineage.c.partition_key)

audit_log = sa.Table(
    "flowstone_audit_log",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("actor", NAME, nullable=False),
    sa.Column("actor_type", sa.String(32), nullable=False),
    sa.Column("action", NAME, nullable=False),
    sa.Column("resource_type", sa.String(64), nullable=False),
    sa.Column("resource_id", NAME, nullable=False),
    sa.Column("details", JSONType, nullable=False),
    sa.Column("correlation_id", NAME),
)
sa.Index("ix_flowstone_audit_log_correlation", audit_log.c.correlation_id)
# resource_id first: the store filters by resource_id alone, and by both.
sa.Index("ix_flowstone_audit_log_resource", audit_log.c.resource_id, audit_log.c.resource_type)
sa.Index("ix_flowstone_audit_log_action", audit_log.c.action)

# --- backfills -------------------------------------------------------------------------------
# A backfill is one row: its partition set is compact JSON (ranges over the definition), its
# progress a cursor into that set plus counts per outcome. Only partitions that did not succeed
# get a row of their own (with the error), so a backfill that goes well costs one row, whatever
# its size. backfill_runs links each run (one per chunk of partitions) to its backfill.

backfills = sa.Table(
    "flowstone_backfills",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False),
    sa.Column("status", STATUS, nullable=False),
    sa.Column("targets", JSONType, nullable=False),
    sa.Column("with_upstream", sa.Boolean, nullable=False),
    sa.Column("partition_set", JSONType, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("cursor", sa.BigInteger, nullable=False),
    sa.Column("counts", JSONType, nullable=False),
    sa.Column("parallel", sa.Integer, nullable=False),
    sa.Column("chunk_size", sa.Integer, nullable=False),
    sa.Column("force", sa.Boolean, nullable=False),
    sa.Column("created_by", NAME),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("owner", NAME),  # host:pid:token of the process working on it
    sa.Column("heartbeat_at", UTCDateTime),
    sa.UniqueConstraint("seq"),
)
sa.Index("ix_flowstone_backfills_created", backfills.c.created_at, backfills.c.seq)

backfill_runs = sa.Table(
    "flowstone_backfill_runs",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column(
        "backfill_id",
        ID,
        sa.ForeignKey(backfills.c.id, ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False),
)
sa.Index("ix_flowstone_backfill_runs_backfill", backfill_runs.c.backfill_id)

backfill_partitions = sa.Table(
    "flowstone_backfill_partitions",
    metadata,
    sa.Column(
        "backfill_id",
        ID,
        sa.ForeignKey(backfills.c.id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("position", sa.BigInteger, primary_key=True),
    sa.Column("partition_key", KEY, nullable=False),
    sa.Column("outcome", STATUS, nullable=False),
    sa.Column("asset", NAME),
    sa.Column("run_id", ID),
    sa.Column("materialization_id", ID),
    sa.Column("error_type", NAME),
    sa.Column("error_message", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# --- schedules and sensors -------------------------------------------------------------------
# A schedule's row is its definition plus its state (paused, cursor). Ticks are keyed by
# (kind, name, tick_time): the unique key is what stops two schedulers from both taking a tick.
# tick_runs links each run a tick launched to the tick's origin, its run key (unique per sensor:
# a key launches once; NULLs never collide) and the time a scheduler last claimed it.

schedules = sa.Table(
    "flowstone_schedules",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("targets", JSONType, nullable=False),
    sa.Column("cron", NAME, nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("partition", NAME, nullable=False),
    sa.Column("with_upstream", sa.Boolean, nullable=False),
    sa.Column("catch_up", STATUS, nullable=False),
    sa.Column("catch_up_limit", sa.Integer, nullable=False),
    sa.Column("max_lateness_s", sa.Float),
    sa.Column("dst_nonexistent", STATUS, nullable=False),
    sa.Column("dst_repeated", STATUS, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("cursor", UTCDateTime),
    sa.Column("source", STATUS, nullable=False),
    sa.Column("tags", JSONType, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

sensors = sa.Table(
    "flowstone_sensors",
    metadata,
    sa.Column("name", NAME, primary_key=True),
    sa.Column("interval_s", sa.Float, nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("cursor", sa.Text),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("last_tick_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

ticks = sa.Table(
    "flowstone_ticks",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", NAME, nullable=False),
    sa.Column("tick_time", UTCDateTime, nullable=False),
    sa.Column("status", STATUS, nullable=False),
    sa.Column("run_ids", JSONType, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("details", JSONType, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    # Also serves "a schedule's ticks, newest first".
    sa.UniqueConstraint("kind", "name", "tick_time"),
)

tick_runs = sa.Table(
    "flowstone_tick_runs",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("name", NAME, nullable=False),
    sa.Column("run_key", KEY),
    sa.Column("claimed_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("kind", "name", "run_key"),
)

# --- approvals -----------------------------------------------------------------------------
approvals = sa.Table(
    "flowstone_approvals",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("run_id", ID, nullable=False),
    # Written in the same transaction as the materialization that waits for it.
    sa.Column(
        "materialization_id",
        ID,
        sa.ForeignKey(materializations.c.id, ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("asset", NAME, nullable=False),
    sa.Column("partition_key", KEY, nullable=False),
    sa.Column("status", STATUS, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("context", JSONType, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("timeout_at", UTCDateTime),
    sa.Column("decided_by", NAME),
    sa.Column("decided_at", UTCDateTime),
    sa.Column("reason", sa.Text),
    sa.Column("input", JSONType, nullable=False),
)
# The expiry sweep and the "pending" list: status first, then the due time.
sa.Index("ix_flowstone_approvals_status", approvals.c.status, approvals.c.timeout_at)
sa.Index("ix_flowstone_approvals_asset", approvals.c.asset, approvals.c.partition_key)
sa.Index("ix_flowstone_approvals_run", approvals.c.run_id)
sa.Index("ix_flowstone_approvals_materialization", approvals.c.materialization_id)
