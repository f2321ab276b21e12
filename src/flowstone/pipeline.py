"""The pipeline: an explicit container of assets and the wiring to run them.

``Pipeline`` validates the whole graph when it is built, then materializes through the one
materializer. It opens its metadata store lazily, on first use, so building a pipeline (and
importing the module that holds it) costs no database connection.

Its methods are grouped by feature, one mixin module each: the shared wiring
(:mod:`~flowstone.pipeline_core`), running in this process (:mod:`~flowstone.pipeline_materialize`),
reads (:mod:`~flowstone.pipeline_reads`), backfills (:mod:`~flowstone.pipeline_backfills`),
schedules and sensors (:mod:`~flowstone.pipeline_schedules`), approvals
(:mod:`~flowstone.pipeline_approvals`) and runs on the workers (:mod:`~flowstone.pipeline_runs`).
This module puts them together and owns the lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from flowstone.pipeline_approvals import PipelineApprovals
from flowstone.pipeline_backfills import PipelineBackfills
from flowstone.pipeline_core import EXECUTOR_ENV, QUEUE_ENV
from flowstone.pipeline_reads import PipelineReads
from flowstone.pipeline_runs import PipelineRuns
from flowstone.pipeline_schedules import PipelineSchedules
from flowstone.records import run_status

# The constants and `run_status` stay importable from here, where they were defined first.
__all__ = ["EXECUTOR_ENV", "QUEUE_ENV", "Pipeline", "run_status"]

logger = logging.getLogger(__name__)


class Pipeline(
    PipelineReads, PipelineBackfills, PipelineSchedules, PipelineApprovals, PipelineRuns
):
    """A validated set of assets, with where to record runs and store values.

    Args:
        assets: The assets, made with :func:`~flowstone.asset`.
        store: The metadata store: a URL (``"sqlite:///path.db"``,
            ``"postgresql+psycopg://..."``), ``"memory"``, or a :class:`MetadataStore`.
            Default: ``$FLOWSTONE_DATABASE_URL``, else a SQLite file in ``.flowstone/``.
        io_managers: I/O managers by name, added to the built-in ``"filesystem"`` (JSON files
            under ``.flowstone/storage``) and ``"memory"``.
        default_io_manager: The name of the manager for assets that choose none. Default:
            ``"default"`` if ``io_managers`` has one, else ``"memory"`` with an in-memory store,
            else ``"filesystem"``.
        resources: Resource providers by name (see :mod:`flowstone.resources`).
        max_workers: Threads for independent assets (default: CPU count + 4, at most 32).
        executor: Run plans with this executor instead of the in-process thread pool.
        approval_notifiers: Callables told about each approval request and decision (with
            the :class:`~flowstone.checkpoints.ApprovalRecord`); one that raises is logged.

    Raises:
        DefinitionError: the graph is invalid (duplicate or unknown names, a cycle, a resource
            or I/O manager nobody provides); the subclass and message say which.

    Example::

        pipeline = fs.Pipeline([raw_events, daily_report])
        run = pipeline.materialize_all("daily_report", partition=dt.date(2025, 1, 15))
        assert run.status == "success"
        pipeline.load("daily_report", partition=dt.date(2025, 1, 15))
    """

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop worker threads, release the I/O managers' connections (those with a
        ``close()``), and close the store (if the pipeline opened it)."""
        self._executor.close()
        for name, manager in self._io.managers.items():
            closer = getattr(manager, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:
                    # Closing is best effort: one manager's failure must not keep the store open.
                    logger.warning("I/O manager %r failed to close", name, exc_info=True)
        if self._store is not None and (
            self._store_spec is None or isinstance(self._store_spec, str)
        ):
            self._store.close()
            self._store = None
            self._materializer = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pipeline({len(self.graph)} assets)"

    def asset_names(self) -> Sequence[str]:
        """Every asset name, in topological order."""
        return self.graph.topological_order()
