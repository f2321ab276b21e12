"""The asset graph: built once from a pipeline's assets, validated whole, then queried.

Validation names every problem precisely: a duplicate name, an unknown dependency with the
nearest existing names, a cycle with its path, a resource or I/O manager nobody provides. After
that the graph is immutable; the executor, the planner and the CLI only read it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from types import MappingProxyType

from flowstone.asset import AssetDef
from flowstone.errors import (
    CycleError,
    DefinitionError,
    DuplicateAssetError,
    MissingResourceError,
    UnknownAssetError,
    UnknownDependencyError,
    suggest,
)


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
        self._check_partitions()

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
            lines.extend(f"    {node[dep]} --> {node[name]}" for dep in self._assets[name].deps)
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
        """One line per asset in topological order, with its dependencies."""
        width = max((len(n) for n in self._order), default=0)
        lines = []
        for name in self._order:
            deps = self._assets[name].deps
            lines.append(f"{name:<{width}}  <- {', '.join(deps)}" if deps else name)
        return "\n".join(lines) + "\n"

    # --- validation ------------------------------------------------------------------------
    def _check_dependencies(self) -> None:
        for a in self._assets.values():
            for dep in a.deps:
                if dep not in self._assets:
                    via = (
                        "has a parameter named"
                        if dep in a.inputs
                        else "depends on (depends_on=[...])"
                    )
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

    def _check_partitions(self) -> None:
        # Until partition mappings exist, a partition flows unchanged from upstream to
        # downstream: an unpartitioned asset cannot pick one of its upstream's partitions, and
        # a partitioned one can only read an upstream partitioned the same way.
        for a in self._assets.values():
            for dep in a.deps:
                upstream = self._assets[dep].partitioned_by
                if a.partitioned_by is not None:
                    if upstream is not None and upstream != a.partitioned_by:
                        raise DefinitionError(
                            f"Asset {a.name!r} ({a.partitioned_by.describe()}) depends on "
                            f"{dep!r} ({upstream.describe()}), which is partitioned differently, "
                            "so a partition of one is not a partition of the other. Give both "
                            "the same partitions definition."
                        )
                    continue
                if upstream is not None:
                    raise DefinitionError(
                        f"Asset {a.name!r} is not partitioned but depends on partitioned asset "
                        f"{dep!r}, so it could not tell which partition to read. Partition "
                        f"{a.name!r} the same way as {dep!r}."
                    )

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
