"""Running assets in this process: ``materialize``, ``materialize_all``, and the one path that
executes a recorded run's plan (also used by backfills and by continuing a run after approval
decisions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from flowstone.asset import AssetDef, asset_names
from flowstone.errors import DefinitionError, suggest
from flowstone.execution import Executor
from flowstone.execution.distributed import DistributedExecutor
from flowstone.materializer import IOSelection, Materializer, RunScope
from flowstone.partitions import Partition
from flowstone.pipeline_core import PipelineCore
from flowstone.planner import RunPlan, plan_run
from flowstone.records import (
    MaterializationRecord,
    RunRecord,
    RunResult,
    RunStatus,
    run_event,
    run_status,
    utcnow,
)
from flowstone.resources import ResourceScope

if TYPE_CHECKING:
    # Annotations only: the approvals' resume loads on first use (`import flowstone` stays light).
    from flowstone.resume import RunResumer


class PipelineMaterialize(PipelineCore):
    """:class:`~flowstone.pipeline.Pipeline`'s runs in this process."""

    # --- running ---------------------------------------------------------------------------
    def materialize(
        self,
        *assets: str | AssetDef | Sequence[str | AssetDef],
        partition: Partition = None,
        with_upstream: bool = False,
        io_manager: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Materialize the named assets for one partition, reading their upstream values from
        earlier runs.

        With no names, every asset of the pipeline. The call returns when the run ends; it does
        not raise when an asset fails: check ``result.ok`` or call
        ``result.raise_for_status()``.

        Args:
            assets: Asset names (or the assets themselves), or one list of them.
            partition: The partition to materialize; required when an asset is partitioned.
            with_upstream: Also materialize every asset they depend on, first.
            io_manager: Store (and load) every value of this run through this I/O manager.
            run_id: The run's id (default: a new random one).
            tags: String labels stored on the run.

        Raises:
            UnknownAssetError: a name is not an asset of this pipeline.
            PartitionError: the partition is missing, malformed, or outside an asset's
                partitions.
        """
        names = [name for given in assets for name in asset_names(given)]
        if io_manager is not None and io_manager not in self._io.managers:
            near = suggest(io_manager, self._io.managers)
            raise DefinitionError(
                f"No I/O manager named {io_manager!r}; this pipeline has "
                f"{sorted(self._io.managers)}." + (f" Did you mean {near[0]!r}?" if near else "")
            )
        plan = plan_run(
            self.graph, names, partitions=(partition,), with_upstream=with_upstream, run_id=run_id
        )
        return self._run(plan, io_manager=io_manager, tags=tags or {})

    def materialize_all(
        self,
        *assets: str | AssetDef | Sequence[str | AssetDef],
        partition: Partition = None,
        io_manager: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Materialize the named assets and everything upstream of them (each asset once), or
        the whole pipeline when no names are given.

        Independent branches run in parallel. When an asset fails, the assets below it are
        recorded ``skipped`` and the rest of the run goes on.

        Example::

            run = pipeline.materialize_all("daily_report", partition=dt.date(2025, 1, 15))
        """
        return self.materialize(
            *assets,
            partition=partition,
            with_upstream=True,
            io_manager=io_manager,
            run_id=run_id,
            tags=tags,
        )

    def _run(self, plan: RunPlan, *, io_manager: str | None, tags: Mapping[str, str]) -> RunResult:
        if isinstance(self._executor, DistributedExecutor):  # --- distributed execution ---
            io = IOSelection(self._io.managers, self._io.default, io_manager)
            return self._executor.submit(self.store, self.graph, plan, io=io, tags=dict(tags))
        run = self._create_run(plan, tags=tags)
        return self._execute(plan, run, io_manager=io_manager)

    def _create_run(self, plan: RunPlan, *, tags: Mapping[str, str]) -> RunRecord:
        """Record a new run and its steps as ``pending``, in one store call."""
        run = plan.run_record(tags)
        self.store.create_run(run, plan.pending_records(), [run_event("run.started", run)])
        return run

    def _execute(
        self,
        plan: RunPlan,
        run: RunRecord,
        *,
        io_manager: str | None = None,
        prior: Sequence[MaterializationRecord] = (),
        continue_decided: bool = True,
        executor: Executor | None = None,
        materializer: Materializer | None = None,
    ) -> RunResult:
        """Execute ``plan``'s steps for the recorded ``run`` and close the run.

        Args:
            prior: Records of the run that this plan does not cover (a run resumed after an
                approval); they count towards the run's final status.
            continue_decided: When the run ends waiting, continue it if one of its approvals
                was decided while it executed (off for the continuations themselves).
            executor: Run the steps with this executor instead of the pipeline's (a backfill
                runs its chunks with ``parallel`` threads).
            materializer: Run them through this materializer (a backfill's, which checks for
                a cancel before each step).
        """
        materializer = materializer or self._get_materializer()
        meta = {"run_id": run.id, "targets": list(run.targets), "partition": run.partition_key}
        self._telemetry.emit("run.start", meta)
        scope = RunScope(
            plan.run_id,
            ResourceScope(self._resources),
            IOSelection(self._io.managers, self._io.default, io_manager),
        )
        status = RunStatus.FAILED
        records: list[MaterializationRecord] = []
        try:
            with scope.resources:
                records = (executor or self._executor).execute(plan, materializer, scope)
            status = run_status([*prior, *records])
        finally:
            # Also on KeyboardInterrupt: the run must not stay `running`.
            finished = replace(
                run,
                status=status,
                completed_at=None if status == RunStatus.WAITING_APPROVAL else utcnow(),
            )
            self.store.update_run(finished, [run_event(f"run.{status.value}", finished)])
            self._telemetry.emit("run.stop", {**meta, "status": status.value})
        result = RunResult(
            run_id=run.id,
            status=status,
            partition_key=run.partition_key,
            materializations=tuple(records),
        )
        if status == RunStatus.WAITING_APPROVAL and continue_decided:
            # A decision made while this run executed was left to it (see flowstone.approvals).
            return self._resumer().continue_decided(run.id, records) or result
        return result

    def _resumer(self) -> RunResumer:
        from flowstone.resume import RunResumer

        return RunResumer(
            self.graph,
            self.store,
            self._get_materializer(),
            execute=self._continue,
            lock=self._approvals_lock,
        )

    def _continue(
        self, plan: RunPlan, run: RunRecord, prior: Sequence[MaterializationRecord]
    ) -> RunResult:
        """Execute part of a run after approval decisions, with the run's I/O manager."""
        # A run started with io_manager="x" recorded "x" on its materializations, where the
        # asset alone would choose another: continue with the same override.
        override = next(
            (
                r.io_manager
                for r in prior
                if r.io_manager is not None
                and r.asset in self.graph
                and r.io_manager != self._io.name_for(self.graph.get(r.asset))
            ),
            None,
        )
        return self._execute(plan, run, io_manager=override, prior=prior, continue_decided=False)
