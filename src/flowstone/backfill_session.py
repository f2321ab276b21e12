"""One pass of a backfill from its first chunk to its final status, in the process that owns it.

:func:`run_pass` starts the heartbeat, works through the partitions with a
:class:`~flowstone.backfill_chunks.BackfillPass`, then records the final status, the audit event
and the ``backfill.stop`` telemetry event. A pass that raises (Ctrl-C, a store outage) releases
the backfill before the exception goes on, so ``resume`` and ``cancel`` work at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowstone.backfill_chunks import BackfillPass, ExecutePlan
from flowstone.backfill_materializer import MaterializerFactory, StopFlag
from flowstone.backfill_owner import Heartbeat
from flowstone.backfill_progress import BackfillResult, ProgressCallback, Tally
from flowstone.backfill_records import BackfillRecord, BackfillStatus, PartitionOutcome
from flowstone.errors import FlowStoneError
from flowstone.graph import AssetGraph
from flowstone.partitions import PartitionsDefinition
from flowstone.records import AuditEvent, utcnow
from flowstone.store import MetadataStore
from flowstone.telemetry import Telemetry

log = logging.getLogger("flowstone.backfill")

#: What a pass does with its partitions (e.g. revisit the failed ones, then go forward).
Steps = Callable[[BackfillPass], None]


@dataclass(frozen=True, slots=True)
class PassContext:
    """The pipeline's wiring every pass needs."""

    graph: AssetGraph
    store: MetadataStore
    telemetry: Telemetry
    execute: ExecutePlan
    make_materializer: MaterializerFactory
    heartbeat_s: float
    #: Tags every chunk's run gets (the distributed executor's queue tag).
    run_tags: Mapping[str, str] = field(default_factory=dict)


def run_pass(
    context: PassContext,
    record: BackfillRecord,
    *,
    owner: str,
    definition: PartitionsDefinition,
    stop: StopFlag,
    progress: ProgressCallback | None,
    fresh: bool,
    todo: int,
    before: BackfillStatus | None,
    steps: Steps,
) -> BackfillResult:
    """Run ``steps`` over a backfill that ``owner`` has claimed; finish and release it.

    Example::

        result = run_pass(context, claimed, owner=owner, definition=days, stop=StopFlag(),
                          progress=None, fresh=False, todo=claimed.remaining,
                          before=record.status, steps=lambda run: run.forward())
    """
    store, clock = context.store, time.perf_counter()
    tally = Tally(record, todo, progress)
    run = BackfillPass(
        graph=context.graph,
        store=store,
        telemetry=context.telemetry,
        execute=context.execute,
        materializer=context.make_materializer(stop, tally),
        record=record,
        owner=owner,
        definition=definition,
        stop=stop,
        tally=tally,
        fresh=fresh,
        run_tags=context.run_tags,
    )
    heartbeat = Heartbeat(store, record.id, owner, stop, context.heartbeat_s)
    heartbeat.start()
    try:
        tally.report()
        steps(run)
    except BaseException as exc:
        _abandon(store, run, heartbeat, owner, exc)
        raise
    run.close()
    heartbeat.stop()
    tally.report()  # the final counts, after every worker thread is done
    status = final_status(run, before)
    action = "backfill.canceled" if status == BackfillStatus.CANCELED else "backfill.finished"
    finished = store.finish_backfill(
        record.id,
        owner=owner,
        status=status,
        now=utcnow(),
        audit=[backfill_event(action, run.record, None, summary(run.record, run.stop_reason))],
    )
    if finished is None:
        log.warning("Backfill %s was taken over by another process", record.id)
        finished = store.get_backfill(record.id) or run.record
    elapsed = time.perf_counter() - clock
    context.telemetry.emit(
        "backfill.stop",
        {"backfill_id": record.id, "status": finished.status.value, **summary(finished)},
        {"duration_ms": elapsed * 1000.0},
    )
    failures = (
        ()
        if finished.status == BackfillStatus.SUCCESS
        else tuple(store.list_backfill_partitions(record.id, limit=10))
    )
    return BackfillResult(
        backfill=finished, run_ids=tuple(run.run_ids), failures=failures, elapsed_s=elapsed
    )


def _abandon(
    store: MetadataStore, run: BackfillPass, heartbeat: Heartbeat, owner: str, exc: BaseException
) -> None:
    """Release a backfill whose pass raised; steps already running finish first."""
    try:
        run.close()
        heartbeat.stop()
        interrupted = isinstance(exc, KeyboardInterrupt)
        status = BackfillStatus.CANCELED if interrupted else BackfillStatus.FAILED
        reason = {"reason": f"{type(exc).__name__}: {exc}"}
        store.finish_backfill(
            run.record.id,
            owner=owner,
            status=status,
            now=utcnow(),
            audit=[backfill_event(f"backfill.{status.value}", run.record, None, reason)],
        )
    except FlowStoneError:
        log.warning("Could not release backfill %s", run.record.id, exc_info=True)


def final_status(run: BackfillPass, before: BackfillStatus | None) -> BackfillStatus:
    """A backfill's status after a pass that ended normally (``before``: its status when the
    pass claimed it)."""
    record = run.record
    if run.stop_reason == "canceled":
        return BackfillStatus.CANCELED
    if run.stop_reason == "upstream":
        return BackfillStatus.FAILED
    if record.remaining or record.count(PartitionOutcome.CANCELED):
        # Only a retry-failed pass ends with partitions never reached: keep a cancel visible.
        canceled = before == BackfillStatus.CANCELED
        return BackfillStatus.CANCELED if canceled else BackfillStatus.FAILED
    if record.failed:
        return BackfillStatus.FAILED
    return BackfillStatus.WAITING if record.waiting else BackfillStatus.SUCCESS


def summary(record: BackfillRecord, stop_reason: str | None = None) -> dict[str, Any]:
    """The counts of a backfill, for audit details and telemetry."""
    counts: dict[str, Any] = {
        "total": record.total,
        "success": record.success,
        "skipped": record.skipped,
        "failed": record.failed,
        "canceled": record.canceled,
        "waiting": record.waiting,
        "remaining": record.remaining,
    }
    if stop_reason is not None:
        counts["stopped"] = stop_reason
    return counts


def backfill_event(
    action: str, record: BackfillRecord, by: str | None, details: dict[str, Any]
) -> AuditEvent:
    """An audit event about a backfill, by ``by`` (default: who created it)."""
    actor = by or record.created_by or "system"
    return AuditEvent(
        action=action,
        resource_type="backfill",
        resource_id=record.id,
        actor=actor,
        actor_type="system" if actor == "system" else "user",
        details={"targets": list(record.targets), **details},
        correlation_id=record.id,
    )
