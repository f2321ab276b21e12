"""Reading what runs recorded: values, statuses, history, lineage, the audit log and runs."""

from __future__ import annotations

from typing import Any

from flowstone.asset import AssetDef
from flowstone.errors import NotMaterializedError, PartitionError
from flowstone.io import StorageKey
from flowstone.partitions import Partition, encode_partition
from flowstone.pipeline_core import PipelineCore
from flowstone.planner import resolve_partition
from flowstone.records import (
    AuditEvent,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    Status,
)


class PipelineReads(PipelineCore):
    """:class:`~flowstone.pipeline.Pipeline`'s reads of the store and the stored values."""

    # --- reading ---------------------------------------------------------------------------
    def load(self, asset: str | AssetDef, partition: Partition = None) -> Any:
        """The value of the latest successful materialization of ``asset`` for ``partition``,
        read through the I/O manager that stored it.

        Raises:
            NotMaterializedError: the asset has no successful materialization for it.
        """
        name = _name(asset)
        value, key = self._partition(name, partition)
        record = self.store.latest_materialization(name, key, status=Status.SUCCESS)
        if record is None:
            raise NotMaterializedError(name, value)
        manager = (
            self._io.managers.get(record.io_manager or "")
            or self._io.for_asset(self.graph.get(name))[1]
        )
        return manager.load(StorageKey(name, value, key))

    def status(self, *assets: str | AssetDef) -> list[MaterializationRecord]:
        """The latest materialization of each (asset, partition) of these assets (default:
        every asset of this pipeline; other pipelines may share the store)."""
        names = [_name(a) for a in assets] or list(self.graph.topological_order())
        for name in names:
            self.graph.get(name)
        return self.store.latest_per_partition(names)

    def history(
        self,
        asset: str | AssetDef,
        partition: Partition = None,
        *,
        status: Status | None = None,
        limit: int = 20,
    ) -> list[MaterializationRecord]:
        """An asset's materializations, newest first (for one partition or status if given)."""
        name = _name(asset)
        key = None if partition is None else self._partition(name, partition)[1]
        self.graph.get(name)
        return self.store.list_materializations(
            asset=name, partition_key=key, status=status, limit=limit
        )

    def upstream_lineage(
        self, asset: str | AssetDef, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """The exact materializations that fed the latest successful materialization of
        ``asset``, transitively, up to ``depth`` steps."""
        name = _name(asset)
        record = self.store.latest_materialization(
            name, self._partition(name, partition)[1], status=Status.SUCCESS
        )
        return [] if record is None else self.store.upstream(record.id, depth=depth)

    def downstream_lineage(
        self, asset: str | AssetDef, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """The (asset, partition)s that consumed ``asset``'s values, transitively."""
        name = _name(asset)
        return self.store.downstream(name, self._partition(name, partition)[1], depth=depth)

    def impact(
        self, asset: str | AssetDef, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """:meth:`downstream_lineage` with each dependent's latest status."""
        name = _name(asset)
        return self.store.impact(name, self._partition(name, partition)[1], depth=depth)

    def audit_log(
        self, *, run_id: str | None = None, asset: str | None = None, limit: int | None = 100
    ) -> list[AuditEvent]:
        """Audit events, oldest first."""
        return self.store.list_audit(correlation_id=run_id, resource_id=asset, limit=limit)

    def parse_partition(self, asset: str | AssetDef, text: str) -> Partition:
        """Read a partition typed by a person (``2025-01-15``, ``eu|2025-01-15``, or the tagged
        form) with ``asset``'s partitions definition.

        Raises:
            PartitionError: the asset is not partitioned, or the text is not one of its
                partitions.
        """
        name = _name(asset)
        definition = self.graph.get(name).partitioned_by
        if definition is None:
            raise PartitionError(f"Asset {name!r} is not partitioned; drop the partition.")
        return definition.parse(text)

    def runs(self, *, limit: int = 50) -> list[RunRecord]:
        """Recent runs, newest first."""
        return self.store.list_runs(limit=limit)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        return self.store.get_run(run_id)

    def _partition(self, asset: str, partition: Partition) -> tuple[Partition, str]:
        """The validated partition of ``asset`` and its encoding, for reads."""
        definition = self.graph.get(asset)
        if definition.partitioned_by is None and partition is not None:
            raise PartitionError(
                f"Asset {asset!r} is not partitioned, but partition {partition!r} was given. "
                "Drop the partition."
            )
        value = resolve_partition(definition, partition)
        return value, encode_partition(value)


def _name(asset: str | AssetDef) -> str:
    return asset.name if isinstance(asset, AssetDef) else asset
