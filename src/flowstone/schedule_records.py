"""The records of schedules, sensors and their ticks, as the metadata store keeps them.

Frozen dataclasses of plain data, like :mod:`flowstone.records`: a stored schedule names its
partition strategy (``"previous_day"``, or ``"code"`` for a function defined in Python), never
the function itself, so nothing read back is imported or unpickled.

A **tick** is one decision a scheduler made: a schedule's cron time came due, or a sensor was
polled. Each tick is recorded once, keyed by (kind, name, tick time), in the same transaction as
the runs it launched (:class:`TickLaunch`), so two schedulers never both launch it and a crash
never loses it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from flowstone.records import JSON, MaterializationRecord, RunRecord, utcnow


class TickKind(enum.StrEnum):
    """What produced a tick."""

    SCHEDULE = "schedule"
    SENSOR = "sensor"


class TickStatus(enum.StrEnum):
    """What a scheduler did with a tick."""

    #: Runs were launched (recorded with the tick, then executed).
    LAUNCHED = "launched"
    #: Deliberately not run: the catch-up policy, a DST rule, or run keys seen before.
    SKIPPED = "skipped"
    #: Found later than the schedule's ``max_lateness``: never run.
    MISSED = "missed"
    #: Could not be run: the partition function or the sensor raised, the definition is
    #: missing from the pipeline, a run request named an unknown asset...
    FAILED = "failed"


class CatchUp(enum.StrEnum):
    """What a schedule does with ticks that came due while no scheduler ran."""

    #: Run none of them; only ticks found on time run.
    SKIP = "skip"
    #: Run only the most recent one.
    LATEST = "latest"
    #: Run them all, oldest first, up to the schedule's ``catch_up_limit`` most recent.
    ALL = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleRecord:
    """A schedule as stored: its definition and its state (paused, cursor).

    ``cursor`` is the time of the last tick handled (launched, skipped, missed or failed);
    the next evaluation starts after it, so changing ``cron`` never re-runs a past tick.
    """

    name: str
    targets: tuple[str, ...]
    cron: str
    timezone: str = "UTC"
    #: A built-in partition strategy name, or ``"code"`` for a function defined in Python.
    partition: str = "none"
    with_upstream: bool = False
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_limit: int = 10
    #: Seconds; a tick found later than this is recorded ``missed``. None: no limit.
    max_lateness_s: float | None = None
    #: What a cron time in a DST gap does: ``shift``, ``skip`` or ``auto`` (see the guide).
    dst_nonexistent: str = "auto"
    #: What a cron time in a repeated hour does: ``first``, ``both`` or ``auto``.
    dst_repeated: str = "auto"
    paused: bool = False
    cursor: datetime | None = None
    #: ``"code"`` (declared with ``pipeline.schedule``) or ``"cli"`` (``flowstone schedule add``).
    source: str = "code"
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorRecord:
    """A sensor's stored state. Its function lives in the pipeline's code.

    ``version`` grows by one with each recorded poll; a poll is stored only if the version is
    still the one it read, so two schedulers polling at once never both apply a result.
    """

    name: str
    interval_s: float
    paused: bool = False
    cursor: str | None = None
    version: int = 0
    last_tick_at: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True, kw_only=True)
class TickRecord:
    """One tick and what came of it.

    For a schedule ``tick_time`` is the cron time (an instant, UTC); for a sensor, the poll
    time. ``reason`` says why a tick was skipped, missed or failed; ``details`` holds the rest
    (local time, lateness, run keys skipped, the error's traceback...).
    """

    kind: TickKind
    name: str
    tick_time: datetime
    status: TickStatus
    run_ids: tuple[str, ...] = ()
    reason: str | None = None
    details: JSON = field(default_factory=dict)
    recorded_at: datetime = field(default_factory=utcnow)
    id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TickLaunch:
    """A run to create with a tick: the run, its ``pending`` materializations, and the run
    key that must not have launched before (sensors only)."""

    run: RunRecord
    materializations: Sequence[MaterializationRecord]
    run_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TickRun:
    """A run launched by a tick, with the time a scheduler last claimed it for execution."""

    run_id: str
    kind: TickKind
    name: str
    run_key: str | None
    claimed_at: datetime
