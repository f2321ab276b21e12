"""The materializer of a backfill pass: the one materializer, plus a stop check and a tally.

:class:`ChunkMaterializer` looks at the pass's :class:`StopFlag` before a step starts; a step
kept from starting is recorded ``skipped`` by ``Materializer.skip`` (with the audit and
telemetry of every skip), so a cancel leaves nothing ``pending``. It also counts the finished
steps of each partition and tells the :class:`~flowstone.backfill_progress.Tally` when a
partition is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flowstone.backfill_progress import Tally
from flowstone.backfill_records import PartitionOutcome
from flowstone.graph import AssetGraph
from flowstone.materializer import Materializer, RunScope
from flowstone.planner import Step, StepKey
from flowstone.records import MaterializationRecord, Status
from flowstone.store import MetadataStore
from flowstone.telemetry import Telemetry

#: The skip reason of steps that a cancel kept from starting.
CANCELED_REASON = "the backfill was canceled before this step started"


class StopFlag:
    """Set once, with the reason the pass must stop: ``"canceled"`` or ``"lost"`` (another
    process took the backfill over)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class ChunkMaterializer(Materializer):
    """The materializer, plus a stop check before each step and a per-partition tally.

    ``options`` are the pipeline's own materializer options (approval notifiers...).
    """

    def __init__(
        self,
        graph: AssetGraph,
        store: MetadataStore,
        telemetry: Telemetry,
        *,
        stop: StopFlag,
        tally: Tally,
        **options: Any,
    ) -> None:
        super().__init__(graph, store, telemetry, **options)
        self._stop = stop
        self._tally = tally
        self._lock = threading.Lock()
        self._steps_left: dict[str, int] = {}
        self._bad: dict[str, PartitionOutcome] = {}
        self._previous: Mapping[str, PartitionOutcome] = {}

    def begin_chunk(
        self, keys: Sequence[str], steps_each: int, previous: Mapping[str, PartitionOutcome]
    ) -> None:
        """Expect ``steps_each`` partitioned steps for each of the next chunk's keys."""
        with self._lock:
            self._steps_left = dict.fromkeys(keys, steps_each)
            self._bad = {}
            self._previous = previous

    # Options of the base methods (attempt, hooks) pass through unchanged.
    def run(
        self,
        step: Step,
        scope: RunScope,
        upstream: Mapping[StepKey, MaterializationRecord],
        **options: Any,
    ) -> MaterializationRecord:
        if self._stop.is_set():
            return self.skip(step, scope.run_id, CANCELED_REASON)
        if step.partition_key in self._steps_left:
            self._tally.started(step.partition_key)
        record = super().run(step, scope, upstream, **options)
        # A failure the retry policy retries is not the step's outcome yet (the executor's
        # retry hook says so): only the last attempt counts.
        if getattr(options.get("on_final"), "retry_in", None) is None:
            self._count(record)
        return record

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def observe(self, record: MaterializationRecord) -> None:
        """Count a step that runs elsewhere (a worker): once as it starts, once as it ends."""
        if record.status == Status.RUNNING:
            if record.partition_key in self._steps_left:
                self._tally.started(record.partition_key)
        else:
            self._count(record)

    def give_up(self, record: MaterializationRecord, reason: str) -> MaterializationRecord:
        given_up = super().give_up(record, reason)
        self._count(given_up)
        return given_up

    def skip(self, step: Step, run_id: str, reason: str, **options: Any) -> MaterializationRecord:
        record = super().skip(step, run_id, reason, **options)
        self._count(record)
        return record

    def _count(self, record: MaterializationRecord) -> None:
        key = record.partition_key
        with self._lock:
            if key not in self._steps_left:
                return  # an unpartitioned upstream step, or a partition already settled
            if record.status != Status.SUCCESS:
                self._bad.setdefault(key, step_outcome(record))
            self._steps_left[key] -= 1
            # Below a step waiting for approval nothing runs or skips now: settle it here.
            if self._steps_left[key] and record.status != Status.WAITING_APPROVAL:
                return
            del self._steps_left[key]
            outcome = self._bad.get(key, PartitionOutcome.SUCCESS)
        self._tally.finished(key, (outcome, self._previous.get(key)))


def step_outcome(record: MaterializationRecord) -> PartitionOutcome:
    """What a step's final record means for its partition."""
    if record.status == Status.SUCCESS:
        return PartitionOutcome.SUCCESS
    if record.status in (Status.CANCELLED, Status.RUNNING) or (
        record.status == Status.SKIPPED and record.error_message == CANCELED_REASON
    ):
        # (Still running when a cancelled pass stopped following it: not known to fail.)
        return PartitionOutcome.CANCELED  # a cancel kept it from running (here, or a worker's run)
    if record.status == Status.WAITING_APPROVAL:
        return PartitionOutcome.WAITING
    return PartitionOutcome.FAILED


#: Makes the materializer of a pass (the pipeline knows its materializer's options).
MaterializerFactory = Callable[[StopFlag, Tally], ChunkMaterializer]
