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
