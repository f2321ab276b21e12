"""The job queue under the distributed executor: procrastinate, in the metadata database.

FlowStone writes no queue of its own. It uses procrastinate's tables, SQL functions, locks,
retries, periodic tasks and stalled-job recovery, and keeps here only what is FlowStone's:

- **Job arguments are JSON and nothing else** (:class:`StepJob`): run id, asset name, encoded
  partition, attempt, plain options. A worker resolves the asset name against its own pipeline,
  so nothing named in a job is ever imported.
- **Two locks per step.** The *queueing lock* ``flowstone:<run>:<asset>:<partition>`` lets one
  job per step wait in the queue (duplicate enqueues collapse); the *step lock*
  ``flowstone:<asset>:<partition>`` keeps two workers from running the same (asset, partition)
  at once, whichever runs they belong to. The step lock is not procrastinate's job ``lock``:
  with one lock per step, procrastinate's fetch checks every waiting job's lock against every
  other, and with a few thousand jobs waiting (a wide run) that made each fetch cost tens of
  milliseconds (procrastinate issue 1242). The worker takes it instead, as a PostgreSQL
  advisory lock held for the step (:meth:`flowstone.store.sql.SQLStore.step_session`); it
  ends with the worker's connection when the worker dies.
- **Enqueue inside the caller's transaction.** :func:`defer_steps` hands procrastinate the
  driver connection of the metadata store's open transaction (``JobManager.batch_defer_jobs(...,
  connection=...)``, which runs procrastinate's ``procrastinate_defer_jobs_v1`` SQL function on
  it), so the jobs commit with the records that made them ready, or not at all. Each defer runs
  in a savepoint: a step already waiting (its queueing lock taken) is skipped without aborting
  the transaction.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from procrastinate import App, SyncPsycopgConnector
from procrastinate import exceptions as queue_errors
from procrastinate import jobs as queue_jobs
from procrastinate.manager import JobManager
from psycopg import pq
from psycopg.conninfo import make_conninfo

from flowstone.errors import DistributedSetupError, JobRejectedError
from flowstone.execution.distributed import DEFAULT_QUEUE

__all__ = ["DEFAULT_QUEUE", "MAINTENANCE_QUEUE", "RECOVERY_TASK_NAME", "TASK_NAME", "StepJob"]

#: The procrastinate task that materializes one step.
TASK_NAME = "flowstone.materialize"
#: procrastinate's table of jobs (in the metadata database's search path).
JOBS_TABLE = "procrastinate_jobs"
#: The periodic procrastinate task that hands stalled jobs back to the queue.
RECOVERY_TASK_NAME = "flowstone.recover_stalled_jobs"
#: The queue of the recovery task; every worker serves it, whatever queues it was given.
MAINTENANCE_QUEUE = "flowstone.maintenance"

_ARG_KEYS = frozenset({"run_id", "asset", "partition", "attempt", "options"})
_OPTION_KEYS = frozenset({"io_manager"})
# Lock strings are indexed by PostgreSQL; long partition keys are hashed to keep them short.
_MAX_KEY_IN_LOCK = 120


@dataclass(frozen=True, slots=True, kw_only=True)
class StepJob:
    """What a job asks a worker to do: materialize one step of one run.

    Attributes:
        run_id: The run, whose ``pending`` records were written when it was created.
        asset: The asset's name, resolved against the worker's own pipeline.
        partition_key: The encoded partition (see :func:`flowstone.partitions.encode_partition`).
        attempt: The step's attempt number when the job was enqueued; when the queue retries the
            job itself (after a crash or a retryable failure), each retry adds one.
        io_manager: The run's per-call I/O manager override, if any.
    """

    run_id: str
    asset: str
    partition_key: str
    attempt: int = 1
    io_manager: str | None = None

    def to_args(self) -> dict[str, Any]:
        """The job's JSON arguments."""
        return {
            "run_id": self.run_id,
            "asset": self.asset,
            "partition": self.partition_key,
            "attempt": self.attempt,
            "options": {"io_manager": self.io_manager},
        }

    @classmethod
    def from_args(cls, args: Mapping[str, Any], *, job_id: int | None = None) -> StepJob:
        """Read a job's arguments, trusting nothing about them.

        Raises:
            JobRejectedError: a key is missing, unknown, or of the wrong type.
        """

        def reject(reason: str) -> JobRejectedError:
            return JobRejectedError(reason, job_id=job_id, args=dict(args))

        if set(args) != _ARG_KEYS:
            raise reject(f"its arguments must be exactly {sorted(_ARG_KEYS)}, got {sorted(args)}.")
        for key in ("run_id", "asset", "partition"):
            if not isinstance(args[key], str) or not args[key]:
                raise reject(f"{key!r} must be a non-empty string, got {args[key]!r}.")
        attempt = args["attempt"]
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise reject(f"'attempt' must be an integer >= 1, got {attempt!r}.")
        options = args["options"]
        if not isinstance(options, dict) or not set(options) <= _OPTION_KEYS:
            raise reject(f"'options' must be an object with keys {sorted(_OPTION_KEYS)}.")
        io_manager = options.get("io_manager")
        if io_manager is not None and not isinstance(io_manager, str):
            raise reject(f"option 'io_manager' must be a string, got {io_manager!r}.")
        return cls(
            run_id=args["run_id"],
            asset=args["asset"],
            partition_key=args["partition"],
            attempt=attempt,
            io_manager=io_manager,
        )

    @property
    def queueing_lock(self) -> str:
        """At most one job per step of a run waits in the queue."""
        return f"flowstone:{self.run_id}:{self.asset}:{_short(self.partition_key)}"

    @property
    def lock(self) -> str:
        """The step lock: at most one job per (asset, partition) runs at a time, across runs."""
        return f"flowstone:{self.asset}:{_short(self.partition_key)}"

    def queue_job(self, queue: str) -> queue_jobs.Job:
        """The procrastinate job that carries this step."""
        return queue_jobs.Job(
            queue=queue,
            task_name=TASK_NAME,
            lock=None,  # the step lock is the worker's (see the module's docstring)
            queueing_lock=self.queueing_lock,
            task_kwargs=self.to_args(),
        )


def _short(key: str) -> str:
    if len(key) <= _MAX_KEY_IN_LOCK:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# A JobManager whose connector is never opened: every call here passes its own connection.
_DEFERRER = JobManager(SyncPsycopgConnector())


def defer_steps(connection: Any, steps: Sequence[StepJob], *, queue: str) -> list[StepJob]:
    """Enqueue ``steps`` in the transaction ``connection`` (a psycopg connection) is in.

    Returns:
        The steps enqueued now; a step whose job is already waiting in the queue is left out.
    """
    if not steps:
        return []
    jobs = [step.queue_job(queue) for step in steps]
    try:
        # psycopg's transaction() inside an open transaction is a savepoint.
        with connection.transaction():
            _DEFERRER.batch_defer_jobs(jobs, connection=connection)
        return list(steps)
    except queue_errors.AlreadyEnqueued:
        pass
    deferred = []
    for step, job in zip(steps, jobs, strict=True):
        try:
            with connection.transaction():
                _DEFERRER.defer_job(job, connection=connection)
        except queue_errors.AlreadyEnqueued:
            continue  # the same step is already waiting: enqueueing it again would run it twice
        deferred.append(step)
    return deferred


def conninfo(url: sa.URL, connect_args: Mapping[str, Any] | None = None) -> str:
    """The libpq connection string the queue connects with, for a ``postgresql+psycopg://``
    store: the same server, database, role and settings as the store's own connections.

    It is made of keywords and values: those SQLAlchemy's psycopg dialect makes of the URL
    (query options such as ``options=-csearch_path=...`` and several ``host`` values included),
    then the libpq ones of the engine's ``connect_args`` (``sslmode``, ``options``...), which
    win as they do for psycopg. (A URL rendered back to text would not do: SQLAlchemy writes a
    space in a query value as ``+``, which libpq reads as a plus sign, so ``options`` with two
    ``-c`` settings became one wrong setting.)

    Raises:
        DistributedSetupError: the URL gives a query option other than ``host`` more than once
            (libpq takes one value), or hosts and ports that do not pair up.
    """
    try:
        _, params = url.get_dialect()().create_connect_args(url)
    except sa.exc.ArgumentError as exc:
        raise DistributedSetupError(f"The database URL cannot be used by the queue: {exc}") from exc
    for key, value in params.items():
        if isinstance(value, tuple | list):
            raise DistributedSetupError(
                f"The database URL gives {key!r} more than once ({list(value)}); give it once."
            )
    # psycopg's own arguments (autocommit, prepare_threshold...) are not libpq's: left out.
    params.update((k, v) for k, v in (connect_args or {}).items() if k in _libpq_keywords())
    return make_conninfo(**params)


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def open_app(dsn: str) -> App:
    """A procrastinate app on ``dsn`` with a small synchronous pool, opened (close it)."""
    app = App(connector=SyncPsycopgConnector(conninfo=dsn, min_size=1, max_size=2))
    app.open()
    return app


def ensure_schema(dsn: str) -> bool:
    """Create procrastinate's tables in the database at ``dsn`` unless they exist.

    Two processes racing here are safe: the schema is applied in one transaction, and the loser's
    failure is ignored once the tables are seen to exist.

    Returns:
        True when this call created them.
    """
    app = open_app(dsn)
    try:
        if app.check_connection():
            return False
        try:
            app.schema_manager.apply_schema()
        except queue_errors.ConnectorException:
            if app.check_connection():
                return False
            raise
        return True
    finally:
        app.close()


def cancel_jobs(dsn: str, steps: Sequence[StepJob]) -> tuple[int, int]:
    """Cancel the waiting jobs of ``steps`` and ask the running ones to abort.

    Returns:
        How many waiting jobs were cancelled, and how many running ones were asked to abort.
    """
    cancelled = aborting = 0
    app = open_app(dsn)
    try:
        manager = app.job_manager
        for step in steps:
            for job in manager.list_jobs(queueing_lock=step.queueing_lock):
                if job.id is None or job.status not in ("todo", "doing"):
                    continue
                if manager.cancel_job_by_id(job.id, abort=True):
                    if job.status == "todo":
                        cancelled += 1
                    else:
                        aborting += 1
    finally:
        app.close()
    return cancelled, aborting
