"""How ``flowstone approvals`` shows requests: a table, one request in full, and JSON.

JSON keys are stable (every key always present, ``null`` when there is no value), timestamps
are ISO 8601 with their UTC offset, and partitions appear in human form and as stored, as in
:mod:`flowstone.cli.output`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from flowstone.checkpoints import ApprovalRecord
from flowstone.cli import output


def approval_dict(approval: ApprovalRecord) -> dict[str, Any]:
    """Every field of a request, as JSON-ready data (every key always present)."""
    return {
        "id": approval.id,
        "status": approval.status.value,
        "asset": approval.asset,
        "partition": output.json_partition(approval.partition_key),
        "partition_key": approval.partition_key,
        "run_id": approval.run_id,
        "materialization_id": approval.materialization_id,
        "attempt": approval.attempt,
        "message": approval.message,
        "context": dict(approval.context),
        "requested_at": output.iso(approval.requested_at),
        "timeout_at": output.iso(approval.timeout_at),
        "decided_by": approval.decided_by,
        "decided_at": output.iso(approval.decided_at),
        "reason": approval.reason,
        "input": dict(approval.input),
    }


def approval_table(approvals: Sequence[ApprovalRecord]) -> str:
    """One line per request; the message cut to one short line."""
    rows = [
        (
            output.short_id(a.id),
            a.asset,
            output.human_partition(a.partition_key),
            a.status.value,
            output.human_time(a.requested_at),
            output.human_time(a.timeout_at) if a.is_pending else output.human_time(a.decided_at),
            a.decided_by or output.NONE,
            output.first_line(a.message, 60),
        )
        for a in approvals
    ]
    headers = (
        "id",
        "asset",
        "partition",
        "status",
        "requested",
        "expires/decided",
        "by",
        "message",
    )
    return output.table(headers, rows)


def approval_text(approval: ApprovalRecord) -> str:
    """One request in full: what is asked, its context, and the decision."""
    lines = [
        f"approval   {approval.id}",
        f"status     {approval.status.value}",
        f"asset      {approval.asset} [{output.human_partition(approval.partition_key)}]",
        f"run        {approval.run_id} (materialization {approval.materialization_id}, "
        f"attempt {approval.attempt})",
        f"requested  {output.human_time(approval.requested_at)}",
        f"expires    {output.human_time(approval.timeout_at) if approval.timeout_at else 'never'}",
        f"message    {approval.message}",
        "context    " + _indented(approval.context),
    ]
    if not approval.is_pending:
        by = approval.decided_by or "its timeout"
        when = output.human_time(approval.decided_at)
        lines.append(f"decided    {approval.status.value} by {by}, {when}")
        lines.append(f"reason     {approval.reason or output.NONE}")
        if approval.input:
            lines.append("input      " + _indented(approval.input))
    return "\n".join(lines) + "\n"


def _indented(data: dict[str, Any]) -> str:
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True)
    return text.replace("\n", "\n" + " " * 11)
