"""One pass of a backfill over its partitions, chunk by chunk, each chunk one run.

A chunk is up to ``chunk_size`` partitions. For each chunk the pass asks the store, in one
query, which partitions are already successful (skipped unless forced), plans the rest with
:func:`~flowstone.planner.plan_run` (one step per asset and partition), runs that plan as one
run on an :class:`~flowstone.execution.InProcessExecutor` with ``parallel`` threads, and records
the chunk's outcome in one store call (cursor, counts, rows of partitions that did not succeed).
Only one chunk's keys, steps and records are in memory at a time.

Steps go through the one materializer. :class:`ChunkMaterializer` only looks at the stop flag
before a step starts (a step kept from starting is recorded ``skipped`` by
``Materializer.skip``, with the audit and telemetry of every skip) and tallies finished
partitions for live progress.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from flowstone.backfill_materializer import ChunkMaterializer, StopFlag, step_outcome
from flowstone.backfill_progress import Change, Tally
from flowstone.backfill_records import (
    BackfillPartition,
    BackfillRecord,
    BackfillStatus,
    PartitionOutcome,
)
from flowstone.execution import Executor, InProcessExecutor
from flowstone.graph import AssetGraph
from flowstone.materializer import Materializer
from flowstone.partitions import Partition, PartitionsDefinition, encode_partition
from flowstone.partitions.sets import PartitionSet, decode_key
from flowstone.planner import RunPlan, plan_run
from flowstone.records import (
    AuditEvent,
    MaterializationRecord,
    RunRecord,
    RunResult,
    Status,
    run_event,
    utcnow,
)
from flowstone.store import MetadataStore
from flowstone.telemetry import Telemetry

#: (position in the partition set, partition): what a chunk is made of.
Chunk = Sequence[tuple[int, Partition]]


class ExecutePlan(Protocol):
    """Runs a recorded run's plan and closes the run: ``Pipeline._execute``."""

    def __call__(
        self, plan: RunPlan, run: RunRecord, *, executor: Executor, materializer: Materializer
    ) -> RunResult: ...


class BackfillPass:
    """Works through partitions of a backfill that its process owns.

    :attr:`record` is the backfill as last stored, :attr:`stop_reason` why the pass ended
    early (None: it did not). ``fresh`` says the backfill was just created (so none of its
    partitions can be done by it yet).

    Example::

        run = BackfillPass(graph=graph, store=store, ..., record=claimed, fresh=False)
        try:
            run.revisit(None, before=claimed.cursor)  # failed and canceled partitions
            run.forward()  # then the ones never reached
        finally:
            run.close()
    """

    def __init__(
        self,
        *,
        graph: AssetGraph,
        store: MetadataStore,
        telemetry: Telemetry,
        execute: ExecutePlan,
        materializer: ChunkMaterializer,
        record: BackfillRecord,
        owner: str,
        definition: PartitionsDefinition,
        stop: StopFlag,
        tally: Tally,
        fresh: bool,
        run_tags: Mapping[str, str] | None = None,
    ) -> None:
        self._graph, self._store, self._telemetry = graph, store, telemetry
        self._execute = execute
        self._owner = owner
        self._definition = definition
        self._stop = stop
        self._tally = tally
        self.record = record
        self.run_ids: list[str] = []
        self.stop_reason: str | None = None
        #: The record of an unpartitioned upstream asset whose failure stopped the pass.
        self.upstream_failure: MaterializationRecord | None = None
        selection = graph.select(record.targets, with_upstream=record.with_upstream)
        self._partitioned = tuple(n for n in selection if graph.get(n).partitioned_by)
        # Unpartitioned upstream assets run once per pass, in its first run.
        self._first_targets = selection
        # A new backfill has no runs yet: its first chunk needs no "done by me" query.
        self._has_runs = not fresh
        self._executor = InProcessExecutor(record.parallel)
        self._materializer = materializer
        self._run_tags = dict(run_tags or {})

    def forward(self) -> None:
        """The partitions from the cursor to the end of the set."""
        partition_set = PartitionSet.from_json(self.record.partition_set)
        chunks = partition_set.chunks(self._definition, self.record.chunk_size, self.record.cursor)
        for chunk in chunks:
            if not self._chunk(chunk, {}):
                return

    def revisit(self, outcome: PartitionOutcome | None, before: int) -> None:
        """The partitions before position ``before`` whose rows have ``outcome`` (None:
        every row: failed and canceled)."""
        after = -1
        while True:
            page = self._store.list_backfill_partitions(
                self.record.id, outcome=outcome, after=after, limit=self.record.chunk_size
            )
            rows = [row for row in page if row.position < before]
            if not rows:
                return
            after = rows[-1].position
            chunk = [
                (row.position, decode_key(self._definition, row.partition_key)) for row in rows
            ]
            if not self._chunk(chunk, {row.position: row for row in rows}):
                return

    def close(self) -> None:
        """Wait for steps still running, then stop the threads."""
        self._executor.close()

    # --- one chunk -------------------------------------------------------------------------
    def _chunk(self, chunk: Chunk, previous: Mapping[int, BackfillPartition]) -> bool:
        """Run and record one chunk; return whether the pass goes on."""
        if self._stop.is_set():
            self.stop_reason = self._stop.reason
            return False
        record = self.record
        keys = [encode_partition(value) for _, value in chunk]
        mine = (
            self._store.successful_partitions(self._partitioned, keys, backfill_id=record.id)
            if self._has_runs
            else set()
        )
        rest = [key for key in keys if key not in mine]
        earlier = (
            set()
            if record.force or not rest
            else self._store.successful_partitions(self._partitioned, rest)
        )
        was = {p: row.outcome for p, row in previous.items()}
        outcomes: dict[int, PartitionOutcome] = {}
        to_run: list[tuple[int, Partition]] = []
        # A partition still waiting for its approval is left to the decision: running it
        # again would ask a second time.
        still_waiting = _waiting_rows(self._store, previous)
        for (position, value), key in zip(chunk, keys, strict=True):
            if key in mine or key in earlier:
                outcomes[position] = (
                    PartitionOutcome.SUCCESS if key in mine else PartitionOutcome.SKIPPED
                )
            elif position in still_waiting:
                outcomes[position] = PartitionOutcome.WAITING
            else:
                to_run.append((position, value))
        self._tally.settled((outcomes[p], was.get(p)) for p in outcomes)
        rows: list[BackfillPartition] = [previous[p] for p in still_waiting]
        if to_run:
            result = self._run(to_run, was)
            self.upstream_failure = upstream_failure(result, set(self._partitioned))
            executed = partition_rows(record.id, to_run, result, previous, self.upstream_failure)
            for position, row in executed.items():
                outcomes[position] = PartitionOutcome.SUCCESS if row is None else row.outcome
                if row is not None:
                    rows.append(row)
        changes: list[Change] = [(outcomes[p], was.get(p)) for p, _ in chunk]
        saved = self._store.save_backfill_progress(
            record.id,
            owner=self._owner,
            now=utcnow(),
            cursor=record.cursor if previous else max(record.cursor, chunk[-1][0] + 1),
            counts=apply_counts(record.counts, changes),
            partitions=rows,
            # A revisited partition without a new row succeeded (or was skipped) this time.
            resolved=[p for p in previous if p not in _positions(rows)],
        )
        if saved is None:
            self._stop.set("lost")
        else:
            self.record = saved
            if saved.status == BackfillStatus.CANCELING:
                self._stop.set("canceled")
        if self.upstream_failure is not None:
            self.stop_reason = "upstream"
            return False
        if self._stop.is_set():
            self.stop_reason = self._stop.reason
            return False
        return True

    def _run(self, to_run: Chunk, was: Mapping[int, PartitionOutcome]) -> RunResult:
        targets = self._first_targets or self._partitioned
        self._first_targets = ()
        plan = plan_run(
            self._graph, targets, partitions=[v for _, v in to_run], with_upstream=False
        )
        run, started = new_run(plan, self.record.id, self._run_tags)
        # Pending records, as for every run: the store shows the chunk's plan, and approvals
        # continue the steps left pending below a step waiting for one.
        self._store.create_backfill_run(self.record.id, run, plan.pending_records(), [started])
        self._has_runs = True
        self.run_ids.append(run.id)
        keys = [encode_partition(value) for _, value in to_run]
        previous = {key: was[p] for key, (p, _) in zip(keys, to_run, strict=True) if p in was}
        self._materializer.begin_chunk(keys, len(self._partitioned), previous)
        clock = time.perf_counter()
        result = self._execute(plan, run, executor=self._executor, materializer=self._materializer)
        self._telemetry.emit(
            "backfill.chunk",
            {"backfill_id": self.record.id, "run_id": run.id, "status": result.status.value},
            {"duration_ms": (time.perf_counter() - clock) * 1000.0, "partitions": len(to_run)},
        )
        return result


def _positions(rows: Sequence[BackfillPartition]) -> set[int]:
    return {row.position for row in rows}


def new_run(
    plan: RunPlan, backfill_id: str, tags: Mapping[str, str] | None = None
) -> tuple[RunRecord, AuditEvent]:
    """The run record of a chunk's plan (tagged with the backfill) and its audit event."""
    run = plan.run_record({**(tags or {}), "backfill": backfill_id})
    return run, run_event("run.started", run, backfill_id=backfill_id)


def _waiting_rows(store: MetadataStore, previous: Mapping[int, BackfillPartition]) -> set[int]:
    """The positions of ``previous`` rows whose partition is still in the hands of its run:
    a step waits for a decision (the one that asked, or a later gate of the same partition
    once that was approved), or the decision's continuation is still running."""
    waiting = {
        position: row
        for position, row in previous.items()
        if row.outcome == PartitionOutcome.WAITING and row.run_id is not None
    }
    unfinished: set[tuple[str | None, str]] = set()
    for run_id in {row.run_id for row in waiting.values()}:  # a chunk's rows share one run
        records = store.list_materializations(run_id=run_id, limit=None)
        unfinished |= {(run_id, r.partition_key) for r in records if not r.status.is_final}
    found = {p for p, row in waiting.items() if (row.run_id, row.partition_key) in unfinished}
    return found


def partition_rows(
    backfill_id: str,
    chunk: Chunk,
    result: RunResult,
    previous: Mapping[int, BackfillPartition],
    upstream: MaterializationRecord | None = None,
) -> dict[int, BackfillPartition | None]:
    """Each executed partition's row: None when every step succeeded, else the first step
    that did not (in plan order, the root cause comes before what was skipped below it; a
    step skipped below the failed unpartitioned ``upstream`` names that failure)."""
    first_bad: dict[str, MaterializationRecord] = {}
    for record in result.materializations:
        if record.status != Status.SUCCESS:
            first_bad.setdefault(record.partition_key, record)
    if upstream is not None:
        for key, record in first_bad.items():
            if record.status == Status.SKIPPED and step_outcome(record) == PartitionOutcome.FAILED:
                first_bad[key] = upstream
    now = utcnow()
    rows: dict[int, BackfillPartition | None] = {}
    for position, value in chunk:
        key = encode_partition(value)
        bad = first_bad.get(key)
        before = previous.get(position)
        rows[position] = (
            None
            if bad is None
            else BackfillPartition(
                backfill_id=backfill_id,
                position=position,
                partition_key=key,
                outcome=PartitionOutcome.FAILED if bad is upstream else step_outcome(bad),
                asset=bad.asset,
                run_id=bad.run_id,
                materialization_id=bad.id,
                error_type=bad.error_type or bad.status.value,
                error_message=bad.error_message,
                attempts=1 if before is None else before.attempts + 1,
                updated_at=now,
            )
        )
    return rows


def upstream_failure(result: RunResult, partitioned: set[str]) -> MaterializationRecord | None:
    """The record of an unpartitioned upstream asset that did not succeed, if any: every
    partition depends on it, so the pass stops rather than fail them all one by one."""
    for record in result.materializations:
        if record.asset not in partitioned and record.status != Status.SUCCESS:
            return record
    return None


def apply_counts(counts: Mapping[str, int], changes: Sequence[Change]) -> dict[str, int]:
    """``counts`` after partitions moved to new outcomes from their previous ones."""
    updated = {o.value: int(counts.get(o.value, 0)) for o in PartitionOutcome}
    for outcome, previous in changes:
        if previous is not None:
            updated[previous.value] -= 1
        updated[outcome.value] += 1
    return updated
