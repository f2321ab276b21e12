"""Runs on the workers (the distributed executor): checking that a pipeline can use them,
following and cancelling their runs, and the wiring a worker runs a step with."""

from __future__ import annotations

from flowstone.errors import DistributedSetupError
from flowstone.execution import Executor
from flowstone.execution.distributed import (
    Cancellation,
    DistributedExecutor,
    Progress,
    check_shared_io,
    wait_for_run,
)
from flowstone.materializer import IOSelection, Materializer, RunScope
from flowstone.pipeline_core import PipelineCore
from flowstone.records import RunResult
from flowstone.resources import ResourceScope


class PipelineRuns(PipelineCore):
    """:class:`~flowstone.pipeline.Pipeline`'s runs on the workers."""

    # --- distributed execution (issue 3) ----------------------------------------------------
    @property
    def executor(self) -> Executor:
        """The executor that runs this pipeline's plans."""
        return self._executor

    def wait_for_run(
        self,
        run_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        on_progress: Progress | None = None,
    ) -> RunResult:
        """Follow a run (submitted to workers, or running elsewhere) until it ends, or waits
        for approvals with nothing else in flight.

        Args:
            timeout: Give up after this many seconds; the result is then still ``running``.
            poll_interval: Seconds between two looks at the store.
            on_progress: Called with the run and its records whenever a step changed.

        Raises:
            UnknownRunError: no run has this id.

        Example::

            run = pipeline.materialize_all()          # distributed: returns at once, running
            run = pipeline.wait_for_run(run.run_id)   # blocks until the workers are done
            run.raise_for_status()
        """
        return wait_for_run(
            self.store,
            run_id,
            poll_s=poll_interval,
            timeout_s=timeout,
            on_progress=on_progress,
            graph=self.graph,
        )

    def cancel_run(self, run_id: str, *, actor: str = "user") -> Cancellation:
        """Cancel a run of the workers: its steps that have not started are ``cancelled``,
        their jobs removed from the queue, running ones asked to abort. Works from any
        pipeline on the run's store (the run names its queue).

        Raises:
            UnknownRunError: no run has this id.
            DistributedSetupError: the run is not the workers' (an in-process run stops with
                its process) and this pipeline does not use the distributed executor.
        """
        executor = self._executor_of(run_id)
        if not isinstance(executor, DistributedExecutor):
            raise DistributedSetupError(
                "Only runs of the workers (the distributed executor) can be cancelled: an "
                "in-process run stops with its process. Set FLOWSTONE_EXECUTOR=distributed (or "
                "pass executor=DistributedExecutor()) to manage the workers' runs."
            )
        return executor.cancel(self.store, run_id, actor=actor)

    def resource_scope(self) -> ResourceScope:
        """A new scope over this pipeline's resource providers (a worker keeps one for its
        life; use it as a context manager so resources are torn down)."""
        return ResourceScope(self._resources)

    def step_runtime(
        self, run_id: str, *, resources: ResourceScope, io_manager: str | None = None
    ) -> tuple[Materializer, RunScope]:
        """The materializer and the scope a worker runs a step of ``run_id`` with: the same
        wiring (resources, I/O managers) as an in-process run of this pipeline."""
        scope = RunScope(
            run_id, resources, IOSelection(self._io.managers, self._io.default, io_manager)
        )
        return self._get_materializer(), scope

    def check_distributable(self) -> None:
        """Check that workers can run this pipeline's runs: a PostgreSQL store (it carries the
        queue) and no asset storing its value in memory.

        Raises:
            DistributedSetupError: they cannot; the message says what to change.
        """
        executor = self._executor
        if not isinstance(executor, DistributedExecutor):
            executor = DistributedExecutor()
        executor.prepare(self.store)
        check_shared_io(
            self.graph.assets.values(), IOSelection(self._io.managers, self._io.default)
        )
