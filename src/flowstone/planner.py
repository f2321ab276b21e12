"""Planning a run: which assets, which partition for each, in which order.

A plan is plain data. Every executor (in-process threads today, distributed workers later)
runs a plan the same way: a step whose in-plan dependencies all succeeded is ready; a step below
a failure is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from flowstone.asset import AssetDef
from flowstone.errors import PartitionError
from flowstone.graph import AssetGraph
from flowstone.partitions import Partition, encode_partition, partition_repr
from flowstone.records import MaterializationRecord, Status, new_id, utcnow

UNPARTITIONED_KEY = encode_partition(None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One asset to materialize for one partition within a run."""

    asset: AssetDef
    partition: Partition
    partition_key: str
    materialization_id: str
    created_at: datetime
    #: Dependencies that are part of the same plan (the others are read from the store).
    deps_in_plan: tuple[str, ...]

    def pending_record(self, run_id: str) -> MaterializationRecord:
        """The ``pending`` record written when the run is created."""
        return MaterializationRecord(
            id=self.materialization_id,
            run_id=run_id,
            asset=self.asset.name,
            partition_key=self.partition_key,
            status=Status.PENDING,
            created_at=self.created_at,
            code_version=self.asset.code_version,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """The steps of one run, in topological order."""

    run_id: str
    targets: tuple[str, ...]
    partition: Partition
    partition_key: str
    steps: tuple[Step, ...]
    created_at: datetime

    def dependents(self) -> dict[str, list[str]]:
        """For each step's asset, the in-plan steps that depend on it."""
        children: dict[str, list[str]] = {s.asset.name: [] for s in self.steps}
        for step in self.steps:
            for dep in step.deps_in_plan:
                children[dep].append(step.asset.name)
        return children


def resolve_partition(asset: AssetDef, partition: Partition) -> Partition:
    """The partition ``asset`` is materialized for when a run asks for ``partition``.

    An unpartitioned asset is always materialized for ``None``; a partitioned one for the
    requested partition, validated against its definition.

    Raises:
        PartitionError: the asset is partitioned and no partition (or one outside its
            definition) was given.
    """
    definition = asset.partitioned_by
    if definition is None:
        return None
    if partition is None:
        raise PartitionError(
            f"Asset {asset.name!r} is partitioned ({definition.describe()}): pass the partition "
            "to materialize, e.g. partition=datetime.date(2025, 1, 15) or "
            "`--partition 2025-01-15` on the command line."
        )
    return definition.validate(partition)


def plan_run(
    graph: AssetGraph,
    targets: Iterable[str],
    *,
    partition: Partition = None,
    with_upstream: bool,
    run_id: str | None = None,
) -> RunPlan:
    """Plan the materialization of ``targets`` (and their upstream, if asked) for a partition.

    Raises:
        UnknownAssetError: a target is not in the graph.
        PartitionError: the partition does not fit an asset of the plan.
    """
    target_names = tuple(dict.fromkeys(targets)) or graph.topological_order()
    names = graph.select(target_names, with_upstream=with_upstream)
    if partition is not None and all(graph.get(n).partitioned_by is None for n in names):
        raise PartitionError(
            f"None of {', '.join(repr(n) for n in target_names)} is partitioned, but partition "
            f"{partition_repr(partition)} was given. Drop the partition, or declare the asset "
            "with @asset(partitioned_by=...)."
        )
    in_plan = set(names)
    created_at = utcnow()
    steps: list[Step] = []
    for name in names:
        asset = graph.get(name)
        value = resolve_partition(asset, partition)
        steps.append(
            Step(
                asset=asset,
                partition=value,
                partition_key=encode_partition(value),
                materialization_id=new_id(),
                created_at=created_at,
                deps_in_plan=tuple(d for d in asset.deps if d in in_plan),
            )
        )
    return RunPlan(
        run_id=run_id or new_id(),
        targets=target_names,
        partition=partition,
        partition_key=encode_partition(partition),
        steps=tuple(steps),
        created_at=created_at,
    )
