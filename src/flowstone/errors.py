"""FlowStone's exceptions: one root, data-carrying subclasses.

Every error FlowStone raises is a :class:`FlowStoneError`. Each subclass carries the data a
caller needs to react (the asset name, the partition, the suggestions) and a message that says
what went wrong *and what to do*. Driver and user-code errors are wrapped at the boundary with
``raise ... from exc`` so the original traceback is never lost.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names from ``candidates`` that look like ``name``."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


def _did_you_mean(suggestions: Sequence[str]) -> str:
    if not suggestions:
        return ""
    return " Did you mean " + " or ".join(repr(s) for s in suggestions) + "?"


class FlowStoneError(Exception):
    """Something went wrong in FlowStone."""

    def __init__(self, message: str | None = None) -> None:
        # The class docstring is the default message, so a bare `raise SomeError()` still
        # says something useful.
        super().__init__(message or (self.__doc__ or "").strip())


# --- definitions ---------------------------------------------------------------------------


class DefinitionError(FlowStoneError):
    """An asset or pipeline definition is invalid."""


class DuplicateAssetError(DefinitionError):
    """Two assets share one name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Two assets are named {name!r}. Asset names must be unique within a pipeline: "
            f"rename one of them (the `name=` argument of @asset)."
        )


class UnknownAssetError(DefinitionError):
    """An asset name is not in the pipeline."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.suggestions = suggest(name, known)
        super().__init__(
            f"No asset named {name!r} in this pipeline.{_did_you_mean(self.suggestions)}"
            " List the assets with `flowstone graph`."
        )


class UnknownDependencyError(DefinitionError):
    """An asset depends on a name that no asset has."""

    def __init__(self, asset: str, dependency: str, known: Iterable[str], *, via: str) -> None:
        self.asset = asset
        self.dependency = dependency
        self.suggestions = suggest(dependency, known)
        super().__init__(
            f"Asset {asset!r} {via} {dependency!r}, but no asset has that name."
            f"{_did_you_mean(self.suggestions)} Add the missing asset to the pipeline or fix the "
            "name."
        )


class CycleError(DefinitionError):
    """The assets' dependencies form a cycle."""

    def __init__(self, path: Sequence[str]) -> None:
        self.path = tuple(path)
        super().__init__(
            f"Dependency cycle: {' -> '.join(self.path)}. Assets must form a DAG: remove one of "
            "these dependencies."
        )


class MissingResourceError(DefinitionError):
    """An asset requires a resource that the pipeline does not provide."""

    def __init__(self, asset: str, resource: str, known: Iterable[str]) -> None:
        self.asset = asset
        self.resource = resource
        self.suggestions = suggest(resource, known)
        super().__init__(
            f"Asset {asset!r} requires resource {resource!r}, but the pipeline provides none by "
            f"that name.{_did_you_mean(self.suggestions)} Pass it in "
            f"Pipeline(..., resources={{{resource!r}: ...}})."
        )


class PartitionError(FlowStoneError):
    """A partition value is invalid, cannot be encoded, or is not in its definition."""


# --- runtime -------------------------------------------------------------------------------


class MaterializationError(FlowStoneError):
    """A materialization could not complete."""

    def __init__(self, message: str, *, asset: str, partition: object = None) -> None:
        self.asset = asset
        self.partition = partition
        super().__init__(message)


class AssetExecutionError(MaterializationError):
    """The asset's own function raised."""

    def __init__(self, asset: str, partition: object, original: BaseException) -> None:
        self.original = original
        where = f"asset {asset!r}" + ("" if partition is None else f" partition {partition!r}")
        super().__init__(
            f"{where} raised {type(original).__name__}: {original}",
            asset=asset,
            partition=partition,
        )


class MissingUpstreamError(MaterializationError):
    """An upstream value is not materialized."""

    def __init__(self, asset: str, partition: object, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(
            f"Asset {asset!r} needs {upstream!r}"
            + ("" if partition is None else f" for partition {partition!r}")
            + ", which has no successful materialization. Materialize it first, or run with "
            "upstream assets (materialize_all / `flowstone materialize --with-deps`).",
            asset=asset,
            partition=partition,
        )


class IOManagerError(MaterializationError):
    """An I/O manager failed to store or load a value."""


class ValueNotFoundError(IOManagerError):
    """An I/O manager holds no value for this asset and partition."""


class ResourceSetupError(MaterializationError):
    """A resource failed to set up, so the assets that need it cannot run."""


class SkippedError(MaterializationError):
    """An asset was skipped because something it depends on did not succeed."""


class RunFailedError(FlowStoneError):
    """A run ended with failed materializations."""

    def __init__(self, run_id: str, failed: Sequence[str], first_error: str | None) -> None:
        self.run_id = run_id
        self.failed = tuple(failed)
        detail = f" First error: {first_error}" if first_error else ""
        super().__init__(
            f"Run {run_id} failed: {', '.join(self.failed)}.{detail} "
            f"See `flowstone history` or the run's materializations for tracebacks."
        )


# --- store ---------------------------------------------------------------------------------


class StoreError(FlowStoneError):
    """The metadata store failed."""


class StoreUnavailableError(StoreError):
    """The metadata store cannot be opened."""


class SchemaOutdatedError(StoreError):
    """The metadata store's schema is older than this version of FlowStone."""
