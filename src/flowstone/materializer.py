"""The materializer: the ONE path that computes an asset for a partition and records it.

A direct call, ``materialize_all``, a backfill, a schedule tick and a distributed worker all come
here, so statuses, lineage, audit and telemetry never differ between them. For one step it:

1. resolves the exact upstream materializations to read (from this run, else the latest success
   in the store);
2. records the materialization ``running``;
3. loads the upstream values, sets up the resources the asset requires, builds the context;
4. calls the asset function inside one error boundary that names the asset and partition;
5. stores the output through the asset's I/O manager;
6. records ``success`` with the lineage edges and an audit event in one store call, or
   ``failed`` with the error's type, message and traceback.

An asset that returns :class:`~flowstone.checkpoints.WaitForApproval` (or declares an approval
gate) instead leaves the materialization ``waiting_approval`` with a persisted request; the
approval later runs the same step again, through this same path, with ``ctx.approval`` set.

No step is ever left ``running``: any exception, including ``KeyboardInterrupt``, is recorded as
a failure before it propagates.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from flowstone.asset import AssetDef
from flowstone.checkpoints import (
    ApprovalNotifier,
    WaitForApproval,
    audit_event,
    event_metadata,
    new_request,
    notify,
)
from flowstone.context import AssetContext
from flowstone.errors import (
    AssetExecutionError,
    FlowStoneError,
    IOManagerError,
    MaterializationError,
    MissingUpstreamError,
    OutcomeCommittedError,
    SupersededAttemptError,
)
from flowstone.graph import AssetGraph, UpstreamRead
from flowstone.io import IOManager, StorageKey
from flowstone.partitions import Partition, partition_repr
from flowstone.planner import Step, StepKey
from flowstone.records import (
    AuditEvent,
    LineageEdge,
    MaterializationRecord,
    Status,
    materialization_event,
    utcnow,
)
from flowstone.resources import ResourceScope
from flowstone.store import MetadataStore
from flowstone.store.base import RunTransaction
from flowstone.telemetry import Telemetry


# --- distributed execution (issue 3) ----------------------------------------------------------
class FinalHook(Protocol):
    """Writes a step's final record in place of the materializer, with what belongs with it
    (an executor's retry decision, the steps it makes ready), usually in a run transaction
    (:meth:`~flowstone.store.MetadataStore.run_transaction`).

    It must save ``record`` (or a record that replaces it, e.g. ``pending`` again when a
    retry is due), or raise to store nothing at all.
    """

    def __call__(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        error: BaseException | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class IOSelection:
    """Which I/O manager stores each asset: a per-call override, else the asset's own, else
    the pipeline default."""

    managers: Mapping[str, IOManager]
    default: str
    override: str | None = None

    def name_for(self, asset: AssetDef) -> str:
        """The name of the I/O manager that stores ``asset``."""
        return self.override or asset.io_manager or self.default

    def for_asset(self, asset: AssetDef) -> tuple[str, IOManager]:
        """The name and manager that store ``asset``."""
        name = self.name_for(asset)
        return name, self.managers[name]


@dataclass(frozen=True, slots=True)
class RunScope:
    """What one run shares among its steps: in-process wiring only, never persisted."""

    run_id: str
    resources: ResourceScope
    io: IOSelection


class Materializer:
    """Runs steps against one graph, store and telemetry. Thread-safe: one instance serves
    every thread of every run."""

    def __init__(
        self,
        graph: AssetGraph,
        store: MetadataStore,
        telemetry: Telemetry,
        *,
        notifiers: Sequence[ApprovalNotifier] = (),
    ) -> None:
        self._graph = graph
        self._store = store
        self._telemetry = telemetry
        # --- typed loads (issue 7): parameter annotations by asset name, resolved once ---
        self._input_types: dict[str, dict[str, Any]] = {}
        self._notifiers = tuple(notifiers)

    @property
    def store(self) -> MetadataStore:
        """The metadata store it records in."""
        return self._store

    def run(
        self,
        step: Step,
        scope: RunScope,
        upstream: Mapping[StepKey, MaterializationRecord],
        *,
        attempt: int = 1,
        on_final: FinalHook | None = None,
        started: MaterializationRecord | None = None,
    ) -> MaterializationRecord:
        """Materialize one step; return its final record (``success`` or ``failed``), or
        ``waiting_approval`` when the asset asked for an approval.

        Args:
            step: What to materialize.
            scope: The run's resources and I/O selection.
            upstream: Records produced earlier in this run, by step key; dependencies not in
                it are read from the store's latest success.
            attempt: The attempt number, recorded on the materialization (a step resumed by
                an approval is the attempt after the one that asked).
            on_final: Writes the final record instead of the materializer (the distributed
                executor enqueues the steps it made ready in the same transaction).
            started: The step's ``running`` record when the caller saved it already (a
                distributed worker claims a step that never ran as it locks it, see
                :class:`~flowstone.store.base.StepClaim`); ``attempt`` is then its attempt.
        """
        asset = step.asset
        if started is not None:
            record = started
            attempt = record.attempt
        else:
            if step.approval is not None:
                # After the attempt that asked; a retry of the resumed step counts on from there.
                attempt = max(attempt, step.approval.attempt + 1)
            record = MaterializationRecord(
                id=step.materialization_id,
                run_id=scope.run_id,
                asset=asset.name,
                partition_key=step.partition_key,
                status=Status.RUNNING,
                attempt=attempt,
                created_at=step.created_at,
                started_at=utcnow(),
                code_version=asset.code_version,
                io_manager=scope.io.name_for(asset),
            )
            self._store.save_materialization(record)
        meta = self._event_meta(step, scope.run_id, attempt)
        self._telemetry.emit("materialization.start", meta)
        clock = time.perf_counter()
        try:
            inputs = self._resolve_upstream(step, upstream)
            if asset.approval is not None and step.approval is None:
                # A gate asks before anything runs: no inputs loaded, no resources set up.
                return self._wait(record, asset.approval.request(), {}, clock, meta)
            context = AssetContext(
                asset=asset.name,
                partition=step.partition,
                partition_key=step.partition_key,
                run_id=scope.run_id,
                materialization_id=step.materialization_id,
                attempt=attempt,
                resources=scope.resources.get(asset.requires, asset=asset.name),
                log=logging.getLogger(f"flowstone.asset.{asset.name}"),
                approval=step.approval,
            )
            kwargs = {
                given.read.input: self._load_input(asset, given, scope.io)
                for given in inputs
                if given.read.input is not None
            }
            output = self._call(asset, step, context, kwargs)
            if isinstance(output, WaitForApproval):
                return self._wait(record, output, context.metadata, clock, meta)
            # Checked before the value is stored: the store must be able to record it.
            _check_json(asset.name, "ctx.metadata", context.metadata)
            stored_meta = self._store_output(asset, step, output, scope.io)
            metadata = {**context.metadata, **_check_json(asset.name, "I/O metadata", stored_meta)}
        except BaseException as exc:
            failed = self._failed(record, exc, clock)
            self._save_final(
                failed, (), [self._audit(failed, {"error_type": failed.error_type})], on_final, exc
            )
            self._telemetry.emit(
                "materialization.exception",
                {**meta, "error_type": failed.error_type, "error": failed.error_message},
                {"duration_ms": failed.duration_ms or 0.0},
            )
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: recorded, then honoured
            return failed
        duration_ms = (time.perf_counter() - clock) * 1000.0
        completed_at = utcnow()
        done = replace(
            record,
            status=Status.SUCCESS,
            completed_at=completed_at,
            duration_ms=duration_ms,
            metadata=metadata,
        )
        lineage = [
            LineageEdge(
                materialization_id=done.id,
                run_id=done.run_id,
                asset=done.asset,
                partition_key=done.partition_key,
                upstream_materialization_id=up.id,
                upstream_asset=up.asset,
                upstream_partition_key=up.partition_key,
                consumed_at=completed_at,
            )
            # One edge per upstream materialization, however many parameters read it.
            for up in {r.id: r for read in inputs for r, _ in read.found}.values()
        ]
        try:
            self._save_final(done, lineage, [self._audit(done, {})], on_final, None)
        except (SupersededAttemptError, OutcomeCommittedError):
            raise  # a newer attempt owns the step, or the outcome is saved: write nothing over it
        except Exception as exc:
            # The success could not be recorded: record the failure instead (if that fails
            # too, the store is gone and the error propagates), never leave it `running`.
            failed = self._failed(record, exc, clock)
            self._store.save_materialization(
                failed, audit=[self._audit(failed, {"error_type": failed.error_type})]
            )
            return failed
        self._telemetry.emit(
            "materialization.stop", {**meta, "status": "success"}, {"duration_ms": duration_ms}
        )
        return done

    def skip(
        self, step: Step, run_id: str, reason: str, *, within: RunTransaction | None = None
    ) -> MaterializationRecord:
        """Record that ``step`` will not run because something above it did not succeed
        (through ``within`` when given: the transaction that recorded the failure)."""
        now = utcnow()
        record = MaterializationRecord(
            id=step.materialization_id,
            run_id=run_id,
            asset=step.asset.name,
            partition_key=step.partition_key,
            status=Status.SKIPPED,
            created_at=step.created_at,
            completed_at=now,
            error_type="SkippedError",
            error_message=reason,
            code_version=step.asset.code_version,
        )
        (within or self._store).save_materialization(
            record, audit=[self._audit(record, {"reason": reason})]
        )
        self._telemetry.emit(
            "materialization.skipped", {**self._event_meta(step, run_id, 1), "reason": reason}
        )
        return record

    def should_stop(self) -> bool:
        """Whether whoever runs this materializer asked its steps to stop (a backfill's
        cancel); an executor waiting to retry a step stops waiting then."""
        return False

    def give_up(self, record: MaterializationRecord, reason: str) -> MaterializationRecord:
        """Record ``record``, a failed attempt whose retry will not happen (the executor
        stopped while waiting for it), as the step's final status."""
        self._store.save_materialization(
            record, audit=[self._audit(record, {"error_type": record.error_type, "reason": reason})]
        )
        return record

    # --- distributed execution (issue 3) ----------------------------------------------------
    def _save_final(
        self,
        record: MaterializationRecord,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        on_final: FinalHook | None,
        error: BaseException | None,
    ) -> None:
        if on_final is None:
            self._store.save_materialization(record, lineage=lineage, audit=audit)
            return
        on_final(record, lineage=lineage, audit=audit, error=error)

    def _wait(
        self,
        record: MaterializationRecord,
        request: WaitForApproval,
        metadata: Mapping[str, Any],
        clock: float,
        meta: Mapping[str, Any],
    ) -> MaterializationRecord:
        """Persist an approval request and leave the materialization waiting for it.

        The request, the ``waiting_approval`` record and both audit events are one store call:
        a crash never leaves a waiting materialization without its request. No value is
        stored and nothing is held in memory; the decision resumes the run from the store.
        """
        duration_ms = (time.perf_counter() - clock) * 1000.0
        waiting = replace(
            record,
            status=Status.WAITING_APPROVAL,
            duration_ms=duration_ms,
            metadata=dict(metadata),
        )
        approval = new_request(request, waiting, utcnow())
        self._store.request_approval(
            approval,
            waiting,
            audit=[self._audit(waiting, {"approval_id": approval.id}), audit_event(approval)],
        )
        self._telemetry.emit(
            "materialization.waiting",
            {**meta, "approval_id": approval.id},
            {"duration_ms": duration_ms},
        )
        self._telemetry.emit("approval.requested", event_metadata(approval))
        notify(self._notifiers, approval)
        return waiting

    # --- the steps -------------------------------------------------------------------------
    def _resolve_upstream(
        self, step: Step, upstream: Mapping[StepKey, MaterializationRecord]
    ) -> list[_Input]:
        """The exact materialization of each upstream partition to read, for each way the asset
        reads a dependency: from this run when it produced it, else the latest success in the
        store."""
        found: list[_Input] = []
        # As of the run's creation: an open-ended window read what the run planned.
        for read in self._graph.reads(step.asset.name, step.partition, as_of=step.created_at):
            records: list[tuple[MaterializationRecord, Partition]] = []
            missing: list[str] = []
            # What this run did not produce: the latest successes, in one query for the window.
            elsewhere = [key for key in read.keys if (read.dep, key) not in upstream]
            stored = (
                self._store.latest_materializations(read.dep, elsewhere, status=Status.SUCCESS)
                if elsewhere
                else {}
            )
            for partition, key in zip(read.partitions, read.keys, strict=True):
                record = upstream.get((read.dep, key))
                if record is None:
                    record = stored.get(key)
                if record is not None:
                    records.append((record, partition))
                elif not read.allow_missing:
                    missing.append(partition_repr(partition))
            if missing:
                raise MissingUpstreamError(
                    step.asset.name,
                    step.partition,
                    read.dep,
                    missing=missing,
                    read=read.many,
                    shown=partition_repr(step.partition),
                )
            found.append(_Input(read, tuple(records)))
        return found

    def _load_input(self, asset: AssetDef, given: _Input, io: IOSelection) -> Any:
        """The value a parameter receives: the upstream value, or a dict of upstream
        partition to value (oldest first) when the partition mapping reads several."""
        dep = self._graph.get(given.read.dep)
        hint = self._input_type(asset, given.read.input or dep.name)
        if not given.read.many:
            if not given.found:
                return None  # allow_missing, and the one partition it reads is missing
            record, partition = given.found[0]
            return self._load(dep, record, partition, io, type_hint=hint)
        value_hint = _mapping_value_type(hint)
        return {
            _dict_key(partition): self._load(dep, record, partition, io, type_hint=value_hint)
            for record, partition in given.found
        }

    def _load(
        self,
        dep: AssetDef,
        record: MaterializationRecord,
        partition: Partition,
        io: IOSelection,
        *,
        type_hint: Any = None,
    ) -> Any:
        # Read through the manager that wrote this value (recorded on its materialization),
        # not whatever this run or the asset would choose now.
        name = record.io_manager or ""
        if name not in io.managers:
            name = io.name_for(dep)
        manager = io.managers[name]
        key = StorageKey(dep.name, partition, record.partition_key, type_hint=type_hint)
        meta = {"asset": dep.name, "partition": record.partition_key, "io_manager": name}
        self._telemetry.emit("io.load.start", meta)
        clock = time.perf_counter()
        try:
            value = manager.load(key)
        except FlowStoneError:
            raise
        except Exception as exc:
            raise IOManagerError(
                f"I/O manager {name!r} failed to load {dep.name!r} partition "
                f"{record.partition_key!r}: {type(exc).__name__}: {exc}",
                asset=dep.name,
            ) from exc
        self._telemetry.emit(
            "io.load.stop", meta, {"duration_ms": (time.perf_counter() - clock) * 1000.0}
        )
        return value

    @staticmethod
    def _call(asset: AssetDef, step: Step, context: AssetContext, kwargs: dict[str, Any]) -> Any:
        try:
            if asset.wants_context:
                return asset.fn(context, **kwargs)
            return asset.fn(**kwargs)
        except Exception as exc:
            raise AssetExecutionError(asset.name, step.partition, exc) from exc

    def _store_output(
        self, asset: AssetDef, step: Step, output: Any, io: IOSelection
    ) -> Mapping[str, Any] | None:
        name, manager = io.for_asset(asset)
        meta = {"asset": asset.name, "partition": step.partition_key, "io_manager": name}
        self._telemetry.emit("io.store.start", meta)
        clock = time.perf_counter()
        try:
            result = manager.store(
                StorageKey(asset.name, step.partition, step.partition_key), output
            )
        except FlowStoneError:
            raise
        except Exception as exc:
            raise IOManagerError(
                f"I/O manager {name!r} failed to store {asset.name!r}: "
                f"{type(exc).__name__}: {exc}. The materialization is failed; nothing was "
                "recorded as stored.",
                asset=asset.name,
                partition=step.partition,
            ) from exc
        self._telemetry.emit(
            "io.store.stop", meta, {"duration_ms": (time.perf_counter() - clock) * 1000.0}
        )
        return result

    # --- records ---------------------------------------------------------------------------
    @staticmethod
    def _failed(
        record: MaterializationRecord, exc: BaseException, clock: float
    ) -> MaterializationRecord:
        # Record the user's own exception, not our wrapper: its type and traceback are what
        # the person debugging needs.
        shown: BaseException = exc.original if isinstance(exc, AssetExecutionError) else exc
        message = str(shown) if isinstance(exc, AssetExecutionError) else str(exc)
        if not isinstance(exc, Exception):
            message = f"interrupted by {type(exc).__name__}"
        return replace(
            record,
            status=Status.FAILED,
            completed_at=utcnow(),
            duration_ms=(time.perf_counter() - clock) * 1000.0,
            error_type=_type_name(shown),
            error_message=message,
            error_traceback="".join(traceback.format_exception(shown)),
        )

    @staticmethod
    def _audit(record: MaterializationRecord, details: Mapping[str, Any]) -> AuditEvent:
        return materialization_event(f"materialization.{record.status.value}", record, **details)

    @staticmethod
    def _event_meta(step: Step, run_id: str, attempt: int) -> dict[str, Any]:
        return {
            "asset": step.asset.name,
            "partition": step.partition_key,
            "run_id": run_id,
            "attempt": attempt,
        }

    # --- typed loads (issue 7) -------------------------------------------------------------
    def _input_type(self, asset: AssetDef, parameter: str) -> Any:
        """The annotation of ``asset``'s ``parameter`` (``None`` when it has none), so an I/O
        manager can load a value as the type the asset asks for (pandas vs polars)."""
        hints = self._input_types.get(asset.name)
        if hints is None:
            hints = self._input_types[asset.name] = _parameter_types(asset.fn)
        return hints.get(parameter)


def _parameter_types(fn: Any) -> dict[str, Any]:
    """``fn``'s resolved annotations; empty when they cannot be resolved (a name imported only
    under ``TYPE_CHECKING``): the I/O manager then loads the type it stored."""
    if not getattr(fn, "__annotations__", None):
        return {}  # nothing to resolve; get_type_hints costs tens of microseconds per asset
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


@dataclass(frozen=True, slots=True)
class _Input:
    """One dependency's read, with the materializations found for it."""

    read: UpstreamRead
    found: tuple[tuple[MaterializationRecord, Partition], ...]


def _dict_key(partition: Partition) -> Partition:
    """``partition`` as a key of the dict an asset receives. An aware datetime gets a fixed UTC
    offset: in its zone, the two 01:30s of a daylight-saving fall-back are ``==`` (Python
    compares same-zone datetimes by wall time), so one hour's value would overwrite the
    other's."""
    if isinstance(partition, datetime) and partition.tzinfo is not None:
        return partition.astimezone(timezone(partition.utcoffset() or timedelta()))
    if isinstance(partition, tuple):
        return tuple(_dict_key(p) for p in partition)
    return partition


def _mapping_value_type(hint: Any) -> Any:
    """The value type of a ``dict[K, V]`` / ``Mapping[K, V]`` annotation (what each upstream
    partition loads as), else None: the I/O manager then loads the type it stored."""
    import typing

    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is None or len(args) != 2:
        return None
    from collections import abc

    if origin in (dict, abc.Mapping, abc.MutableMapping):
        return args[1]
    return None


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "flowstone.errors"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def _check_json(asset: str, what: str, value: object) -> dict[str, Any]:
    """``value`` as a JSON-compatible dict, or a clear error naming the asset."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MaterializationError(
            f"Asset {asset!r}: {what} must be a mapping, got {type(value).__name__}.",
            asset=asset,
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MaterializationError(
            f"Asset {asset!r}: {what} must be JSON-compatible to be recorded ({exc}). Store "
            "strings, numbers, booleans, lists and dicts of them (e.g. a datetime as "
            "isoformat()).",
            asset=asset,
        ) from exc
    return dict(value)
