"""Arrow types as PostgreSQL column types, and the CSV that ``COPY`` reads and writes.

The type names are spelled as ``format_type()`` returns them, so the columns of an existing
table can be compared with a frame's by plain string equality.
"""

from __future__ import annotations

from typing import Any

from flowstone.errors import UnsupportedValueError
from flowstone.io.base import StorageKey
from flowstone.io.tables import PARTITION_COLUMN

_SIMPLE = {
    "bool": "boolean",
    "int8": "smallint",
    "int16": "smallint",
    "uint8": "smallint",
    "int32": "integer",
    "uint16": "integer",
    "int64": "bigint",
    "uint32": "bigint",
    "uint64": "numeric(20,0)",
    "halffloat": "real",
    "float": "real",
    "double": "double precision",
    "string": "text",
    "large_string": "text",
    "string_view": "text",
    "date32[day]": "date",
    "date64[ms]": "date",
    "null": "text",
}


def pg_type(arrow_type: Any) -> str | None:
    """The PostgreSQL type that holds ``arrow_type`` exactly, or ``None`` when none does.

    Example:
        >>> import pyarrow as pa
        >>> pg_type(pa.timestamp("us", tz="UTC"))
        'timestamp with time zone'
    """
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return pg_type(arrow_type.value_type)
    if pa.types.is_timestamp(arrow_type):
        zone = "with" if arrow_type.tz else "without"
        return f"timestamp {zone} time zone"
    if pa.types.is_time(arrow_type):
        return "time without time zone"
    if pa.types.is_decimal(arrow_type):
        return f"numeric({arrow_type.precision},{arrow_type.scale})"
    return _SIMPLE.get(str(arrow_type))


def pg_columns(key: StorageKey, schema: Any, names: list[str]) -> list[tuple[str, str]]:
    """Each column's (name, PostgreSQL type), or a clear error for a type no column holds."""
    columns = []
    for name, field in zip(names, schema, strict=True):
        kind = pg_type(field.type)
        if kind is None:
            raise UnsupportedValueError(
                f"Asset {key.asset!r}: column {name!r} has type {field.type}, which the "
                "PostgreSQL table manager does not map to a column type (it maps numbers, "
                "text, booleans, dates, times, timestamps and decimals). Cast the column, "
                "or store this asset as Parquet.",
                asset=key.asset,
                partition=key.partition,
                value_type=str(field.type),
            )
        columns.append((name, kind))
    return columns


def csv_ready(table: Any) -> Any:
    """``table`` with dictionary (categorical) columns decoded: CSV writes plain values."""
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(
                index, field.name, table.column(index).cast(field.type.value_type)
            )
    return table


def csv_read_types(schema: Any) -> dict[str, Any]:
    """The types to parse each CSV column as, before the cast back to the stored schema."""
    import pyarrow as pa

    types = {}
    for field in schema:
        kind = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
        if pa.types.is_string_view(kind) or pa.types.is_large_string(kind):
            kind = pa.string()
        elif pa.types.is_date64(kind):
            kind = pa.date32()
        types[field.name] = kind
    return types


def copy_csv(key: StorageKey, table: Any) -> Any:
    """The rows to ``COPY``: the partition key, then each column, as CSV (a pyarrow Buffer)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    ready = csv_ready(table)
    ready = ready.add_column(
        0, PARTITION_COLUMN, pa.repeat(pa.scalar(key.partition_key), len(ready))
    )
    sink = pa.BufferOutputStream()
    # Strings are always quoted and nulls left empty: PostgreSQL's CSV tells "" from NULL.
    pacsv.write_csv(ready, sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue()


def read_copy_csv(data: bytes, schema: Any) -> Any:
    """``COPY ... TO STDOUT`` CSV read back with the stored schema's types and metadata."""
    import io

    import pyarrow.csv as pacsv

    if not data:
        return schema.empty_table()
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=csv_read_types(schema),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return table.cast(schema)
