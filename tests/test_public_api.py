"""The top-level ``flowstone`` namespace: a chosen public API that changes only on purpose."""

from __future__ import annotations

import importlib

import pytest

import flowstone

PUBLIC_API = {
    # definitions
    "asset",
    "AssetDef",
    "AssetIn",
    "AssetContext",
    "Pipeline",
    "resource",
    "Resource",
    # partitions and mappings
    "DailyPartitions",
    "HourlyPartitions",
    "WeeklyPartitions",
    "MonthlyPartitions",
    "StaticPartitions",
    "MultiPartitions",
    "AllPartitions",
    "LastPartitions",
    "TimeWindowMapping",
    "DimensionMapping",
    "IdentityMapping",
    # I/O
    "IOManager",
    "FilesystemIOManager",
    "MemoryIOManager",
    "StorageKey",
    # approvals, retries, execution
    "Approval",
    "WaitForApproval",
    "RetryPolicy",
    "DistributedExecutor",
    # results and errors
    "RunResult",
    "RunStatus",
    "FlowStoneError",
    # sensors (loaded lazily)
    "RunRequest",
    "SensorResult",
    "__version__",
}

# Names that used to be re-exported, and the module each is imported from now.
MOVED = {
    "ApprovalAlreadyDecidedError": "flowstone.errors",
    "ApprovalError": "flowstone.errors",
    "CycleError": "flowstone.errors",
    "DefinitionError": "flowstone.errors",
    "MaterializationError": "flowstone.errors",
    "PartitionError": "flowstone.errors",
    "RunFailedError": "flowstone.errors",
    "StoreError": "flowstone.errors",
    "UnknownAssetError": "flowstone.errors",
    "MaterializationRecord": "flowstone.records",
    "Status": "flowstone.records",
    "ApprovalRecord": "flowstone.checkpoints",
    "ApprovalStatus": "flowstone.checkpoints",
    "MetadataStore": "flowstone.store",
    "MemoryStore": "flowstone.store.memory",
    "TelemetryEvent": "flowstone.telemetry",
    "PartitionsDefinition": "flowstone.partitions",
}


def test_all_is_the_chosen_public_api() -> None:
    assert len(flowstone.__all__) == len(PUBLIC_API)
    assert set(flowstone.__all__) == PUBLIC_API


@pytest.mark.parametrize("name", sorted(PUBLIC_API))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(flowstone, name) is not None


def test_star_import_gives_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from flowstone import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC_API


def test_lazy_names_come_from_their_module() -> None:
    from flowstone.schedules import RunRequest, SensorResult

    assert flowstone.RunRequest is RunRequest
    assert flowstone.SensorResult is SensorResult


@pytest.mark.parametrize(("name", "module"), sorted(MOVED.items()))
def test_names_left_out_are_imported_from_their_module(name: str, module: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None
    with pytest.raises(AttributeError, match=name):
        getattr(flowstone, name)
