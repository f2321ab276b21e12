"""Pipelines for the distributed tests, loaded by the test process and by worker subprocesses
(``flowstone worker -p tests/distributed_fixtures/pipelines.py:diamond``).

Each asset appends ``<time> <run> <asset> <partition> <attempt> <start|done>`` to the file named by
``$FLOWSTONE_TEST_LOG``, so a test can count executions across processes. Factories (not module
globals) build the pipelines, so the store and executor come from the environment at call time.
"""

from __future__ import annotations

import os
import time
from typing import Any

import flowstone as fs
from flowstone.execution import Executor


class TransientError(Exception):
    """A failure worth retrying."""


def log(ctx: fs.AssetContext, event: str) -> None:
    path = os.environ.get("FLOWSTONE_TEST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(
                f"{time.time():.6f} {ctx.run_id} {ctx.asset} {ctx.partition_key} {ctx.attempt} "
                f"{event}\n"
            )


def _build(assets: list[fs.AssetDef], **options: Any) -> fs.Pipeline:
    executor: Executor | None = options.pop("executor", None)
    return fs.Pipeline(assets, executor=executor, **options)


# --- diamond ---------------------------------------------------------------------------------
@fs.asset
def root(ctx):
    log(ctx, "done")
    return 1


@fs.asset
def left(ctx, root):
    log(ctx, "done")
    return root + 1


@fs.asset
def right(ctx, root):
    log(ctx, "done")
    return root + 2


@fs.asset
def join(ctx, left, right):
    log(ctx, "done")
    return left * right


def diamond(**options: Any) -> fs.Pipeline:
    return _build([root, left, right, join], **options)


# --- a 50-asset graph: 5 layers of 10, each asset reading two of the layer above -----------
def _layered(layers: int = 5, width: int = 10) -> list[fs.AssetDef]:
    assets: list[fs.AssetDef] = []
    for layer in range(layers):
        for i in range(width):
            deps = (
                [] if layer == 0 else [f"n{layer - 1}_{i}", f"n{layer - 1}_{(i * 3 + 1) % width}"]
            )
            deps = list(dict.fromkeys(deps))

            def compute(ctx: fs.AssetContext) -> str:
                log(ctx, "done")
                return ctx.asset

            assets.append(fs.asset(name=f"n{layer}_{i}", depends_on=deps)(compute))
    return assets


def wide(**options: Any) -> fs.Pipeline:
    return _build(_layered(), **options)


# --- a slow step between two quick ones ------------------------------------------------------
@fs.asset
def before(ctx):
    log(ctx, "done")
    return "before"


@fs.asset
def slow(ctx, before):
    log(ctx, "start")
    time.sleep(float(os.environ.get("FLOWSTONE_TEST_SLOW_S", "3")))
    log(ctx, "done")
    return before + "+slow"


@fs.asset
def after(ctx, slow):
    log(ctx, "done")
    return slow + "+after"


def slow_chain(**options: Any) -> fs.Pipeline:
    return _build([before, slow, after], **options)


# --- retries ---------------------------------------------------------------------------------
POLICY = fs.RetryPolicy(
    max_attempts=3, backoff=1.0, multiplier=2.0, jitter=0.1, retry_on=(TransientError,)
)


@fs.asset(retry=POLICY)
def flaky(ctx):
    log(ctx, "start")
    if ctx.attempt < 3:
        raise TransientError(f"attempt {ctx.attempt} failed")
    log(ctx, "done")
    return ctx.attempt


@fs.asset(retry=POLICY)
def broken(ctx):
    log(ctx, "start")
    raise ValueError("not retryable")


@fs.asset
def below_flaky(ctx, flaky):
    log(ctx, "done")
    return flaky


@fs.asset
def below_broken(ctx, broken):
    log(ctx, "done")
    return broken


@fs.asset
def further_below(ctx, below_broken):
    log(ctx, "done")
    return below_broken


def retries(**options: Any) -> fs.Pipeline:
    return _build([flaky, below_flaky, broken, below_broken, further_below], **options)


# --- partitioned -----------------------------------------------------------------------------
REGIONS = fs.StaticPartitions(["eu", "us"])


@fs.asset(partitioned_by=REGIONS)
def regional(ctx):
    log(ctx, "done")
    return ctx.partition


def partitioned(**options: Any) -> fs.Pipeline:
    return _build([regional, root], **options)


# --- partition mappings: hours into days -------------------------------------------------------
HOURS = fs.HourlyPartitions(start="2025-03-01", end="2025-03-08")
DAYS = fs.DailyPartitions(start="2025-03-01", end="2025-03-08")


@fs.asset(partitioned_by=HOURS)
def hourly_events(ctx):
    log(ctx, "done")
    return ctx.partition.hour


@fs.asset(partitioned_by=DAYS, partition_mappings={"hourly_events": fs.TimeWindowMapping()})
def daily_events(ctx, hourly_events):
    log(ctx, "done")
    return sum(hourly_events.values())


def hours_into_days(**options: Any) -> fs.Pipeline:
    return _build([hourly_events, daily_events], **options)


# --- approvals: a gate, a step below it, and an unrelated branch --------------------------------
@fs.asset
def gated(ctx):
    log(ctx, "done")
    if ctx.approval is None:
        return fs.WaitForApproval("Ship it?")
    return {"by": ctx.approval.decided_by, "input": dict(ctx.approval.input)}


@fs.asset
def shipped(ctx, gated):
    log(ctx, "done")
    return f"shipped by {gated['by']} to {gated['input'].get('channel')}"


@fs.asset
def unrelated(ctx):
    log(ctx, "done")
    return 1


def approvals(**options: Any) -> fs.Pipeline:
    return _build([gated, shipped, unrelated], **options)


# --- a slow partitioned asset, for cancels ------------------------------------------------------
SIX = fs.StaticPartitions(["a", "b", "c", "d", "e", "f"])


@fs.asset(partitioned_by=SIX)
def slow_part(ctx):
    log(ctx, "start")
    time.sleep(0.4)
    log(ctx, "done")
    return ctx.partition


def slow_parts(**options: Any) -> fs.Pipeline:
    return _build([slow_part], **options)


# --- an approval gate that fails once after the decision, then succeeds on retry ---------------
@fs.asset(
    approval=fs.Approval("Go?"),
    retry=fs.RetryPolicy(max_attempts=3, backoff=0.1, jitter=0.0, retry_on=(TransientError,)),
)
def gate_retry(ctx):
    log(ctx, "done")
    if ctx.attempt == 2:
        raise TransientError("flaky after the approval")
    return ctx.approval.decided_by


def gated_retry(**options: Any) -> fs.Pipeline:
    return _build([gate_retry], **options)
