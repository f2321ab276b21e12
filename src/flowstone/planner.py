"""Planning a run: which assets, which partition for each, in which order.

A plan is plain data. Every executor (in-process threads today, distributed workers later)
runs a plan the same way: a step whose in-plan dependencies all succeeded is ready; a step below
a failure is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from flowstone.asset import AssetDef
from flowstone.checkpoints import ApprovalRecord
from flowstone.errors import PartitionError
from flowstone.graph import AssetGraph
from flowstone.partitions import Partition, encode_partition, partition_repr
from flowstone.records import MaterializationRecord, Status, new_id, utcnow

UNPARTITIONED_KEY = encode_partition(None)

#: Identifies a step within a run: (asset name, encoded partition).
StepKey = tuple[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One asset to materialize for one partition within a run."""

    asset: AssetDef
    partition: Partition
    partition_key: str
    materialization_id: str
    created_at: datetime
    #: Dependencies that are part of the same plan (the others are read from the store).
    deps_in_plan: tuple[StepKey, ...]
    #: The approval a resumed step runs with (``ctx.approval``); None on a first run.
    approval: ApprovalRecord | None = None

    @property
    def key(self) -> StepKey:
        """The step's identity within its run."""
        return (self.asset.name, self.partition_key)

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
    """The steps of one run; each step comes after the steps it depends on."""

    run_id: str
    targets: tuple[str, ...]
    #: The encoded partition the run was asked for; None when it spans several partitions.
    partition_key: str | None
    steps: tuple[Step, ...]
    created_at: datetime

    def dependents(self) -> dict[StepKey, list[StepKey]]:
        """For each step, the in-plan steps that depend on it."""
        children: dict[StepKey, list[StepKey]] = {s.key: [] for s in self.steps}
        for step in self.steps:
            for dep in step.deps_in_plan:
                children[dep].append(step.key)
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
        example = next(iter(definition.keys()), None)
        hint = (
            " (`--partition TEXT` on the command line)"
            if example is None
            else f", e.g. partition={example!r} (`--partition {partition_repr(example)}` on "
            "the command line)"
        )
        raise PartitionError(
            f"Asset {asset.name!r} is partitioned ({definition.describe()}): pass the partition "
            f"to materialize{hint}."
        )
    return definition.validate(partition)


def plan_run(
    graph: AssetGraph,
    targets: Iterable[str],
    *,
    partitions: Sequence[Partition] = (None,),
    with_upstream: bool,
    run_id: str | None = None,
) -> RunPlan:
    """Plan the materialization of ``targets`` (and their upstream, if asked) for one or more
    partitions.

    Each asset appears once per partition it is materialized for; an unpartitioned asset
    appears once whatever the number of partitions. Steps are ordered partition by partition
    (unpartitioned assets first), so a long run makes progress one partition at a time.

    Raises:
        UnknownAssetError: a target is not in the graph.
        PartitionError: a partition does not fit an asset of the plan.
    """
    target_names = tuple(dict.fromkeys(targets)) or graph.topological_order()
    names = graph.select(target_names, with_upstream=with_upstream)
    assets = [graph.get(n) for n in names]
    requested = [p for p in partitions if p is not None]
    if requested and all(a.partitioned_by is None for a in assets):
        raise PartitionError(
            f"None of {', '.join(repr(n) for n in target_names)} is partitioned, but partition "
            f"{partition_repr(requested[0])} was given. Drop the partition, or declare the asset "
            "with @asset(partitioned_by=...)."
        )
    created_at = utcnow()
    in_plan: set[StepKey] = set()
    steps: list[Step] = []

    def add(asset: AssetDef, value: Partition) -> None:
        key = encode_partition(value)
        if (asset.name, key) in in_plan:  # the same partition asked for twice
            return
        deps: list[StepKey] = []
        for dep in asset.deps:
            dep_key = (dep, encode_partition(resolve_partition(graph.get(dep), value)))
            if dep_key in in_plan:
                deps.append(dep_key)
        in_plan.add((asset.name, key))
        steps.append(
            Step(
                asset=asset,
                partition=value,
                partition_key=key,
                materialization_id=new_id(),
                created_at=created_at,
                deps_in_plan=tuple(deps),
            )
        )

    for asset in assets:
        if asset.partitioned_by is None:
            add(asset, None)
    for partition in partitions:
        for asset in assets:
            if asset.partitioned_by is not None:
                add(asset, resolve_partition(asset, partition))
    return RunPlan(
        run_id=run_id or new_id(),
        targets=target_names,
        partition_key=encode_partition(partitions[0]) if len(partitions) == 1 else None,
        steps=tuple(steps),
        created_at=created_at,
    )
