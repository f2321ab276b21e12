"""Partition mappings: which upstream partitions one downstream partition reads.

By default a partition flows unchanged from an upstream asset to the assets below it (the
*identity*), which needs both to be partitioned the same way. A mapping, given per dependency
with ``@asset(partition_mappings={"upstream": ...})``, says otherwise:

- ``IdentityMapping()``: the upstream partition equal to ``p``; the asset gets the value.
- ``AllPartitions()``: every partition of the upstream; a dict.
- ``LastPartitions(n)``: the ``n`` upstream partitions up to ``p`` (below an unpartitioned
  asset, the last ``n``); a dict.
- ``TimeWindowMapping()``: the upstream windows that overlap ``p``'s window (the 24 hourly
  partitions of a day; for an hour, the day that holds it); the value when one upstream window
  always holds ``p``'s, else a dict.
- ``DimensionMapping(dim)``: the ``dim`` part of a multi-dimensional ``p`` (the value), or
  every upstream partition whose ``dim`` part is ``p`` (a dict).

A dict maps each upstream partition key (a ``date``, ``datetime``, ``str`` or tuple) to its
value, oldest first. Whether an asset gets a value or a dict depends only on the mapping and
the two definitions, never on the data, so the function's code can rely on it.

Every upstream partition a mapping names must have a successful materialization, or the step
fails with :class:`~flowstone.errors.MissingUpstreamError` naming the missing ones (and the plan
refuses a partition the upstream definition does not hold, such as an hour that is not over
yet). ``allow_missing=True`` reads what exists instead, for assets that are meant to work on
partial data.

Example::

    @fs.asset(partitioned_by=fs.HourlyPartitions(start="2025-01-01"))
    def events(ctx): ...

    @fs.asset(
        partitioned_by=fs.DailyPartitions(start="2025-01-01"),
        partition_mappings={"events": fs.TimeWindowMapping()},
    )
    def daily_events(events: dict[datetime, list[dict]]) -> int:
        return sum(len(hour) for hour in events.values())
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from datetime import datetime, timedelta

from flowstone.errors import DefinitionError, PartitionError
from flowstone.partitions.definitions import MultiPartitions, PartitionsDefinition
from flowstone.partitions.encoding import Partition, partition_repr
from flowstone.partitions.time_window import (
    HourlyPartitions,
    MonthlyPartitions,
    TimeWindowPartitions,
    WeeklyPartitions,
    _CalendarPartitions,
)

__all__ = [
    "AllPartitions",
    "DimensionMapping",
    "IdentityMapping",
    "LastPartitions",
    "PartitionMapping",
    "TimeWindowMapping",
]

_TICK = timedelta(microseconds=1)


class PartitionMapping(ABC):
    """How a downstream partition reads an upstream asset's partitions.

    Subclasses answer three questions: whether they fit two definitions (:meth:`check`),
    whether the asset receives one value or a dict (:meth:`many`), and which upstream
    partitions a downstream partition reads (:meth:`upstream_partitions`).
    """

    __slots__ = ("_allow_missing",)

    def __init__(self, *, allow_missing: bool = False) -> None:
        if not isinstance(allow_missing, bool):
            raise DefinitionError(f"allow_missing must be True or False, got {allow_missing!r}")
        self._allow_missing = allow_missing

    @property
    def allow_missing(self) -> bool:
        """Whether upstream partitions that do not exist are left out instead of failing."""
        return self._allow_missing

    @abstractmethod
    def check(
        self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition
    ) -> None:
        """Raise :class:`DefinitionError` (saying what would fit) unless this mapping can map
        ``downstream`` partitions (None: an unpartitioned asset) onto ``upstream`` ones."""

    @abstractmethod
    def many(self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition) -> bool:
        """Whether the asset receives a dict of partition to value (True) or one value."""

    @abstractmethod
    def upstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        *,
        as_of: datetime | None = None,
    ) -> tuple[Partition, ...]:
        """The upstream partitions ``partition`` reads, in the upstream's order.

        ``as_of`` fixes "now" for open-ended time windows (a run's creation time), so a step
        reads what its run planned even when it runs after a new window has completed.

        Raises:
            PartitionError: a partition it needs is not in the upstream definition (unless
                ``allow_missing``).
        """

    def downstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition,
        upstream: PartitionsDefinition,
    ) -> tuple[Partition, ...] | None:
        """The downstream partitions that may read upstream ``partition`` (a superset is
        fine: callers check each with :meth:`upstream_partitions`), or None when only a scan
        of every downstream partition can tell. Lets the distributed scheduler find the steps
        a success may make ready with point lookups."""
        return None

    def describe(self) -> str:
        """How messages name this mapping."""
        return repr(self)

    def __repr__(self) -> str:
        extra = "allow_missing=True" if self._allow_missing else ""
        return f"{type(self).__name__}({extra})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def _key(self) -> tuple[object, ...]:
        return (self._allow_missing,)

    # --- shared helpers --------------------------------------------------------------------
    def _span(
        self,
        upstream: PartitionsDefinition,
        first: int,
        last: int,
        why: str,
        as_of: datetime | None,
    ) -> tuple[Partition, ...]:
        """The upstream keys at positions ``first .. last``; positions outside the definition
        (as of ``as_of``) fail, or are dropped with ``allow_missing``."""
        size = size_as_of(upstream, as_of)
        if (first < 0 or last >= size) and not self._allow_missing:
            held = (
                "holds no partition yet"
                if size == 0
                else f"holds {partition_repr(upstream.key_at(0))} to "
                f"{partition_repr(upstream.key_at(size - 1))}"
            )
            raise PartitionError(
                f"{why} needs upstream partitions that {upstream.describe()} does not hold "
                f"(it {held}). Wait until they exist, or pass allow_missing=True to "
                f"{type(self).__name__} to read the ones that do."
            )
        return _keys_at(upstream, max(first, 0), min(last, size - 1) + 1)


class IdentityMapping(PartitionMapping):
    """The downstream partition reads the upstream partition with the same key (the default
    between two assets partitioned the same way).

    Given explicitly, it also joins two definitions of the same kind that differ in range,
    e.g. a static upstream holding more keys than the downstream.
    """

    __slots__ = ()

    def check(
        self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition
    ) -> None:
        if downstream is None:
            raise DefinitionError(
                "IdentityMapping needs a partitioned downstream asset; an unpartitioned asset "
                "has no partition key to pass on (use AllPartitions() or LastPartitions(n))"
            )

    def many(self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition) -> bool:
        return False

    def upstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        *,
        as_of: datetime | None = None,
    ) -> tuple[Partition, ...]:
        if downstream is upstream or downstream == upstream:
            return (partition,)  # validated against the downstream definition already
        try:
            return (upstream.validate(partition),)
        except PartitionError:
            if self._allow_missing:
                return ()
            raise

    def downstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition,
        upstream: PartitionsDefinition,
    ) -> tuple[Partition, ...] | None:
        return (partition,)


class AllPartitions(PartitionMapping):
    """Every partition of the upstream asset (as of now, for an open-ended time window).

    The asset receives a dict of partition to value. Typical below an unpartitioned summary::

        @fs.asset(partition_mappings={"daily_sales": fs.AllPartitions()})
        def sales_to_date(daily_sales: dict[date, float]) -> float:
            return sum(daily_sales.values())
    """

    __slots__ = ()

    def check(
        self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition
    ) -> None:
        return None  # any downstream can read everything

    def many(self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition) -> bool:
        return True

    def upstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        *,
        as_of: datetime | None = None,
    ) -> tuple[Partition, ...]:
        if isinstance(upstream, TimeWindowPartitions):
            return _keys_at(upstream, 0, size_as_of(upstream, as_of))
        return tuple(upstream.keys())


class LastPartitions(PartitionMapping):
    """The last ``n`` upstream partitions: a rolling window.

    Below a partitioned asset, the ``n`` upstream partitions that end with the downstream
    partition (same definition), or with the last upstream window that starts before the
    downstream window ends (two time windows: ``LastPartitions(48)`` of hourly data for a
    day is that day and the one before). Near the start of the upstream definition there
    are fewer than ``n``. Below an unpartitioned asset, the upstream's last ``n`` partitions.

    The asset receives a dict of partition to value, oldest first.

    Args:
        n: How many partitions, at least 1.
        allow_missing: Read the partitions that exist when some are not (yet) partitions
            of the upstream or never succeeded, instead of failing.
    """

    __slots__ = ("_n",)

    def __init__(self, n: int, *, allow_missing: bool = False) -> None:
        super().__init__(allow_missing=allow_missing)
        if type(n) is not int or n < 1:
            raise DefinitionError(f"LastPartitions(n) needs a whole number n >= 1, got {n!r}")
        self._n = n

    @property
    def n(self) -> int:
        """How many partitions the window holds."""
        return self._n

    def check(
        self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition
    ) -> None:
        if downstream is None or downstream == upstream:
            return
        if isinstance(downstream, TimeWindowPartitions) and isinstance(
            upstream, TimeWindowPartitions
        ):
            return
        raise DefinitionError(
            f"LastPartitions({self._n}) reads a window of {upstream.describe()} ending at each "
            f"partition of {downstream.describe()}, which needs the same definition or two "
            "time windows (or an unpartitioned downstream asset)"
        )

    def many(self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition) -> bool:
        return True

    def upstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        *,
        as_of: datetime | None = None,
    ) -> tuple[Partition, ...]:
        if downstream is None:
            size = size_as_of(upstream, as_of)
            if size == 0 and not self._allow_missing:
                raise PartitionError(
                    f"LastPartitions({self._n}) has nothing to read: {upstream.describe()} "
                    "holds no partition yet (pass allow_missing=True to read none)"
                )
            return _keys_at(upstream, max(size - self._n, 0), size)
        if downstream is upstream or downstream == upstream:
            last = upstream.index(partition)
        else:
            assert isinstance(downstream, TimeWindowPartitions)  # check() allowed nothing else
            assert isinstance(upstream, TimeWindowPartitions)
            last = upstream.position_at(downstream.window(partition)[1] - _TICK)
        why = f"{partition_repr(partition)} (LastPartitions({self._n}))"
        # Fewer than n near the upstream's start is the nature of a rolling window, not a gap;
        # a window that ends before the upstream starts is one.
        first = max(last - self._n + 1, 0) if last >= 0 else last
        return self._span(upstream, first, last, why, as_of)

    def downstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition,
        upstream: PartitionsDefinition,
    ) -> tuple[Partition, ...] | None:
        if downstream is not upstream and downstream != upstream:
            return None
        at = upstream.index(partition)
        return _keys_at(downstream, at, min(at + self._n, len(downstream)))

    def __repr__(self) -> str:
        extra = ", allow_missing=True" if self._allow_missing else ""
        return f"LastPartitions({self._n}{extra})"

    def _key(self) -> tuple[object, ...]:
        return (self._n, self._allow_missing)


class TimeWindowMapping(PartitionMapping):
    """The upstream time windows that overlap the downstream partition's window.

    24 hourly partitions feed one daily partition (23 or 25 on a daylight-saving day); a
    daily upstream feeds each of its hours; weeks and months work the same way, in each
    definition's own time zone. The asset receives the value itself when one upstream window
    always holds the downstream one (a day for an hour, a month for a day, both in the same
    zone), and a dict of partition to value otherwise (the hours of a day, the weeks that
    touch a month).

    Args:
        allow_missing: Read the windows that exist when some are not (yet) partitions of the
            upstream (the current hour of today, or before its start) or never succeeded.
    """

    __slots__ = ()

    def check(
        self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition
    ) -> None:
        if isinstance(downstream, TimeWindowPartitions) and isinstance(
            upstream, TimeWindowPartitions
        ):
            return
        shown = "an unpartitioned asset" if downstream is None else downstream.describe()
        raise DefinitionError(
            f"TimeWindowMapping maps time windows onto time windows, not {shown} onto "
            f"{upstream.describe()}"
        )

    def many(self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition) -> bool:
        assert isinstance(downstream, TimeWindowPartitions)
        assert isinstance(upstream, TimeWindowPartitions)
        return not _nests(downstream, upstream)

    def upstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        *,
        as_of: datetime | None = None,
    ) -> tuple[Partition, ...]:
        assert isinstance(downstream, TimeWindowPartitions)
        assert isinstance(upstream, TimeWindowPartitions)
        start, end = downstream.window(partition)
        first, last = upstream.position_at(start), upstream.position_at(end - _TICK)
        return self._span(upstream, first, last, partition_repr(partition), as_of)

    def downstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition,
        upstream: PartitionsDefinition,
    ) -> tuple[Partition, ...] | None:
        assert isinstance(downstream, TimeWindowPartitions)
        assert isinstance(upstream, TimeWindowPartitions)
        start, end = upstream.window(partition)
        first, last = downstream.position_at(start), downstream.position_at(end - _TICK)
        return _keys_at(downstream, max(first, 0), min(last + 1, len(downstream)))


class DimensionMapping(PartitionMapping):
    """Join one dimension of a multi-dimensional partition to a single-dimension one.

    A multi-dimensional downstream reads, for ``("eu", 2025-01-02)``, the upstream partition
    ``2025-01-02`` (``DimensionMapping("day")``), as a value. A single-dimension downstream
    reads every upstream partition whose ``day`` part is its own key, as a dict keyed by the
    upstream tuples. The dimension must be partitioned the same way on both sides.

    Args:
        dimension: The name of the shared dimension of the :class:`MultiPartitions`.
        allow_missing: Read the partitions that exist when some never succeeded.
    """

    __slots__ = ("_dimension",)

    def __init__(self, dimension: str, *, allow_missing: bool = False) -> None:
        super().__init__(allow_missing=allow_missing)
        if not isinstance(dimension, str) or not dimension:
            raise DefinitionError(f"DimensionMapping needs a dimension name, got {dimension!r}")
        self._dimension = dimension

    @property
    def dimension(self) -> str:
        """The dimension both sides share."""
        return self._dimension

    def check(
        self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition
    ) -> None:
        multi, single = (
            (downstream, upstream)
            if isinstance(downstream, MultiPartitions)
            else (upstream, downstream)
        )
        if not isinstance(multi, MultiPartitions) or isinstance(single, MultiPartitions):
            raise DefinitionError(
                f"{self!r} joins a MultiPartitions asset with a single-dimension one; here "
                "exactly one side must be MultiPartitions"
            )
        if single is None:
            raise DefinitionError(f"{self!r} needs a partitioned downstream asset")
        dimensions = multi.dimensions
        if self._dimension not in dimensions:
            raise DefinitionError(
                f"{multi.describe()} has no dimension {self._dimension!r}; it has "
                f"{list(dimensions)}"
            )
        if dimensions[self._dimension] != single:
            raise DefinitionError(
                f"dimension {self._dimension!r} is {dimensions[self._dimension].describe()}, "
                f"but the other asset is partitioned by {single.describe()}; they must be the "
                "same definition"
            )

    def many(self, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition) -> bool:
        return not isinstance(downstream, MultiPartitions)

    def upstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        *,
        as_of: datetime | None = None,
    ) -> tuple[Partition, ...]:
        if isinstance(downstream, MultiPartitions):
            assert isinstance(partition, tuple)
            return (partition[downstream.dimension_names.index(self._dimension)],)
        assert isinstance(upstream, MultiPartitions)
        # The grid's keys with this value in the shared dimension, in the grid's order: the
        # product of the other dimensions' keys around it (no scan of the whole grid).
        value = upstream.dimensions[self._dimension].validate(partition)
        axes = [
            (value,) if name == self._dimension else tuple(upstream.dimensions[name])
            for name in upstream.dimension_names
        ]
        return tuple(itertools.product(*axes))

    def downstream_partitions(
        self,
        partition: Partition,
        downstream: PartitionsDefinition,
        upstream: PartitionsDefinition,
    ) -> tuple[Partition, ...] | None:
        if isinstance(upstream, MultiPartitions):
            assert isinstance(partition, tuple)
            return (partition[upstream.dimension_names.index(self._dimension)],)
        return None  # every grid key with this day: the scan finds them

    def __repr__(self) -> str:
        extra = ", allow_missing=True" if self._allow_missing else ""
        return f"DimensionMapping({self._dimension!r}{extra})"

    def _key(self) -> tuple[object, ...]:
        return (self._dimension, self._allow_missing)


def size_as_of(definition: PartitionsDefinition, as_of: datetime | None) -> int:
    """How many keys ``definition`` held at ``as_of`` (now when None): open-ended time windows
    grow with the clock; every other definition is fixed."""
    if as_of is None or not isinstance(definition, TimeWindowPartitions):
        return len(definition)
    return min(len(definition), definition.size_as_of(as_of))


def _keys_at(definition: PartitionsDefinition, first: int, stop: int) -> tuple[Partition, ...]:
    # key_at is O(1) on time windows; keys() would walk from the start of the definition.
    return tuple(definition.key_at(i) for i in range(first, stop))


def _nests(inner: TimeWindowPartitions, outer: TimeWindowPartitions) -> bool:
    """Whether every window of ``inner`` lies within one window of ``outer``, whatever the
    key: a finer (or equal) grid in the same zone, except weeks within months."""
    if inner.timezone != outer.timezone:
        return False
    if isinstance(outer, HourlyPartitions):
        return isinstance(inner, HourlyPartitions)
    if isinstance(outer, WeeklyPartitions):
        if isinstance(inner, WeeklyPartitions):
            return inner.week_starts_on == outer.week_starts_on
        return not isinstance(inner, MonthlyPartitions)
    if isinstance(outer, MonthlyPartitions):
        return not isinstance(inner, WeeklyPartitions)
    # Daily: hours and days.
    assert isinstance(outer, _CalendarPartitions)
    return isinstance(inner, HourlyPartitions) or type(inner) is type(outer)
