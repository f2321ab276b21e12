"""The in-process executor: runs a plan on a thread pool, dependency by dependency."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent import futures as cf

from flowstone.materializer import Materializer, RunScope
from flowstone.planner import RunPlan, StepKey
from flowstone.records import MaterializationRecord, Status

#: Per-run hook called with each final record, in completion order.
OnRecord = Callable[[MaterializationRecord], object]


def default_max_workers() -> int:
    """Enough threads to overlap I/O-bound assets without swamping a small machine."""
    return min(32, (os.cpu_count() or 1) + 4)


class InProcessExecutor:
    """Runs independent assets in parallel on threads; each asset starts as soon as all of its
    in-plan dependencies succeeded. When an asset fails, everything below it is recorded
    ``skipped`` with the reason, while unrelated branches run to the end.

    Args:
        max_workers: Threads that run assets at once (default: CPU count + 4, at most 32).
            ``1`` runs one asset at a time, in topological order.
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
        """Run every step of ``plan``; return the final records in plan order."""
        steps = {step.key: step for step in plan.steps}
        waiting = {key: len(step.deps_in_plan) for key, step in steps.items()}
        children = plan.dependents()
        done: dict[StepKey, MaterializationRecord] = {}
        ready = [key for key, count in waiting.items() if count == 0]
        running: dict[cf.Future[MaterializationRecord], StepKey] = {}

        def finish(record: MaterializationRecord) -> None:
            key = (record.asset, record.partition_key)
            done[key] = record
            if on_record is not None:
                on_record(record)
            if record.status == Status.SUCCESS:
                for child in children[key]:
                    waiting[child] -= 1
                    # A child with another, failed parent is already recorded skipped.
                    if waiting[child] == 0 and child not in done:
                        ready.append(child)
            else:
                # Name the root cause: below a skipped asset, repeat why it was skipped.
                if record.status == Status.SKIPPED and record.error_message:
                    reason = record.error_message
                else:
                    reason = f"upstream asset {record.asset!r} {record.status.value}"
                for child in children[key]:
                    if child not in done:
                        finish(materializer.skip(steps[child], plan.run_id, reason))

        while ready or running:
            # A lone ready step with nothing in flight runs on this thread: a chain needs no
            # thread hand-offs, and it is still the same materializer path.
            if len(ready) == 1 and not running:
                finish(materializer.run(steps[ready.pop()], scope, done))
                continue
            while ready:
                step = steps[ready.pop(0)]
                # A worker reads only the records of this step's dependencies, all final.
                upstream = {dep: done[dep] for dep in step.deps_in_plan}
                future = self._executor().submit(materializer.run, step, scope, upstream)
                running[future] = step.key
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                del running[future]
                finish(future.result())
        return [done[step.key] for step in plan.steps]

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
