"""DataFrames as the I/O managers see them: pandas, polars and Arrow, through Arrow.

Every columnar manager (Parquet, DuckDB, the PostgreSQL table) stores an Arrow table, so this
module is the one place that knows the DataFrame libraries: it recognizes a value's library,
converts it to Arrow and back, and describes it (rows, schema) for the materialization's
metadata.

A value is recognized by its class's module and name, never by importing the library first, so
``import flowstone`` (and storing a plain ``dict``) never imports pandas, polars or pyarrow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, cast

from flowstone.errors import IOManagerError, UnsupportedValueError
from flowstone.io.base import StorageKey

FrameType = Literal["pandas", "polars", "polars_lazy", "arrow"]
"""The kinds of tables FlowStone stores: pandas and polars DataFrames, polars LazyFrames
(collected when stored) and Arrow tables."""

FRAME_TYPES: tuple[FrameType, ...] = ("pandas", "polars", "polars_lazy", "arrow")
#: Where a stored table remembers the type it was stored as (Arrow schema metadata).
TYPE_METADATA_KEY = b"flowstone.type"
_CLASSES: Mapping[tuple[str, str], FrameType] = {
    ("pandas", "DataFrame"): "pandas",
    ("polars", "DataFrame"): "polars",
    ("polars", "LazyFrame"): "polars_lazy",
    ("pyarrow", "Table"): "arrow",
}
# A 2,000-column table would otherwise put kilobytes of schema on every materialization.
_MAX_SCHEMA_COLUMNS = 200


def frame_type(value: object) -> FrameType | None:
    """The kind of table ``value`` (an instance or a class) is, or ``None`` for anything else.

    Subclasses count as their base (a GeoPandas ``GeoDataFrame`` is stored as pandas).

    Example:
        >>> frame_type({"a": 1}) is None
        True
    """
    cls = value if isinstance(value, type) else type(value)
    for klass in cls.__mro__:
        found = _CLASSES.get((klass.__module__.partition(".")[0], klass.__name__))
        if found is not None:
            return found
    return None


def require_frame(key: StorageKey, value: object, manager: str) -> FrameType:
    """``value``'s frame type, or a clear error naming what the manager stores instead."""
    found = frame_type(value)
    if found is None:
        raise UnsupportedValueError(
            f"{manager} stores DataFrames (pandas, polars) and Arrow tables, but asset "
            f"{key.asset!r} returned a {type(value).__name__}. Return a DataFrame, or store "
            "this asset with another I/O manager (e.g. io_manager='filesystem' for JSON).",
            asset=key.asset,
            partition=key.partition,
            value_type=type(value).__name__,
        )
    return found


def to_arrow(key: StorageKey, value: Any, kind: FrameType) -> Any:
    """``value`` as a ``pyarrow.Table`` that remembers ``kind`` in its schema metadata.

    A pandas index survives (pyarrow keeps it in the ``pandas`` metadata); a LazyFrame is
    collected.

    Raises:
        IOManagerError: pyarrow is not installed.
        UnsupportedValueError: a column mixes types Arrow cannot hold in one column.
    """
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise IOManagerError(
            f"Storing the {type(value).__name__} of asset {key.asset!r} needs pyarrow: "
            "pip install 'flowstone[parquet]'.",
            asset=key.asset,
            partition=key.partition,
        ) from exc
    try:
        if kind == "pandas":
            table = pa.Table.from_pandas(value)
        elif kind == "polars":
            table = value.to_arrow()
        elif kind == "polars_lazy":
            table = value.collect().to_arrow()
        else:
            table = value
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise UnsupportedValueError(
            f"Asset {key.asset!r} returned a {type(value).__name__} that Arrow cannot convert: "
            f"{exc}. Give each column one type (e.g. cast object columns with .astype(str)).",
            asset=key.asset,
            partition=key.partition,
            value_type=type(value).__name__,
        ) from exc
    metadata = dict(table.schema.metadata or {})
    metadata[TYPE_METADATA_KEY] = kind.encode()
    # Replacing schema metadata is zero-copy: the columns are shared, not rewritten.
    return table.replace_schema_metadata(metadata)


def from_arrow(table: Any, kind: FrameType) -> Any:
    """``table`` (a ``pyarrow.Table``) converted to ``kind``."""
    if kind == "pandas":
        return table.to_pandas()
    if kind in ("polars", "polars_lazy"):
        import polars as pl

        frame = pl.DataFrame(pl.from_arrow(table))
        return frame.lazy() if kind == "polars_lazy" else frame
    metadata = {k: v for k, v in (table.schema.metadata or {}).items() if k != TYPE_METADATA_KEY}
    return table.replace_schema_metadata(metadata or None)


def stored_type(schema: Any) -> FrameType:
    """The frame type a stored table's Arrow schema remembers (Arrow when it says none)."""
    metadata = schema.metadata or {}
    tag = metadata.get(TYPE_METADATA_KEY, b"").decode(errors="replace")
    if tag in FRAME_TYPES:
        return cast("FrameType", tag)
    # Written by plain pyarrow from pandas: pyarrow left its own marker.
    return "pandas" if b"pandas" in metadata else "arrow"


def load_type(key: StorageKey, stored: FrameType) -> FrameType:
    """The type to load as: what the reading asset declares, else what was stored."""
    hinted = frame_type(key.type_hint) if isinstance(key.type_hint, type) else None
    return hinted or stored


def describe(table: Any) -> dict[str, Any]:
    """Rows, column count and schema of an Arrow table, as JSON-ready metadata.

    The schema is a list of ``{"name", "type"}`` (a list, because JSONB does not keep the order
    of an object's keys), cut to the first 200 columns.
    """
    fields = list(table.schema)
    return {
        "rows": table.num_rows,
        "columns": len(fields),
        "schema": [{"name": f.name, "type": str(f.type)} for f in fields[:_MAX_SCHEMA_COLUMNS]],
    }


def content_hash(data: Any) -> str:
    """``sha256:<hex>`` of a bytes-like object (a ``pyarrow.Buffer`` works without a copy)."""
    import hashlib  # imported on first use: keeps `import flowstone` light

    return "sha256:" + hashlib.sha256(data).hexdigest()


def schema_to_json(schema: Any) -> str:
    """An Arrow schema as JSON text: base64 of Arrow's own IPC encoding, which restores
    every type and the pandas metadata exactly, and which reading back runs no code."""
    import base64

    return json.dumps({"arrow_schema": base64.b64encode(schema.serialize()).decode()})


def schema_from_json(text: str) -> Any:
    """The Arrow schema that :func:`schema_to_json` wrote."""
    import base64

    import pyarrow as pa

    raw = base64.b64decode(json.loads(text)["arrow_schema"])
    return pa.ipc.read_schema(pa.py_buffer(raw))
