"""Executors: how a run's plan gets materialized (in-process threads; distributed workers later).

Every executor hands each step to the same :class:`~flowstone.materializer.Materializer`, so a
run records the same statuses, lineage and audit whichever executor ran it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from flowstone.execution.inprocess import InProcessExecutor
from flowstone.materializer import Materializer, RunScope
from flowstone.planner import RunPlan
from flowstone.records import MaterializationRecord

__all__ = ["Executor", "InProcessExecutor"]


class Executor(Protocol):
    """Runs a plan's steps through the materializer."""

    def execute(
        self,
        plan: RunPlan,
        materializer: Materializer,
        scope: RunScope,
        on_record: Callable[[MaterializationRecord], object] | None = None,
    ) -> list[MaterializationRecord]:
        """Run the plan; return each step's record in plan order: final, ``waiting_approval``
        (its dependents are not run nor skipped), or ``pending`` below a waiting step."""
        ...

    def close(self) -> None:
        """Release threads or connections."""
        ...
