"""Partition sets: a chosen subset of a definition's keys, stored compactly and read lazily.

A backfill over "every hour of twelve years" covers 105,000 keys. Its set is stored as one range
``{"start": "dt:2013-01-01T00:00:00.000000Z", "end": "dt:...", "size": 105192}`` and walked
by position with :meth:`PartitionsDefinition.key_at` (O(1) for the built-in definitions), so no
list of keys is ever built, in memory or in the database. Explicit keys are sorted into the
definition's order and runs of consecutive keys become ranges too; the rest stay listed.

Keys are stored in their tagged encoding (never pickled). A range also stores its size, so a
definition whose keys changed since (a new start, another time zone) is caught rather than
silently walked differently.

Example:
    >>> import datetime as dt
    >>> from flowstone.partitions import DailyPartitions
    >>> days = DailyPartitions("2025-01-01", "2025-02-01")
    >>> chosen = PartitionSet.of_keys(days, [dt.date(2025, 1, d) for d in (5, 2, 3, 4, 20)])
    >>> chosen.to_json()["segments"], len(chosen)
    ([{'start': 'd:2025-01-02', 'end': 'd:2025-01-05', 'size': 4}, {'keys': ['d:2025-01-20']}], 5)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from flowstone.errors import PartitionError
from flowstone.partitions.definitions import PartitionsDefinition
from flowstone.partitions.encoding import (
    Partition,
    decode_partition,
    encode_partition,
    partition_repr,
)

__all__ = ["KeyList", "KeyRange", "PartitionChoice", "PartitionSet", "decode_key"]

#: What a caller may ask for: a list of keys, "all", or nothing (then a range is given).
PartitionChoice = Sequence[Partition] | Literal["all"] | None

#: Consecutive keys stored as a range rather than listed, from this many on.
MIN_RANGE = 3
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The definition's keys from ``start`` to ``end`` (encoded, both included)."""

    start: str
    end: str
    size: int


@dataclass(frozen=True, slots=True)
class KeyList:
    """Keys listed one by one (encoded), in the definition's order."""

    keys: tuple[str, ...]


Segment = KeyRange | KeyList


def _size(segment: Segment) -> int:
    return segment.size if isinstance(segment, KeyRange) else len(segment.keys)


class PartitionSet:
    """An ordered set of partition keys of one definition, as ranges and key lists.

    Build one with :meth:`of_keys`, :meth:`of_range` or :meth:`of_all`; walk it with
    :meth:`chunks`. Positions (0 to ``len - 1``) follow the definition's order.
    """

    __slots__ = ("_size", "segments")

    def __init__(self, segments: Sequence[Segment]) -> None:
        self.segments = tuple(segments)
        self._size = sum(_size(s) for s in self.segments)

    # --- building --------------------------------------------------------------------------
    @classmethod
    def of_keys(cls, definition: PartitionsDefinition, keys: Iterable[object]) -> PartitionSet:
        """The given keys (validated; duplicates dropped), in the definition's order.

        Raises:
            PartitionError: a key is not in the definition, or no key was given.
        """
        positions = sorted({definition.index(definition.validate(key)) for key in keys})
        if not positions:
            raise PartitionError("No partitions given: pass at least one partition key.")
        segments: list[Segment] = []
        listed: list[str] = []
        run_start = 0
        for i in range(1, len(positions) + 1):
            if i < len(positions) and positions[i] == positions[i - 1] + 1:
                continue
            run = positions[run_start:i]
            if len(run) >= MIN_RANGE:
                if listed:
                    segments.append(KeyList(tuple(listed)))
                    listed = []
                segments.append(cls._range(definition, run[0], run[-1]))
            else:
                listed.extend(encode_partition(definition.key_at(p)) for p in run)
            run_start = i
        if listed:
            segments.append(KeyList(tuple(listed)))
        return cls(segments)

    @classmethod
    def of_range(
        cls,
        definition: PartitionsDefinition,
        start: object = None,
        end: object = None,
    ) -> PartitionSet:
        """The keys from ``start`` to ``end``, both included (None: the first, the last).

        Raises:
            PartitionError: an end is not a key, ``start`` comes after ``end``, or the
                definition has no keys yet.
        """
        if len(definition) == 0:
            raise PartitionError(f"{definition.describe()} has no partitions yet.")
        first = 0 if start is None else definition.index(definition.validate(start))
        last = len(definition) - 1 if end is None else definition.index(definition.validate(end))
        if first > last:
            raise PartitionError(
                f"The range start {partition_repr(definition.key_at(first))} comes after its "
                f"end {partition_repr(definition.key_at(last))}: swap them."
            )
        return cls([cls._range(definition, first, last)])

    @classmethod
    def of_all(cls, definition: PartitionsDefinition) -> PartitionSet:
        """Every key the definition has now (an open-ended definition's later keys are not
        included: the set is fixed when it is made)."""
        return cls.of_range(definition)

    @classmethod
    def choose(
        cls,
        definition: PartitionsDefinition,
        partitions: PartitionChoice = None,
        start: Partition = None,
        end: Partition = None,
    ) -> PartitionSet:
        """The set a caller asked for: a list of keys, ``"all"``, or a range (either end may be
        left out), exactly one of them.

        Raises:
            PartitionError: none or several were given, or a key is not in the definition.
        """
        if partitions is not None and (start is not None or end is not None):
            raise PartitionError("Give partitions=[...] or start=/end=, not both.")
        if isinstance(partitions, str):
            if partitions != "all":
                raise PartitionError(
                    "partitions= takes a list of partitions or 'all', got the string "
                    f"{partitions!r}."
                )
            return cls.of_all(definition)
        if partitions is not None:
            return cls.of_keys(definition, partitions)
        if start is None and end is None:
            raise PartitionError(
                "Say which partitions to backfill: partitions=[...], start= and/or end=, or "
                "partitions='all' (on the command line: --partitions, --from/--to, or --all)."
            )
        return cls.of_range(definition, start, end)

    @staticmethod
    def _range(definition: PartitionsDefinition, first: int, last: int) -> KeyRange:
        return KeyRange(
            encode_partition(definition.key_at(first)),
            encode_partition(definition.key_at(last)),
            last - first + 1,
        )

    # --- JSON ------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The set as JSON-compatible data."""
        return {
            "format": _FORMAT,
            "size": self._size,
            "segments": [
                {"start": s.start, "end": s.end, "size": s.size}
                if isinstance(s, KeyRange)
                else {"keys": list(s.keys)}
                for s in self.segments
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PartitionSet:
        """Read back what :meth:`to_json` wrote.

        Raises:
            PartitionError: the data is not a partition set this version can read.
        """
        try:
            if data.get("format") != _FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            segments: list[Segment] = []
            for raw in data["segments"]:
                if "keys" in raw:
                    segments.append(KeyList(tuple(str(k) for k in raw["keys"])))
                else:
                    segments.append(KeyRange(str(raw["start"]), str(raw["end"]), int(raw["size"])))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise PartitionError(
                f"Cannot read a stored partition set ({exc}); it was written by another "
                "version of FlowStone. Start a new backfill."
            ) from exc
        return cls(segments)

    # --- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._size

    def describe(self, limit: int = 3) -> str:
        """A short human description: ``2025-01-01..2025-12-31`` or ``us, eu``."""
        parts: list[str] = []
        for segment in self.segments:
            if isinstance(segment, KeyRange):
                parts.append(f"{_human(segment.start)}..{_human(segment.end)}")
            else:
                parts.extend(_human(k) for k in segment.keys)
        shown = ", ".join(parts[:limit])
        return shown + (f", ... ({len(parts) - limit} more)" if len(parts) > limit else "")

    def iter_from(
        self, definition: PartitionsDefinition, start: int = 0
    ) -> Iterator[tuple[int, Partition]]:
        """``(position, key)`` for every key from position ``start`` on, lazily.

        Raises:
            PartitionError: the definition no longer has a key of the set, or a range of it
                has changed size (the definition was changed since the set was made).
        """
        base = 0
        for segment in self.segments:
            size = _size(segment)
            if start >= base + size:
                base += size
                continue
            offset = max(0, start - base)
            if isinstance(segment, KeyRange):
                first = self._check_range(definition, segment)
                for i in range(offset, size):
                    yield base + i, definition.key_at(first + i)
            else:
                for i in range(offset, size):
                    yield base + i, decode_key(definition, segment.keys[i])
            base += size

    def chunks(
        self, definition: PartitionsDefinition, size: int, start: int = 0
    ) -> Iterator[list[tuple[int, Partition]]]:
        """:meth:`iter_from` in lists of at most ``size`` keys: only one list is in memory."""
        keys = self.iter_from(definition, start)
        while chunk := list(islice(keys, size)):
            yield chunk

    @staticmethod
    def _check_range(definition: PartitionsDefinition, segment: KeyRange) -> int:
        first = definition.index(decode_key(definition, segment.start))
        last = definition.index(decode_key(definition, segment.end))
        if last - first + 1 != segment.size:
            raise PartitionError(
                f"The partitions {_human(segment.start)}..{_human(segment.end)} were "
                f"{segment.size} keys when this set was made and are {last - first + 1} in "
                f"{definition.describe()} now: the definition changed. Start a new backfill."
            )
        return first

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartitionSet) and self.segments == other.segments

    def __hash__(self) -> int:
        return hash(self.segments)

    def __repr__(self) -> str:
        return f"PartitionSet({self.describe()}, {self._size} keys)"


def decode_key(definition: PartitionsDefinition, encoded: str) -> Partition:
    """The key stored as ``encoded``, validated against ``definition``.

    Raises:
        PartitionError: the definition no longer has that key.
    """
    try:
        return definition.validate(decode_partition(encoded))
    except PartitionError as exc:
        raise PartitionError(
            f"Stored partition {_human(encoded)} is no longer valid for "
            f"{definition.describe()} ({exc}): the definition changed. Start a new backfill."
        ) from exc


def _human(encoded: str) -> str:
    try:
        return partition_repr(decode_partition(encoded))
    except PartitionError:
        return encoded
