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
from typing import Any, Literal, TextIO
from urllib.parse import urlsplit, urlunsplit

from flowstone.errors import PartitionError
from flowstone.graph import AssetGraph
from flowstone.partitions import decode_partition, partition_repr
from flowstone.planner import UNPARTITIONED_KEY
from flowstone.records import AuditEvent, LineageNode, MaterializationRecord, RunResult

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
    minutes, rest = divmod(round(seconds), 60)
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
    return None if key is None or key == UNPARTITIONED_KEY else human_partition(key)


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


def lineage_node_dict(node: LineageNode) -> dict[str, Any]:
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
        if key == "partition_key" and isinstance(value, str):
            shown = human_partition(value)
        elif isinstance(value, str):
            shown = value
        else:
            shown = json.dumps(value, ensure_ascii=False, default=_json_default)
        pairs.append(f"{key}={shown}")
    return first_line(" ".join(pairs), limit) or NONE


# --- what each command shows -----------------------------------------------------------------
#: The latest materialization of one asset and partition; None for an asset never materialized.
Latest = tuple[str, MaterializationRecord | None]
Direction = Literal["upstream", "downstream", "impact"]


def run_table(result: RunResult) -> str:
    """A run's materializations: asset, partition, status, duration."""
    rows = [
        (r.asset, human_partition(r.partition_key), r.status.value, human_duration(r.duration_ms))
        for r in result.materializations
    ]
    return table(("asset", "partition", "status", "duration"), rows, right=[3])


def run_dict(result: RunResult) -> dict[str, Any]:
    """A run's outcome and its materializations."""
    return {
        "run_id": result.run_id,
        "status": result.status.value,
        "ok": result.ok,
        "partition": json_partition(result.partition_key),
        "partition_key": result.partition_key,
        "materializations": [materialization_dict(r) for r in result.materializations],
    }


def status_table(latest: Sequence[Latest]) -> str:
    """One row per (asset, partition); ``never`` for an asset with no materialization."""
    rows = [
        (asset, NONE, "never", NONE, NONE, NONE)
        if r is None
        else (
            asset,
            human_partition(r.partition_key),
            r.status.value,
            human_time(r.completed_at),
            human_duration(r.duration_ms),
            short_id(r.run_id),
        )
        for asset, r in latest
    ]
    headers = ("asset", "partition", "status", "completed", "duration", "run")
    return table(headers, rows, right=[4])


def status_dict(asset: str, record: MaterializationRecord | None) -> dict[str, Any]:
    """A status row; every key is present, ``status`` is ``"never"`` without a record."""
    if record is None:
        return {
            "asset": asset,
            "partition": None,
            "partition_key": None,
            "status": "never",
            "completed_at": None,
            "duration_ms": None,
            "run_id": None,
            "materialization_id": None,
            "error_type": None,
            "error_message": None,
        }
    return {
        "asset": asset,
        "partition": json_partition(record.partition_key),
        "partition_key": record.partition_key,
        "status": record.status.value,
        "completed_at": iso(record.completed_at),
        "duration_ms": record.duration_ms,
        "run_id": record.run_id,
        "materialization_id": record.id,
        "error_type": record.error_type,
        "error_message": record.error_message,
    }


def history_table(records: Sequence[MaterializationRecord]) -> str:
    """An asset's materializations, one line each, errors cut to one short line."""
    rows = [
        (
            human_time(r.started_at or r.created_at),
            human_partition(r.partition_key),
            r.status.value,
            human_duration(r.duration_ms),
            str(r.attempt),
            short_id(r.run_id),
            value_summary(r.metadata),
            first_line(None if r.error_type is None else f"{r.error_type}: {r.error_message}", 80)
            or NONE,
        )
        for r in records
    ]
    headers = ("started", "partition", "status", "duration", "attempt", "run", "value", "error")
    return table(headers, rows, right=[3, 4])


def value_summary(metadata: Mapping[str, Any]) -> str:
    """What the I/O manager recorded of the stored value, in a few words: ``3 rows x 2 cols,
    1.2 KiB, sha256:ab12cd34`` (``-`` when it recorded nothing)."""
    parts = []
    rows, columns = metadata.get("rows"), metadata.get("columns")
    if isinstance(rows, int):
        parts.append(f"{rows:,} rows" + (f" x {columns} cols" if isinstance(columns, int) else ""))
    size = metadata.get("bytes")
    if isinstance(size, int):
        parts.append(human_bytes(size))
    digest = metadata.get("content_hash")
    if isinstance(digest, str):
        algorithm, _, hexdigest = digest.partition(":")
        parts.append(f"{algorithm}:{hexdigest[:8]}" if hexdigest else digest[:15])
    return ", ".join(parts) or NONE


def human_bytes(size: int) -> str:
    """``512 B``, ``1.2 KiB``, ``3.4 MiB``..."""
    if size < 1024:
        return f"{size} B"
    amount = size / 1024
    for unit in ("KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def error_block(record: MaterializationRecord) -> str:
    """A failure in full: where, when, the error, and its traceback indented."""
    head = (
        f"{record.asset}  partition {human_partition(record.partition_key)}  "
        f"run {record.run_id}  attempt {record.attempt}  "
        f"{human_time(record.completed_at or record.created_at)}"
    )
    lines = [head, f"{record.error_type}: {record.error_message}"]
    if record.error_traceback:
        lines.extend("    " + line for line in record.error_traceback.rstrip().splitlines())
    return "\n".join(lines) + "\n"


def lineage_text(
    direction: Direction, asset: str, partition_key: str, nodes: Sequence[LineageNode]
) -> str:
    """The starting point, then each node indented by its depth."""
    arrow = "<-" if direction == "upstream" else "->"
    lines = [f"{asset} [{human_partition(partition_key)}]"]
    for node in nodes:
        status = "" if node.status is None else f"  {node.status.value}"
        run = "" if node.run_id is None else f"  run {short_id(node.run_id)}"
        where = human_partition(node.partition_key)
        lines.append(f"{'  ' * node.depth}{arrow} {node.asset} [{where}]{status}{run}")
    return "\n".join(lines) + "\n"


def lineage_dict(
    direction: Direction,
    asset: str,
    partition_key: str,
    depth: int,
    nodes: Sequence[LineageNode],
) -> dict[str, Any]:
    """A lineage answer: where it started, and the nodes."""
    return {
        "direction": direction,
        "asset": asset,
        "partition": json_partition(partition_key),
        "partition_key": partition_key,
        "depth": depth,
        "nodes": [lineage_node_dict(n) for n in nodes],
    }


def graph_dict(graph: AssetGraph) -> dict[str, Any]:
    """The assets in topological order, with their edges and declared properties."""
    assets = []
    for name in graph.topological_order():
        definition = graph.get(name)
        partitions = definition.partitioned_by
        assets.append(
            {
                "name": name,
                "description": definition.description,
                "deps": list(definition.deps),
                "dependents": list(graph.dependents(name)),
                "partitions": None if partitions is None else partitions.describe(),
                "io_manager": definition.io_manager,
                "code_version": definition.code_version,
                "tags": dict(definition.tags),
            }
        )
    return {"assets": assets}


def audit_table(events: Sequence[AuditEvent]) -> str:
    """Audit events, one line each, details as ``key=value`` pairs."""
    rows = [
        (
            human_time(e.occurred_at),
            e.action,
            f"{e.resource_type}:"
            + (short_id(e.resource_id) if e.resource_type == "run" else e.resource_id),
            e.actor,
            short_id(e.correlation_id),
            details_text(e.details),
        )
        for e in events
    ]
    return table(("time", "action", "resource", "actor", "run", "details"), rows)
