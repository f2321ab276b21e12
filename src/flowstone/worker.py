"""``flowstone worker``: a procrastinate worker that materializes a pipeline's steps.

A worker loads its pipeline from its own configuration (``--pipeline module:attr``), so it never
imports anything a job names. It registers two procrastinate tasks on an app connected to the
pipeline's PostgreSQL store:

- ``flowstone.materialize`` runs one step (:class:`~flowstone.execution.steps.StepRunner`). Its
  retry strategy retries exactly what FlowStone asks for: a failure the asset's
  :class:`~flowstone.RetryPolicy` retries (after the policy's wait), a job handed back at
  shutdown (at once), and a lost connection to the database (with a capped backoff). Everything
  else fails the job for good.
- ``flowstone.recover_stalled_jobs``, run by the workers every ``recovery_interval`` seconds
  (a procrastinate periodic task: one run per tick whatever the number of workers), hands the
  jobs of dead workers back to the queue: a worker killed mid-step stops heartbeating, and after
  ``stalled_after`` seconds its jobs are retried, so a step never stays ``running`` for good. The
  retried attempt supersedes the dead one's record.

On SIGTERM (or Ctrl-C) a worker starts no new job and finishes the ones it runs (a second signal
kills it; their jobs are then recovered as stalled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate import exceptions as queue_errors
from procrastinate import jobs as queue_jobs

from flowstone.errors import DefinitionError, RetryScheduledError, StoreError
from flowstone.execution import queue
from flowstone.execution.distributed import DistributedExecutor, postgres_dsn, postgres_store
from flowstone.execution.steps import StepRunner
from flowstone.materializer import RunScope
from flowstone.pipeline import Pipeline
from flowstone.records import utcnow

log = logging.getLogger("flowstone.worker")

#: Retries of a job that failed on a database error, and the cap of their backoff.
INFRA_RETRIES = 8
INFRA_MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    """How a worker runs.

    Args:
        concurrency: Steps run at once (in threads).
        queues: Queues to serve (the maintenance queue is always served); empty: all.
        name: The worker's name in logs.
        poll_interval: Seconds between looks for due jobs (new jobs are also notified at once;
            polling finds jobs whose retry time came).
        heartbeat_interval: Seconds between the worker's heartbeats.
        stalled_after: A job whose worker has not sent a heartbeat for this many seconds is
            stalled and handed back to the queue.
        recovery_interval: Seconds between two looks for stalled jobs (1 to 59 divide a minute
            best; larger values are rounded to whole minutes).
        shutdown_timeout: On SIGTERM, seconds to wait for running steps before handing their
            jobs back; None: wait for them to finish.
        keep_jobs: Keep succeeded jobs in procrastinate's table (default: delete them; the
            metadata store is the record of what ran).

    With the defaults a step of a killed worker is retried within about a minute
    (``stalled_after + recovery_interval``).
    """

    concurrency: int = 1
    queues: tuple[str, ...] = ()
    name: str | None = None
    poll_interval: float = 1.0
    heartbeat_interval: float = 10.0
    stalled_after: float = 30.0
    recovery_interval: int = 15
    shutdown_timeout: float | None = None
    keep_jobs: bool = False

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise DefinitionError(f"concurrency must be at least 1, got {self.concurrency}.")
        if self.stalled_after <= self.heartbeat_interval:
            raise DefinitionError(
                f"stalled_after ({self.stalled_after} s) must be longer than heartbeat_interval "
                f"({self.heartbeat_interval} s), or live workers would look dead."
            )
        if self.recovery_interval < 1:
            raise DefinitionError(
                f"recovery_interval must be at least 1 second, got {self.recovery_interval}."
            )


def run_worker(pipeline: Pipeline, settings: WorkerSettings | None = None) -> None:
    """Serve jobs until SIGTERM or Ctrl-C.

    Raises:
        DistributedSetupError: the pipeline's store is not PostgreSQL.

    Example::

        from flowstone.worker import WorkerSettings, run_worker
        run_worker(my_pipeline, WorkerSettings(concurrency=4))
    """
    settings = settings or WorkerSettings()
    executor = pipeline.executor
    if not isinstance(executor, DistributedExecutor):
        executor = DistributedExecutor()
    executor.prepare(pipeline.store)  # checks PostgreSQL, creates the queue's tables if missing
    with pipeline.resource_scope() as resources:
        app = build_app(pipeline, settings, resources=resources)
        queues = [*settings.queues, queue.MAINTENANCE_QUEUE] if settings.queues else None
        app.run_worker(
            queues=queues,
            name=settings.name,
            concurrency=settings.concurrency,
            wait=True,
            fetch_job_polling_interval=settings.poll_interval,
            abort_job_polling_interval=settings.poll_interval,
            update_heartbeat_interval=settings.heartbeat_interval,
            stalled_worker_timeout=settings.stalled_after,
            shutdown_graceful_timeout=settings.shutdown_timeout,
            delete_jobs="never" if settings.keep_jobs else "successful",
            install_signal_handlers=True,
        )


def build_app(pipeline: Pipeline, settings: WorkerSettings, *, resources: Any) -> App:
    """The procrastinate app of a worker of ``pipeline`` (not opened)."""
    dsn = postgres_dsn(pipeline.store)
    app = App(
        connector=PsycopgConnector(conninfo=dsn, min_size=2, max_size=settings.concurrency + 4)
    )

    def scope_for(run_id: str, io_manager: str | None) -> RunScope:
        return pipeline.step_runtime(run_id, resources=resources, io_manager=io_manager)[1]

    materializer = pipeline.step_runtime("", resources=resources)[0]
    runner = StepRunner(pipeline.graph, postgres_store(pipeline.store), materializer, scope_for)

    @app.task(name=queue.TASK_NAME, pass_context=True, retry=_Retries(), queue=queue.DEFAULT_QUEUE)
    def materialize(context: JobContext, /, **args: Any) -> str:
        if context.should_abort():
            # Asked to stop before the step started (shutdown, or its run was cancelled).
            raise queue_errors.JobAborted
        return runner.run(
            args,
            job_id=context.job.id,
            retries=context.job.attempts,
            queue_name=context.job.queue,
        )

    stalled_after = settings.stalled_after

    @app.periodic(cron=_cron(settings.recovery_interval), periodic_id="flowstone")
    @app.task(
        name=queue.RECOVERY_TASK_NAME,
        pass_context=True,
        queue=queue.MAINTENANCE_QUEUE,
        # A queueing lock and no lock: a recovery job of a dead worker must not block the
        # next one (it is itself recovered as stalled).
        queueing_lock=queue.RECOVERY_TASK_NAME,
    )
    async def recover_stalled_jobs(context: JobContext, timestamp: int) -> int:
        manager = context.app.job_manager
        handed_back = 0
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
            if job.id == context.job.id:
                continue
            try:
                await manager.retry_job(job)
            except queue_errors.ConnectorException:
                continue  # it finished or was retried meanwhile
            log.warning("handed back stalled job %s (%s)", job.id, job.call_string)
            handed_back += 1
        return handed_back

    return app


class _Retries(BaseRetryStrategy):
    """Retries what FlowStone decided to retry, nothing else."""

    def get_retry_decision(
        self, *, exception: BaseException, job: queue_jobs.Job
    ) -> RetryDecision | None:
        if isinstance(exception, RetryScheduledError):
            return RetryDecision(retry_at=utcnow() + timedelta(seconds=exception.delay_s))
        if isinstance(exception, queue_errors.JobAborted):
            # Only reached when the worker shuts down (a user abort is never retried): hand the
            # job back for another worker.
            return RetryDecision(retry_at=utcnow())
        if isinstance(exception, StoreError | queue_errors.ConnectorException):
            if job.attempts >= INFRA_RETRIES:
                return None
            wait = min(INFRA_MAX_BACKOFF_S, 2.0 ** (job.attempts + 1))
            return RetryDecision(retry_at=utcnow() + timedelta(seconds=wait))
        return None


def _cron(seconds: int) -> str:
    """A cron expression firing every ``seconds`` (procrastinate's 6th field is seconds)."""
    if seconds < 60:
        return f"*/{seconds} * * * * *"
    return f"*/{max(1, round(seconds / 60))} * * * *"
