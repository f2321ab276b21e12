from __future__ import annotations

import pytest

import flowstone as fs
from flowstone.errors import DefinitionError


def test_decorator_keeps_a_plain_callable() -> None:
    @fs.asset
    def total(numbers):
        return sum(numbers)

    assert isinstance(total, fs.AssetDef)
    assert total([1, 2, 3]) == 6
    assert total.name == "total"
    assert total.deps == ("numbers",)
    assert total.inputs == ("numbers",)
    assert not total.wants_context


def test_context_parameter_is_not_a_dependency() -> None:
    @fs.asset(depends_on=["raw"], description="Cleaned rows")
    def cleaned(ctx, raw):
        return raw

    assert cleaned.wants_context
    assert cleaned.deps == ("raw",)
    assert cleaned.description == "Cleaned rows"


def test_depends_on_without_parameter_orders_only() -> None:
    @fs.asset(depends_on=["setup", "raw"])
    def report(raw):
        return raw

    assert report.deps == ("setup", "raw")
    assert report.inputs == ("raw",)


def test_options_are_recorded() -> None:
    daily = fs.DailyPartitions(start="2025-01-01")

    @fs.asset(
        name="orders_v2",
        requires=["db"],
        io_manager="memory",
        partitioned_by=daily,
        tags={"team": "finance"},
        metadata={"owner": "ana"},
        code_version="3",
    )
    def orders(context):
        """Orders from the shop. More text."""
        return []

    assert orders.name == "orders_v2"
    assert orders.requires == frozenset({"db"})
    assert orders.io_manager == "memory"
    assert orders.partitioned_by is daily
    assert orders.tags == {"team": "finance"}
    assert orders.metadata == {"owner": "ana"}
    assert orders.code_version == "3"
    assert orders.description == "Orders from the shop. More text."


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(*rows): pass", r"takes \*rows"),
        ("def f(**rows): pass", r"takes \*\*rows"),
        ("def f(a, /): pass", "positional-only"),
        ("def f(a, ctx): pass", "must come first"),
    ],
)
def test_bad_signatures_are_clear_errors(source: str, message: str) -> None:
    namespace: dict[str, object] = {}
    exec(source, namespace)
    with pytest.raises(DefinitionError, match=message):
        fs.asset(namespace["f"])  # type: ignore[arg-type]


def test_bad_names_and_arguments() -> None:
    with pytest.raises(DefinitionError, match="Invalid asset name"):
        fs.asset(name="has space")(lambda: 1)
    with pytest.raises(DefinitionError, match="depends on itself"):

        @fs.asset(depends_on=["loop"])
        def loop():
            return 1

    def f() -> int:
        return 1

    with pytest.raises(DefinitionError, match="Invalid asset name '<lambda>'"):
        fs.asset(lambda: 1)
    with pytest.raises(DefinitionError, match="asset names"):
        fs.asset(depends_on=[42])(f)  # type: ignore[list-item]
    with pytest.raises(DefinitionError, match="PartitionsDefinition"):
        fs.asset(partitioned_by="daily")(f)  # type: ignore[arg-type]

    @fs.asset
    def once():
        return 1

    with pytest.raises(DefinitionError, match="already an asset"):
        fs.asset(once)
