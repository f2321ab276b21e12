"""Cron times in a time zone, with an explicit rule for the hours DST skips or repeats.

The cron expression is evaluated on naive *wall-clock* times (by ``cronsim``), and each wall
time is then mapped to real instants with :mod:`zoneinfo`. Cron libraries handed aware
datetimes get DST wrong in both directions (croniter's bugs led Dagster to feed it naive times
only, dagster PR 17710), and a wall time is exactly what a cron expression describes.

A wall time maps to one instant, except:

- in a **gap** (spring forward: 02:30 does not exist on that day), ``nonexistent`` decides:
  ``"shift"`` runs at the first instant after the gap (03:00 local), ``"skip"`` runs nothing;
- in a **repeated hour** (fall back: 01:30 happens twice), ``repeated`` decides: ``"first"``
  runs once, at the first occurrence; ``"both"`` runs at each.

``"auto"`` (the default for both) is Debian cron's rule: a schedule at fixed times (its minute
and hour fields are not wildcards, e.g. ``30 2 * * *``) shifts out of a gap and runs once in a
repeated hour, because it means "once a day at this time"; a schedule with a wildcard hour
(``*/15 * * * *``, ``0 * * * *``) follows elapsed time: the skipped hour has no ticks and the
repeated hour has its ticks twice, so it still fires every 15 minutes of real time.

Instants that coincide (several gap times shifted to the same instant) are one tick.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flowstone.errors import InvalidCronError, ScheduleDefinitionError, suggest

#: Cron shorthands, as in Vixie cron.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
NONEXISTENT_POLICIES = ("auto", "shift", "skip")
REPEATED_POLICIES = ("auto", "first", "both")

# No zone's offset changes by more than this at once; wall times further than this from an
# instant cannot map to it, which bounds the look-around below.
_MAX_SHIFT = timedelta(hours=6)


def load_zone(name: str, *, owner: str) -> ZoneInfo:
    """The IANA zone ``name``, or a :class:`ScheduleDefinitionError` naming ``owner``."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        near = suggest(name, available_timezones())
        hint = f" Did you mean {' or '.join(map(repr, near))}?" if near else ""
        raise ScheduleDefinitionError(
            owner, f"unknown time zone {name!r}.{hint} Use an IANA name such as 'Europe/Oslo'."
        ) from exc


class CronTimes:
    """The instants at which a cron expression fires in a time zone.

    Args:
        cron: Five fields (``minute hour day month weekday``) or an alias such as ``@daily``.
        timezone: The IANA zone the fields are read in.
        nonexistent: ``"auto"``, ``"shift"`` or ``"skip"`` (see the module docstring).
        repeated: ``"auto"``, ``"first"`` or ``"both"``.
        owner: The schedule's name, for error messages.

    Raises:
        InvalidCronError: the expression cannot be parsed or never matches.
        ScheduleDefinitionError: unknown zone or policy.

    Example::

        times = CronTimes("30 2 * * *", "Europe/Oslo")
        list(times.between(after, until))  # aware datetimes in Europe/Oslo
    """

    def __init__(
        self,
        cron: str,
        timezone: str = "UTC",
        *,
        nonexistent: str = "auto",
        repeated: str = "auto",
        owner: str = "<schedule>",
    ) -> None:
        from cronsim import CronSim, CronSimError

        self.cron = cron
        expression = ALIASES.get(cron.strip().lower(), cron.strip())
        fields = expression.split()
        if len(fields) != 5:
            raise InvalidCronError(owner, cron, f"{len(fields)} fields, expected 5")
        try:
            CronSim(expression, datetime(2000, 1, 1))
        except CronSimError as exc:
            raise InvalidCronError(owner, cron, str(exc).lower()) from exc
        if nonexistent not in NONEXISTENT_POLICIES:
            raise ScheduleDefinitionError(
                owner, f"dst_nonexistent must be one of {NONEXISTENT_POLICIES}, not {nonexistent!r}"
            )
        if repeated not in REPEATED_POLICIES:
            raise ScheduleDefinitionError(
                owner, f"dst_repeated must be one of {REPEATED_POLICIES}, not {repeated!r}"
            )
        self._expression = expression
        self.zone = load_zone(timezone, owner=owner)
        fixed_time = not fields[0].startswith("*") and not fields[1].startswith("*")
        if nonexistent == "auto":
            nonexistent = "shift" if fixed_time else "skip"
        if repeated == "auto":
            repeated = "first" if fixed_time else "both"
        self.nonexistent = nonexistent
        self.repeated = repeated

    def between(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """The fire times in ``(after, until]``, ascending, each once, as aware datetimes in
        the schedule's zone. Lazy: a long range costs nothing until iterated."""
        from cronsim import CronSim

        after_utc, until_utc = after.astimezone(UTC), until.astimezone(UTC)
        # Start early: a wall time before `after`'s own may still map (through a repeated
        # hour) to an instant after it. Instants out of range are dropped below.
        start = after_utc.astimezone(self.zone).replace(tzinfo=None) - _MAX_SHIFT
        stop = until_utc.astimezone(self.zone).replace(tzinfo=None) + _MAX_SHIFT
        pending: list[datetime] = []
        last: datetime | None = None
        for wall in CronSim(self._expression, start):
            if wall > stop:
                break
            for instant in self.instants(wall):
                if after_utc < instant <= until_utc:
                    heapq.heappush(pending, instant)
            # Later wall times map to instants after this bound: what is before it is final.
            bound = wall.replace(tzinfo=self.zone).astimezone(UTC) - _MAX_SHIFT
            while pending and pending[0] < bound:
                instant = heapq.heappop(pending)
                if instant != last:
                    yield instant.astimezone(self.zone)
                last = instant
        while pending:
            instant = heapq.heappop(pending)
            if instant != last:
                yield instant.astimezone(self.zone)
            last = instant

    def instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants of one naive wall time under this schedule's DST rules."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(self.zone).replace(tzinfo=None) != wall:
            # A gap: fold=0 reads the wall time with the offset before the change, which puts
            # it after the change; fold=1 with the offset after, which puts it before.
            return [] if self.nonexistent == "skip" else [self._transition(second, first)]
        return [first] if self.repeated == "first" else [first, second]

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The instant the offset changes, between two UTC instants on either side of it."""
        offset = before.astimezone(self.zone).utcoffset()
        lo, hi = 0, int((after - before).total_seconds())
        while lo < hi:  # smallest second at which the new offset holds
            mid = (lo + hi) // 2
            if (before + timedelta(seconds=mid)).astimezone(self.zone).utcoffset() == offset:
                lo = mid + 1
            else:
                hi = mid
        return before + timedelta(seconds=lo)
