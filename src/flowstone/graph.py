"""The asset graph: built once from a pipeline's assets, validated whole, then queried.

Validation names every problem precisely: a duplicate name, an unknown dependency with the
nearest existing names, a cycle with its path, a resource or I/O manager nobody provides. After
that the graph is immutable; the executor, the planner and the CLI only read it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from flowstone.asset import AssetDef
from flowstone.errors import (
    CycleError,
    DefinitionError,
    DuplicateAssetError,
    MissingResourceError,
    PartitionError,
    UnknownAssetError,
    UnknownDependencyError,
    suggest,
)
from flowstone.partitions import (
    IdentityMapping,
    MultiPartitions,
    Partition,
    PartitionMapping,
    PartitionsDefinition,
    TimeWindowPartitions,
    encode_partition,
    partition_repr,
)

_IDENTITY = IdentityMapping()
_MERMAID_LABEL = '|"{}"|'


@dataclass(frozen=True, slots=True)
class UpstreamRead:
    """What one partition of an asset reads of one dependency.

    Attributes:
        dep: The upstream asset's name.
        partitions: The upstream partitions read, in the upstream's order (``(None,)`` for
            an unpartitioned upstream).
        many: Whether the asset receives a dict of partition to value instead of one value.
        input: The parameter that receives it (None: waited for, not loaded).
        allow_missing: Whether upstream partitions without a successful materialization are
            left out instead of failing the step.
    """

    dep: str
    partitions: tuple[Partition, ...]
    many: bool = False
    allow_missing: bool = False
    #: The parameter that receives the value; None for a ``depends_on``-only dependency.
    input: str | None = None
    #: The encoded upstream partitions, in the same order (encoded once: every user reads them).
    keys: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(encode_partition(p) for p in self.partitions))


@dataclass(frozen=True, slots=True)
class _Edge:
    """One way an asset reads an upstream asset: through a parameter, or only waiting for it
    (``depends_on``); with the partition mapping (None: the upstream is unpartitioned)."""

    input: str | None
    dep: str
    mapping: PartitionMapping | None


class AssetGraph:
    """A validated DAG of assets.

    Edges point from an upstream asset to the assets that depend on it. Orders are
    deterministic: among assets whose dependencies are met, declaration order wins.

    Example::

        graph = AssetGraph([raw, cleaned, report])
        graph.topological_order()        # ('raw', 'cleaned', 'report')
        graph.upstream("report")         # {'raw', 'cleaned'}
    """

    def __init__(
        self,
        assets: Iterable[AssetDef],
        *,
        resources: Collection[str] | None = None,
        io_managers: Collection[str] | None = None,
    ) -> None:
        by_name: dict[str, AssetDef] = {}
        for a in assets:
            if not isinstance(a, AssetDef):
                raise DefinitionError(
                    f"Pipeline takes assets made with @asset, got {type(a).__name__} {a!r}."
                )
            if a.name in by_name:
                raise DuplicateAssetError(a.name)
            by_name[a.name] = a
        self._assets = MappingProxyType(by_name)
        self._check_dependencies()
        self._downstream: dict[str, tuple[str, ...]] = {name: () for name in by_name}
        for a in by_name.values():
            for dep in a.deps:
                self._downstream[dep] = (*self._downstream[dep], a.name)
        self._order = self._sort()
        self._position = {name: i for i, name in enumerate(self._order)}
        if resources is not None:
            self._check_resources(resources)
        if io_managers is not None:
            self._check_io_managers(io_managers)
        self._edges = self._check_partitions()

    # --- queries ---------------------------------------------------------------------------
    @property
    def assets(self) -> MappingProxyType[str, AssetDef]:
        """The assets by name, in declaration order."""
        return self._assets

    def __contains__(self, name: object) -> bool:
        return name in self._assets

    def __len__(self) -> int:
        return len(self._assets)

    def get(self, name: str) -> AssetDef:
        """The asset named ``name``.

        Raises:
            UnknownAssetError: no such asset; the error suggests near names.
        """
        try:
            return self._assets[name]
        except KeyError:
            raise UnknownAssetError(name, self._assets) from None

    def topological_order(self) -> tuple[str, ...]:
        """Every asset, each after all of its dependencies."""
        return self._order

    def dependencies(self, name: str) -> tuple[str, ...]:
        """The direct upstream assets of ``name``."""
        return self.get(name).deps

    def dependents(self, name: str) -> tuple[str, ...]:
        """The direct downstream assets of ``name``."""
        self.get(name)
        return self._downstream[name]

    def reads(
        self, name: str, partition: Partition, *, as_of: datetime | None = None
    ) -> tuple[UpstreamRead, ...]:
        """For each dependency of ``name``, what its ``partition`` reads (one entry per
        dependency, in declaration order). This is the one rule the planner, the materializer
        and the distributed scheduler share; they pass the run's creation time as ``as_of``,
        so open-ended time windows give every step of a run the partitions it was planned
        with, whenever it runs.

        Raises:
            PartitionError: a mapping needs upstream partitions the upstream definition does
                not hold (e.g. an hour that is not over yet).
        """
        asset = self.get(name)
        found = []
        for edge in self._edges[name]:
            dep, mapping = edge.dep, edge.mapping
            if mapping is None:
                # Unpartitioned upstream: its one value, whatever this partition is.
                found.append(UpstreamRead(dep, (None,), input=edge.input))
                continue
            upstream = self._assets[dep].partitioned_by
            assert upstream is not None  # a mapping is only kept for a partitioned upstream
            down = asset.partitioned_by
            many = mapping.many(down, upstream)
            try:
                partitions = mapping.upstream_partitions(partition, down, upstream, as_of=as_of)
            except PartitionError as exc:
                raise PartitionError(
                    f"Asset {name!r} partition {partition_repr(partition)} cannot read {dep!r} "
                    f"through {mapping.describe()}: {exc}"
                ) from None
            if not many and len(partitions) > 1:
                # The definitions promised one window (e.g. hours within days) but this
                # zone's clock shift breaks it: refuse rather than pass one of them.
                raise PartitionError(
                    f"Asset {name!r} partition {partition_repr(partition)} reads "
                    f"{len(partitions)} partitions of {dep!r} through {mapping.describe()}, "
                    "where its parameter takes one value (a daylight-saving shift that is not "
                    "a whole hour?). Partition both assets alike, or read a dict with "
                    "fs.AllPartitions()/fs.LastPartitions(n)."
                )
            found.append(UpstreamRead(dep, partitions, many, mapping.allow_missing, edge.input))
        return tuple(found)

    def readers(self, name: str, dep: str, partition: Partition) -> tuple[Partition, ...] | None:
        """The partitions of ``name`` that may read ``dep``'s ``partition`` (a superset: check
        each with :meth:`reads`), or None when only looking at every partition can tell."""
        down = self.get(name).partitioned_by
        if down is None:
            return (None,)
        upstream = self._assets[dep].partitioned_by
        found: dict[str, Partition] = {}
        for edge in self._edges[name]:
            if edge.dep != dep:
                continue
            if edge.mapping is None:
                return None  # below an unpartitioned asset: every partition reads it
            assert upstream is not None
            readers = edge.mapping.downstream_partitions(partition, down, upstream)
            if readers is None:
                return None
            found.update((encode_partition(p), p) for p in readers)
        return tuple(found.values())

    def upstream(self, name: str) -> set[str]:
        """Every asset ``name`` depends on, transitively (not ``name`` itself)."""
        return self._walk([name], lambda n: self._assets[n].deps) - {name}

    def downstream(self, name: str) -> set[str]:
        """Every asset that depends on ``name``, transitively (not ``name`` itself)."""
        return self._walk([name], lambda n: self._downstream[n]) - {name}

    def select(self, names: Iterable[str], *, with_upstream: bool = False) -> tuple[str, ...]:
        """The named assets (and, optionally, all their upstream), in topological order.

        Each asset appears once, so a diamond's shared parent runs once.
        """
        roots = list(names)
        for name in roots:
            self.get(name)
        chosen = self._walk(roots, lambda n: self._assets[n].deps) if with_upstream else set(roots)
        return tuple(sorted(chosen, key=self._position.__getitem__))

    # --- rendering -------------------------------------------------------------------------
    def to_mermaid(self) -> str:
        """A Mermaid flowchart (``graph TD``), upstream above downstream."""
        # Node ids are positions: asset names may hold characters Mermaid ids cannot.
        node = {name: f"n{i}" for i, name in enumerate(self._order)}
        lines = ["graph TD"]
        lines.extend(f'    {node[name]}["{name}"]' for name in self._order)
        for name in self._order:
            for dep in self._assets[name].deps:
                label = self._edge_label(name, dep, _MERMAID_LABEL)
                lines.append(f"    {node[dep]} -->{label} {node[name]}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """A Graphviz ``digraph``."""
        lines = ["digraph flowstone {", "    rankdir=TB;"]
        lines.extend(f'    "{name}";' for name in self._order)
        for name in self._order:
            lines.extend(f'    "{dep}" -> "{name}";' for dep in self._assets[name].deps)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """One line per asset in topological order, with its dependencies (and the partition
        mapping of each that does not read the same partition)."""
        width = max((len(n) for n in self._order), default=0)
        lines = []
        for name in self._order:
            deps = [
                f"{dep}{self._edge_label(name, dep, ' [{}]')}" for dep in self._assets[name].deps
            ]
            lines.append(f"{name:<{width}}  <- {', '.join(deps)}" if deps else name)
        return "\n".join(lines) + "\n"

    def _edge_label(self, name: str, dep: str, template: str) -> str:
        """The mappings (other than the default) through which ``name`` reads ``dep``, each
        with its parameter when that is not named after ``dep``."""
        labels = []
        for edge in self._edges[name]:
            if edge.dep != dep:
                continue
            aliased = edge.input is not None and edge.input != dep
            if edge.mapping is None or edge.mapping is _IDENTITY:
                if aliased:
                    labels.append(f"{edge.input}")
                continue
            shown = edge.mapping.describe()
            labels.append(f"{edge.input}: {shown}" if aliased else shown)
        return template.format(", ".join(labels)) if labels else ""

    # --- validation ------------------------------------------------------------------------
    def _check_dependencies(self) -> None:
        for a in self._assets.values():
            for dep in a.deps:
                if dep not in self._assets:
                    readers = [p for p in a.inputs if a.input_assets.get(p, p) == dep]
                    if not readers:
                        via = "depends on (depends_on=[...])"
                    elif readers[0] == dep:
                        via = "has a parameter named"
                    else:
                        via = f"reads (ins={{{readers[0]!r}: ...}})"
                    raise UnknownDependencyError(a.name, dep, self._assets, via=via)

    def _check_resources(self, provided: Collection[str]) -> None:
        for a in self._assets.values():
            for name in sorted(a.requires):
                if name not in provided:
                    raise MissingResourceError(a.name, name, provided)

    def _check_io_managers(self, provided: Collection[str]) -> None:
        for a in self._assets.values():
            if a.io_manager is not None and a.io_manager not in provided:
                near = suggest(a.io_manager, provided)
                hint = f" Did you mean {near[0]!r}?" if near else ""
                raise DefinitionError(
                    f"Asset {a.name!r} uses I/O manager {a.io_manager!r}, but the pipeline has "
                    f"only {sorted(provided)}.{hint} Pass it in "
                    f"Pipeline(..., io_managers={{{a.io_manager!r}: ...}})."
                )

    def _check_partitions(self) -> dict[str, tuple[_Edge, ...]]:
        """Every way each asset reads its dependencies, with the partition mapping of each:
        the declared one (an ``AssetIn``'s, else the asset's ``partition_mappings`` entry),
        checked against both definitions, else the identity between alike-partitioned
        assets; any other pair is an error that names the mapping to declare."""
        edges: dict[str, tuple[_Edge, ...]] = {}
        for a in self._assets.values():
            ways: list[tuple[str | None, str, PartitionMapping | None]] = [
                (p, a.input_assets.get(p, p), a.input_mappings.get(p)) for p in a.inputs
            ]
            read = {dep for _, dep, _ in ways}
            ways += [(None, dep, None) for dep in a.deps if dep not in read]
            edges[a.name] = tuple(
                _Edge(param, dep, self._edge_mapping(a, param, dep, declared))
                for param, dep, declared in ways
            )
        return edges

    def _edge_mapping(
        self,
        a: AssetDef,
        param: str | None,
        dep: str,
        declared: PartitionMapping | None,
    ) -> PartitionMapping | None:
        down = a.partitioned_by
        upstream = self._assets[dep].partitioned_by
        declared = declared or a.partition_mappings.get(dep)
        what = f"{dep!r}" if param in (None, dep) else f"parameter {param!r} (reading {dep!r})"
        if upstream is None:
            if declared is not None:
                raise DefinitionError(
                    f"Asset {a.name!r} has a partition mapping for {what}, which is not "
                    "partitioned: every partition reads its one value. Drop the mapping."
                )
            return None
        if declared is not None:
            try:
                declared.check(down, upstream)
            except DefinitionError as exc:
                raise DefinitionError(
                    f"Asset {a.name!r}: the partition mapping for {what} does not fit: {exc}."
                ) from None
            return declared
        if down is not None and down == upstream:
            return _IDENTITY
        raise DefinitionError(_needs_mapping(a.name, down, dep, upstream))

    def _sort(self) -> tuple[str, ...]:
        # Kahn's algorithm, taking ready assets in declaration order.
        remaining = {name: len(a.deps) for name, a in self._assets.items()}
        declared = list(self._assets)
        ready = [n for n in declared if remaining[n] == 0]
        order: list[str] = []
        while ready:
            name = ready.pop(0)
            order.append(name)
            for child in self._downstream[name]:
                remaining[child] -= 1
                if remaining[child] == 0:
                    ready.append(child)
        if len(order) != len(declared):
            raise CycleError(self._find_cycle({n for n, left in remaining.items() if left}))
        return tuple(order)

    def _find_cycle(self, stuck: set[str]) -> Sequence[str]:
        # Every stuck asset has a stuck dependency, so walking dependencies from any of them
        # must revisit an asset: the revisited stretch is a cycle.
        start = next(n for n in self._assets if n in stuck)
        path: list[str] = []
        seen: dict[str, int] = {}
        node = start
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(d for d in self._assets[node].deps if d in stuck)
        cycle = [*path[seen[node] :], node]
        # Report in data-flow order (each asset feeds the next), as graphs are drawn.
        return list(reversed(cycle))

    @staticmethod
    def _walk(start: Iterable[str], step: Callable[[str], Iterable[str]]) -> set[str]:
        seen: set[str] = set()
        stack = list(start)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            stack.extend(step(name))
        return seen


def _needs_mapping(
    name: str, down: PartitionsDefinition | None, dep: str, upstream: PartitionsDefinition
) -> str:
    """Why ``name`` cannot read partitioned ``dep`` without a mapping, and which to declare."""
    if down is None:
        return (
            f"Asset {name!r} is not partitioned but depends on partitioned asset {dep!r}, so it "
            "cannot tell which partitions to read. Declare it, e.g. "
            f"@asset(partition_mappings={{{dep!r}: fs.AllPartitions()}}) or "
            f"fs.LastPartitions(n), or partition {name!r} the same way as {dep!r}."
        )
    if isinstance(down, TimeWindowPartitions) and isinstance(upstream, TimeWindowPartitions):
        fix = f"fs.TimeWindowMapping() (the {dep!r} windows that overlap each partition)"
    elif isinstance(down, MultiPartitions) or isinstance(upstream, MultiPartitions):
        multi = down if isinstance(down, MultiPartitions) else upstream
        assert isinstance(multi, MultiPartitions)
        fix = f"fs.DimensionMapping(<one of {list(multi.dimension_names)}>)"
    else:
        fix = "fs.IdentityMapping() (the same key) or fs.AllPartitions()"
    return (
        f"Asset {name!r} ({down.describe()}) depends on {dep!r} ({upstream.describe()}), which "
        "is partitioned differently, so a partition of one is not a partition of the other. "
        f"Say which {dep!r} partitions each {name!r} partition reads: "
        f"@asset(partition_mappings={{{dep!r}: {fix}}}), or give both the same definition."
    )
