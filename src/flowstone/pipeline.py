"""The pipeline: an explicit container of assets and the wiring to run them.

``Pipeline`` validates the whole graph when it is built, then materializes through the one
materializer. It opens its metadata store lazily, on first use, so building a pipeline (and
importing the module that holds it) costs no database connection.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flowstone import config
from flowstone.asset import AssetDef
from flowstone.checkpoints import ApprovalNotifier, ApprovalRecord, ApprovalStatus
from flowstone.errors import (
    ApprovalError,
    DefinitionError,
    DistributedSetupError,
    NotMaterializedError,
    PartitionError,
    ScheduleDefinitionError,
    suggest,
)
from flowstone.execution import Executor, InProcessExecutor
from flowstone.execution.distributed import (
    DEFAULT_QUEUE,
    QUEUE_TAG,
    Cancellation,
    DistributedExecutor,
    DistributedRuns,
    Progress,
    check_shared_io,
    wait_for_run,
)
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
from flowstone.store import MetadataStore, open_store
from flowstone.telemetry import Handler, Telemetry

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    # Annotations only. The feature modules (backfills, schedules, approvals' resume) load on
    # first use, inside the methods below: most pipelines use one or none of them, and
    # `import flowstone` must stay light (under 100 ms).
    from flowstone.approvals import ApprovalDesk
    from flowstone.backfill import Backfiller, BackfillReport, BackfillResult, PartitionChoice
    from flowstone.backfill_progress import ProgressCallback
    from flowstone.backfill_records import BackfillRecord
    from flowstone.resume import RunContinuer, RunResumer
    from flowstone.schedules import PartitionFn, ScheduleDef, SensorDef, SensorFn


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

    def _get_materializer(self) -> Materializer:
        if self._materializer is None:
            self._materializer = Materializer(
                self.graph, self.store, self._telemetry, notifiers=self._approval_notifiers
            )
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
        if isinstance(self._executor, DistributedExecutor):  # --- distributed execution ---
            io = IOSelection(self._io.managers, self._io.default, io_manager)
            return self._executor.submit(self.store, self.graph, plan, io=io, tags=dict(tags))
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
            self.store.update_run(finished, [_run_event(f"run.{status.value}", finished)])
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
        items = [assets] if isinstance(assets, str | AssetDef) else list(assets)
        return self._get_backfiller().start(
            [a.name if isinstance(a, AssetDef) else a for a in items],
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
                        {QUEUE_TAG: self._executor.queue}
                        if isinstance(self._executor, DistributedExecutor)
                        else None
                    ),
                )
            return self._backfiller

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

    # --- schedules and sensors --------------------------------------------------------------
    def schedule(
        self,
        name: str,
        asset: str | AssetDef | Sequence[str | AssetDef],
        *,
        cron: str,
        timezone: str = "UTC",
        partition: str | PartitionFn = "none",
        with_upstream: bool = False,
        catch_up: str = "latest",
        catch_up_limit: int = 10,
        max_lateness: timedelta | float | None = None,
        dst_nonexistent: str = "auto",
        dst_repeated: str = "auto",
        tags: Mapping[str, str] | None = None,
    ) -> ScheduleDef:
        """Materialize ``asset`` on a cron schedule, run by ``flowstone scheduler``.

        Declaring a schedule touches no database: a scheduler stores it when it starts, so it
        survives restarts and every scheduler process shares it; each tick is recorded once.

        Args:
            name: The schedule's unique name.
            asset: The asset (or assets) each tick materializes.
            cron: Five cron fields, e.g. ``"0 6 * * *"``, or ``@hourly``/``@daily``/...
            timezone: The IANA zone the cron fields are read in.
            partition: The partition of each tick: a function of the tick's time (an aware
                datetime in ``timezone``), or one of ``"none"``, ``"tick_date"``,
                ``"previous_day"``, ``"tick_hour"``, ``"previous_hour"``, ``"tick_time"``.
            with_upstream: Also materialize everything upstream of ``asset``.
            catch_up: Ticks missed while no scheduler ran: ``"skip"`` them, run only the
                ``"latest"``, or run ``"all"`` (the ``catch_up_limit`` most recent).
            max_lateness: A tick found later than this (timedelta or seconds) is recorded
                ``missed`` and never runs. Default: no limit.
            dst_nonexistent: A cron time inside a DST gap: ``"shift"`` to the end of the gap,
                ``"skip"``, or ``"auto"`` (shift fixed-time schedules, skip wildcard hours).
            dst_repeated: A cron time in a repeated hour: ``"first"`` occurrence only,
                ``"both"``, or ``"auto"`` (first for fixed times, both for wildcard hours).
            tags: Labels stored on each run.

        Raises:
            ScheduleDefinitionError: a bad cron expression, zone or policy, or a name in use.
            UnknownAssetError: ``asset`` is not in this pipeline.

        Example::

            pipeline.schedule(
                "nightly_report", "daily_report", cron="30 2 * * *",
                timezone="Europe/Oslo", partition="previous_day", with_upstream=True,
            )
        """
        items = [asset] if isinstance(asset, str | AssetDef) else list(asset)
        targets = [self.graph.get(a.name if isinstance(a, AssetDef) else a).name for a in items]
        if name in self._schedules:
            raise ScheduleDefinitionError(name, "a schedule with this name is already declared")
        from flowstone.schedules import define_schedule

        definition = define_schedule(
            name,
            targets,
            cron=cron,
            timezone=timezone,
            partition=partition,
            with_upstream=with_upstream,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            max_lateness=max_lateness,
            dst_nonexistent=dst_nonexistent,
            dst_repeated=dst_repeated,
            tags=tags,
        )
        self._schedules[name] = definition
        return definition

    def sensor(
        self, name: str, fn: SensorFn | None = None, *, interval: timedelta | float = 30.0
    ) -> Any:
        """Poll ``fn`` every ``interval`` (seconds or timedelta) and launch the runs it asks for.

        ``fn(cursor)`` gets the cursor it returned last time (None at first) and returns
        ``SensorResult(run_requests, cursor)``, a ``(requests, cursor)`` tuple, or a list of
        :class:`~flowstone.RunRequest`. A request whose ``run_key`` this sensor launched before
        is skipped; an exception is recorded on the sensor's tick (the cursor stays).
        Usable as a decorator: ``@pipeline.sensor("new_files", interval=60)``.

        Example::

            def new_files(cursor):
                seen = int(cursor or 0)
                files = list_files(after=seen)
                requests = [fs.RunRequest("ingest", partition=f.day, run_key=f.name) for f in files]
                return requests, str(max([seen, *(f.number for f in files)]))

            pipeline.sensor("new_files", new_files, interval=60)
        """

        def register(function: SensorFn) -> SensorDef:
            if name in self._sensors:
                raise ScheduleDefinitionError(name, "a sensor with this name is already declared")
            from flowstone.schedules import define_sensor

            definition = define_sensor(name, function, interval=interval)
            self._sensors[name] = definition
            return definition

        return register if fn is None else register(fn)

    @property
    def schedules(self) -> Mapping[str, ScheduleDef]:
        """The schedules declared in code, by name."""
        return dict(self._schedules)

    @property
    def sensors(self) -> Mapping[str, SensorDef]:
        """The sensors declared in code, by name."""
        return dict(self._sensors)

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
        run = self.store.get_run(run_id)
        queue = None if run is None else run.tags.get(QUEUE_TAG)
        executor = self._executor
        if queue is not None and not (
            isinstance(executor, DistributedExecutor) and executor.queue == queue
        ):
            executor = DistributedExecutor(queue=queue)
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

    # --- reading ---------------------------------------------------------------------------
    def load(self, asset: str | AssetDef, partition: Partition = None) -> Any:
        """The value of the latest successful materialization of ``asset`` for ``partition``,
        read through the I/O manager that stored it.

        Raises:
            NotMaterializedError: the asset has no successful materialization for it.
        """
        name = _name(asset)
        value, key = self._partition(name, partition)
        record = self.store.latest_materialization(name, key, status=Status.SUCCESS)
        if record is None:
            raise NotMaterializedError(name, value)
        manager = (
            self._io.managers.get(record.io_manager or "")
            or self._io.for_asset(self.graph.get(name))[1]
        )
        return manager.load(StorageKey(name, value, key))

    def status(self, *assets: str | AssetDef) -> list[MaterializationRecord]:
        """The latest materialization of each (asset, partition) of these assets (default:
        every asset of this pipeline; other pipelines may share the store)."""
        names = [_name(a) for a in assets] or list(self.graph.topological_order())
        for name in names:
            self.graph.get(name)
        return self.store.latest_per_partition(names)

    def history(
        self,
        asset: str | AssetDef,
        partition: Partition = None,
        *,
        status: Status | None = None,
        limit: int = 20,
    ) -> list[MaterializationRecord]:
        """An asset's materializations, newest first (for one partition or status if given)."""
        name = _name(asset)
        key = None if partition is None else self._partition(name, partition)[1]
        self.graph.get(name)
        return self.store.list_materializations(
            asset=name, partition_key=key, status=status, limit=limit
        )

    def upstream_lineage(
        self, asset: str | AssetDef, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """The exact materializations that fed the latest successful materialization of
        ``asset``, transitively, up to ``depth`` steps."""
        name = _name(asset)
        record = self.store.latest_materialization(
            name, self._partition(name, partition)[1], status=Status.SUCCESS
        )
        return [] if record is None else self.store.upstream(record.id, depth=depth)

    def downstream_lineage(
        self, asset: str | AssetDef, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """The (asset, partition)s that consumed ``asset``'s values, transitively."""
        name = _name(asset)
        return self.store.downstream(name, self._partition(name, partition)[1], depth=depth)

    def impact(
        self, asset: str | AssetDef, partition: Partition = None, *, depth: int = 10
    ) -> list[LineageNode]:
        """:meth:`downstream_lineage` with each dependent's latest status."""
        name = _name(asset)
        return self.store.impact(name, self._partition(name, partition)[1], depth=depth)

    def audit_log(
        self, *, run_id: str | None = None, asset: str | None = None, limit: int | None = 100
    ) -> list[AuditEvent]:
        """Audit events, oldest first."""
        return self.store.list_audit(correlation_id=run_id, resource_id=asset, limit=limit)

    def parse_partition(self, asset: str | AssetDef, text: str) -> Partition:
        """Read a partition typed by a person (``2025-01-15``, ``eu|2025-01-15``, or the tagged
        form) with ``asset``'s partitions definition.

        Raises:
            PartitionError: the asset is not partitioned, or the text is not one of its
                partitions.
        """
        name = _name(asset)
        definition = self.graph.get(name).partitioned_by
        if definition is None:
            raise PartitionError(f"Asset {name!r} is not partitioned; drop the partition.")
        return definition.parse(text)

    def runs(self, *, limit: int = 50) -> list[RunRecord]:
        """Recent runs, newest first."""
        return self.store.list_runs(limit=limit)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or None."""
        return self.store.get_run(run_id)

    def _partition(self, asset: str, partition: Partition) -> tuple[Partition, str]:
        """The validated partition of ``asset`` and its encoding, for reads."""
        definition = self.graph.get(asset)
        if definition.partitioned_by is None and partition is not None:
            raise PartitionError(
                f"Asset {asset!r} is not partitioned, but partition {partition!r} was given. "
                "Drop the partition."
            )
        value = resolve_partition(definition, partition)
        return value, encode_partition(value)

    # --- approvals ---------------------------------------------------------------------------
    def approvals(
        self,
        *,
        status: ApprovalStatus | str | None = ApprovalStatus.PENDING,
        asset: str | None = None,
        run_id: str | None = None,
        limit: int | None = 100,
    ) -> list[ApprovalRecord]:
        """Approval requests, oldest first: the pending ones, unless ``status`` names another
        (``None``: all).

        Example::

            for request in pipeline.approvals(asset="publish"):
                print(request.id, request.partition, request.message, request.context)
        """
        if asset is not None:
            self.graph.get(asset)
        wanted = None if status is None else _approval_status(status)
        return self.store.list_approvals(status=wanted, asset=asset, run_id=run_id, limit=limit)

    def get_approval(self, approval_id: str) -> ApprovalRecord:
        """The approval request with this id, or a unique prefix of it (4+ characters).

        Raises:
            ApprovalNotFoundError: no request has it.
        """
        return self._approval_desk().get(approval_id)

    def approve(
        self,
        approval_id: str,
        *,
        by: str,
        reason: str | None = None,
        input: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Approve a request and continue its run: the asset runs again (same materialization,
        next attempt) with the decision in ``ctx.approval``, then the assets that waited below
        it. Safe to call from any process, e.g. after a restart.

        Args:
            approval_id: The request's id (or a unique prefix of 4+ characters).
            by: Who approves (recorded, and in the audit log).
            reason: Why (optional).
            input: JSON data for the resumed asset (``ctx.approval.input``).

        Returns:
            The whole run once continued (status ``running`` if its first execution has not
            ended yet: that execution continues it when it does).

        Raises:
            ApprovalAlreadyDecidedError: it was decided first by someone else, or it expired;
                the message says who and when. Nothing changes.
            ApprovalNotFoundError: no request has this id.

        Example::

            request = pipeline.approvals(asset="publish")[0]
            run = pipeline.approve(request.id, by="ana", input={"channel": "web"})
            assert run.get("publish", request.partition_key).status == "success"
        """
        return self._approval_desk().decide(
            approval_id, ApprovalStatus.APPROVED, by=by, reason=reason, input=input
        )

    def reject(self, approval_id: str, *, by: str, reason: str) -> RunResult:
        """Reject a request: its materialization fails (``ApprovalRejectedError`` naming who and
        why), the assets below it are skipped, and the run fails unless others still wait.

        Raises:
            ApprovalAlreadyDecidedError: it was decided first by someone else, or it expired.

        Example::

            pipeline.reject(request.id, by="ana", reason="totals look wrong")
        """
        return self._approval_desk().decide(
            approval_id, ApprovalStatus.REJECTED, by=by, reason=reason
        )

    def approve_all(
        self,
        asset: str | None = None,
        *,
        by: str,
        partitions: Iterable[Partition] | None = None,
        between: tuple[Partition, Partition] | None = None,
        run_id: str | None = None,
        reason: str | None = None,
        input: Mapping[str, Any] | None = None,
    ) -> list[ApprovalRecord]:
        """Approve every pending request that matches, then continue each run once (the
        approved assets of one run run in parallel).

        Args:
            asset: Only this asset's requests.
            partitions: Only these partitions (needs ``asset``).
            between: Only partitions from ``start`` to ``end``, both included (needs ``asset``).
            run_id: Only this run's requests.

        Returns:
            The requests this call approved (those decided meanwhile by others are left alone).

        Example::

            pipeline.approve_all(
                "publish", between=(dt.date(2025, 1, 1), dt.date(2025, 1, 30)), by="ana"
            )
        """
        return self._approval_desk().decide_all(
            ApprovalStatus.APPROVED,
            by=by,
            reason=reason,
            input=input,
            asset=asset,
            partition_keys=self._approval_keys(asset, partitions, between),
            run_id=run_id,
        )

    def reject_all(
        self,
        asset: str | None = None,
        *,
        by: str,
        reason: str,
        partitions: Iterable[Partition] | None = None,
        between: tuple[Partition, Partition] | None = None,
        run_id: str | None = None,
    ) -> list[ApprovalRecord]:
        """Reject every pending request that matches (see :meth:`approve_all`)."""
        return self._approval_desk().decide_all(
            ApprovalStatus.REJECTED,
            by=by,
            reason=reason,
            asset=asset,
            partition_keys=self._approval_keys(asset, partitions, between),
            run_id=run_id,
        )

    def expire_approvals(self, now: datetime | None = None) -> list[ApprovalRecord]:
        """Expire the pending requests whose timeout has passed: each materialization fails
        (``ApprovalExpiredError``) and the assets below it are skipped.

        Nothing expires on its own (no timer dies with the process): the CLI runs this before
        listing or deciding; run it from cron, a worker or a scheduler too.

        Returns:
            The requests it expired.
        """
        return self._approval_desk().expire_due(now)

    def resume_run(self, run_id: str) -> RunResult:
        """Continue a run after approval decisions, if anything is left to do: for a process
        that stopped between recording a decision and finishing the run it continued. Safe to
        call at any time and from several processes (steps are claimed before they run).

        Returns:
            The whole run and its status.

        Example::

            pipeline.resume_run("3f2a9c1e5d0b4a7e9c8f6a2b1d3e5f70")
        """
        return self._continue_run(run_id, decided=True)

    def _approval_keys(
        self,
        asset: str | None,
        partitions: Iterable[Partition] | None,
        between: tuple[Partition, Partition] | None,
    ) -> set[str] | None:
        """The encoded partitions a bulk decision is limited to (None: every partition)."""
        if partitions is None and between is None:
            return None
        if asset is None:
            raise PartitionError(
                "Choosing approval requests by partition needs the asset whose partitions they "
                "are: pass asset=... (or --asset)."
            )
        if isinstance(partitions, str):
            raise PartitionError("partitions= takes a list: wrap the one partition in [...].")
        definition = self.graph.get(asset)
        keys = {encode_partition(resolve_partition(definition, p)) for p in partitions or ()}
        if between is not None:
            if definition.partitioned_by is None:
                raise PartitionError(f"Asset {asset!r} is not partitioned: drop the range.")
            start, end = between
            found = definition.partitioned_by.keys_between(start, end)
            keys.update(encode_partition(key) for key in found)
        return keys

    def _approval_desk(self) -> ApprovalDesk:
        from flowstone.approvals import ApprovalDesk

        return ApprovalDesk(
            self.graph,
            self.store,
            self._telemetry,
            self._continuer(),
            notifiers=self._approval_notifiers,
        )

    def _continuer(self) -> RunContinuer:
        """Who continues a run after a decision: see :meth:`_continue_run`."""
        if isinstance(self._executor, DistributedExecutor):
            # Before any decision is recorded: a store that cannot carry the queue refuses.
            self._executor.prepare(self.store)
        return _Continuer(self._continue_run)

    def _continue_run(self, run_id: str, *, decided: bool = False) -> RunResult:
        """Continue a run after a decision where it runs: a run of the workers (tagged with
        their queue), or any run when this pipeline is distributed, goes back to the workers
        (this process only enqueues); an in-process run continues in this process."""
        run = self.store.get_run(run_id)
        queue = None if run is None else run.tags.get(QUEUE_TAG)
        executor = self._executor
        if queue is not None and not (
            isinstance(executor, DistributedExecutor) and executor.queue == queue
        ):
            executor = DistributedExecutor(queue=queue)
        if isinstance(executor, DistributedExecutor):
            runs = DistributedRuns(executor, self.store, self.graph, self._get_materializer())
            return runs.advance(run_id, decided=decided)
        return self._resumer().advance(run_id, decided=decided)

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


class _Continuer:
    """A :class:`~flowstone.resume.RunContinuer` made of a function."""

    def __init__(self, advance: Callable[..., RunResult]) -> None:
        self._advance = advance

    def advance(self, run_id: str, *, decided: bool = False) -> RunResult:
        return self._advance(run_id, decided=decided)


def _is_memory_store(store: object) -> bool:
    if isinstance(store, str):
        return False
    from flowstone.store.memory import MemoryStore  # only when a store object is passed

    return isinstance(store, MemoryStore)


def _name(asset: str | AssetDef) -> str:
    return asset.name if isinstance(asset, AssetDef) else asset


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


def _approval_status(status: ApprovalStatus | str) -> ApprovalStatus:
    try:
        return ApprovalStatus(status)
    except ValueError:
        raise ApprovalError(
            f"Unknown approval status {status!r}: use one of "
            f"{', '.join(s.value for s in ApprovalStatus)}, or None for all."
        ) from None


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
