"""FlowStone: asset-first data orchestration, embedded on SQLite, scaling out on PostgreSQL.

Declare assets as functions, put them in a :class:`Pipeline`, materialize::

    import datetime as dt
    import flowstone as fs

    @fs.asset
    def raw_events():
        return [{"user": "a", "n": 3}, {"user": "b", "n": 5}]

    @fs.asset(partitioned_by=fs.DailyPartitions(start="2025-01-01"))
    def daily_report(ctx, raw_events):
        return {"day": ctx.partition.isoformat(), "total": sum(e["n"] for e in raw_events)}

    pipeline = fs.Pipeline([raw_events, daily_report])
    run = pipeline.materialize_all("daily_report", partition=dt.date(2025, 1, 15))
    assert run.status == "success"

``__all__`` is the chosen public API; the rest lives in its own module: the error classes in
:mod:`flowstone.errors`, the stored records in :mod:`flowstone.records`, the stores in
:mod:`flowstone.store`, approval records in :mod:`flowstone.checkpoints`, telemetry events in
:mod:`flowstone.telemetry`, ``PartitionsDefinition`` in :mod:`flowstone.partitions`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flowstone.asset import AssetDef, AssetIn, asset
from flowstone.checkpoints import Approval, WaitForApproval
from flowstone.context import AssetContext
from flowstone.errors import FlowStoneError
from flowstone.execution.distributed import DistributedExecutor  # issue 3
from flowstone.io import FilesystemIOManager, IOManager, MemoryIOManager, StorageKey
from flowstone.partitions import (
    AllPartitions,
    DailyPartitions,
    DimensionMapping,
    HourlyPartitions,
    IdentityMapping,
    LastPartitions,
    MonthlyPartitions,
    MultiPartitions,
    StaticPartitions,
    TimeWindowMapping,
    WeeklyPartitions,
)
from flowstone.pipeline import Pipeline
from flowstone.records import RunResult, RunStatus
from flowstone.resources import Resource, resource
from flowstone.retry import RetryPolicy  # issue 3

__version__ = "0.1.0.dev0"

if TYPE_CHECKING:
    from flowstone.schedules import RunRequest, SensorResult

# Loaded on first access (PEP 562): few processes need them, and their modules are a sizeable
# share of the import budget.
_LAZY = {
    "RunRequest": "flowstone.schedules",
    "SensorResult": "flowstone.schedules",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowstone' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AllPartitions",
    "Approval",
    "AssetContext",
    "AssetDef",
    "AssetIn",
    "DailyPartitions",
    "DimensionMapping",
    "DistributedExecutor",
    "FilesystemIOManager",
    "FlowStoneError",
    "HourlyPartitions",
    "IOManager",
    "IdentityMapping",
    "LastPartitions",
    "MemoryIOManager",
    "MonthlyPartitions",
    "MultiPartitions",
    "Pipeline",
    "Resource",
    "RetryPolicy",
    "RunRequest",
    "RunResult",
    "RunStatus",
    "SensorResult",
    "StaticPartitions",
    "StorageKey",
    "TimeWindowMapping",
    "WaitForApproval",
    "WeeklyPartitions",
    "__version__",
    "asset",
    "resource",
]
