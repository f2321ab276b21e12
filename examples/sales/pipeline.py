"""A small shop's sales pipeline: CSV in, cleaned, aggregated per day.

    orders_csv  ->  clean_orders  ->  daily_revenue  ->  daily_report
                                      (partitioned by day, in EUR via the `fx` resource)

Run it with ``python examples/sales/run.py``, or drive it from the CLI::

    flowstone -p examples/sales/pipeline.py materialize daily_report \
        --partition 2025-01-14 --with-deps
    flowstone -p examples/sales/pipeline.py status
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

import flowstone as fs

DATA = Path(__file__).parent / "data" / "orders.csv"
DAYS = fs.DailyPartitions(start="2025-01-13", end="2025-01-18")


class ExchangeRates:
    """A resource: euro exchange rates. A real one would call a rates API in ``setup``."""

    def setup(self) -> dict[str, float]:
        return {"EUR": 1.0, "NOK": 11.6, "USD": 1.04}


@fs.asset(description="Orders exported by the till, as raw CSV rows")
def orders_csv() -> list[dict[str, str]]:
    with DATA.open(newline="") as handle:
        return list(csv.DictReader(handle))


@fs.asset(requires=["fx"])
def clean_orders(ctx: fs.AssetContext, orders_csv: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Typed orders in euros; rows that cannot be read are dropped and counted."""
    rates = ctx.resources["fx"]
    clean, dropped = [], 0
    for row in orders_csv:
        try:
            ordered_at = dt.datetime.fromisoformat(row["ordered_at"])
            quantity = int(row["quantity"])
            amount_eur = float(row["amount"]) / rates[row["currency"]]
        except (ValueError, KeyError):
            dropped += 1
            continue
        clean.append(
            {
                "order_id": int(row["order_id"]),
                "day": ordered_at.date().isoformat(),
                "product": row["product"],
                "quantity": quantity,
                "amount_eur": round(amount_eur, 2),
            }
        )
    ctx.metadata.update(rows=len(clean), dropped=dropped)
    ctx.log.info("kept %d orders, dropped %d", len(clean), dropped)
    return clean


@fs.asset(partitioned_by=DAYS)
def daily_revenue(ctx: fs.AssetContext, clean_orders: list[dict[str, Any]]) -> dict[str, Any]:
    """Revenue and units per product for one day."""
    day = ctx.partition.isoformat()
    by_product: dict[str, dict[str, float]] = defaultdict(lambda: {"units": 0, "eur": 0.0})
    for order in clean_orders:
        if order["day"] == day:
            by_product[order["product"]]["units"] += order["quantity"]
            by_product[order["product"]]["eur"] += order["amount_eur"]
    ctx.metadata["products"] = len(by_product)
    return {
        "day": day,
        "products": {
            p: {"units": v["units"], "eur": round(v["eur"], 2)} for p, v in by_product.items()
        },
        "total_eur": round(sum(v["eur"] for v in by_product.values()), 2),
    }


@fs.asset(partitioned_by=DAYS)
def daily_report(daily_revenue: dict[str, Any]) -> str:
    """A one-paragraph summary for the shop owner."""
    products = daily_revenue["products"]
    if not products:
        return f"{daily_revenue['day']}: no sales."
    best = max(products, key=lambda p: products[p]["eur"])
    return (
        f"{daily_revenue['day']}: {daily_revenue['total_eur']:.2f} EUR from "
        f"{sum(v['units'] for v in products.values())} items; best seller: {best} "
        f"({products[best]['eur']:.2f} EUR)."
    )


pipeline = fs.Pipeline(
    [orders_csv, clean_orders, daily_revenue, daily_report],
    resources={"fx": ExchangeRates()},
)
