"""FlowStone's exceptions: one root, data-carrying subclasses.

Every error FlowStone raises is a :class:`FlowStoneError`. Each subclass carries the data a
caller needs to react (the asset name, the partition, the suggestions) and a message that says
what went wrong *and what to do*. Driver and user-code errors are wrapped at the boundary with
``raise ... from exc`` so the original traceback is never lost.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from datetime import datetime


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` names from ``candidates`` that look like ``name``."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)


def _did_you_mean(suggestions: Sequence[str]) -> str:
    if not suggestions:
        return ""
    return " Did you mean " + " or ".join(repr(s) for s in suggestions) + "?"


class FlowStoneError(Exception):
    """Something went wrong in FlowStone."""

    def __init__(self, message: str | None = None) -> None:
        # The class docstring is the default message, so a bare `raise SomeError()` still
        # says something useful.
        super().__init__(message or (self.__doc__ or "").strip())


# --- definitions ---------------------------------------------------------------------------


class DefinitionError(FlowStoneError):
    """An asset or pipeline definition is invalid."""


class DuplicateAssetError(DefinitionError):
    """Two assets share one name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"Two assets are named {name!r}. Asset names must be unique within a pipeline: "
            f"rename one of them (the `name=` argument of @asset)."
        )


class UnknownAssetError(DefinitionError):
    """An asset name is not in the pipeline."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.suggestions = suggest(name, known)
        super().__init__(
            f"No asset named {name!r} in this pipeline.{_did_you_mean(self.suggestions)}"
            " List the assets with `flowstone graph`."
        )


class UnknownDependencyError(DefinitionError):
    """An asset depends on a name that no asset has."""

    def __init__(self, asset: str, dependency: str, known: Iterable[str], *, via: str) -> None:
        self.asset = asset
        self.dependency = dependency
        self.suggestions = suggest(dependency, known)
        super().__init__(
            f"Asset {asset!r} {via} {dependency!r}, but no asset has that name."
            f"{_did_you_mean(self.suggestions)} Add the missing asset to the pipeline or fix the "
            "name."
        )


class CycleError(DefinitionError):
    """The assets' dependencies form a cycle."""

    def __init__(self, path: Sequence[str]) -> None:
        self.path = tuple(path)
        super().__init__(
            f"Dependency cycle: {' -> '.join(self.path)}. Assets must form a DAG: remove one of "
            "these dependencies."
        )


class MissingResourceError(DefinitionError):
    """An asset requires a resource that the pipeline does not provide."""

    def __init__(self, asset: str, resource: str, known: Iterable[str]) -> None:
        self.asset = asset
        self.resource = resource
        self.suggestions = suggest(resource, known)
        super().__init__(
            f"Asset {asset!r} requires resource {resource!r}, but the pipeline provides none by "
            f"that name.{_did_you_mean(self.suggestions)} Pass it in "
            f"Pipeline(..., resources={{{resource!r}: ...}})."
        )


class PartitionError(FlowStoneError):
    """A partition value is invalid, cannot be encoded, or is not in its definition."""


# --- runtime -------------------------------------------------------------------------------


class MaterializationError(FlowStoneError):
    """A materialization could not complete."""

    def __init__(self, message: str, *, asset: str, partition: object = None) -> None:
        self.asset = asset
        self.partition = partition
        super().__init__(message)


class AssetExecutionError(MaterializationError):
    """The asset's own function raised."""

    def __init__(self, asset: str, partition: object, original: BaseException) -> None:
        self.original = original
        where = f"asset {asset!r}" + ("" if partition is None else f" partition {partition!r}")
        super().__init__(
            f"{where} raised {type(original).__name__}: {original}",
            asset=asset,
            partition=partition,
        )


class MissingUpstreamError(MaterializationError):
    """An upstream value is not materialized."""

    def __init__(
        self,
        asset: str,
        partition: object,
        upstream: str,
        *,
        missing: Sequence[str] = (),
        read: bool = False,
        shown: str | None = None,
    ) -> None:
        self.upstream = upstream
        #: The upstream partitions without a successful materialization, as displayed.
        self.missing = tuple(missing)
        needs = f"Asset {asset!r}"
        if partition is not None:
            needs += f" partition {shown or repr(partition)}"
        needs += f" needs {upstream!r}"
        at = self.missing[0] if len(self.missing) == 1 and not read else None
        if at not in (None, "-", shown):
            needs += f" partition {at}"  # another partition than its own: say which
        if read:
            # A mapping reads several upstream partitions: say which are missing.
            listed = ", ".join(self.missing[:5])
            more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
            what = (
                f", but {len(self.missing)} of the {upstream!r} partitions it reads have no "
                f"successful materialization: {listed}{more}. Materialize them first (a "
                f"backfill of {upstream!r} over them: `flowstone backfill run {upstream} "
                "--from ... --to ...`), or pass allow_missing=True to the partition mapping "
                "to read the ones that exist."
            )
        else:
            what = (
                ", which has no successful materialization. Materialize it first, or run "
                "with upstream assets (materialize_all / `flowstone materialize --with-deps`)."
            )
        super().__init__(needs + what, asset=asset, partition=partition)


class NotMaterializedError(MaterializationError):
    """An asset has no successful materialization for the partition asked for."""

    def __init__(self, asset: str, partition: object) -> None:
        super().__init__(
            f"Asset {asset!r} has no successful materialization"
            + ("" if partition is None else f" for partition {partition!r}")
            + ". Materialize it first: pipeline.materialize_all(...) or "
            "`flowstone materialize ASSET --with-deps`.",
            asset=asset,
            partition=partition,
        )


class IOManagerError(MaterializationError):
    """An I/O manager failed to store or load a value."""


class ValueNotFoundError(IOManagerError):
    """An I/O manager holds no value for this asset and partition."""


# --- I/O managers for real data (issue 7) ---------------------------------------------------


class UnsupportedValueError(IOManagerError):
    """An I/O manager cannot store this kind of value."""

    def __init__(
        self, message: str, *, asset: str, partition: object = None, value_type: str
    ) -> None:
        self.value_type = value_type
        super().__init__(message, asset=asset, partition=partition)


class TableSchemaError(IOManagerError):
    """A DataFrame's columns differ from those of the table holding the asset's other
    partitions."""

    def __init__(
        self,
        *,
        asset: str,
        partition: object,
        table: str,
        expected: Sequence[tuple[str, str]],
        got: Sequence[tuple[str, str]],
    ) -> None:
        self.table = table
        self.expected = tuple(expected)
        self.got = tuple(got)

        def show(columns: Sequence[tuple[str, str]]) -> str:
            return ", ".join(f"{name} {kind}" for name, kind in columns)

        super().__init__(
            f"Asset {asset!r} returned columns ({show(self.got)}), but table {table} holds "
            f"({show(self.expected)}). Every partition of an asset shares one table: return the "
            "same columns and types, or drop the table (or its asset's partitions) to start over.",
            asset=asset,
            partition=partition,
        )


class InvalidIdentifierError(FlowStoneError, ValueError):
    """A table or schema name is not a plain SQL identifier."""

    def __init__(self, name: str, *, what: str) -> None:
        self.name = name
        self.what = what
        super().__init__(
            f"{what} {name!r} is not a plain SQL identifier: use letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters. For an asset whose name has "
            "'-' or '.', give its table a name: tables={'my-asset': 'my_asset'}."
        )


class ResourceSetupError(MaterializationError):
    """A resource failed to set up, so the assets that need it cannot run."""

    def __init__(self, message: str, *, asset: str, resource: str) -> None:
        self.resource = resource
        super().__init__(message, asset=asset)


class SkippedError(MaterializationError):
    """An asset was skipped because something it depends on did not succeed."""


# --- approvals -----------------------------------------------------------------------------


class ApprovalError(FlowStoneError):
    """An approval request cannot be made or decided as asked."""


class ApprovalNotFoundError(ApprovalError):
    """No approval request has this id."""

    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id
        super().__init__(
            f"No approval request {approval_id!r}. List them with "
            "`flowstone approvals list --status all` (an id prefix of 4+ characters is enough)."
        )


class ApprovalAlreadyDecidedError(ApprovalError):
    """The approval request was already decided (or expired); nothing changed."""

    def __init__(
        self,
        approval_id: str,
        *,
        status: str,
        decided_by: str | None,
        decided_at: datetime | None,
    ) -> None:
        self.approval_id = approval_id
        self.status = status
        self.decided_by = decided_by
        self.decided_at = decided_at
        when = "" if decided_at is None else f" at {decided_at.isoformat(timespec='seconds')}"
        who = "its timeout" if status == "expired" else (decided_by or "someone")
        super().__init__(
            f"Approval {approval_id} was already {status} by {who}{when}; this decision was not "
            "recorded. "
            + (
                "Materialize the asset again to ask anew."
                if status != "approved"
                else "The asset has resumed with that approval."
            )
        )


class ApprovalRejectedError(MaterializationError):
    """A person rejected the approval the materialization waited for."""

    def __init__(
        self, asset: str, partition: object, *, approval_id: str, decided_by: str, reason: str
    ) -> None:
        self.approval_id = approval_id
        self.decided_by = decided_by
        self.reason = reason
        super().__init__(
            f"Approval {approval_id} was rejected by {decided_by}: {reason}. Materialize "
            f"{asset!r} again to ask anew.",
            asset=asset,
            partition=partition,
        )


class ApprovalExpiredError(MaterializationError):
    """Nobody decided the approval the materialization waited for before its timeout."""

    def __init__(
        self, asset: str, partition: object, *, approval_id: str, timeout_at: datetime
    ) -> None:
        self.approval_id = approval_id
        self.timeout_at = timeout_at
        super().__init__(
            f"Approval {approval_id} expired at {timeout_at.isoformat(timespec='seconds')} with "
            f"nobody deciding. Materialize {asset!r} again to ask anew, or give the request a "
            "longer timeout.",
            asset=asset,
            partition=partition,
        )


class RunFailedError(FlowStoneError):
    """A run ended with failed materializations."""

    def __init__(self, run_id: str, failed: Sequence[str], first_error: str | None) -> None:
        self.run_id = run_id
        self.failed = tuple(failed)
        detail = f" First error: {first_error}" if first_error else ""
        super().__init__(
            f"Run {run_id} failed: {', '.join(self.failed)}.{detail} "
            f"See `flowstone history` or the run's materializations for tracebacks."
        )


class RunWaitingError(RunFailedError):
    """A run is paused: some of its materializations wait for approval."""

    def __init__(self, run_id: str, waiting: Sequence[str]) -> None:
        self.run_id = run_id
        self.failed = ()
        self.waiting = tuple(waiting)
        FlowStoneError.__init__(
            self,
            f"Run {run_id} is waiting for approval of {', '.join(self.waiting) or 'a step'}; it "
            "continues when someone decides (`flowstone approvals list`, or "
            "pipeline.approvals() and pipeline.approve(...)).",
        )


# --- store ---------------------------------------------------------------------------------


class StoreError(FlowStoneError):
    """The metadata store failed."""


class StoreUnavailableError(StoreError):
    """The metadata store cannot be opened."""


class OutcomeCommittedError(StoreError):
    """A step's outcome was committed, but what the store does right after it failed (reading
    whether its run is done). The outcome stands: nothing may overwrite it. A distributed
    worker's job is retried, and the retry finishes what was left (closing the run)."""


class SchemaOutdatedError(StoreError):
    """The metadata store's schema is older than this version of FlowStone."""


# --- backfills -----------------------------------------------------------------------------


class BackfillError(FlowStoneError):
    """A backfill cannot be started, resumed, retried or canceled."""


class UnknownBackfillError(BackfillError):
    """No backfill has this id."""

    def __init__(self, backfill_id: str, *, matches: int = 0) -> None:
        self.backfill_id = backfill_id
        self.matches = matches
        problem = (
            f"Backfill id prefix {backfill_id!r} matches {matches} backfills; give more characters."
            if matches > 1
            else f"No backfill with id {backfill_id!r}."
        )
        super().__init__(
            f"{problem} List them with `flowstone backfill list` (a unique prefix of an id "
            "is enough)."
        )


class BackfillBusyError(BackfillError):
    """Another live process is running this backfill."""

    def __init__(
        self, backfill_id: str, owner: str, heartbeat_age_s: float, lease_s: float
    ) -> None:
        self.backfill_id = backfill_id
        self.owner = owner
        self.heartbeat_age_s = heartbeat_age_s
        super().__init__(
            f"Backfill {backfill_id} is being run by process {owner} (last heartbeat "
            f"{heartbeat_age_s:.0f} s ago). Wait for it to finish, or stop it with "
            f"`flowstone backfill cancel {backfill_id}`. If that process is gone, retry once "
            f"its heartbeat is {lease_s:.0f} s old."
        )


class BackfillStateError(BackfillError):
    """The backfill's status does not allow this operation."""

    def __init__(self, backfill_id: str, status: str, message: str) -> None:
        self.backfill_id = backfill_id
        self.status = status
        super().__init__(f"Backfill {backfill_id} is {status}: {message}")


class BackfillFailedError(BackfillError):
    """A backfill ended with partitions that did not succeed."""

    def __init__(
        self, backfill_id: str, status: str, failed: int, canceled: int, first_error: str | None
    ) -> None:
        self.backfill_id = backfill_id
        self.status = status
        self.failed = failed
        self.canceled = canceled
        detail = f" First error: {first_error}." if first_error else ""
        super().__init__(
            f"Backfill {backfill_id} {status}: {failed} partitions failed, {canceled} "
            f"canceled.{detail} See them with `flowstone backfill show {backfill_id}`; rerun "
            f"the failures with `flowstone backfill retry-failed {backfill_id}`, or everything "
            f"not yet successful with `flowstone backfill resume {backfill_id}`."
        )


# --- schedules and sensors -----------------------------------------------------------------


class ScheduleDefinitionError(DefinitionError):
    """A schedule or sensor definition is invalid."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"Schedule or sensor {name!r}: {problem}")


class InvalidCronError(ScheduleDefinitionError):
    """A cron expression cannot be parsed or never matches."""

    def __init__(self, name: str, cron: str, detail: str) -> None:
        self.cron = cron
        super().__init__(
            name,
            f"invalid cron expression {cron!r} ({detail}). Use five fields, 'minute hour "
            "day-of-month month day-of-week', e.g. '0 6 * * *' (06:00 every day) or "
            "'*/15 * * * *', or one of @hourly, @daily, @weekly, @monthly, @yearly.",
        )


class UnknownScheduleError(DefinitionError):
    """No schedule (or sensor) by that name is stored."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.suggestions = suggest(name, known)
        super().__init__(
            f"No {kind} named {name!r}.{_did_you_mean(self.suggestions)} List them with "
            f"`flowstone {kind} list`."
        )


# --- distributed execution (issue 3) -------------------------------------------------------


class DistributedSetupError(StoreUnavailableError):
    """The distributed executor cannot run with this configuration."""


class JobRejectedError(FlowStoneError):
    """A job's arguments do not name a step this worker can run; the job fails for good."""

    def __init__(self, reason: str, *, job_id: int | None = None, args: object = None) -> None:
        self.reason = reason
        self.job_id = job_id
        self.args_given = args
        job = "A job" if job_id is None else f"Job {job_id}"
        super().__init__(
            f"{job} was rejected without running anything: {reason} It is not retried. "
            "Check that every worker runs the same pipeline code as the process that "
            "enqueued it (`flowstone worker --pipeline ...`)."
        )


class StepFailedError(MaterializationError):
    """A materialization run by a worker failed and will not be retried."""

    def __init__(
        self, *, asset: str, partition_key: str, run_id: str, attempt: int, error: str
    ) -> None:
        self.partition_key = partition_key
        self.run_id = run_id
        self.attempt = attempt
        super().__init__(
            f"Asset {asset!r} partition {partition_key!r} of run {run_id} failed on attempt "
            f"{attempt}: {error}. See `flowstone history {asset} --errors` for the traceback.",
            asset=asset,
        )


class RetryScheduledError(MaterializationError):
    """A materialization run by a worker failed; its retry policy tries it again later."""

    def __init__(self, *, asset: str, attempt: int, delay_s: float, error: str) -> None:
        self.attempt = attempt
        self.delay_s = delay_s
        super().__init__(
            f"Asset {asset!r} failed on attempt {attempt} ({error}); attempt {attempt + 1} "
            f"runs in {delay_s:.1f} s, as its retry policy says.",
            asset=asset,
        )


class UnknownRunError(FlowStoneError):
    """No run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"No run {run_id!r} in the metadata store. List runs: `flowstone runs`.")


class SupersededAttemptError(MaterializationError):
    """A newer attempt of this step took over (this one was thought dead); its result is
    discarded so the step takes effect once."""

    def __init__(self, *, asset: str, partition_key: str, attempt: int, current: str) -> None:
        self.partition_key = partition_key
        self.attempt = attempt
        super().__init__(
            f"Attempt {attempt} of asset {asset!r} partition {partition_key!r} was superseded "
            f"({current}); its result is discarded. Nothing to do: the newer attempt records "
            "the step.",
            asset=asset,
        )
