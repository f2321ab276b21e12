"""Backfills: materializing assets over many partitions, resumable, retryable and cancelable
(the work itself is :mod:`flowstone.backfill`'s, loaded on first use)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from flowstone.asset import AssetDef, asset_names
from flowstone.execution import Executor
from flowstone.execution.distributed import DistributedExecutor
from flowstone.materializer import IOSelection, Materializer
from flowstone.partitions import Partition
from flowstone.pipeline_materialize import PipelineMaterialize
from flowstone.planner import RunPlan
from flowstone.records import RunRecord, RunResult

if TYPE_CHECKING:
    # Annotations only: the backfill modules load on first use, inside the methods below
    # (`import flowstone` must stay light).
    from flowstone.backfill import Backfiller, BackfillReport, BackfillResult, PartitionChoice
    from flowstone.backfill_progress import ProgressCallback
    from flowstone.backfill_records import BackfillRecord


class PipelineBackfills(PipelineMaterialize):
    """:class:`~flowstone.pipeline.Pipeline`'s backfills."""

    # --- backfills ---------------------------------------------------------------------------
    def backfill(
        self,
        assets: str | AssetDef | Sequence[str | AssetDef],
        *,
        partitions: PartitionChoice = None,
        start: Partition = None,
        end: Partition = None,
        with_upstream: bool = False,
        parallel: int = 4,  # = backfill.DEFAULT_PARALLEL (a test keeps them equal)
        force: bool = False,
        chunk_size: int = 500,  # = backfill.DEFAULT_CHUNK_SIZE
        created_by: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> BackfillResult:
        """Materialize assets over many partitions, ``parallel`` at a time, recorded so that it
        can be resumed, retried, canceled and watched.

        The partitions are worked through in chunks of ``chunk_size``, each chunk one run; a
        partition that already succeeded is skipped (and counted) unless ``force``. The call
        returns when every partition has run or the backfill was canceled; it does not raise
        when partitions fail: check ``result.ok`` or call ``result.raise_for_status()``.

        Args:
            assets: The asset (or assets) to backfill; partitioned ones share one definition.
            partitions: A list of partitions, or ``"all"`` for every partition the definition
                has now.
            start: With ``end``: the range of partitions, both included (either may be left
                out: from the first, to the last).
            with_upstream: Also materialize their upstream assets for each partition
                (unpartitioned ones once per run of the backfill).
            parallel: Assets that run at once.
            force: Also rerun partitions that already succeeded.
            chunk_size: Partitions per run.
            created_by: Who started it (default: the OS user).
            progress: Called with a :class:`~flowstone.backfill_progress.BackfillProgress`
                as partitions finish (from worker threads).

        Raises:
            PartitionError: no partitions were given, or one is not in the definition.
            UnknownAssetError: an asset is not in this pipeline.

        Example::

            result = pipeline.backfill(
                "daily_report", start=dt.date(2024, 1, 1), end=dt.date(2024, 12, 31),
                with_upstream=True, parallel=8,
            )
            print(result.backfill.success, "done,", result.backfill.failed, "failed")
        """
        return self._get_backfiller().start(
            asset_names(assets),
            partitions=partitions,
            start=start,
            end=end,
            with_upstream=with_upstream,
            parallel=parallel,
            force=force,
            chunk_size=chunk_size,
            created_by=created_by,
            progress=progress,
        )

    def resume_backfill(
        self, backfill_id: str, *, by: str | None = None, progress: ProgressCallback | None = None
    ) -> BackfillResult:
        """Continue a backfill with every partition not successful yet (failed, canceled,
        or never reached), e.g. after its process died or it was canceled.

        Raises:
            UnknownBackfillError: no backfill has this id (or unique prefix).
            BackfillBusyError: a live process is running it.

        Example::

            pipeline.resume_backfill("3f2a9c1e").raise_for_status()
        """
        return self._get_backfiller().resume(backfill_id, by=by, progress=progress)

    def retry_failed_backfill(
        self, backfill_id: str, *, by: str | None = None, progress: ProgressCallback | None = None
    ) -> BackfillResult:
        """Rerun only the partitions of a backfill that failed.

        Raises:
            UnknownBackfillError: no backfill has this id (or unique prefix).
            BackfillBusyError: a live process is running it.

        Example::

            result = pipeline.retry_failed_backfill(backfill_id)
            print(result.backfill.failed, "still failing")
        """
        return self._get_backfiller().retry_failed(backfill_id, by=by, progress=progress)

    def cancel_backfill(self, backfill_id: str, *, by: str | None = None) -> BackfillRecord:
        """Stop a backfill: no new partition starts, the running ones finish, and the process
        running it records it ``canceled`` (at once when that process is gone).

        Raises:
            UnknownBackfillError: no backfill has this id (or unique prefix).
            BackfillStateError: it already finished.

        Example::

            pipeline.cancel_backfill(backfill_id, by="ana").status  # "canceling" or "canceled"
        """
        return self._get_backfiller().cancel(backfill_id, by=by)

    def backfills(self, *, limit: int | None = 50) -> list[BackfillRecord]:
        """Backfills, newest first.

        Example::

            running = [b for b in pipeline.backfills() if b.status == "running"]
        """
        return self.store.list_backfills(limit=limit)

    def backfill_status(self, backfill_id: str, *, failures: int = 20) -> BackfillReport:
        """A backfill with its counts, its first ``failures`` failing partitions (and their
        errors), and whether a live process runs it.

        Example::

            for row in pipeline.backfill_status(backfill_id).failures:
                print(row.partition_key, row.asset, row.error_type, row.error_message)
        """
        return self._get_backfiller().report(backfill_id, failures=failures)

    def _get_backfiller(self) -> Backfiller:
        from flowstone.backfill import Backfiller
        from flowstone.backfill_materializer import ChunkMaterializer

        store = self.store
        with self._lock:
            if self._backfiller is None or self._backfiller.store is not store:
                self._backfiller = Backfiller(
                    self.graph,
                    store,
                    self._telemetry,
                    self._execute_chunk,
                    materializer=lambda stop, tally: ChunkMaterializer(
                        self.graph,
                        store,
                        self._telemetry,
                        stop=stop,
                        tally=tally,
                        notifiers=self._approval_notifiers,
                    ),
                    # The workers' chunks are marked theirs, for decisions to continue there.
                    run_tags=(
                        self._executor.run_tags()
                        if isinstance(self._executor, DistributedExecutor)
                        else None
                    ),
                )
            return self._backfiller

    def _execute_chunk(
        self, plan: RunPlan, run: RunRecord, *, executor: Executor, materializer: Materializer
    ) -> RunResult:
        """Run a backfill chunk's recorded run: on the workers with the distributed executor
        (this process follows it, counting each partition as it ends, and cancels it on a
        cancel), else on the backfill's threads."""
        from flowstone.backfill_materializer import ChunkMaterializer

        if isinstance(self._executor, DistributedExecutor):
            assert isinstance(materializer, ChunkMaterializer)  # what the backfiller makes
            return self._executor.run_recorded(
                self.store,
                plan,
                run,
                io=IOSelection(self._io.managers, self._io.default),
                observe=materializer.observe,
                should_stop=materializer.should_stop,
            )
        return self._execute(plan, run, executor=executor, materializer=materializer)
