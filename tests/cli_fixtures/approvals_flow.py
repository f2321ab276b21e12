"""daily_report -> publish (asks for approval) -> notify, and a gate that times out at once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import flowstone as fs

DAYS = fs.DailyPartitions(start="2025-01-01", end="2025-02-01")


@fs.asset(partitioned_by=DAYS)
def daily_report(ctx: fs.AssetContext) -> dict[str, Any]:
    return {"total": ctx.partition.day * 10}


@fs.asset(depends_on=["daily_report"], partitioned_by=DAYS)
def publish(ctx: fs.AssetContext, daily_report: dict[str, Any]) -> Any:
    if ctx.approval is None:
        return fs.WaitForApproval(
            f"Publish {daily_report['total']} for {ctx.partition}?",
            context={"total": daily_report["total"]},
            timeout=dt.timedelta(hours=24),
        )
    return {"published": daily_report["total"], "by": ctx.approval.decided_by, **ctx.approval.input}


@fs.asset(partitioned_by=DAYS)
def notify(publish: dict[str, Any]) -> dict[str, Any]:
    return publish


@fs.asset(approval=fs.Approval("Hurry?", timeout=dt.timedelta(microseconds=1)))
def hurried() -> str:
    return "done"


pipeline = fs.Pipeline([daily_report, publish, notify, hurried])
