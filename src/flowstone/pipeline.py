"""The pipeline: an explicit container of assets and the wiring to run them.

``Pipeline`` validates the whole graph when it is built, then materializes through the one
materializer. It opens its metadata store lazily, on first use, so building a pipeline (and
importing the module that holds it) costs no database connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from flowstone import config
from flowstone.asset import AssetDef
from flowstone.errors import (
    DefinitionError,
    MissingUpstreamError,
    suggest,
)
from flowstone.execution import Executor, InProcessExecutor
from flowstone.graph import AssetGraph
from flowstone.io import FilesystemIOManager, IOManager, MemoryIOManager, StorageKey
from flowstone.materializer import IOSelection, Materializer, RunScope
from flowstone.partitions import Partition, encode_partition
from flowstone.planner import RunPlan, plan_run, resolve_partition
from flowstone.records import (
    AuditEvent,
    LineageNode,
    MaterializationRecord,
    RunRecord,
    RunResult,
    RunStatus,
    Status,
    utcnow,
)
from flowstone.resources import ResourceScope
from flowstone.store import MemoryStore, MetadataStore, open_store
from flowstone.telemetry import Handler, Telemetry


class Pipeline:
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

    Raises:
        DefinitionError: the graph is invalid (duplicate or unknown names, a cycle, a resource
            or I/O manager nobody provides); the subclass and message say which.

    Example::

        pipeline = fs.Pipeline([raw_events, daily_report])
        run = pipeline.materialize_all("daily_report", partition=dt.date(2025, 1, 15))
        assert run.status == "success"
        pipeline.load("daily_report", partition=dt.date(2025, 1, 15))
    """

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
    ) -> None:
        self._store_spec = store
        self._store: MetadataStore | None = (
            None if store is None or isinstance(store, str) else store
        )
        in_memory = store in ("memory", "memory://") or isinstance(store, MemoryStore)
        managers: dict[str, IOManager] = {
            "filesystem": FilesystemIOManager(config.storage_dir()),
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
        self._executor: Executor = executor or InProcessExecutor(max_workers)
        self._telemetry = Telemetry()
        self._lock = threading.Lock()
        self._materializer: Materializer | None = None

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

    def _get_materializer(self) -> Materializer:
        if self._materializer is None:
            self._materializer = Materializer(self.graph, self.store, self._telemetry)
        return self._materializer

    # --- running ---------------------------------------------------------------------------
    def materialize(
        self,
        *assets: str | AssetDef,
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
            assets: Asset names (or the assets themselves).
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
        names = [a.name if isinstance(a, AssetDef) else a for a in assets]
        if io_manager is not None and io_manager not in self._io.managers:
            raise DefinitionError(
                f"No I/O manager named {io_manager!r}; this pipeline has "
                f"{sorted(self._io.managers)}."
            )
        plan = plan_run(
            self.graph, names, partitions=(partition,), with_upstream=with_upstream, run_id=run_id
        )
        return self._run(plan, io_manager=io_manager, tags=tags or {})

    def materialize_all(
        self,
        *assets: str | AssetDef,
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
        run = self._create_run(plan, tags=tags)
        return self._execute(plan, run, io_manager=io_manager)

    def _create_run(self, plan: RunPlan, *, tags: Mapping[str, str]) -> RunRecord:
        """Record a new run and its steps as ``pending``, in one store call."""
        run = RunRecord(
            id=plan.run_id,
            status=RunStatus.RUNNING,
            targets=plan.targets,
            partition_key=plan.partition_key,
            created_at=plan.created_at,
            tags=dict(tags),
        )
        self.store.create_run(
            run,
            [step.pending_record(plan.run_id) for step in plan.steps],
            [_run_event("run.started", run)],
        )
        return run

    def _execute(
        self,
        plan: RunPlan,
        run: RunRecord,
        *,
        io_manager: str | None = None,
        prior: Sequence[MaterializationRecord] = (),
    ) -> RunResult:
        """Execute ``plan``'s steps for the recorded ``run`` and close the run.

        Args:
            prior: Records of the run that this plan does not cover (a run resumed after an
                approval); they count towards the run's final status.
        """
        materializer = self._get_materializer()
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
                records = self._executor.execute(plan, materializer, scope)
            status = run_status([*prior, *records])
        finally:
            # Also on KeyboardInterrupt: the run must not stay `running`.
            finished = replace(
                run,
                status=status,
                completed_at=None if status == RunStatus.WAITING_APPROVAL else utcnow(),
            )
            self.store.update_run(finished, [_run_event(f"run.{status.value}", finished)])
            self._telemetry.emit("run.stop", {**meta, "status": status.value})
        return RunResult(
            run_id=run.id,
            status=status,
            partition_key=run.partition_key,
            materializations=tuple(records),
        )

    # --- reading ---------------------------------------------------------------------------
    def load(self, asset: str | AssetDef, partition: Partition = None) -> Any:
        """The value of the latest successful materialization of ``asset`` for ``partition``.

        Raises:
            MissingUpstreamError: the asset has no successful materialization for it.
        """
        definition = self.graph.get(asset.name if isinstance(asset, AssetDef) else asset)
        value = resolve_partition(definition, partition)
        key = encode_partition(value)
        record = self.store.latest_materialization(definition.name, key, status=Status.SUCCESS)
        if record is None:
            raise MissingUpstreamError(definition.name, value, definition.name)
        manager = (
            self._io.managers.get(record.io_manager or "") or self._io.for_asset(definition)[1]
        )
        return manager.load(StorageKey(definition.name, value, key))

    def status(self, *assets: str) -> list[MaterializationRecord]:
        """The latest materialization of each (asset, partition) ever recorded."""
        for name in assets:
            self.graph.get(name)
        return self.store.latest_per_partition(list(assets) or None)

    def history(
        self, asset: str, partition: Partition = None, *, limit: int = 20
    ) -> list[MaterializationRecord]:
        """An asset's materializations, newest first (for one partition if given)."""
        definition = self.graph.get(asset)
        key = (
            None
            if partition is None
            else encode_partition(resolve_partition(definition, partition))
        )
        return self.store.list_materializations(asset=asset, partition_key=key, limit=limit)

    def upstream_lineage(
        self, asset: str, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """The exact materializations that fed the latest materialization of ``asset``."""
        record = self._latest(asset, partition)
        return [] if record is None else self.store.upstream(record.id, depth=depth)

    def downstream_lineage(
        self, asset: str, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """The (asset, partition)s that consumed ``asset``'s values, transitively."""
        return self.store.downstream(asset, self._key(asset, partition), depth=depth)

    def impact(
        self, asset: str, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """:meth:`downstream_lineage` with each dependent's latest status."""
        return self.store.impact(asset, self._key(asset, partition), depth=depth)

    def audit_log(
        self, *, run_id: str | None = None, asset: str | None = None, limit: int | None = 100
    ) -> list[AuditEvent]:
        """Audit events, oldest first."""
        return self.store.list_audit(correlation_id=run_id, resource_id=asset, limit=limit)

    def _key(self, asset: str, partition: Partition) -> str:
        return encode_partition(resolve_partition(self.graph.get(asset), partition))

    def _latest(self, asset: str, partition: Partition) -> MaterializationRecord | None:
        return self.store.latest_materialization(
            asset, self._key(asset, partition), status=Status.SUCCESS
        )

    # --- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Stop worker threads and close the store (if the pipeline opened it)."""
        self._executor.close()
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


def run_status(records: Iterable[MaterializationRecord]) -> RunStatus:
    """A run's status from its materializations: waiting while any waits for approval, else
    failed when any failed or was skipped, else success."""
    statuses = {r.status for r in records}
    if Status.WAITING_APPROVAL in statuses:
        return RunStatus.WAITING_APPROVAL
    if statuses <= {Status.SUCCESS}:
        return RunStatus.SUCCESS
    return RunStatus.FAILED


def _run_event(action: str, run: RunRecord) -> AuditEvent:
    return AuditEvent(
        action=action,
        resource_type="run",
        resource_id=run.id,
        details={"targets": list(run.targets), "partition_key": run.partition_key},
        correlation_id=run.id,
    )
