"""How the CLI shows things: aligned text tables for people, JSON for scripts.

Nothing here writes ANSI codes or needs a third-party library. JSON keys are stable (every key is
always present, ``null`` when there is no value), timestamps are ISO 8601 with their UTC offset,
and partitions appear twice: the short human form (``partition``, ``null`` for an unpartitioned
asset) and the tagged encoding the store keeps (``partition_key``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from flowstone.errors import PartitionError
from flowstone.partitions import decode_partition, encode_partition, partition_repr
from flowstone.records import AuditEvent, LineageNode, MaterializationRecord

#: The encoded key of an unpartitioned asset's materializations.
UNPARTITIONED = encode_partition(None)
#: Shown in tables where there is no value.
NONE = "-"


# --- text ------------------------------------------------------------------------------------
def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> str:
    """Columns padded to their widest cell, separated by two spaces, headers upper-cased.

    Args:
        headers: Column titles.
        rows: Cells, already formatted as text.
        right: Indexes of the columns to right-align (numbers).
    """
    body = [list(row) for row in rows]
    head = [h.upper() for h in headers]
    widths = [max(len(cell) for cell in column) for column in zip(head, *body, strict=True)]
    aligned = set(right)
    lines = []
    for row in [head, *body]:
        cells = [
            cell.rjust(width) if i in aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def human_partition(key: str | None) -> str:
    """The short human form of an encoded key (``-`` for an unpartitioned asset)."""
    if key is None:
        return NONE
    try:
        return partition_repr(decode_partition(key))
    except PartitionError:
        return key  # written by another version of FlowStone: show it as stored


def human_time(moment: datetime | None) -> str:
    """A timestamp in local time, to the second."""
    if moment is None:
        return NONE
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def human_duration(ms: float | None) -> str:
    """``12.3 ms``, ``4.56 s`` or ``3m 07s``."""
    if ms is None:
        return NONE
    if ms < 1000:
        return f"{ms:.1f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m {rest:02d}s"


def short_id(identifier: str | None) -> str:
    """The first 8 characters of an id: enough to tell runs apart, and accepted back by
    commands that take a run id."""
    return NONE if identifier is None else identifier[:8]


def first_line(text: str | None, limit: int = 160) -> str:
    """The first line of a message, cut to ``limit`` characters."""
    line = (text or "").strip().split("\n", 1)[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def status_marks(stream: TextIO) -> tuple[str, str, str]:
    """The marks for success, failure and skip, in ASCII when ``stream`` cannot encode others."""
    try:
        "✓✗".encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return "ok", "FAIL", "-"
    return "✓", "✗", "-"


def redact_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


# --- JSON ------------------------------------------------------------------------------------
def to_json(data: object) -> str:
    """Indented JSON with ISO timestamps and enum values."""
    return json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n"


def _json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with the UTC offset, or None."""
    return None if moment is None else moment.isoformat()


def json_partition(key: str | None) -> str | None:
    """The human form of an encoded key, ``None`` for an unpartitioned asset."""
    return None if key is None or key == UNPARTITIONED else human_partition(key)


def materialization_dict(record: MaterializationRecord) -> dict[str, Any]:
    """Every field of a materialization, as JSON-ready data."""
    return {
        "id": record.id,
        "run_id": record.run_id,
        "asset": record.asset,
        "partition": json_partition(record.partition_key),
        "partition_key": record.partition_key,
        "status": record.status.value,
        "attempt": record.attempt,
        "created_at": iso(record.created_at),
        "started_at": iso(record.started_at),
        "completed_at": iso(record.completed_at),
        "duration_ms": record.duration_ms,
        "error_type": record.error_type,
        "error_message": record.error_message,
        "error_traceback": record.error_traceback,
        "code_version": record.code_version,
        "io_manager": record.io_manager,
        "metadata": dict(record.metadata),
    }


def lineage_dict(node: LineageNode) -> dict[str, Any]:
    """A lineage node as JSON-ready data."""
    return {
        "asset": node.asset,
        "partition": json_partition(node.partition_key),
        "partition_key": node.partition_key,
        "depth": node.depth,
        "materialization_id": node.materialization_id,
        "run_id": node.run_id,
        "status": None if node.status is None else node.status.value,
    }


def audit_dict(event: AuditEvent) -> dict[str, Any]:
    """An audit event as JSON-ready data."""
    return {
        "id": event.id,
        "occurred_at": iso(event.occurred_at),
        "action": event.action,
        "resource_type": event.resource_type,
        "resource_id": event.resource_id,
        "actor": event.actor,
        "actor_type": event.actor_type,
        "correlation_id": event.correlation_id,
        "details": dict(event.details),
    }


def details_text(details: Mapping[str, Any], limit: int = 100) -> str:
    """Audit details as ``key=value`` pairs on one line (partition keys in human form)."""
    pairs = []
    for key, value in details.items():
        shown = human_partition(value) if key == "partition_key" and isinstance(value, str) else value
        pairs.append(f"{key}={shown}")
    return first_line(" ".join(pairs), limit) or NONE
