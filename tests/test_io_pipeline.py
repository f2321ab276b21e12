"""Real-data I/O managers inside pipelines: typed loads, recorded metadata, light imports."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import polars as pl
import pyarrow as pa

import flowstone as fs
from flowstone.io import ObjectStoreIOManager, ParquetIOManager

if TYPE_CHECKING:
    from decimal import Decimal  # only for type checkers: not resolvable at run time

DAYS = fs.DailyPartitions(start="2025-01-01")


def test_a_parquet_backed_pipeline_end_to_end(tmp_path: Path, store_url: str) -> None:
    @fs.asset(io_manager="parquet", partitioned_by=DAYS)
    def orders(ctx) -> pd.DataFrame:
        day = ctx.partition
        return pd.DataFrame({"day": [day] * 3, "amount": [1.5, 2.5, 3.0]})

    @fs.asset(io_manager="parquet", partitioned_by=DAYS)
    def totals(orders: pl.DataFrame) -> pl.DataFrame:
        # Declared as polars: the pandas value stored upstream loads as polars.
        assert isinstance(orders, pl.DataFrame)
        return orders.group_by("day").agg(pl.col("amount").sum())

    @fs.asset(io_manager="values", partitioned_by=DAYS)
    def summary(totals: pa.Table) -> dict[str, float]:
        assert isinstance(totals, pa.Table)
        return {"total": totals.column("amount")[0].as_py()}

    day = dt.date(2025, 1, 15)
    with fs.Pipeline(
        [orders, totals, summary],
        store=store_url,
        io_managers={
            "parquet": ParquetIOManager(tmp_path / "tables"),
            "values": ObjectStoreIOManager((tmp_path / "values").as_uri()),
        },
    ) as pipeline:
        run = pipeline.materialize_all("summary", partition=day)
        run.raise_for_status()
        assert pipeline.load("summary", day) == {"total": 7.0}
        assert isinstance(pipeline.load("totals", day), pl.DataFrame)
        [record] = pipeline.history("orders", day)
        meta = record.metadata
        assert (meta["rows"], meta["columns"], meta["type"]) == (3, 2, "pandas")
        assert meta["uri"].endswith("/tables/orders/d%3A2025-01-15.parquet")
        assert meta["content_hash"].startswith("sha256:")
        assert meta["schema"] == [
            {"name": "day", "type": "date32[day]"},
            {"name": "amount", "type": "double"},
        ]
        assert json.loads(json.dumps(meta)) == meta  # JSON all the way down
        assert (tmp_path / "tables" / "orders" / "d%3A2025-01-15.parquet").is_file()


def test_an_annotation_that_cannot_be_resolved_loads_the_stored_type(tmp_path: Path) -> None:
    @fs.asset(io_manager="parquet")
    def prices() -> pl.DataFrame:
        return pl.DataFrame({"p": [1, 2]})

    @fs.asset
    def cheapest(prices: Decimal) -> int:  # a wrong, unresolvable hint must not break loads
        assert isinstance(prices, pl.DataFrame)
        return int(prices["p"].min())  # type: ignore[arg-type]

    with fs.Pipeline(
        [prices, cheapest],
        store="memory",
        io_managers={"parquet": ParquetIOManager(tmp_path)},
    ) as pipeline:
        pipeline.materialize_all().raise_for_status()
        assert pipeline.load("cheapest") == 1


def test_a_failed_store_fails_the_materialization_and_keeps_the_old_value(
    tmp_path: Path,
) -> None:
    version = {"n": 1}

    @fs.asset(io_manager="parquet")
    def table() -> pd.DataFrame:
        if version["n"] == 2:
            return pd.DataFrame({"x": [1, "mixed"]})
        return pd.DataFrame({"x": [version["n"]]})

    with fs.Pipeline(
        [table], store="memory", io_managers={"parquet": ParquetIOManager(tmp_path)}
    ) as pipeline:
        pipeline.materialize().raise_for_status()
        version["n"] = 2
        run = pipeline.materialize()
        assert not run.ok
        [failed] = run.materializations
        assert failed.error_type == "UnsupportedValueError"
        assert "Arrow cannot convert" in (failed.error_message or "")
        assert pipeline.load("table")["x"].tolist() == [1]


def test_import_flowstone_imports_no_data_library() -> None:
    heavy = ["pyarrow", "pandas", "polars", "numpy", "fsspec", "s3fs", "duckdb", "psycopg"]
    code = f"import sys, flowstone, flowstone.io\nprint([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
