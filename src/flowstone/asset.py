"""Declaring assets: the ``@asset`` decorator and the frozen :class:`AssetDef` it returns.

The decorator only describes. It reads the function's signature to learn which parameters are
upstream values and whether it wants a context, and records that on a frozen definition. Whether
the names exist, whether they form a cycle, whether the resources are provided: the pipeline
checks all of that at once when it is built (:class:`flowstone.graph.AssetGraph`).

The decorated object stays a plain callable, so a unit test can call it directly::

    @fs.asset(depends_on=["raw_events"])
    def daily_total(raw_events):
        return sum(e["n"] for e in raw_events)

    assert daily_total([{"n": 1}, {"n": 2}]) == 3
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from flowstone.checkpoints import Approval
from flowstone.errors import DefinitionError
from flowstone.partitions import PartitionMapping, PartitionsDefinition
from flowstone.retry import RetryPolicy

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
#: A first parameter with one of these names receives the AssetContext instead of a value.
CONTEXT_PARAMETER_NAMES = frozenset({"ctx", "context"})


@dataclass(frozen=True, slots=True)
class AssetIn:
    """Where a parameter's value comes from when it is not the asset of the same name, or
    when two parameters read one asset differently (``@asset(ins={...})``).

    Args:
        asset: The upstream asset's name.
        partition_mapping: Which of its partitions this parameter reads (see
            :mod:`flowstone.partitions.mappings`); default: the asset's
            ``partition_mappings`` entry for it, else the same partition.

    Example::

        @fs.asset(
            partitioned_by=days,
            ins={"week": fs.AssetIn("sales", fs.LastPartitions(7))},
        )
        def versus_last_week(sales: float, week: dict[dt.date, float]) -> float:
            return sales / (sum(week.values()) / len(week))
    """

    asset: str
    partition_mapping: PartitionMapping | None = None


# eq=False: an asset is an identity (hashable, usable as a dict key), not a value to compare.
@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class AssetDef:
    """A declared asset. Built by :func:`asset`; call it like the original function.

    Attributes:
        name: Unique name within a pipeline.
        fn: The function that computes the value.
        deps: Upstream asset names, in declaration order (``depends_on`` first, then
            parameters named after upstream assets).
        inputs: The parameter names that receive upstream values.
        input_assets: For each input, the upstream asset it reads (its own name unless
            ``ins`` says otherwise).
        input_mappings: The partition mappings given per input with :class:`AssetIn`.
        wants_context: Whether ``fn``'s first parameter receives the :class:`AssetContext`.
        requires: Resource names the asset needs in ``ctx.resources``.
        io_manager: Name of the I/O manager that stores this asset's values (``None``: the
            pipeline's default).
        partitioned_by: The asset's partitions, or ``None`` for an unpartitioned asset.
        partition_mappings: For upstream names, which of their partitions each partition of
            this asset reads (the others read the same partition, see
            :mod:`flowstone.partitions.mappings`).
        tags: Free-form string labels.
        metadata: Free-form JSON-compatible data about the asset.
        code_version: The version of the asset's code, recorded on each materialization.
        approval: A gate: ask for this approval before each materialization runs.
        retry: When a failure is tried again (distributed executor); None: never.
    """

    name: str
    fn: Callable[..., Any]
    description: str | None = None
    deps: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    input_assets: Mapping[str, str] = field(default_factory=dict)
    input_mappings: Mapping[str, PartitionMapping] = field(default_factory=dict)
    wants_context: bool = False
    requires: frozenset[str] = frozenset()
    io_manager: str | None = None
    partitioned_by: PartitionsDefinition | None = None
    partition_mappings: Mapping[str, PartitionMapping] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    code_version: str | None = None
    approval: Approval | None = None
    retry: RetryPolicy | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"AssetDef({self.name!r}, deps={list(self.deps)!r})"


@overload
def asset(fn: Callable[..., Any], /) -> AssetDef: ...


@overload
def asset(
    *,
    name: str | None = None,
    description: str | None = None,
    depends_on: Iterable[str] = (),
    requires: Iterable[str] = (),
    io_manager: str | None = None,
    partitioned_by: PartitionsDefinition | None = None,
    partition_mappings: Mapping[str, PartitionMapping] | None = None,
    ins: Mapping[str, AssetIn | str] | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    code_version: str | None = None,
    approval: Approval | None = None,
    retry: RetryPolicy | None = None,
) -> Callable[[Callable[..., Any]], AssetDef]: ...


def asset(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    depends_on: Iterable[str] = (),
    requires: Iterable[str] = (),
    io_manager: str | None = None,
    partitioned_by: PartitionsDefinition | None = None,
    partition_mappings: Mapping[str, PartitionMapping] | None = None,
    ins: Mapping[str, AssetIn | str] | None = None,
    tags: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    code_version: str | None = None,
    approval: Approval | None = None,
    retry: RetryPolicy | None = None,
) -> AssetDef | Callable[[Callable[..., Any]], AssetDef]:
    """Declare an asset: a named value computed by a function from its upstream assets.

    Dependencies come from ``depends_on`` and from the function's parameters: a parameter named
    after an upstream asset receives that asset's value. A first parameter named ``ctx`` or
    ``context`` receives the :class:`~flowstone.context.AssetContext` (partition, run id,
    resources, logger). A dependency listed in ``depends_on`` but not taken as a parameter only
    orders the run; its value is not loaded.

    The function returns the value to store, or raises to fail the materialization.

    Args:
        name: The asset's name; defaults to the function's name.
        description: What the asset is; defaults to the docstring's first line.
        depends_on: Upstream asset names.
        requires: Resource names the asset needs (``ctx.resources[name]``).
        io_manager: The name of the pipeline I/O manager that stores this asset's values.
        partitioned_by: The asset's partitions (e.g. ``DailyPartitions(start="2025-01-01")``).
        partition_mappings: Upstream name to :class:`~flowstone.partitions.PartitionMapping`:
            which upstream partitions each partition of this asset reads when it is not the
            same partition (``{"hourly": fs.TimeWindowMapping()}``, ``{"daily":
            fs.LastPartitions(7)}``). Such an input receives a dict of partition to value
            when a partition reads several.
        ins: Parameter name to the asset it reads (``AssetIn("sales",
            fs.LastPartitions(7))``, or just ``"sales"``), for a parameter not named after its
            asset, or two parameters reading one asset through different mappings.
        tags: String labels, e.g. ``{"team": "finance"}``.
        metadata: JSON-compatible data about the asset.
        code_version: Recorded on every materialization, to tell runs of old code apart.
        approval: Ask a person before each materialization runs
            (``approval=fs.Approval("Drop the old tables?")``); see :class:`Approval`.
        retry: Try the asset again after a failure, with backoff
            (``retry=fs.RetryPolicy(max_attempts=3)``); see :class:`RetryPolicy`.

    Example::

        @fs.asset(description="Raw events")
        def raw_events():
            return [{"user": "a", "n": 3}]

        @fs.asset(partitioned_by=fs.DailyPartitions(start="2025-01-01"))
        def daily_report(ctx, raw_events):
            return {"day": ctx.partition.isoformat(), "n": len(raw_events)}
    """

    def decorate(func: Callable[..., Any]) -> AssetDef:
        for given, what in ((depends_on, "depends_on"), (requires, "requires")):
            if isinstance(given, str):
                raise DefinitionError(
                    f"Asset {name or getattr(func, '__name__', '?')!r}: {what} takes a list of "
                    f"names, got the string {given!r}; write {what}=[{given!r}]."
                )
        if ins is not None and not isinstance(ins, Mapping):
            raise DefinitionError(
                f"Asset {name or getattr(func, '__name__', '?')!r}: ins takes a dict of "
                "parameter name to fs.AssetIn(...) (or an asset name), got "
                f"{type(ins).__name__}."
            )
        if partition_mappings is not None and not isinstance(partition_mappings, Mapping):
            raise DefinitionError(
                f"Asset {name or getattr(func, '__name__', '?')!r}: partition_mappings takes a "
                "dict of upstream name to mapping, e.g. {'events': fs.TimeWindowMapping()}, got "
                f"{type(partition_mappings).__name__}."
            )
        return _build(
            func,
            name=name,
            description=description,
            depends_on=tuple(depends_on),
            requires=frozenset(requires),
            io_manager=io_manager,
            partitioned_by=partitioned_by,
            partition_mappings=dict(partition_mappings or {}),
            ins=dict(ins or {}),
            tags=dict(tags or {}),
            metadata=dict(metadata or {}),
            code_version=code_version,
            approval=approval,
            retry=retry,
        )

    if fn is not None:
        return decorate(fn)
    return decorate


def _build(
    func: Callable[..., Any],
    *,
    name: str | None,
    description: str | None,
    depends_on: tuple[str, ...],
    requires: frozenset[str],
    io_manager: str | None,
    partitioned_by: PartitionsDefinition | None,
    tags: dict[str, str],
    partition_mappings: dict[str, PartitionMapping] | None = None,
    ins: dict[str, AssetIn | str] | None = None,
    metadata: dict[str, Any],
    code_version: str | None,
    approval: Approval | None = None,
    retry: RetryPolicy | None = None,
) -> AssetDef:
    if isinstance(func, AssetDef):
        raise DefinitionError(f"{func.name!r} is already an asset; apply @asset only once.")
    if not callable(func):
        raise DefinitionError(f"@asset needs a function, got {type(func).__name__}.")
    asset_name = name or getattr(func, "__name__", None)
    if not asset_name or not _NAME.match(asset_name):
        raise DefinitionError(
            f"Invalid asset name {asset_name!r}: use letters, digits, '_', '-' or '.', "
            "starting with a letter or '_'. Pass name='...' to @asset."
        )
    if partitioned_by is not None and not isinstance(partitioned_by, PartitionsDefinition):
        raise DefinitionError(
            f"Asset {asset_name!r}: partitioned_by must be a PartitionsDefinition such as "
            f"DailyPartitions(...), got {type(partitioned_by).__name__}."
        )
    if approval is not None and not isinstance(approval, Approval):
        raise DefinitionError(
            f"Asset {asset_name!r}: approval must be fs.Approval(message, ...), got "
            f"{type(approval).__name__}."
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise DefinitionError(
            f"Asset {asset_name!r}: retry must be fs.RetryPolicy(...), got {type(retry).__name__}."
        )
    for dep in depends_on:
        if not isinstance(dep, str):
            raise DefinitionError(
                f"Asset {asset_name!r}: depends_on takes asset names (str), got {dep!r}. "
                "Pass `other.name` to depend on an AssetDef."
            )
    wants_context, inputs = _read_signature(asset_name, func)
    if len(set(depends_on)) != len(depends_on):
        raise DefinitionError(f"Asset {asset_name!r} lists a dependency twice: {list(depends_on)}.")
    sources, input_mappings = _read_ins(asset_name, inputs, ins or {})
    read = tuple(dict.fromkeys(sources[p] for p in inputs))
    deps = depends_on + tuple(d for d in read if d not in depends_on)
    if asset_name in deps:
        raise DefinitionError(f"Asset {asset_name!r} depends on itself.")
    mappings = partition_mappings or {}
    for dep, mapping in mappings.items():
        if dep not in deps:
            raise DefinitionError(
                f"Asset {asset_name!r} has a partition mapping for {dep!r}, which is not one of "
                f"its dependencies {list(deps)}. Take it as a parameter or list it in depends_on."
            )
        if not isinstance(mapping, PartitionMapping):
            raise DefinitionError(
                f"Asset {asset_name!r}: the partition mapping for {dep!r} must be a "
                f"PartitionMapping such as fs.TimeWindowMapping(), got {type(mapping).__name__}."
            )
    doc = inspect.getdoc(func)
    return AssetDef(
        name=asset_name,
        fn=func,
        description=description or (doc.splitlines()[0] if doc else None),
        deps=deps,
        inputs=inputs,
        input_assets=sources,
        input_mappings=input_mappings,
        wants_context=wants_context,
        requires=requires,
        io_manager=io_manager,
        partitioned_by=partitioned_by,
        partition_mappings=mappings,
        tags=tags,
        metadata=metadata,
        code_version=code_version,
        approval=approval,
        retry=retry,
    )


def _read_ins(
    asset_name: str, inputs: tuple[str, ...], ins: Mapping[str, AssetIn | str]
) -> tuple[dict[str, str], dict[str, PartitionMapping]]:
    """Each input's upstream asset and, where ``ins`` gives one, its partition mapping."""
    sources = {p: p for p in inputs}
    mappings: dict[str, PartitionMapping] = {}
    for param, given in ins.items():
        if param not in inputs:
            raise DefinitionError(
                f"Asset {asset_name!r}: ins names {param!r}, which is not a parameter of its "
                f"function (it takes {list(inputs)})."
            )
        source = AssetIn(given) if isinstance(given, str) else given
        if not isinstance(source, AssetIn) or not isinstance(source.asset, str):
            raise DefinitionError(
                f"Asset {asset_name!r}: ins[{param!r}] must be fs.AssetIn('asset', ...) or an "
                f"asset name, got {given!r}."
            )
        mapping = source.partition_mapping
        if mapping is not None and not isinstance(mapping, PartitionMapping):
            raise DefinitionError(
                f"Asset {asset_name!r}: the partition mapping of ins[{param!r}] must be a "
                f"PartitionMapping such as fs.LastPartitions(7), got {type(mapping).__name__}."
            )
        sources[param] = source.asset
        if mapping is not None:
            mappings[param] = mapping
    return sources, mappings


def _read_signature(asset_name: str, func: Callable[..., Any]) -> tuple[bool, tuple[str, ...]]:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"Cannot read the signature of asset {asset_name!r}.") from exc
    wants_context = bool(params) and params[0].name in CONTEXT_PARAMETER_NAMES
    if wants_context:
        params = params[1:]
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            stars = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise DefinitionError(
                f"Asset {asset_name!r} takes {stars}{param.name}: name each upstream asset as "
                "its own parameter (or list it in depends_on)."
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise DefinitionError(
                f"Asset {asset_name!r}: parameter {param.name!r} is positional-only; upstream "
                "values are passed by name."
            )
        if param.name in CONTEXT_PARAMETER_NAMES:
            raise DefinitionError(
                f"Asset {asset_name!r}: the context parameter {param.name!r} must come first."
            )
    return wants_context, tuple(p.name for p in params)


def asset_names(assets: str | AssetDef | Iterable[str | AssetDef]) -> list[str]:
    """The names of ``assets``: one name or asset, or an iterable of them.

    Raises:
        DefinitionError: something else where an asset is expected.
    """
    # Anything else that is not iterable is reported below, as the one item it is.
    items: list[object] = [assets]
    if isinstance(assets, Iterable) and not isinstance(assets, str):
        items = list(assets)
    names = []
    for item in items:
        if isinstance(item, AssetDef):
            names.append(item.name)
        elif isinstance(item, str):
            names.append(item)
        else:
            raise DefinitionError(
                f"Expected an asset name or an @asset function, got {type(item).__name__} {item!r}."
            )
    return names
