"""The SQL store's lineage queries: recursive CTEs, bounded by a depth, that walk the lineage
table upstream from a materialization or downstream from an (asset, partition).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from flowstone.records import LineageNode, Status
from flowstone.store.base import clamp_depth
from flowstone.store.schema import lineage, materializations
from flowstone.store.sql.core import SQLStoreCore
from flowstone.store.sql.errors import _wraps_errors


class LineageQueries(SQLStoreCore):
    """Upstream, downstream and impact walks over the lineage table."""

    # --- lineage ---------------------------------------------------------------------------
    @_wraps_errors("read upstream lineage")
    def upstream(self, materialization_id: str, *, depth: int = 10) -> list[LineageNode]:
        params = {"start": materialization_id, "limit": clamp_depth(depth)}
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(self._upstream, params).all()
        return [
            LineageNode(
                asset=asset,
                partition_key=partition_key,
                depth=level,
                materialization_id=mat_id,
                run_id=run_id,
                status=None if status is None else Status(status),
            )
            for mat_id, asset, partition_key, level, run_id, status in rows
        ]

    @_wraps_errors("read downstream lineage")
    def downstream(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        return self._downstream_nodes(self._downstream, asset, partition_key, depth)

    @_wraps_errors("read impact")
    def impact(self, asset: str, partition_key: str, *, depth: int = 10) -> list[LineageNode]:
        return self._downstream_nodes(self._impact, asset, partition_key, depth)

    def _downstream_nodes(
        self, stmt: sa.Select[Any], asset: str, partition_key: str, depth: int
    ) -> list[LineageNode]:
        params = {"asset": asset, "partition_key": partition_key, "limit": clamp_depth(depth)}
        with self._serial, self._read.connect() as conn:
            rows = conn.execute(stmt, params).all()
        return [
            LineageNode(
                asset=row[0],
                partition_key=row[1],
                depth=row[2],
                materialization_id=row[3],
                run_id=row[4],
                status=Status(row[5]) if len(row) > 5 and row[5] is not None else None,
            )
            for row in rows
        ]

    def _build_lineage_statements(self) -> None:
        self._upstream = self._upstream_statement(self._text_order)
        self._downstream = self._downstream_statement(self._text_order, with_status=False)
        self._impact = self._downstream_statement(self._text_order, with_status=True)

    @staticmethod
    def _upstream_statement(
        text_order: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]],
    ) -> sa.Select[Any]:
        """Materializations read by ``:start``, transitively, each at its smallest depth."""
        e, m = lineage, materializations
        one = sa.literal_column("1", sa.Integer)
        walk = (
            sa.select(
                e.c.upstream_materialization_id.label("mat_id"),
                e.c.upstream_asset.label("asset"),
                e.c.upstream_partition_key.label("partition_key"),
                one.label("depth"),
            )
            .where(e.c.materialization_id == sa.bindparam("start"))
            .cte("upstream_walk", recursive=True)
        )
        step = e.alias("step")
        # UNION, not UNION ALL: a diamond reaches the same node twice at one depth.
        walk = walk.union(
            sa.select(
                step.c.upstream_materialization_id,
                step.c.upstream_asset,
                step.c.upstream_partition_key,
                walk.c.depth + 1,
            ).where(
                step.c.materialization_id == walk.c.mat_id,
                walk.c.depth < sa.bindparam("limit", type_=sa.Integer),
            )
        )
        nodes = (
            sa.select(
                walk.c.mat_id,
                walk.c.asset,
                walk.c.partition_key,
                sa.func.min(walk.c.depth).label("depth"),
            )
            .group_by(walk.c.mat_id, walk.c.asset, walk.c.partition_key)
            .subquery("nodes")
        )
        # An outer join: lineage may name an upstream materialization the store no longer has.
        return (
            sa.select(
                nodes.c.mat_id,
                nodes.c.asset,
                nodes.c.partition_key,
                nodes.c.depth,
                m.c.run_id,
                m.c.status,
            )
            .select_from(nodes.outerjoin(m, m.c.id == nodes.c.mat_id))
            .order_by(
                nodes.c.depth,
                text_order(nodes.c.asset),
                text_order(nodes.c.partition_key),
                text_order(nodes.c.mat_id),
            )
        )

    @staticmethod
    def _downstream_statement(
        text_order: Callable[[sa.ColumnElement[Any]], sa.ColumnElement[Any]],
        *,
        with_status: bool,
    ) -> sa.Select[Any]:
        """(asset, partition)s that consumed ``(:asset, :partition_key)``, transitively.

        Each appears once, at its smallest depth, with the newest materialization that consumed
        something one step closer to the start (the same answer as MemoryStore's walk).
        """
        e, m = lineage, materializations
        zero = sa.literal_column("0", sa.Integer)
        # Cast: PostgreSQL wants the two halves of a recursive query to agree on column types.
        start = sa.select(
            sa.cast(sa.bindparam("asset"), e.c.asset.type).label("asset"),
            sa.cast(sa.bindparam("partition_key"), e.c.partition_key.type).label("partition_key"),
            zero.label("depth"),
        ).cte("downstream_walk", recursive=True)
        step = e.alias("step")
        walk = start.union(
            sa.select(step.c.asset, step.c.partition_key, start.c.depth + 1).where(
                step.c.upstream_asset == start.c.asset,
                step.c.upstream_partition_key == start.c.partition_key,
                start.c.depth < sa.bindparam("limit", type_=sa.Integer),
            )
        )
        # Distance of each reached (asset, partition); the start itself is at 0.
        dist = (
            sa.select(walk.c.asset, walk.c.partition_key, sa.func.min(walk.c.depth).label("depth"))
            .group_by(walk.c.asset, walk.c.partition_key)
            .cte("distance")
        )
        node, via = dist.alias("node"), dist.alias("via")
        edge, consumer = e.alias("edge"), m.alias("consumer")
        rank = sa.func.row_number().over(
            partition_by=(node.c.asset, node.c.partition_key),
            order_by=(consumer.c.created_at.desc(), consumer.c.seq.desc()),
        )
        candidates = (
            sa.select(
                node.c.asset,
                node.c.partition_key,
                node.c.depth,
                edge.c.materialization_id,
                edge.c.run_id,
                rank.label("rank"),
            )
            .select_from(
                node.join(
                    edge,
                    sa.and_(
                        edge.c.asset == node.c.asset,
                        edge.c.partition_key == node.c.partition_key,
                    ),
                )
                .join(
                    via,
                    sa.and_(
                        via.c.asset == edge.c.upstream_asset,
                        via.c.partition_key == edge.c.upstream_partition_key,
                        via.c.depth == node.c.depth - 1,
                    ),
                )
                .join(consumer, consumer.c.id == edge.c.materialization_id)
            )
            .where(node.c.depth > 0)
            .subquery("candidates")
        )
        c = candidates.c
        columns: list[sa.ColumnElement[Any]] = [
            c.asset,
            c.partition_key,
            c.depth,
            c.materialization_id,
            c.run_id,
        ]
        if with_status:
            latest = m.alias("latest")
            columns.append(
                sa.select(latest.c.status)
                .where(latest.c.asset == c.asset, latest.c.partition_key == c.partition_key)
                .order_by(latest.c.created_at.desc(), latest.c.seq.desc())
                .limit(1)
                .scalar_subquery()
                .label("status")
            )
        return (
            sa.select(*columns)
            .where(c.rank == 1)
            .order_by(c.depth, text_order(c.asset), text_order(c.partition_key))
        )
