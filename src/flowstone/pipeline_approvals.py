"""Approval requests: listing and deciding them, and continuing their runs where they run
(the deciding is :mod:`flowstone.approvals`'s, loaded on first use)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flowstone.checkpoints import ApprovalRecord, ApprovalStatus
from flowstone.errors import ApprovalError, PartitionError
from flowstone.execution.distributed import DistributedExecutor, DistributedRuns
from flowstone.partitions import Partition, encode_partition
from flowstone.pipeline_materialize import PipelineMaterialize
from flowstone.planner import resolve_partition
from flowstone.records import RunResult

if TYPE_CHECKING:
    # Annotations only: flowstone.approvals and flowstone.resume load on first use, inside the
    # methods below (`import flowstone` must stay light).
    from flowstone.approvals import ApprovalDesk
    from flowstone.resume import RunContinuer


class PipelineApprovals(PipelineMaterialize):
    """:class:`~flowstone.pipeline.Pipeline`'s approval requests and decisions."""

    # --- approvals ---------------------------------------------------------------------------
    def approvals(
        self,
        *,
        status: ApprovalStatus | str | None = ApprovalStatus.PENDING,
        asset: str | None = None,
        run_id: str | None = None,
        limit: int | None = 100,
    ) -> list[ApprovalRecord]:
        """Approval requests, oldest first: the pending ones, unless ``status`` names another
        (``None``: all).

        Example::

            for request in pipeline.approvals(asset="publish"):
                print(request.id, request.partition, request.message, request.context)
        """
        if asset is not None:
            self.graph.get(asset)
        wanted = None if status is None else _approval_status(status)
        return self.store.list_approvals(status=wanted, asset=asset, run_id=run_id, limit=limit)

    def get_approval(self, approval_id: str) -> ApprovalRecord:
        """The approval request with this id, or a unique prefix of it (4+ characters).

        Raises:
            ApprovalNotFoundError: no request has it.
        """
        return self._approval_desk().get(approval_id)

    def approve(
        self,
        approval_id: str,
        *,
        by: str,
        reason: str | None = None,
        input: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Approve a request and continue its run: the asset runs again (same materialization,
        next attempt) with the decision in ``ctx.approval``, then the assets that waited below
        it. Safe to call from any process, e.g. after a restart.

        Args:
            approval_id: The request's id (or a unique prefix of 4+ characters).
            by: Who approves (recorded, and in the audit log).
            reason: Why (optional).
            input: JSON data for the resumed asset (``ctx.approval.input``).

        Returns:
            The whole run once continued (status ``running`` if its first execution has not
            ended yet: that execution continues it when it does).

        Raises:
            ApprovalAlreadyDecidedError: it was decided first by someone else, or it expired;
                the message says who and when. Nothing changes.
            ApprovalNotFoundError: no request has this id.

        Example::

            request = pipeline.approvals(asset="publish")[0]
            run = pipeline.approve(request.id, by="ana", input={"channel": "web"})
            assert run.get("publish", request.partition_key).status == "success"
        """
        return self._approval_desk().decide(
            approval_id, ApprovalStatus.APPROVED, by=by, reason=reason, input=input
        )

    def reject(self, approval_id: str, *, by: str, reason: str) -> RunResult:
        """Reject a request: its materialization fails (``ApprovalRejectedError`` naming who and
        why), the assets below it are skipped, and the run fails unless others still wait.

        Raises:
            ApprovalAlreadyDecidedError: it was decided first by someone else, or it expired.

        Example::

            pipeline.reject(request.id, by="ana", reason="totals look wrong")
        """
        return self._approval_desk().decide(
            approval_id, ApprovalStatus.REJECTED, by=by, reason=reason
        )

    def approve_all(
        self,
        asset: str | None = None,
        *,
        by: str,
        partitions: Iterable[Partition] | None = None,
        between: tuple[Partition, Partition] | None = None,
        run_id: str | None = None,
        reason: str | None = None,
        input: Mapping[str, Any] | None = None,
    ) -> list[ApprovalRecord]:
        """Approve every pending request that matches, then continue each run once (the
        approved assets of one run run in parallel).

        Args:
            asset: Only this asset's requests.
            partitions: Only these partitions (needs ``asset``).
            between: Only partitions from ``start`` to ``end``, both included (needs ``asset``).
            run_id: Only this run's requests.

        Returns:
            The requests this call approved (those decided meanwhile by others are left alone).

        Example::

            pipeline.approve_all(
                "publish", between=(dt.date(2025, 1, 1), dt.date(2025, 1, 30)), by="ana"
            )
        """
        return self._approval_desk().decide_all(
            ApprovalStatus.APPROVED,
            by=by,
            reason=reason,
            input=input,
            asset=asset,
            partition_keys=self._approval_keys(asset, partitions, between),
            run_id=run_id,
        )

    def reject_all(
        self,
        asset: str | None = None,
        *,
        by: str,
        reason: str,
        partitions: Iterable[Partition] | None = None,
        between: tuple[Partition, Partition] | None = None,
        run_id: str | None = None,
    ) -> list[ApprovalRecord]:
        """Reject every pending request that matches (see :meth:`approve_all`)."""
        return self._approval_desk().decide_all(
            ApprovalStatus.REJECTED,
            by=by,
            reason=reason,
            asset=asset,
            partition_keys=self._approval_keys(asset, partitions, between),
            run_id=run_id,
        )

    def expire_approvals(self, now: datetime | None = None) -> list[ApprovalRecord]:
        """Expire the pending requests whose timeout has passed: each materialization fails
        (``ApprovalExpiredError``) and the assets below it are skipped.

        Nothing expires on its own (no timer dies with the process): the CLI runs this before
        listing or deciding; run it from cron, a worker or a scheduler too.

        Returns:
            The requests it expired.
        """
        return self._approval_desk().expire_due(now)

    def resume_run(self, run_id: str) -> RunResult:
        """Continue a run after approval decisions, if anything is left to do: for a process
        that stopped between recording a decision and finishing the run it continued. Safe to
        call at any time and from several processes (steps are claimed before they run).

        Returns:
            The whole run and its status.

        Example::

            pipeline.resume_run("3f2a9c1e5d0b4a7e9c8f6a2b1d3e5f70")
        """
        return self._continue_run(run_id, decided=True)

    def _approval_keys(
        self,
        asset: str | None,
        partitions: Iterable[Partition] | None,
        between: tuple[Partition, Partition] | None,
    ) -> set[str] | None:
        """The encoded partitions a bulk decision is limited to (None: every partition)."""
        if partitions is None and between is None:
            return None
        if asset is None:
            raise PartitionError(
                "Choosing approval requests by partition needs the asset whose partitions they "
                "are: pass asset=... (or --asset)."
            )
        if isinstance(partitions, str):
            raise PartitionError("partitions= takes a list: wrap the one partition in [...].")
        definition = self.graph.get(asset)
        keys = {encode_partition(resolve_partition(definition, p)) for p in partitions or ()}
        if between is not None:
            if definition.partitioned_by is None:
                raise PartitionError(f"Asset {asset!r} is not partitioned: drop the range.")
            start, end = between
            found = definition.partitioned_by.keys_between(start, end)
            keys.update(encode_partition(key) for key in found)
        return keys

    def _approval_desk(self) -> ApprovalDesk:
        from flowstone.approvals import ApprovalDesk

        return ApprovalDesk(
            self.graph,
            self.store,
            self._telemetry,
            self._continuer(),
            notifiers=self._approval_notifiers,
        )

    def _continuer(self) -> RunContinuer:
        """Who continues a run after a decision: see :meth:`_continue_run`."""
        if isinstance(self._executor, DistributedExecutor):
            # Before any decision is recorded: a store that cannot carry the queue refuses.
            self._executor.prepare(self.store)
        return _Continuer(self._continue_run)

    def _continue_run(self, run_id: str, *, decided: bool = False) -> RunResult:
        """Continue a run after a decision where it runs: a run of the workers (tagged with
        their queue), or any run when this pipeline is distributed, goes back to the workers
        (this process only enqueues); an in-process run continues in this process."""
        executor = self._executor_of(run_id)
        if isinstance(executor, DistributedExecutor):
            runs = DistributedRuns(executor, self.store, self.graph, self._get_materializer())
            return runs.advance(run_id, decided=decided)
        return self._resumer().advance(run_id, decided=decided)


class _Continuer:
    """A :class:`~flowstone.resume.RunContinuer` made of a function."""

    def __init__(self, advance: Callable[..., RunResult]) -> None:
        self._advance = advance

    def advance(self, run_id: str, *, decided: bool = False) -> RunResult:
        return self._advance(run_id, decided=decided)


def _approval_status(status: ApprovalStatus | str) -> ApprovalStatus:
    try:
        return ApprovalStatus(status)
    except ValueError:
        raise ApprovalError(
            f"Unknown approval status {status!r}: use one of "
            f"{', '.join(s.value for s in ApprovalStatus)}, or None for all."
        ) from None
