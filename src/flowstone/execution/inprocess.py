"""The in-process executor: runs a plan on a thread pool, dependency by dependency."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures as cf

from flowstone.materializer import Materializer, RunScope
from flowstone.planner import RunPlan, Step, StepKey
from flowstone.records import AuditEvent, LineageEdge, MaterializationRecord, Status
from flowstone.retry import RetryPolicy, retry_after
from flowstone.store.base import MetadataStore

#: Per-run hook called with each final record, in completion order.
OnRecord = Callable[[MaterializationRecord], object]


def default_max_workers() -> int:
    """Enough threads to overlap I/O-bound assets without swamping a small machine."""
    return min(32, (os.cpu_count() or 1) + 4)


class InProcessExecutor:
    """Runs independent assets in parallel on threads; each asset starts as soon as all of its
    in-plan dependencies succeeded. When an asset fails, everything below it is recorded
    ``skipped`` with the reason, while unrelated branches run to the end.

    An asset with a :class:`~flowstone.RetryPolicy` is tried again after a failure the policy
    retries, after its backoff, on the same thread (the other branches go on meanwhile): the
    step is ``pending`` again until the next attempt, and the audit log keeps each failure.

    Args:
        max_workers: Threads that run assets at once (default: CPU count + 4, at most 32).
            ``1`` runs one asset at a time, in the order they become ready.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers or default_max_workers()
        self._pool: cf.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def execute(
        self,
        plan: RunPlan,
        materializer: Materializer,
        scope: RunScope,
        on_record: OnRecord | None = None,
    ) -> list[MaterializationRecord]:
        """Run every step of ``plan``; return the records in plan order: final, or
        ``waiting_approval``, or ``pending`` below a step that waits for approval."""
        progress = _Progress(plan, materializer, on_record)
        running: dict[cf.Future[MaterializationRecord], StepKey] = {}
        # Set when the run is interrupted: a step waiting to retry stops waiting.
        stop = threading.Event()
        try:
            while progress.ready or running:
                # A lone ready step with nothing in flight runs on this thread: a chain needs
                # no thread hand-offs, and it is still the same materializer path. With one
                # worker every step runs here, in plan order (a backfill with parallel=1).
                if not running and (len(progress.ready) == 1 or self.max_workers == 1):
                    step = progress.start(progress.ready.pop(0))
                    progress.finish(_run_step(materializer, step, scope, progress.done, stop))
                    continue
                # At most max_workers in flight: cf.wait then looks at a few futures, not at
                # every step of a wide plan (a backfill chunk has hundreds ready at once).
                while progress.ready and len(running) < self.max_workers:
                    step = progress.start(progress.ready.pop(0))
                    # A worker reads only the records of this step's dependencies, all final.
                    upstream = {dep: progress.done[dep] for dep in step.deps_in_plan}
                    future = self._executor().submit(
                        _run_step, materializer, step, scope, upstream, stop
                    )
                    running[future] = step.key
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    progress.finish(future.result())
        except BaseException as exc:
            # Ctrl-C, a store that went away, a BaseException from an asset: stop starting
            # steps, let the running ones end (they record themselves), and record every step
            # that never ran as skipped, so nothing is left pending. Then re-raise.
            stop.set()
            for future, key in running.items():
                if future.cancel():
                    progress.started.discard(key)
            cf.wait(running)
            progress.skip_unstarted(f"run interrupted by {type(exc).__name__}: {exc}")
            raise
        return progress.results()

    def _executor(self) -> cf.ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="flowstone"
                )
            return self._pool

    def close(self) -> None:
        """Stop the thread pool after the steps already running finish."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _run_step(
    materializer: Materializer,
    step: Step,
    scope: RunScope,
    upstream: Mapping[StepKey, MaterializationRecord],
    stop: threading.Event,
) -> MaterializationRecord:
    """Run one step through the materializer, again after each failure its retry policy
    retries (the same path for every attempt; only the final record is returned)."""
    policy = step.asset.retry
    if policy is None or policy.max_attempts == 1:
        return materializer.run(step, scope, upstream)
    attempt = 1
    while True:
        hook = _RetryHook(materializer.store, policy, stop)
        record = materializer.run(step, scope, upstream, attempt=attempt, on_final=hook)
        if hook.retry_in is None:
            return record
        try:
            stopped = _wait(hook.retry_in, stop, materializer)
        except BaseException:
            # Ctrl-C while this waits on the calling thread: the failure is final.
            materializer.give_up(record, "run interrupted before the retry")
            raise
        if stopped:
            return materializer.give_up(record, "run stopped before the retry")
        attempt = record.attempt + 1


def _wait(seconds: float, stop: threading.Event, materializer: Materializer) -> bool:
    """Wait ``seconds`` unless the run is interrupted or the materializer's owner asks to
    stop (a backfill's cancel); True when stopped."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop.wait(min(left, 0.25)) or materializer.should_stop():
            return True
    return False


class _RetryHook:
    """Records a step's final record (a materializer ``FinalHook``); when the asset's retry
    policy retries the failure, records the step ``pending`` again instead, and says how long
    to wait."""

    def __init__(self, store: MetadataStore, policy: RetryPolicy, stop: threading.Event) -> None:
        self._store = store
        self._policy = policy
        self._stop = stop
        #: Seconds until the next attempt; None when the record is final.
        self.retry_in: float | None = None

    def __call__(
        self,
        record: MaterializationRecord,
        *,
        lineage: Sequence[LineageEdge],
        audit: Sequence[AuditEvent],
        error: BaseException | None,
    ) -> None:
        retry = None if self._stop.is_set() else retry_after(self._policy, record, error)
        if retry is None:
            self._store.save_materialization(record, lineage=lineage, audit=audit)
            return
        # One write: the step `pending` again replaces the failed attempt's record, and the
        # audit log keeps both events.
        self.retry_in = retry.delay_s
        self._store.save_materialization(
            retry.waiting, lineage=lineage, audit=[*audit, retry.event]
        )


class _Progress:
    """One execution's bookkeeping: what is ready, done, started, or held below a wait."""

    def __init__(
        self, plan: RunPlan, materializer: Materializer, on_record: OnRecord | None
    ) -> None:
        self._plan = plan
        self._materializer = materializer
        self._on_record = on_record
        self._steps = {step.key: step for step in plan.steps}
        self._waiting = {key: len(step.deps_in_plan) for key, step in self._steps.items()}
        self._children = plan.dependents()
        self.done: dict[StepKey, MaterializationRecord] = {}
        self.held: set[StepKey] = set()  # below a step that waits for approval: left pending
        self.started: set[StepKey] = set()  # handed to the materializer, which records them
        self.ready = [key for key, count in self._waiting.items() if count == 0]

    def start(self, key: StepKey) -> Step:
        """Mark a step as handed to the materializer."""
        self.started.add(key)
        return self._steps[key]

    def finish(self, record: MaterializationRecord) -> None:
        """Take a step's record: release its dependents, or skip them below a failure."""
        # A worklist, not recursion: a failure at the top of a long chain skips thousands.
        todo = [record]
        while todo:
            current = todo.pop()
            key = (current.asset, current.partition_key)
            self.done[key] = current
            if self._on_record is not None:
                self._on_record(current)
            if current.status == Status.SUCCESS:
                for child in self._children[key]:
                    self._waiting[child] -= 1
                    # A child with another, failed parent is already recorded skipped.
                    if self._waiting[child] == 0 and child not in self.done:
                        self.ready.append(child)
            elif current.status == Status.WAITING_APPROVAL:
                # Its dependents neither run nor skip: they stay `pending` in the store, and
                # the approval's decision continues (or skips) them. Nothing waits here.
                self.held.update(_below(key, self._children))
            else:
                # Name the root cause: below a skipped asset, repeat why it was skipped.
                if current.status == Status.SKIPPED and current.error_message:
                    reason = current.error_message
                else:
                    reason = f"upstream asset {current.asset!r} {current.status.value}"
                for child in self._children[key]:
                    if child not in self.done:
                        skipped = self._skip(child, reason)
                        self.done[child] = skipped  # a diamond below must not skip it twice
                        todo.append(skipped)

    def skip_unstarted(self, reason: str) -> None:
        """Record every step that never started (and is not held by a wait) as skipped."""
        for key in self._steps:
            if key not in self.done and key not in self.held and key not in self.started:
                self.done[key] = self._skip(key, reason)

    def results(self) -> list[MaterializationRecord]:
        """Each step's record in plan order; steps below a waiting approval are pending."""
        return [
            self.done.get(step.key) or step.pending_record(self._plan.run_id)
            for step in self._plan.steps
        ]

    def _skip(self, key: StepKey, reason: str) -> MaterializationRecord:
        return self._materializer.skip(self._steps[key], self._plan.run_id, reason)


def _below(key: StepKey, children: dict[StepKey, list[StepKey]]) -> set[StepKey]:
    """Every step that depends on ``key``, transitively."""
    found: set[StepKey] = set()
    stack = list(children[key])
    while stack:
        child = stack.pop()
        if child not in found:
            found.add(child)
            stack.extend(children[child])
    return found
