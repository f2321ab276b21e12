"""Dependency-driven scheduling: what a step's final status makes ready, skips, or ends.

The distributed executor calls :func:`after_final` inside the run transaction that records the
status (:meth:`~flowstone.store.MetadataStore.run_transaction`), so every decision is made from
committed facts while the run's lock is held. (A success of an asset without dependents makes
nothing ready: it commits without the lock, and only :func:`close_if_moving` takes it.) When two
parents of a step finish at the same time on two workers, the second transaction waits for the
first and sees its success, so the step is found ready exactly once; nothing polls. The same rules
as the in-process executor apply: a step is ready when each of its dependencies in the run
succeeded, a step below a failure is recorded ``skipped`` with the root cause, and the run ends
when no step is left to finish.

The run's plan is not kept anywhere else: it is the run's ``pending`` records. A step's
dependencies are computed from the graph the way :func:`~flowstone.planner.plan_run` computes
them, so a worker needs nothing but its own pipeline and the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.graph import AssetGraph
from flowstone.materializer import Materializer
from flowstone.partitions import Partition, decode_partition, encode_partition
from flowstone.planner import StepKey, step_deps, step_of
from flowstone.records import (
    MaterializationRecord,
    RunRecord,
    RunStatus,
    Status,
    materialization_event,
    run_event,
    run_status,
    utcnow,
)
from flowstone.store.base import RunTransaction


@dataclass(frozen=True, slots=True)
class Outcome:
    """What recording one final status led to."""

    #: Steps whose dependencies have all succeeded now: to enqueue in the same transaction.
    ready: tuple[MaterializationRecord, ...] = ()
    #: Steps recorded ``skipped`` because of this one.
    skipped: tuple[MaterializationRecord, ...] = ()
    #: The run's final status, when this status was the run's last.
    closed: RunStatus | None = None


#: The statuses of a run whose steps still move: a distributed run shows ``waiting_approval``
#: from the moment one of its steps waits for a person, while its other branches go on.
MOVING = (RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)


def after_final(
    tx: RunTransaction, graph: AssetGraph, materializer: Materializer, record: MaterializationRecord
) -> Outcome:
    """Act on ``record``, a final status just saved through ``tx``.

    Nothing happens in a run that no longer moves (cancelled, or closed already): its other
    steps stay as they are.
    """
    # The status alone: the whole run (its targets, its tags) is read only to close it.
    if tx.run_status() not in MOVING:
        return Outcome()
    ready: tuple[MaterializationRecord, ...] = ()
    skipped: tuple[MaterializationRecord, ...] = ()
    if record.status == Status.SUCCESS:
        ready = tuple(_ready_children(tx, graph, record))
    elif record.status.is_final:
        skipped = tuple(skip_below(tx, graph, materializer, record))
    return Outcome(ready, skipped, close_if_done(tx))


def close_if_moving(tx: RunTransaction) -> RunStatus | None:
    """End the run if it still moves and none of its steps is left to finish: for a step
    whose outcome was committed without the run's lock (nothing waited on it), the lock is
    taken only to close the run."""
    if tx.run_status() not in MOVING:
        return None
    return close_if_done(tx)


def close_if_done(tx: RunTransaction, run: RunRecord | None = None) -> RunStatus | None:
    """End the run (``run``, when the caller read it already) with its final status when none
    of its steps is left to finish."""
    if tx.has_unfinished():
        return None
    run = run or tx.get_run()
    if run is None:
        return None
    status = run_status(tx.materializations())
    finished = replace(
        run,
        status=status,
        completed_at=None if status == RunStatus.WAITING_APPROVAL else utcnow(),
    )
    tx.update_run(finished, [run_event(f"run.{status.value}", finished)])
    return status


def _ready_children(
    tx: RunTransaction, graph: AssetGraph, done: MaterializationRecord
) -> list[MaterializationRecord]:
    """The run's pending steps below ``done`` whose other dependencies in the run have all
    succeeded, inside the run's lock: the same few reads however wide the fan-out (the
    children named by the edges' mappings, a scan of those that read every partition, then the
    children's other dependencies)."""
    key = (done.asset, done.partition_key)
    partition = decode_partition(done.partition_key)
    waiting: list[tuple[MaterializationRecord, list[StepKey]]] = []
    for child in _children_in_run(tx, graph, done.asset, partition):
        if child.status != Status.PENDING:
            continue
        # As of the run's creation, as the planner computed them (open-ended windows).
        deps = step_deps(
            graph, child.asset, decode_partition(child.partition_key), as_of=child.created_at
        )
        if key in deps:
            waiting.append((child, [dep for dep in deps if dep != key]))
    # A dependency outside the run is read from the store's latest success when it runs.
    found = tx.find_many(sorted({dep for _, others in waiting for dep in others}))
    return [
        child
        for child, others in waiting
        if all(dep not in found or found[dep].status == Status.SUCCESS for dep in others)
    ]


def _children_in_run(
    tx: RunTransaction, graph: AssetGraph, asset: str, partition: Partition
) -> list[MaterializationRecord]:
    """The run's steps of ``asset``'s dependents that may read ``(asset, partition)`` (the
    caller checks what each reads): the partitions the edge's mapping names (the same
    partition, the day of an hour, the hours of a day...), all read at once; every step of the
    child when only a scan can tell (below an unpartitioned asset, all partitions)."""
    named: list[tuple[str, list[StepKey]]] = []
    scanned: list[str] = []
    for child in graph.dependents(asset):
        readers = graph.readers(child, asset, partition)
        if readers is None:
            scanned.append(child)
        else:
            named.append((child, [(child, encode_partition(reader)) for reader in readers]))
    found = tx.find_many([step for _, steps in named for step in steps])
    by_child = {child: [found[step] for step in steps if step in found] for child, steps in named}
    if scanned:
        for record in tx.materializations(scanned):
            by_child.setdefault(record.asset, []).append(record)
    # In the graph's order of dependents: the order the ready steps are enqueued in.
    return [record for child in graph.dependents(asset) for record in by_child.get(child, [])]


def skip_below(
    tx: RunTransaction,
    graph: AssetGraph,
    materializer: Materializer,
    root: MaterializationRecord,
) -> list[MaterializationRecord]:
    below = graph.downstream(root.asset)
    if not below:
        return []
    # Name the root cause: below a skipped step, repeat why it was skipped.
    if root.status == Status.SKIPPED and root.error_message:
        reason = root.error_message
    else:
        reason = f"upstream asset {root.asset!r} {root.status.value}"
    order = {name: i for i, name in enumerate(graph.topological_order())}
    blocked = {(root.asset, root.partition_key)}
    skipped = []
    # Topological order: a step is looked at after every step it depends on.
    for record in sorted(tx.materializations(sorted(below)), key=lambda r: order[r.asset]):
        if record.status != Status.PENDING:
            continue
        # Not validated: a definition changed since the run was planned must not keep the
        # step from being recorded skipped (and the run from ending).
        step = step_of(graph, record, validate=False)
        deps = step_deps(graph, record.asset, step.partition, as_of=record.created_at)
        if blocked.intersection(deps):
            skipped.append(materializer.skip(step, tx.run_id, reason, within=tx))
            blocked.add(step.key)
    return skipped


def mark_waiting(tx: RunTransaction, waiting: MaterializationRecord) -> RunStatus | None:
    """``waiting``, a step of the run, asked for an approval (recorded just before): a running
    run shows ``waiting_approval`` until every request is decided. Returns the new status."""
    run = tx.get_run()
    if run is None or run.status != RunStatus.RUNNING:
        return None
    now = tx.find(waiting.asset, waiting.partition_key)
    if now is None or (now.status, now.attempt) != (Status.WAITING_APPROVAL, waiting.attempt):
        return None  # decided (and handed back to the workers) in between
    shown = replace(run, status=RunStatus.WAITING_APPROVAL)
    tx.update_run(shown, [run_event("run.waiting_approval", shown)])
    return shown.status


@dataclass(frozen=True, slots=True)
class Continuation:
    """What acting on a run's approval decisions did."""

    run: RunRecord | None
    #: Approved steps, ``pending`` again: to enqueue in the same transaction.
    ready: tuple[MaterializationRecord, ...] = ()
    #: Steps recorded ``skipped`` below a rejected or expired request.
    skipped: tuple[MaterializationRecord, ...] = ()


def continue_decided(
    tx: RunTransaction,
    graph: AssetGraph,
    materializer: Materializer,
    decided: Sequence[ApprovalRecord],
) -> Continuation:
    """Act on the decided approvals of the run of ``tx`` (a distributed run, continued by the
    workers): an approved step goes back to ``pending`` (same attempt: the worker runs the
    next one, with the decision as ``ctx.approval``) to be enqueued; below a rejected or
    expired one (its step is ``failed`` already) pending steps are skipped. The run is
    ``running`` again once no step waits, and closes if nothing is left.
    """
    run = tx.get_run()
    if run is None or run.status not in MOVING:
        return Continuation(run)
    by_step = {(a.materialization_id, a.attempt): a for a in decided if not a.is_pending}
    ready: list[MaterializationRecord] = []
    skipped: list[MaterializationRecord] = []
    for record in tx.materializations():
        approval = by_step.get((record.id, record.attempt))
        if approval is None:
            continue
        if record.status == Status.WAITING_APPROVAL and approval.status == ApprovalStatus.APPROVED:
            again = replace(record, status=Status.PENDING, completed_at=None)
            tx.save_materialization(
                again,
                audit=[
                    materialization_event(
                        "materialization.resumed",
                        again,
                        approval_id=approval.id,
                        next_attempt=again.attempt + 1,
                    )
                ],
            )
            ready.append(again)
        elif record.status == Status.FAILED:
            skipped += skip_below(tx, graph, materializer, record)
    records = tx.materializations()
    if not any(r.status == Status.WAITING_APPROVAL for r in records):
        unfinished = any(not r.status.is_final for r in records)
        if run.status == RunStatus.WAITING_APPROVAL and unfinished:
            run = replace(run, status=RunStatus.RUNNING)
            tx.update_run(run, [run_event("run.resumed", run)])
        elif close_if_done(tx, run) is not None:
            run = tx.get_run()
    return Continuation(run, tuple(ready), tuple(skipped))
