"""Schedule and sensor definitions: what ``pipeline.schedule`` and ``pipeline.sensor`` build.

A definition is validated when it is made (cron, time zone, policies), so a typo fails at import
time, not at 3 a.m. What can be stored (names, cron, policies) becomes a
:class:`~flowstone.schedule_records.ScheduleRecord`; what cannot (a partition function, a sensor
function) stays in the process, found again by name by any scheduler that loads the pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flowstone.errors import ScheduleDefinitionError
from flowstone.partitions import Partition
from flowstone.schedule_records import CatchUp, ScheduleRecord
from flowstone.schedules.cron import CronTimes

#: A partition function: the tick's time (aware, in the schedule's zone) -> the partition.
PartitionFn = Callable[[datetime], Partition]

#: The stored strategy name of a partition function defined in code.
CODE_PARTITION = "code"


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _previous_hour(tick: datetime) -> datetime:
    # Through UTC: an hour of elapsed time, right across DST changes.
    zone = tick.tzinfo
    return _floor_hour((tick.astimezone(UTC) - timedelta(hours=1)).astimezone(zone))


def _tick_date(tick: datetime) -> date:
    return tick.date()


def _previous_day(tick: datetime) -> date:
    return tick.date() - timedelta(days=1)


def _none(tick: datetime) -> None:
    return None


def _tick_time(tick: datetime) -> datetime:
    return tick


#: Partition strategies a schedule can name (and the CLI can store).
BUILTIN_PARTITIONS: Mapping[str, PartitionFn] = {
    "none": _none,
    "tick_date": _tick_date,
    "previous_day": _previous_day,
    "tick_hour": _floor_hour,
    "previous_hour": _previous_hour,
    "tick_time": _tick_time,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleDef:
    """A validated schedule: its storable record and, for code partitions, the function."""

    record: ScheduleRecord
    partition_fn: PartitionFn

    @property
    def name(self) -> str:
        """The schedule's unique name."""
        return self.record.name


def define_schedule(
    name: str,
    targets: Sequence[str],
    *,
    cron: str,
    timezone: str = "UTC",
    partition: str | PartitionFn = "none",
    with_upstream: bool = False,
    catch_up: str = "latest",
    catch_up_limit: int = 10,
    max_lateness: timedelta | float | None = None,
    dst_nonexistent: str = "auto",
    dst_repeated: str = "auto",
    tags: Mapping[str, str] | None = None,
    source: str = "code",
) -> ScheduleDef:
    """Validate a schedule's settings (see :meth:`flowstone.Pipeline.schedule`).

    Raises:
        ScheduleDefinitionError: a setting is invalid; the message says which and what is valid.
    """
    if not name or not name.strip():
        raise ScheduleDefinitionError(repr(name), "a schedule needs a non-empty name")
    if not targets:
        raise ScheduleDefinitionError(name, "name at least one asset to materialize")
    CronTimes(cron, timezone, nonexistent=dst_nonexistent, repeated=dst_repeated, owner=name)
    try:
        mode = CatchUp(catch_up)
    except ValueError:
        raise ScheduleDefinitionError(
            name, f"catch_up must be one of {[m.value for m in CatchUp]}, not {catch_up!r}"
        ) from None
    if catch_up_limit < 1:
        raise ScheduleDefinitionError(
            name, f"catch_up_limit must be at least 1, not {catch_up_limit}"
        )
    lateness = _seconds(max_lateness, name, "max_lateness")
    if callable(partition):
        strategy, fn = CODE_PARTITION, partition
    elif partition in BUILTIN_PARTITIONS:
        strategy, fn = partition, BUILTIN_PARTITIONS[partition]
    else:
        raise ScheduleDefinitionError(
            name,
            f"partition must be a function of the tick time or one of "
            f"{sorted(BUILTIN_PARTITIONS)}, not {partition!r}",
        )
    record = ScheduleRecord(
        name=name,
        targets=tuple(dict.fromkeys(targets)),
        cron=cron.strip(),
        timezone=timezone,
        partition=strategy,
        with_upstream=with_upstream,
        catch_up=mode,
        catch_up_limit=catch_up_limit,
        max_lateness_s=lateness,
        dst_nonexistent=dst_nonexistent,
        dst_repeated=dst_repeated,
        source=source,
        tags=dict(tags or {}),
    )
    return ScheduleDef(record=record, partition_fn=fn)


def same_definition(a: ScheduleRecord, b: ScheduleRecord) -> bool:
    """Whether two records define the same schedule (state such as the cursor aside)."""
    fields = (
        "targets",
        "cron",
        "timezone",
        "partition",
        "with_upstream",
        "catch_up",
        "catch_up_limit",
        "max_lateness_s",
        "dst_nonexistent",
        "dst_repeated",
        "source",
        "tags",
    )
    return all(getattr(a, f) == getattr(b, f) for f in fields)


# --- sensors -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A run a sensor asks for.

    Args:
        asset: The asset (or assets) to materialize.
        partition: The partition, for partitioned assets.
        run_key: A key that identifies the run; a key this sensor launched before is never
            launched again (it is recorded as skipped).
        with_upstream: Also materialize everything upstream.
        tags: Labels stored on the run.

    Example::

        RunRequest("daily_report", partition=dt.date(2025, 1, 15), run_key="2025-01-15")
    """

    asset: str | Sequence[str]
    partition: Partition = None
    run_key: str | None = None
    with_upstream: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def assets(self) -> tuple[str, ...]:
        """The asset names, as a tuple."""
        return (self.asset,) if isinstance(self.asset, str) else tuple(self.asset)


@dataclass(frozen=True, slots=True)
class SensorResult:
    """What a sensor returns: run requests and the cursor to store for the next poll."""

    run_requests: Sequence[RunRequest] = ()
    cursor: str | None = None


#: A sensor: called with the stored cursor, returns a SensorResult, a (requests, cursor)
#: tuple, or a list of requests (cursor unchanged).
SensorFn = Callable[[str | None], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorDef:
    """A sensor: a function polled every ``interval_s`` seconds."""

    name: str
    fn: SensorFn
    interval_s: float


def define_sensor(name: str, fn: SensorFn, *, interval: timedelta | float = 30.0) -> SensorDef:
    """Validate a sensor's settings (see :meth:`flowstone.Pipeline.sensor`)."""
    if not name or not name.strip():
        raise ScheduleDefinitionError(repr(name), "a sensor needs a non-empty name")
    if not callable(fn):
        raise ScheduleDefinitionError(name, f"the sensor must be callable, got {fn!r}")
    seconds = _seconds(interval, name, "interval")
    assert seconds is not None
    return SensorDef(name=name, fn=fn, interval_s=seconds)


def sensor_output(value: Any, cursor: str | None) -> tuple[list[RunRequest], str | None]:
    """Normalize what a sensor returned to (requests, new cursor).

    Raises:
        TypeError: the value is none of the accepted shapes (recorded on the sensor's tick).
    """
    if value is None:
        return [], cursor
    if isinstance(value, SensorResult):
        requests, cursor = list(value.run_requests), value.cursor
    elif isinstance(value, tuple) and len(value) == 2:
        requests, cursor = list(value[0] or ()), value[1]
    elif isinstance(value, RunRequest):
        requests = [value]
    elif isinstance(value, list):
        requests = value
    else:
        raise TypeError(
            f"a sensor must return SensorResult(run_requests, cursor), a (requests, cursor) "
            f"tuple or a list of RunRequest, not {type(value).__name__}"
        )
    bad = [r for r in requests if not isinstance(r, RunRequest)]
    if bad:
        raise TypeError(f"a sensor returned {bad[0]!r} where a RunRequest was expected")
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError(
            f"a sensor cursor must be a string or None (json.dumps it), not {type(cursor).__name__}"
        )
    return requests, cursor


def _seconds(value: timedelta | float | None, name: str, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ScheduleDefinitionError(name, f"{what} must be positive, not {value!r}")
    return seconds
