"""The state every part of :class:`~flowstone.pipeline.Pipeline` shares: the graph, the lazily
opened store, the I/O managers, resources, executor and telemetry.

``PipelineCore`` builds and validates them; the feature mixins (``pipeline_materialize``,
``pipeline_reads``, ``pipeline_backfills``, ``pipeline_schedules``, ``pipeline_approvals``,
``pipeline_runs``) subclass it for these attributes, and ``Pipeline`` inherits them all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flowstone import config
from flowstone.asset import AssetDef
from flowstone.checkpoints import ApprovalNotifier
from flowstone.errors import DefinitionError, suggest
from flowstone.execution import Executor, InProcessExecutor
from flowstone.execution.distributed import DEFAULT_QUEUE, QUEUE_TAG, DistributedExecutor
from flowstone.graph import AssetGraph
from flowstone.io import FilesystemIOManager, IOManager, MemoryIOManager
from flowstone.materializer import IOSelection, Materializer
from flowstone.store import MetadataStore, open_store
from flowstone.telemetry import Handler, Telemetry

if TYPE_CHECKING:
    # Annotations only. The feature modules (backfills, schedules) load on first use, inside
    # the mixins' methods: most pipelines use one or none of them, and `import flowstone` must
    # stay light (under 100 ms).
    from flowstone.backfill import Backfiller
    from flowstone.schedules import ScheduleDef, SensorDef


class PipelineCore:
    """The wiring of a :class:`~flowstone.pipeline.Pipeline` (see its arguments there)."""

    def __init__(
        self,
        assets: Iterable[AssetDef],
        *,
        store: str | MetadataStore | None = None,
        io_managers: Mapping[str, IOManager] | None = None,
        default_io_manager: str | None = None,
        resources: Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        executor: Executor | None = None,
        approval_notifiers: Sequence[ApprovalNotifier] = (),
    ) -> None:
        self._store_spec = store
        self._store: MetadataStore | None = (
            None if store is None or isinstance(store, str) else store
        )
        if store is None:
            # Resolved now, not at first use, so metadata and values cannot land in different
            # homes when the working directory or the environment changes in between.
            store = self._store_spec = config.database_url()
        in_memory = store in ("memory", "memory://") or _is_memory_store(store)
        managers: dict[str, IOManager] = {
            "filesystem": FilesystemIOManager(config.storage_dir().absolute()),
            "memory": MemoryIOManager(),
            **(io_managers or {}),
        }
        if default_io_manager is None:
            if "default" in managers:
                default_io_manager = "default"
            else:
                default_io_manager = "memory" if in_memory else "filesystem"
        if default_io_manager not in managers:
            near = suggest(default_io_manager, managers)
            raise DefinitionError(
                f"default_io_manager {default_io_manager!r} is not one of {sorted(managers)}."
                + (f" Did you mean {near[0]!r}?" if near else "")
            )
        self._resources: dict[str, Any] = dict(resources or {})
        self.graph = AssetGraph(assets, resources=self._resources, io_managers=managers)
        self._io = IOSelection(managers, default_io_manager)
        self._executor: Executor = executor or _executor_from_environment(max_workers)
        self._telemetry = Telemetry()
        self._lock = threading.Lock()
        self._materializer: Materializer | None = None
        self._backfiller: Backfiller | None = None  # --- backfills ---
        # --- approvals ---
        self._approval_notifiers = tuple(approval_notifiers)
        self._approvals_lock = threading.RLock()
        # Schedules and sensors declared in code (stored by a scheduler when it starts).
        self._schedules: dict[str, ScheduleDef] = {}
        self._sensors: dict[str, SensorDef] = {}

    # --- wiring ----------------------------------------------------------------------------
    @property
    def store(self) -> MetadataStore:
        """The metadata store, opened on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    spec = self._store_spec
                    self._store = open_store(
                        spec if isinstance(spec, str) else config.database_url()
                    )
        return self._store

    @property
    def io_managers(self) -> Mapping[str, IOManager]:
        """The I/O managers by name."""
        return self._io.managers

    def subscribe(self, handler: Handler, *, prefix: str = "") -> Callable[[], None]:
        """Receive telemetry events (see :mod:`flowstone.telemetry`); returns an unsubscribe
        function."""
        return self._telemetry.subscribe(handler, prefix=prefix)

    def _executor_of(self, run_id: str) -> Executor:
        """The executor that owns a run: the workers of the queue a run of theirs names (its
        ``flowstone.queue`` tag), whatever this pipeline's executor; else this pipeline's."""
        run = self.store.get_run(run_id)
        queue = None if run is None else run.tags.get(QUEUE_TAG)
        mine = self._executor
        if queue is None or (isinstance(mine, DistributedExecutor) and mine.queue == queue):
            return mine
        return DistributedExecutor(queue=queue)

    def _get_materializer(self) -> Materializer:
        if self._materializer is None:
            self._materializer = Materializer(
                self.graph, self.store, self._telemetry, notifiers=self._approval_notifiers
            )
        return self._materializer


def _is_memory_store(store: object) -> bool:
    if isinstance(store, str):
        return False
    from flowstone.store.memory import MemoryStore  # only when a store object is passed

    return isinstance(store, MemoryStore)


# --- distributed execution (issue 3) -------------------------------------------------------
#: Selects the executor of pipelines built without one: "inprocess" (default) or "distributed".
EXECUTOR_ENV = "FLOWSTONE_EXECUTOR"
#: The queue of the distributed executor selected by FLOWSTONE_EXECUTOR (default "flowstone").
QUEUE_ENV = "FLOWSTONE_QUEUE"


def _executor_from_environment(max_workers: int | None) -> Executor:
    choice = os.environ.get(EXECUTOR_ENV, "").strip().lower()
    if choice in ("", "inprocess", "in-process"):
        return InProcessExecutor(max_workers)
    if choice == "distributed":
        return DistributedExecutor(queue=os.environ.get(QUEUE_ENV, "").strip() or DEFAULT_QUEUE)
    raise DefinitionError(
        f"${EXECUTOR_ENV} is {choice!r}; use 'inprocess' (the default: threads in this process) "
        "or 'distributed' (procrastinate workers on PostgreSQL)."
    )
