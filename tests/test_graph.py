from __future__ import annotations

import itertools

import pytest

import flowstone as fs
from flowstone.errors import (
    CycleError,
    DefinitionError,
    DuplicateAssetError,
    MissingResourceError,
    UnknownAssetError,
    UnknownDependencyError,
)
from flowstone.graph import AssetGraph


def make(name: str, *deps: str, **options: object) -> fs.AssetDef:
    return fs.asset(name=name, depends_on=deps, **options)(lambda: name)  # type: ignore[call-overload, no-any-return]


def diamond() -> AssetGraph:
    return AssetGraph([make("a"), make("b", "a"), make("c", "a"), make("d", "b", "c")])


def test_topological_order_and_neighbours() -> None:
    graph = diamond()
    assert graph.topological_order() == ("a", "b", "c", "d")
    assert graph.dependencies("d") == ("b", "c")
    assert graph.dependents("a") == ("b", "c")
    assert graph.upstream("d") == {"a", "b", "c"}
    assert graph.downstream("a") == {"b", "c", "d"}
    assert graph.downstream("d") == set()


def test_order_follows_declaration_when_free() -> None:
    graph = AssetGraph([make("z"), make("y", "z"), make("x")])
    assert graph.topological_order() == ("z", "x", "y")


def test_select_with_and_without_upstream() -> None:
    graph = diamond()
    assert graph.select(["d"]) == ("d",)
    assert graph.select(["d"], with_upstream=True) == ("a", "b", "c", "d")
    assert graph.select(["c", "b"], with_upstream=True) == ("a", "b", "c")


def test_duplicate_names() -> None:
    with pytest.raises(DuplicateAssetError, match="'a'"):
        AssetGraph([make("a"), make("a")])


def test_unknown_dependency_suggests_nearest() -> None:
    with pytest.raises(UnknownDependencyError) as err:
        AssetGraph([make("raw_events"), make("report", "raw_event")])
    assert err.value.suggestions == ["raw_events"]
    assert "Did you mean 'raw_events'" in str(err.value)


def test_parameter_naming_no_asset_is_reported_as_a_parameter() -> None:
    @fs.asset
    def report(raw_evnts):
        return raw_evnts

    with pytest.raises(UnknownDependencyError, match="has a parameter named 'raw_evnts'"):
        AssetGraph([make("raw_events"), report])


def test_cycle_names_its_path() -> None:
    with pytest.raises(CycleError) as err:
        AssetGraph([make("a", "c"), make("b", "a"), make("c", "b"), make("free")])
    path = err.value.path
    assert path[0] == path[-1]
    assert set(path) == {"a", "b", "c"}
    # Data-flow order: each asset feeds the next.
    for upstream, downstream in itertools.pairwise(path):
        assert upstream in {"a": ("c",), "b": ("a",), "c": ("b",)}[downstream]
    assert " -> ".join(path) in str(err.value)


def test_cycle_behind_a_valid_prefix() -> None:
    with pytest.raises(CycleError) as err:
        AssetGraph([make("root"), make("x", "root", "y"), make("y", "x")])
    assert set(err.value.path) == {"x", "y"}


def test_missing_resource() -> None:
    with pytest.raises(MissingResourceError, match="Did you mean 'warehouse'"):
        AssetGraph([make("a", requires=["warehous"])], resources={"warehouse": object()})


def test_unknown_io_manager() -> None:
    with pytest.raises(DefinitionError, match="I/O manager 'parquet'"):
        AssetGraph([make("a", io_manager="parquet")], io_managers={"memory"})


def test_unpartitioned_below_partitioned_is_rejected() -> None:
    daily = fs.DailyPartitions(start="2025-01-01")
    with pytest.raises(DefinitionError, match="not partitioned but depends on partitioned"):
        AssetGraph([make("day", partitioned_by=daily), make("total", "day")])


def test_differently_partitioned_dependency_is_rejected() -> None:
    daily = fs.DailyPartitions(start="2025-01-01")
    regions = fs.StaticPartitions(["us", "eu"])
    with pytest.raises(DefinitionError, match="partitioned differently"):
        AssetGraph(
            [make("region", partitioned_by=regions), make("day", "region", partitioned_by=daily)]
        )
    # The same definition (equal, not necessarily the same object) is fine.
    AssetGraph(
        [
            make("a", partitioned_by=daily),
            make("b", "a", partitioned_by=fs.DailyPartitions(start="2025-01-01")),
        ]
    )


def test_unknown_asset_lookup() -> None:
    with pytest.raises(UnknownAssetError) as err:
        diamond().get("e")
    assert err.value.name == "e"


def test_renderers() -> None:
    graph = diamond()
    mermaid = graph.to_mermaid()
    assert mermaid.startswith("graph TD\n")
    assert mermaid.count("-->") == 4
    dot = graph.to_dot()
    assert '"a" -> "b";' in dot and dot.rstrip().endswith("}")
    text = graph.to_text().splitlines()
    assert text[0] == "a"
    assert text[-1].split() == ["d", "<-", "b,", "c"]


def test_non_assets_are_rejected() -> None:
    with pytest.raises(DefinitionError, match="made with @asset"):
        AssetGraph([lambda: 1])  # type: ignore[list-item]
