"""Sample tables of every kind the columnar I/O managers store, and a strict comparison."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa

UTC = dt.UTC
FRAME_KINDS = ["pandas", "polars", "polars_lazy", "arrow"]


def pandas_frame() -> pd.DataFrame:
    """Ints, floats with a missing value, strings with None and "", bools, aware timestamps,
    dates, a categorical, and an index that is not 0..n-1."""
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "amount": [9.5, None, 0.1],
            "name": ['a,"b"\nc', None, ""],
            "paid": [True, False, True],
            "at": pd.to_datetime(
                ["2025-01-01T00:00:00", "2025-01-02T01:02:03.123456", None], format="ISO8601"
            ).tz_localize("UTC"),
            "day": [dt.date(2025, 1, 1), dt.date(2025, 1, 2), None],
            "region": pd.Categorical(["eu", "us", "eu"]),
        },
        index=pd.Index([10, 20, 30], name="row"),
    )


def polars_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [1, 2, 3],
            "amount": [9.5, None, 0.1],
            "name": ['a,"b"\nc', None, ""],
            "paid": [True, False, None],
            "at": [dt.datetime(2025, 1, 1, tzinfo=UTC), None, dt.datetime(2025, 1, 3, tzinfo=UTC)],
            "day": [dt.date(2025, 1, 1), dt.date(2025, 1, 2), None],
        }
    )


def arrow_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int32()),
            "amount": pa.array([9.5, None, 0.1]),
            "name": pa.array(["x", None, ""]),
            "at": pa.array(
                [dt.datetime(2025, 1, 1, 12, tzinfo=UTC), None, None], pa.timestamp("us", "UTC")
            ),
        }
    )


def sample(kind: str) -> Any:
    """A fresh sample of ``kind`` ("pandas", "polars", "polars_lazy", "arrow")."""
    if kind == "pandas":
        return pandas_frame()
    if kind == "polars":
        return polars_frame()
    if kind == "polars_lazy":
        return polars_frame().lazy()
    return arrow_table()


def assert_same(expected: Any, got: Any) -> None:
    """Same type, same columns, same dtypes, same values (and the same pandas index)."""
    assert type(got) is type(expected), f"loaded a {type(got).__name__}"
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)
    elif isinstance(expected, pl.LazyFrame):
        assert got.collect().equals(expected.collect())
        assert got.collect_schema() == expected.collect_schema()
    elif isinstance(expected, pl.DataFrame):
        assert got.equals(expected)
        assert got.schema == expected.schema
    else:
        assert got.schema.remove_metadata() == expected.schema.remove_metadata()
        assert got.equals(expected)
