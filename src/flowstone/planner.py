"""Planning a run: which assets, which partition for each, in which order.

A plan is plain data. Every executor (in-process threads today, distributed workers later)
runs a plan the same way: a step whose in-plan dependencies all succeeded is ready; a step below
a failure is skipped.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from flowstone.asset import AssetDef
from flowstone.checkpoints import ApprovalRecord
from flowstone.errors import PartitionError
from flowstone.graph import AssetGraph, UpstreamRead
from flowstone.partitions import (
    Partition,
    decode_partition,
    encode_partition,
    partition_repr,
)
from flowstone.records import MaterializationRecord, RunRecord, RunStatus, Status, new_id, utcnow

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


def step_of(
    graph: AssetGraph,
    record: MaterializationRecord,
    present: Collection[StepKey] = (),
    *,
    approval: ApprovalRecord | None = None,
    validate: bool = True,
) -> Step:
    """The step a run's stored record stands for (same id and creation time); its in-plan
    dependencies are those of its dependencies in ``present`` (the planner's rule,
    :func:`deps_in`, as of the run's creation).

    Args:
        validate: Check the partition against the asset's definition (as it is in this
            process: it may have changed since the run was planned). Off where the step is
            only recorded, never run (skipped below a failure).

    Raises:
        UnknownAssetError: the record's asset is not in ``graph``.
        PartitionError: the record's partition key is malformed, or (``validate``) not one of
            the asset's partitions.
    """
    asset = graph.get(record.asset)
    partition = decode_partition(record.partition_key)
    if validate:
        partition = resolve_partition(asset, partition)
    deps = (
        deps_in(graph, asset.name, partition, present, as_of=record.created_at) if present else ()
    )
    return Step(
        asset=asset,
        partition=partition,
        partition_key=record.partition_key,
        materialization_id=record.id,
        created_at=record.created_at,
        deps_in_plan=deps,
        approval=approval,
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

    def run_record(self, tags: Mapping[str, str] | None = None) -> RunRecord:
        """The plan's run as it starts: ``running``, tagged with ``tags``."""
        return RunRecord(
            id=self.run_id,
            status=RunStatus.RUNNING,
            targets=self.targets,
            partition_key=self.partition_key,
            created_at=self.created_at,
            tags=dict(tags or {}),
        )

    def pending_records(self) -> list[MaterializationRecord]:
        """Every step's ``pending`` record: how a run's steps are stored when it starts."""
        return [step.pending_record(self.run_id) for step in self.steps]

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


def step_deps(
    graph: AssetGraph, asset: str, partition: Partition, *, as_of: datetime | None = None
) -> list[StepKey]:
    """The (asset, encoded partition) of every upstream partition ``asset`` reads for
    ``partition``, through its partition mappings (:meth:`AssetGraph.reads`; ``as_of``: the
    run's creation time)."""
    return list(_read_keys(graph.reads(asset, partition, as_of=as_of)))


def _read_keys(reads: Iterable[UpstreamRead]) -> tuple[StepKey, ...]:
    # dict.fromkeys: two parameters may read the same upstream partition.
    return tuple(dict.fromkeys((read.dep, key) for read in reads for key in read.keys))


def deps_in(
    graph: AssetGraph,
    asset: str,
    partition: Partition,
    present: Collection[StepKey],
    *,
    as_of: datetime | None = None,
) -> tuple[StepKey, ...]:
    """The dependencies of ``asset``'s ``partition`` that are steps of the same run (those in
    ``present``); the others are read from the store. The planner's rule, also applied when a
    run is rebuilt from its stored records (with ``as_of``, the run's creation time)."""
    found = step_deps(graph, asset, partition, as_of=as_of)  # already without repeats
    return tuple(k for k in found if k in present)


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

    Each asset of the selection takes the requested partition when it is unpartitioned (its
    one value) or when its definition holds the partition. An upstream asset whose definition
    does not hold it (hourly data below a daily target) takes instead the partitions that the
    assets below it read, through their partition mappings. Each (asset, partition) appears
    once. Steps come after the steps they depend on, partition by partition (in the order
    asked), so a long run makes progress one partition at a time.

    Raises:
        UnknownAssetError: a target is not in the graph.
        PartitionError: a partition does not fit a target, or a mapping needs an upstream
            partition that does not exist.
    """
    target_names = tuple(dict.fromkeys(targets)) or graph.topological_order()
    names = graph.select(target_names, with_upstream=with_upstream)
    selected = set(names)
    assets = [graph.get(n) for n in names]
    requested = [p for p in partitions if p is not None]
    if requested and all(a.partitioned_by is None for a in assets):
        raise PartitionError(
            f"None of {', '.join(repr(n) for n in target_names)} is partitioned, but partition "
            f"{partition_repr(requested[0])} was given. Drop the partition, or declare the asset "
            "with @asset(partitioned_by=...)."
        )
    # Open-ended time windows are read as of this instant by every step of the run.
    created_at = utcnow()
    # (asset, key) -> (partition, group): the group is the requested partition it serves first.
    wanted: dict[StepKey, tuple[Partition, int]] = {}
    # (asset, key) -> every upstream partition it reads (computed once, by _derive).
    reads: dict[StepKey, tuple[StepKey, ...]] = {}
    for group, partition in enumerate(partitions):
        seeds = [
            (name, encode_partition(value), value) for name, value in _seeds(assets, partition)
        ]
        new = [(name, key) for name, key, _ in seeds if (name, key) not in wanted]
        for name, key, value in seeds:
            wanted.setdefault((name, key), (value, group))
        _derive(
            graph,
            selected=selected,
            seeds={(n, k) for n, k, _ in seeds},
            new=new,
            group=group,
            wanted=wanted,
            reads=reads,
            as_of=created_at,
        )
    planned = {name for name, _ in wanted}
    for name in target_names:
        if name not in planned:
            # Neither the request nor an asset below gave it a partition: say why.
            for partition in partitions:
                resolve_partition(graph.get(name), partition)
    present = wanted.keys()
    steps = {
        key: Step(
            asset=graph.get(key[0]),
            partition=value,
            partition_key=key[1],
            materialization_id=new_id(),
            created_at=created_at,
            deps_in_plan=tuple(k for k in reads[key] if k in present),
        )
        for key, (value, _group) in wanted.items()
    }
    position = {name: i for i, name in enumerate(graph.topological_order())}
    order = dependencies_first(
        steps, lambda key: (wanted[key][1], wanted[key][0] is not None, position[key[0]])
    )
    return RunPlan(
        run_id=run_id or new_id(),
        targets=target_names,
        partition_key=encode_partition(partitions[0]) if len(partitions) == 1 else None,
        steps=tuple(steps[key] for key in order),
        created_at=created_at,
    )


def _seeds(assets: Sequence[AssetDef], partition: Partition) -> list[tuple[str, Partition]]:
    """The selected assets that take ``partition`` itself, and the partition each takes."""
    found: list[tuple[str, Partition]] = []
    for asset in assets:
        definition = asset.partitioned_by
        if definition is None:
            found.append((asset.name, None))
        elif partition is not None:
            try:
                found.append((asset.name, definition.validate(partition)))
            except PartitionError:
                continue  # not its kind of key: it gets what the assets below read, if any
    return found


def _derive(
    graph: AssetGraph,
    *,
    selected: set[str],
    seeds: set[StepKey],
    new: list[StepKey],
    group: int,
    wanted: dict[StepKey, tuple[Partition, int]],
    reads: dict[StepKey, tuple[StepKey, ...]],
    as_of: datetime,
) -> None:
    """Add the upstream partitions that ``new`` steps (of ``group``) read, for the selected
    upstream assets, visiting assets downstream first so an added step's own upstream is added
    in turn. A seed (a step that took the requested partition itself) reads only its seeded
    upstream assets' requested partition, the rest from the store: a rolling window re-runs
    today, not the days before. A step added here reads everything it needs from the run.
    Records in ``reads`` every upstream partition each visited step reads (``deps_in``'s
    input: the plan's dependencies are those of them that are steps)."""
    seeded_assets = {name for name, _ in seeds}
    by_asset: dict[str, list[StepKey]] = {}
    for key in new:
        by_asset.setdefault(key[0], []).append(key)
    for name in reversed(graph.topological_order()):
        for key in by_asset.get(name, ()):
            value = wanted[key][0]
            found = graph.reads(name, value, as_of=as_of)
            reads[key] = _read_keys(found)
            for read in found:
                if read.dep not in selected:
                    continue
                if key in seeds and read.dep in seeded_assets:
                    continue
                for up, up_key in zip(read.partitions, read.keys, strict=True):
                    if (read.dep, up_key) not in wanted:
                        wanted[(read.dep, up_key)] = (up, group)
                        by_asset.setdefault(read.dep, []).append((read.dep, up_key))


def dependencies_first(
    steps: Mapping[StepKey, Step], priority: Callable[[StepKey], tuple[int, bool, int]]
) -> list[StepKey]:
    """A topological order of ``steps`` by their in-plan dependencies, taking among the ready
    ones the lowest ``priority`` first (Kahn's algorithm with a heap)."""
    waiting = {key: len(step.deps_in_plan) for key, step in steps.items()}
    children: dict[StepKey, list[StepKey]] = {key: [] for key in steps}
    for key, step in steps.items():
        for dep in step.deps_in_plan:
            children[dep].append(key)
    ready = [(priority(key), i, key) for i, key in enumerate(steps) if not waiting[key]]
    heapq.heapify(ready)
    seq = {key: i for i, key in enumerate(steps)}
    order: list[StepKey] = []
    while ready:
        _, _, key = heapq.heappop(ready)
        order.append(key)
        for child in children[key]:
            waiting[child] -= 1
            if not waiting[child]:
                heapq.heappush(ready, (priority(child), seq[child], child))
    return order
