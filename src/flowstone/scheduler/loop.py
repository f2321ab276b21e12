"""The scheduler: evaluates due schedule ticks and sensor polls, and launches their runs.

Run it as ``flowstone scheduler``, or embed it (``Scheduler(pipeline).start()`` in a worker or
an app). Any number of schedulers may run against one metadata store: every tick is recorded
once, with a unique key, in the transaction that creates its run (see
:mod:`flowstone.scheduler.schedule_ticks`), so they never double-fire, and a run recorded but
never started (a crash in between) is found and launched by any of them
(:mod:`flowstone.scheduler.launch`).

The clock is injectable: ``tick_once(now)`` evaluates everything due at ``now``, which is how the
tests walk a schedule across DST changes in milliseconds.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures as cf
from dataclasses import replace
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from flowstone.execution.distributed import DistributedExecutor
from flowstone.pipeline import Pipeline
from flowstone.records import AuditEvent, RunResult, utcnow
from flowstone.schedule_records import SensorRecord
from flowstone.scheduler.launch import Launcher
from flowstone.scheduler.schedule_ticks import TickOutcome, evaluate_schedule
from flowstone.scheduler.sensor_ticks import poll_sensor, sensor_due
from flowstone.schedules import same_definition

log = logging.getLogger("flowstone.scheduler")


class Scheduler:
    """Evaluates a pipeline's stored schedules and sensors, and launches their runs.

    Args:
        pipeline: The pipeline whose store holds the schedules, and whose code defines the
            sensors and any partition functions.
        clock: Returns the current time (aware); tests inject one.
        poll_interval: Seconds between evaluations in :meth:`run_forever`.
        grace: Seconds a tick may be found late and still count as on time (for
            ``catch_up="skip"``). Default: twice ``poll_interval``, at least 60.
        recovery_grace: Seconds after which a recorded run that never started is taken for
            orphaned (its scheduler died) and launched here.
        max_concurrent_runs: Runs executed at once by this scheduler.

    Example::

        scheduler = Scheduler(pipeline)
        scheduler.run_forever()  # until SIGTERM / Ctrl-C

        # In tests, with an injected clock:
        scheduler.tick_once(datetime(2025, 3, 30, 1, 0, tzinfo=UTC))
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        clock: Callable[[], datetime] | None = None,
        poll_interval: float = 5.0,
        grace: float | None = None,
        recovery_grace: float = 60.0,
        max_concurrent_runs: int = 4,
    ) -> None:
        if isinstance(pipeline.executor, DistributedExecutor):
            # Tick runs go to the workers: refuse a store that cannot carry the queue, or
            # values the workers could not share, before any tick is recorded.
            pipeline.check_distributable()
        if poll_interval <= 0 or recovery_grace <= 0 or max_concurrent_runs < 1:
            raise ValueError(
                "poll_interval and recovery_grace must be positive, max_concurrent_runs >= 1"
            )
        self.pipeline = pipeline
        self._clock = clock or utcnow
        self.poll_interval = poll_interval
        self.grace_s = grace if grace is not None else max(60.0, 2 * poll_interval)
        self.recovery_grace_s = recovery_grace
        self._launcher = Launcher(pipeline, self._clock, max_concurrent_runs)
        self._synced = False
        self._last_recovery: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one evaluation ----------------------------------------------------------------------
    def sync(self, now: datetime | None = None) -> None:
        """Store the schedules and sensors declared in the pipeline's code (new or changed
        ones; the stored state, paused and cursor, is kept)."""
        now = now or self._clock()
        store = self.pipeline.store
        for definition in self.pipeline.schedules.values():
            record = replace(definition.record, created_at=now, updated_at=now)
            stored = store.get_schedule(record.name)
            if stored is not None and same_definition(stored, record):
                continue
            action = "schedule.created" if stored is None else "schedule.updated"
            details = {"cron": record.cron, "timezone": record.timezone}
            if stored is not None:
                details["previous_cron"] = stored.cron
            store.save_schedule(record, [_event(action, "schedule", record.name, details)])
        for sensor in self.pipeline.sensors.values():
            state = store.get_sensor(sensor.name)
            if state is not None and state.interval_s == sensor.interval_s:
                continue
            action = "sensor.created" if state is None else "sensor.updated"
            store.save_sensor(
                SensorRecord(
                    name=sensor.name, interval_s=sensor.interval_s, created_at=now, updated_at=now
                ),
                [_event(action, "sensor", sensor.name, {"interval_s": sensor.interval_s})],
            )
        self._synced = True

    def tick_once(self, now: datetime | None = None, *, wait: bool = True) -> list[TickOutcome]:
        """Evaluate everything due at ``now`` (default: the clock): launch never-started runs,
        expire approvals past their timeout, record and launch each due schedule tick, poll
        each due sensor.

        A schedule or sensor that fails to evaluate is logged and never stops the others.

        Args:
            now: The evaluation time (aware).
            wait: Wait for the launched runs to finish before returning.

        Returns:
            The ticks this call recorded, oldest schedule tick first, with their runs.
        """
        now = now or self._clock()
        if not self._synced:
            self.sync(now)
        store = self.pipeline.store
        telemetry = self.pipeline._telemetry
        recovered = self._recover(now)
        try:
            # Approval timeouts are swept here too: nothing else expires them on its own.
            self.pipeline.expire_approvals(now)
        except Exception:
            log.exception("Expiring approvals failed; the scheduler goes on")
        outcomes: list[TickOutcome] = []
        for record in store.list_schedules():
            if record.paused:
                continue
            try:
                outcomes.extend(
                    evaluate_schedule(
                        self.pipeline, self._launcher, telemetry, record, now, grace_s=self.grace_s
                    )
                )
            except Exception:
                log.exception("Evaluating schedule %r failed; the scheduler goes on", record.name)
        for state in store.list_sensors():
            if not sensor_due(state, now):
                continue
            try:
                outcome = poll_sensor(self.pipeline, self._launcher, telemetry, state, now)
            except Exception:
                log.exception("Polling sensor %r failed; the scheduler goes on", state.name)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        if wait:
            cf.wait([*recovered, *(f for o in outcomes for f in o.runs)])
        return outcomes

    def _recover(self, now: datetime) -> list[cf.Future[RunResult | None]]:
        # At start, then at most every half recovery_grace: the query scans tick runs.
        half = timedelta(seconds=self.recovery_grace_s / 2)
        if self._last_recovery is not None and now - self._last_recovery < half:
            return []
        self._last_recovery = now
        try:
            return self._launcher.recover(now - timedelta(seconds=self.recovery_grace_s))
        except Exception:
            log.exception("Looking for runs that never started failed; the scheduler goes on")
            return []

    # --- running -----------------------------------------------------------------------------
    def run_forever(self, *, handle_signals: bool = True) -> None:
        """Evaluate every ``poll_interval`` seconds until :meth:`stop`, SIGTERM or SIGINT.

        On a signal it stops evaluating, lets the runs in flight finish, and returns; a second
        Ctrl-C interrupts them.
        """
        restore: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                restore[sig] = signal.signal(sig, self._on_signal)
        # Logged once the signal handlers are in place (a test waits for this line).
        log.info("Scheduler started: polling every %gs", self.poll_interval)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    self.tick_once(wait=False)
                except Exception:
                    log.exception("Scheduler evaluation failed; retrying next interval")
                self._stop.wait(max(0.0, self.poll_interval - (time.monotonic() - started)))
        finally:
            for number, handler in restore.items():
                signal.signal(number, handler)
            self._launcher.close()
            log.info("Scheduler stopped")

    def start(self) -> threading.Thread:
        """Run :meth:`run_forever` on a background thread (to embed in an app or a worker)."""
        thread = threading.Thread(
            target=self.run_forever, kwargs={"handle_signals": False}, name="flowstone-scheduler"
        )
        thread.start()
        self._thread = thread
        return thread

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return after the current evaluation; wait for it if it
        runs on the thread :meth:`start` made."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def close(self) -> None:
        """Wait for runs in flight and release the run threads."""
        self._launcher.close()

    def __enter__(self) -> Scheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.warning(
            "Received %s: finishing runs in flight, then stopping", signal.Signals(signum).name
        )
        self._stop.set()
        # A second signal gets the default behaviour (Ctrl-C interrupts the runs).
        signal.signal(
            signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler
        )


def _event(action: str, kind: str, name: str, details: dict[str, Any]) -> AuditEvent:
    return AuditEvent(action=action, resource_type=kind, resource_id=name, details=details)
