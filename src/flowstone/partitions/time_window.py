"""Calendar partitions: hourly, daily, weekly and monthly windows in a time zone.

Every definition has a ``start`` (a ``date``, ``datetime`` or ISO string, interpreted in the
definition's ``timezone``) and an optional exclusive ``end``. Without an ``end`` the definition
is open-ended: it holds every *complete* window as of now, plus ``end_offset`` windows (1 adds
the current, incomplete one; negative values hold back). "Now" comes from the ``now`` callable
when one is given (tests inject a fixed clock) and from ``datetime.now(UTC)`` otherwise; it
must return an aware datetime.

Keys are positions on a grid, so ``len``, ``contains``, ``index`` and ``key_at`` are O(1)
arithmetic and ``keys()`` is lazy. Hourly keys step whole hours in UTC from the start instant,
so daylight-saving days have 23 or 25 keys, and the two keys of a repeated hour are told apart
by ``fold``. Beware that Python compares two datetimes *of the same zone* by wall time: those
two keys are ``==`` each other. Compare hourly keys by ``encode_partition`` or in UTC.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from flowstone.errors import PartitionError, suggest
from flowstone.partitions.definitions import PartitionsDefinition
from flowstone.partitions.encoding import Partition, decode_partition, partition_repr

__all__ = [
    "DailyPartitions",
    "HourlyPartitions",
    "MonthlyPartitions",
    "TimeWindowPartitions",
    "WeeklyPartitions",
]

Clock = Callable[[], datetime]

_HOUR = timedelta(hours=1)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DATE_TEXT = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_MONTH_TEXT = re.compile(r"([0-9]{4})-([0-9]{2})")
_DATETIME_TEXT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _load_zone(name: object) -> ZoneInfo:
    if not isinstance(name, str):
        raise PartitionError(
            f"timezone must be an IANA zone name such as 'Europe/Oslo', got "
            f"{type(name).__name__} {name!r}"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        matches = suggest(name, available_timezones())
        hint = f" (did you mean {' or '.join(map(repr, matches))}?)" if matches else ""
        raise PartitionError(
            f"unknown time zone {name!r}{hint}; use an IANA name such as 'UTC' or 'Europe/Oslo'"
        ) from exc


def _parse_date(text: str) -> date | None:
    match = _DATE_TEXT.fullmatch(text)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise PartitionError(f"{text!r} is not a valid date: {exc}") from exc


def _parse_datetime(text: str) -> datetime | None:
    if _DATETIME_TEXT.fullmatch(text) is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise PartitionError(f"{text!r} is not a valid date and time: {exc}") from exc


class TimeWindowPartitions(PartitionsDefinition):
    """The shared behaviour of calendar windows; subclasses define the grid.

    Args:
        timezone: The IANA zone the windows follow.
        end_offset: Windows to add past the last complete one (open-ended definitions only).
        now: The clock for open-ended definitions; ``datetime.now(UTC)`` when None.

    Raises:
        PartitionError: Unknown zone, ``end_offset`` given with an ``end``, or a clock that
            is not callable.
    """

    __slots__ = ("_clock", "_end_count", "_end_offset", "_zone")
    _unit = "window"
    _expected = "a date"

    def __init__(self, *, timezone: str, end_offset: int, now: Clock | None) -> None:
        self._zone = _load_zone(timezone)
        if type(end_offset) is not int:
            raise PartitionError(f"end_offset must be an int, got {end_offset!r}")
        if now is not None and not callable(now):
            raise PartitionError(f"now must be a callable returning a datetime, got {now!r}")
        self._end_offset = end_offset
        self._clock = now
        self._end_count: int | None = None

    def _close(self, end_count: int) -> None:
        if self._end_offset:
            raise PartitionError(
                f"{type(self).__name__}: end_offset only applies to open-ended definitions; "
                "drop it or drop end"
            )
        self._end_count = end_count

    @property
    def timezone(self) -> str:
        """The IANA name of the definition's time zone."""
        return self._zone.key

    @property
    def end_offset(self) -> int:
        """How many windows past the last complete one an open-ended definition holds."""
        return self._end_offset

    # --- the grid, defined by each subclass ------------------------------------------------

    @abstractmethod
    def _coerce(self, key: object) -> date:
        """Return ``key`` as a value of the grid's kind, or raise for the wrong kind."""

    @abstractmethod
    def _locate(self, key: date) -> tuple[int, bool]:
        """Return the grid position at or before ``key`` and whether ``key`` is on the grid."""

    @abstractmethod
    def _key(self, position: int) -> date:
        """Return the key at ``position`` without range checks."""

    @abstractmethod
    def _count_as_of(self, now: datetime) -> int:
        """Return how many windows are complete at ``now`` (negative before the start)."""

    @abstractmethod
    def _parse_human(self, text: str) -> date | None:
        """Parse the definition's human form, or return None if ``text`` is not in it."""

    @abstractmethod
    def _misaligned(self, key: date) -> str:
        """Say why an off-grid ``key`` is off the grid ("is not the first day of a month")."""

    @abstractmethod
    def _repr_fields(self) -> list[str]:
        """Return the ``name=value`` fields the repr shows before the time zone."""

    # --- shared behaviour ------------------------------------------------------------------

    def _now(self) -> datetime:
        now = datetime.now(UTC) if self._clock is None else self._clock()
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise PartitionError(f"the now() clock must return an aware datetime, got {now!r}")
        return now

    def __len__(self) -> int:
        return self.size_as_of(self._now())

    def size_as_of(self, now: datetime) -> int:
        """How many keys the definition holds at the aware instant ``now`` (a definition with
        an ``end`` always holds the same)."""
        if self._end_count is not None:
            return self._end_count
        return max(0, self._count_as_of(now) + self._end_offset)

    def keys(self) -> Iterator[Partition]:
        """Iterate over the keys in time order, lazily."""
        return map(self._key, range(len(self)))

    def contains(self, key: Partition) -> bool:
        """Return whether ``key`` is a window of this definition (O(1))."""
        position, aligned = self._locate(self._coerce(key))
        return aligned and 0 <= position < len(self)

    def validate(self, key: object) -> Partition:
        """Return the canonical key for ``key`` (hourly: in the definition's zone)."""
        return self._key(self.index(key))

    def index(self, key: object) -> int:
        """Return the position of ``key`` (O(1)), or raise saying why it is not a key."""
        value = self._coerce(key)
        position, aligned = self._locate(value)
        shown = partition_repr(value)
        if not aligned:
            raise PartitionError(
                f"{shown} {self._misaligned(value)} in {self.describe()}; the nearest "
                f"partitions are {self._near(position)} and {self._near(position + 1)}"
            )
        if position < 0:
            raise PartitionError(
                f"{shown} is before the first partition {partition_repr(self._key(0))} of "
                f"{self.describe()}"
            )
        size = len(self)
        if position < size:
            return position
        if self._end_count is not None:
            raise PartitionError(
                f"{shown} is after the last partition {partition_repr(self._key(size - 1))} "
                f"of {self.describe()}"
            )
        as_of = f"as of {self._now().isoformat(timespec='seconds')}"
        hint = f"raise end_offset to include the current {self._unit}"
        if size == 0:
            raise PartitionError(
                f"{shown} is not a partition of {self.describe()}: no {self._unit} is "
                f"complete yet {as_of} ({hint})"
            )
        raise PartitionError(
            f"{shown} is after the last partition {partition_repr(self._key(size - 1))} of "
            f"{self.describe()}, the last complete {self._unit} {as_of} ({hint})"
        )

    def key_at(self, index: int) -> Partition:
        """Return the key at position ``index`` (O(1))."""
        self._check_position(index)
        return self._key(index)

    # --- windows as instants (partition mappings) ------------------------------------------

    def window(self, key: object) -> tuple[datetime, datetime]:
        """Return the window of ``key`` as UTC instants ``[start, end)``.

        The key need not be in the definition's range, only on its grid, so a mapping can
        ask about a window the upstream does not hold yet.

        Example:
            >>> days = DailyPartitions("2025-01-01", timezone="Europe/Paris")
            >>> [t.isoformat() for t in days.window(date(2025, 3, 30))]
            ['2025-03-29T23:00:00+00:00', '2025-03-30T22:00:00+00:00']
        """
        value = self._coerce(key)
        position, aligned = self._locate(value)
        if not aligned:
            raise PartitionError(f"{partition_repr(value)} {self._misaligned(value)}")
        return self._start_instant(position), self._start_instant(position + 1)

    def position_at(self, instant: datetime) -> int:
        """Return the grid position of the window holding the aware ``instant``; it may be
        outside ``0 .. len - 1`` (before the start, or past the last complete window)."""
        # The window holding an instant is at the position of the count complete before it.
        return self._count_as_of(instant)

    @abstractmethod
    def _start_instant(self, position: int) -> datetime:
        """Return the UTC instant the window at grid ``position`` starts."""

    def parse(self, text: str) -> Partition:
        """Parse the human form (see each class) or a tagged key, then validate it."""
        if not isinstance(text, str):
            raise PartitionError(f"parse() takes text, got {type(text).__name__} {text!r}")
        stripped = text.strip()
        expected = (
            f"cannot parse {text!r} as a partition of {self.describe()}: expected "
            f"{self._human_example()} or a tagged key"
        )
        # Human forms start with a digit, tagged ones with their letter tag.
        if stripped[:1].isalpha():
            try:
                decoded = decode_partition(stripped)
            except PartitionError as exc:
                raise PartitionError(f"{expected} ({exc})") from exc
            return self.validate(decoded)
        value = self._parse_human(stripped)
        if value is None:
            raise PartitionError(expected)
        return self.validate(value)

    def _human_example(self) -> str:
        return f"text such as {partition_repr(self._key(0))!r}"

    def _iter_range(self, first: int, stop: int) -> Iterator[Partition]:
        return map(self._key, range(first, stop))

    def _near(self, position: int) -> str:
        try:
            return partition_repr(self._key(position))
        except (OverflowError, ValueError):
            return "(out of range)"

    def _wrong_kind(self, key: object, hint: str = "") -> PartitionError:
        if not hint and isinstance(key, str):
            try:
                parsed = self._parse_human(key.strip())
            except PartitionError:
                parsed = None
            if parsed is not None:
                hint = f"; pass {parsed!r}"
        return PartitionError(
            f"expected {self._expected} for {type(self).__name__}, got "
            f"{type(key).__name__} {key!r}{hint}"
        )

    def __repr__(self) -> str:
        fields = self._repr_fields()
        fields.append(f"timezone={self.timezone}")
        if self._end_offset:
            fields.append(f"end_offset={self._end_offset}")
        return f"{type(self).__name__}({', '.join(fields)})"


class HourlyPartitions(TimeWindowPartitions):
    """One partition per real hour; keys are aware datetimes in the definition's zone.

    Args:
        start: The first hour: a ``date`` (local midnight), a ``datetime`` (naive means local
            wall time) or an ISO string. It must fall on a whole local hour.
        end: The exclusive end, a whole number of hours after ``start``; None for open-ended.
        timezone: The IANA zone of the keys.
        end_offset: See :class:`TimeWindowPartitions`.
        now: See :class:`TimeWindowPartitions`.

    ``parse`` accepts ``"2025-01-15T10:00"`` or ``"2025-01-15 10:00"`` (local time; in a
    repeated hour this is the first one: append the offset, ``"...02:00+01:00"``, for the
    second) and ISO text with an offset.

    Keys are whole hours of elapsed time from ``start``, so in the rare zones whose offset
    changes by part of an hour (Australia/Lord_Howe's 30-minute DST) they leave the local
    hour grid after the change, and an ``end`` on the local grid is rejected.

    Example:
        >>> hours = HourlyPartitions("2025-03-30", "2025-03-31", timezone="Europe/Oslo")
        >>> len(hours), partition_repr(hours.key_at(2))
        (23, '2025-03-30T03:00:00+02:00')
    """

    __slots__ = ("_end_utc", "_start_utc")
    _unit = "hour"
    _expected = "an aware datetime"

    def __init__(
        self,
        start: date | datetime | str,
        end: date | datetime | str | None = None,
        *,
        timezone: str = "UTC",
        end_offset: int = 0,
        now: Clock | None = None,
    ) -> None:
        super().__init__(timezone=timezone, end_offset=end_offset, now=now)
        self._start_utc = self._to_instant(start, "start")
        self._end_utc = None if end is None else self._to_instant(end, "end")
        if self._end_utc is not None:
            hours, rest = divmod(self._end_utc - self._start_utc, _HOUR)
            if hours <= 0 or rest:
                raise PartitionError(
                    f"HourlyPartitions end {self._local(self._end_utc)} must be a whole number "
                    f"of hours after start {self._local(self._start_utc)}"
                )
            self._close(hours)

    @property
    def start(self) -> datetime:
        """The first key."""
        return self._start_utc.astimezone(self._zone)

    @property
    def end(self) -> datetime | None:
        """The exclusive end, or None when open-ended."""
        return None if self._end_utc is None else self._end_utc.astimezone(self._zone)

    def _local(self, instant: datetime) -> str:
        return instant.astimezone(self._zone).isoformat()

    def _to_instant(self, value: object, what: str) -> datetime:
        if isinstance(value, str):
            text = value.strip()
            parsed = _parse_datetime(text) or _parse_date(text)
            if parsed is None:
                raise PartitionError(
                    f"HourlyPartitions {what} {value!r} is not an ISO date or date and time"
                )
            value = parsed
        if isinstance(value, datetime):
            aware = value if value.utcoffset() is not None else self._localize(value, what)
        elif isinstance(value, date):
            # Converting through UTC moves a midnight that DST skips to the day's first hour.
            aware = datetime.combine(value, time(), tzinfo=self._zone)
        else:
            raise PartitionError(
                f"HourlyPartitions {what} must be a date, datetime or ISO string, got "
                f"{type(value).__name__} {value!r}"
            )
        utc = aware.astimezone(UTC)
        local = utc.astimezone(self._zone)
        if local.minute or local.second or local.microsecond:
            floor = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
            raise PartitionError(
                f"HourlyPartitions {what} {local.isoformat()} is not on a whole hour in "
                f"{self.timezone}; use {self._local(floor)} or {self._local(floor + _HOUR)}"
            )
        return utc

    def _localize(self, naive: datetime, what: str) -> datetime:
        aware = naive.replace(tzinfo=self._zone)
        if aware.astimezone(UTC).astimezone(self._zone).replace(tzinfo=None) != naive:
            raise PartitionError(
                f"{what} {naive.isoformat()} does not exist in {self.timezone}: the clocks "
                "skip it (daylight saving time)"
            )
        return aware

    def _coerce(self, key: object) -> datetime:
        if isinstance(key, datetime):
            if key.utcoffset() is None:
                raise PartitionError(
                    f"naive datetime {key.isoformat()} given to {self.describe()}: attach a "
                    f"time zone, e.g. .replace(tzinfo=ZoneInfo({self.timezone!r}))"
                )
            try:
                return key.astimezone(self._zone)
            except (OverflowError, ValueError) as exc:
                raise PartitionError(f"{key.isoformat()} is outside the datetime range") from exc
        if isinstance(key, date):
            midnight = datetime.combine(key, time(), tzinfo=self._zone)
            raise self._wrong_kind(key, f"; pass {midnight!r}")
        raise self._wrong_kind(key)

    def _locate(self, key: date) -> tuple[int, bool]:
        assert isinstance(key, datetime)  # _coerce made it an aware datetime in the zone
        hours, rest = divmod(key.astimezone(UTC) - self._start_utc, _HOUR)
        return hours, not rest

    def _key(self, position: int) -> datetime:
        return (self._start_utc + position * _HOUR).astimezone(self._zone)

    def _count_as_of(self, now: datetime) -> int:
        return (now.astimezone(UTC) - self._start_utc) // _HOUR

    def _start_instant(self, position: int) -> datetime:
        return self._start_utc + position * _HOUR

    def _parse_human(self, text: str) -> datetime | None:
        parsed = _parse_datetime(text)
        if parsed is None or parsed.utcoffset() is not None:
            return parsed
        return self._localize(parsed, "time")

    def _misaligned(self, key: date) -> str:
        return f"is not on a whole hour of {self.timezone}"

    def _human_example(self) -> str:
        first = self._key(0)
        return f"a local time such as '{first:%Y-%m-%d %H:%M}' or '{first:%Y-%m-%dT%H:%M}'"

    def _repr_fields(self) -> list[str]:
        fields = [f"start={self.start.isoformat()}"]
        if self.end is not None:
            fields.append(f"end={self.end.isoformat()}")
        return fields

    def _identity(self) -> tuple[object, ...]:
        return (self._start_utc, self._end_utc, self._end_offset, self.timezone)


class _CalendarPartitions(TimeWindowPartitions):
    """Windows of whole local days, keyed by the ``date`` each window starts on."""

    __slots__ = ("_end", "_start")
    _allow_month_text = False

    def __init__(
        self,
        start: date | datetime | str,
        end: date | datetime | str | None,
        *,
        timezone: str,
        end_offset: int,
        now: Clock | None,
    ) -> None:
        super().__init__(timezone=timezone, end_offset=end_offset, now=now)
        self._start = self._to_boundary(start, "start")
        self._end = None if end is None else self._to_boundary(end, "end")
        if self._end is not None:
            if self._end <= self._start:
                raise PartitionError(
                    f"{type(self).__name__} end {self._end} must be after start {self._start}"
                )
            self._close(self._locate(self._end)[0])

    @property
    def start(self) -> date:
        """The first key."""
        return self._start

    @property
    def end(self) -> date | None:
        """The exclusive end, or None when open-ended."""
        return self._end

    @abstractmethod
    def _floor(self, day: date) -> date:
        """Return the start of the window that contains ``day``."""

    @abstractmethod
    def _after(self, boundary: date) -> date:
        """Return the start of the window after the one starting on ``boundary``."""

    def _to_boundary(self, value: object, what: str) -> date:
        name = type(self).__name__
        if isinstance(value, str):
            text = value.strip()
            parsed = self._parse_human(text) or _parse_datetime(text)
            if parsed is None:
                raise PartitionError(f"{name} {what} {value!r} is not an ISO date")
            value = parsed
        if isinstance(value, datetime):
            local = value.astimezone(self._zone) if value.utcoffset() is not None else value
            if local.time() != time():
                raise PartitionError(
                    f"{name} {what} {value.isoformat()} is not a midnight in {self.timezone}; "
                    "pass a date"
                )
            value = local.date()
        if not isinstance(value, date):
            raise PartitionError(
                f"{name} {what} must be a date, datetime or ISO string, got "
                f"{type(value).__name__} {value!r}"
            )
        day = date(value.year, value.month, value.day)
        floor = self._floor(day)
        if floor != day:
            raise PartitionError(
                f"{name} {what} {day} {self._misaligned(day)}; use {floor} or {self._after(floor)}"
            )
        return day

    def _coerce(self, key: object) -> date:
        if type(key) is date:
            return key
        if isinstance(key, datetime):
            raise self._wrong_kind(key, f"; pass its date: {key.date()!r}")
        if isinstance(key, date):
            return date(key.year, key.month, key.day)
        raise self._wrong_kind(key)

    def _count_as_of(self, now: datetime) -> int:
        # The window holding today is incomplete, so its position is the complete count.
        return self._locate(now.astimezone(self._zone).date())[0]

    def _start_instant(self, position: int) -> datetime:
        # Through UTC, a local midnight that daylight saving skips becomes the day's first
        # instant, so consecutive windows always meet.
        return datetime.combine(self._key(position), time(), tzinfo=self._zone).astimezone(UTC)

    def _parse_human(self, text: str) -> date | None:
        if self._allow_month_text:
            match = _MONTH_TEXT.fullmatch(text)
            if match is not None:
                return _parse_date(f"{text}-01")
        return _parse_date(text)

    def _repr_fields(self) -> list[str]:
        fields = [f"start={self._start}"]
        if self._end is not None:
            fields.append(f"end={self._end}")
        return fields

    def _identity(self) -> tuple[object, ...]:
        return (self._start, self._end, self._end_offset, self.timezone)


class DailyPartitions(_CalendarPartitions):
    """One partition per local calendar day; keys are ``date``s.

    Args:
        start: The first day: a ``date``, a local-midnight ``datetime`` or ``"2025-01-01"``.
        end: The exclusive end day, or None for open-ended (up to yesterday in ``timezone``).
        timezone: The IANA zone whose calendar decides when a day is complete.
        end_offset: See :class:`TimeWindowPartitions`; 1 includes today.
        now: See :class:`TimeWindowPartitions`.

    Example:
        >>> days = DailyPartitions("2025-01-01", "2025-02-01")
        >>> len(days), days.parse("2025-01-15")
        (31, datetime.date(2025, 1, 15))
    """

    __slots__ = ()
    _unit = "day"

    def __init__(
        self,
        start: date | datetime | str,
        end: date | datetime | str | None = None,
        *,
        timezone: str = "UTC",
        end_offset: int = 0,
        now: Clock | None = None,
    ) -> None:
        super().__init__(start, end, timezone=timezone, end_offset=end_offset, now=now)

    def _floor(self, day: date) -> date:
        return day

    def _after(self, boundary: date) -> date:
        return boundary + timedelta(days=1)

    def _locate(self, key: date) -> tuple[int, bool]:
        return (key - self._start).days, True

    def _key(self, position: int) -> date:
        return self._start + timedelta(days=position)

    def _misaligned(self, key: date) -> str:
        return "is not a day"  # unreachable: every date is a day


class WeeklyPartitions(_CalendarPartitions):
    """One partition per week; keys are the ``date`` each week starts on.

    Args:
        start: The first week's start; it must fall on ``week_starts_on``.
        end: The exclusive end (a week start), or None for open-ended.
        week_starts_on: 0 for Monday through 6 for Sunday.
        timezone: The IANA zone whose calendar decides when a week is complete.
        end_offset: See :class:`TimeWindowPartitions`; 1 includes the current week.
        now: See :class:`TimeWindowPartitions`.

    Example:
        >>> weeks = WeeklyPartitions("2025-01-05", "2025-02-02", week_starts_on=6)
        >>> len(weeks), weeks.key_at(1)
        (4, datetime.date(2025, 1, 12))
    """

    __slots__ = ("_week_starts_on",)
    _unit = "week"

    def __init__(
        self,
        start: date | datetime | str,
        end: date | datetime | str | None = None,
        *,
        week_starts_on: int = 0,
        timezone: str = "UTC",
        end_offset: int = 0,
        now: Clock | None = None,
    ) -> None:
        if type(week_starts_on) is not int or not 0 <= week_starts_on <= 6:
            raise PartitionError(
                f"week_starts_on must be an int from 0 (Monday) to 6 (Sunday), got "
                f"{week_starts_on!r}"
            )
        self._week_starts_on = week_starts_on
        super().__init__(start, end, timezone=timezone, end_offset=end_offset, now=now)

    @property
    def week_starts_on(self) -> int:
        """The weekday weeks start on, 0 for Monday through 6 for Sunday."""
        return self._week_starts_on

    def _floor(self, day: date) -> date:
        return day - timedelta(days=(day.weekday() - self._week_starts_on) % 7)

    def _after(self, boundary: date) -> date:
        return boundary + timedelta(weeks=1)

    def _locate(self, key: date) -> tuple[int, bool]:
        weeks, rest = divmod((key - self._start).days, 7)
        return weeks, not rest

    def _key(self, position: int) -> date:
        return self._start + timedelta(weeks=position)

    def _misaligned(self, key: date) -> str:
        return (
            f"is a {_WEEKDAYS[key.weekday()]}, but weeks start on "
            f"{_WEEKDAYS[self._week_starts_on]} (week_starts_on={self._week_starts_on})"
        )

    def _repr_fields(self) -> list[str]:
        fields = super()._repr_fields()
        if self._week_starts_on:
            fields.append(f"week_starts_on={self._week_starts_on}")
        return fields

    def _identity(self) -> tuple[object, ...]:
        return (*super()._identity(), self._week_starts_on)


class MonthlyPartitions(_CalendarPartitions):
    """One partition per calendar month; keys are the ``date`` of each month's first day.

    Args:
        start: The first month: a day-1 ``date`` or ``"2025-01"`` / ``"2025-01-01"``.
        end: The exclusive end (a day 1), or None for open-ended.
        timezone: The IANA zone whose calendar decides when a month is complete.
        end_offset: See :class:`TimeWindowPartitions`; 1 includes the current month.
        now: See :class:`TimeWindowPartitions`.

    Example:
        >>> months = MonthlyPartitions("2024-11", "2025-02")
        >>> list(months.keys())[-1], months.parse("2024-12")
        (datetime.date(2025, 1, 1), datetime.date(2024, 12, 1))
    """

    __slots__ = ()
    _unit = "month"
    _allow_month_text = True

    def __init__(
        self,
        start: date | datetime | str,
        end: date | datetime | str | None = None,
        *,
        timezone: str = "UTC",
        end_offset: int = 0,
        now: Clock | None = None,
    ) -> None:
        super().__init__(start, end, timezone=timezone, end_offset=end_offset, now=now)

    def _floor(self, day: date) -> date:
        return day.replace(day=1)

    def _after(self, boundary: date) -> date:
        year, month = divmod(boundary.month, 12)
        return date(boundary.year + year, month + 1, 1)

    def _locate(self, key: date) -> tuple[int, bool]:
        months = (key.year - self._start.year) * 12 + key.month - self._start.month
        return months, key.day == 1

    def _key(self, position: int) -> date:
        year, month = divmod(self._start.month - 1 + position, 12)
        return date(self._start.year + year, month + 1, 1)

    def _misaligned(self, key: date) -> str:
        return "is not the first day of a month"

    def _human_example(self) -> str:
        first = self._start
        return f"a month such as '{first:%Y-%m}' or '{first}'"
