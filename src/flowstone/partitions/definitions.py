"""Partition definitions: which keys an asset has, in which order.

:class:`PartitionsDefinition` is the interface (four abstract methods) plus the behaviour every
definition shares: validation with helpful messages, ranges, equality. This module holds the
base, :class:`StaticPartitions` and :class:`MultiPartitions`; the calendar definitions live in
:mod:`flowstone.partitions.time_window`.

Conventions every definition follows:

- ``contains`` raises :class:`~flowstone.errors.PartitionError` for a key of the wrong *kind*
  (a ``str`` given to a daily definition, a naive datetime given to an hourly one) and returns
  ``False`` for a key of the right kind that is not in the definition.
- ``validate`` returns the canonical key (the stored one, or an aware datetime converted to the
  definition's zone) or raises saying what is wrong and what would be valid.
- ``index``/``key_at`` map keys to their position in ``keys()`` order, in O(1) for the built-ins.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from types import MappingProxyType
from typing import cast

from flowstone.errors import PartitionError, suggest
from flowstone.partitions.encoding import (
    Partition,
    decode_partition,
    encode_partition,
    partition_repr,
)

__all__ = ["MultiPartitions", "PartitionsDefinition", "StaticPartitions"]

_LISTED_KEYS = 10


class PartitionsDefinition(ABC):
    """The set of partition keys of an asset, in order.

    Subclasses implement :meth:`contains`, :meth:`keys`, :meth:`__len__` and :meth:`parse`, and
    should override :meth:`validate`, :meth:`index` and :meth:`key_at` with better messages and
    O(1) versions of the linear defaults. ``len()``, ``in`` and iteration work on every
    definition; a definition is always truthy, even when it has no keys yet.

    Example:
        >>> letters = StaticPartitions(["a", "b", "c", "d"])
        >>> list(letters.keys_between("b", "c")), letters.index("c")
        (['b', 'c'], 2)
    """

    __slots__ = ()

    @abstractmethod
    def contains(self, key: Partition) -> bool:
        """Return whether ``key`` is one of this definition's keys.

        Raises:
            PartitionError: ``key`` is of a kind this definition never holds.
        """

    @abstractmethod
    def keys(self) -> Iterator[Partition]:
        """Iterate over the keys in order, lazily."""

    @abstractmethod
    def __len__(self) -> int:
        """Return the number of keys, without iterating over them."""

    @abstractmethod
    def parse(self, text: str) -> Partition:
        """Turn what a CLI user types into a validated key.

        Accepts the definition's human form and the tagged encoding
        (anything :func:`~flowstone.partitions.decode_partition` accepts).

        Raises:
            PartitionError: The text is neither form, or names no key of this definition.
        """

    def validate(self, key: object) -> Partition:
        """Return the canonical form of ``key``, or raise if it is not a key.

        Raises:
            PartitionError: Says what is wrong with ``key`` and what would be valid.
        """
        encode_partition(key)  # rejects unsupported types with a clear message
        partition = cast("Partition", key)
        if not self.contains(partition):
            raise PartitionError(
                f"{partition_repr(partition)} is not a partition of {self.describe()}"
            )
        return partition

    def describe(self) -> str:
        """Return how error messages name this definition."""
        return repr(self)

    def index(self, key: Partition) -> int:
        """Return the position of ``key`` in :meth:`keys` order.

        Raises:
            PartitionError: ``key`` is not a key of this definition.
        """
        wanted = encode_partition(self.validate(key))
        for position, candidate in enumerate(self.keys()):
            if encode_partition(candidate) == wanted:
                return position
        raise PartitionError(f"{partition_repr(key)} is not a partition of {self.describe()}")

    def key_at(self, index: int) -> Partition:
        """Return the key at position ``index`` (0-based, no negative indexes).

        Raises:
            PartitionError: ``index`` is out of range.
        """
        self._check_position(index)
        return next(islice(self.keys(), index, None))

    def keys_between(self, start: Partition, end: Partition) -> Iterator[Partition]:
        """Iterate lazily over the keys from ``start`` to ``end``, both included.

        Both ends are validated before this returns, so a bad range fails at the call.

        Raises:
            PartitionError: Either end is not a key, or ``start`` comes after ``end``.
        """
        first, last = self.index(start), self.index(end)
        if first > last:
            raise PartitionError(
                f"the range start {partition_repr(start)} comes after its end "
                f"{partition_repr(end)} in {self.describe()}"
            )
        return self._iter_range(first, last + 1)

    def _iter_range(self, first: int, stop: int) -> Iterator[Partition]:
        return islice(self.keys(), first, stop)

    def _check_position(self, index: int) -> None:
        size = len(self)
        if not 0 <= index < size:
            raise PartitionError(
                f"partition index {index} is out of range: {self.describe()} has {size} keys"
            )

    def _identity(self) -> tuple[object, ...] | None:
        """Return what makes two definitions equal, or None for identity semantics."""
        return None

    def __contains__(self, key: object) -> bool:
        return self.contains(cast("Partition", key))

    def __iter__(self) -> Iterator[Partition]:
        return self.keys()

    def __bool__(self) -> bool:
        # Without this, an open-ended definition with no complete window yet would be falsy
        # and `if asset.partitions:` would treat the asset as unpartitioned.
        return True

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not type(self):
            return NotImplemented
        mine = self._identity()
        return mine is not None and mine == other._identity()

    def __hash__(self) -> int:
        identity = self._identity()
        return id(self) if identity is None else hash((type(self).__name__, identity))


def _show(key: Partition) -> str:
    return repr(key) if isinstance(key, str) else partition_repr(key)


class StaticPartitions(PartitionsDefinition):
    """A fixed list of keys, in the order given.

    Args:
        keys: The keys: any encodable values (usually strings), no duplicates.

    Raises:
        PartitionError: No keys, a duplicate, an unencodable key, or a single string was
            passed instead of a list of keys.

    Example:
        >>> regions = StaticPartitions(["us", "eu"])
        >>> "eu" in regions, len(regions)
        (True, 2)
        >>> regions.parse("us")
        'us'
    """

    __slots__ = ("_by_text", "_keys", "_positions")

    def __init__(self, keys: Iterable[Partition]) -> None:
        if isinstance(keys, str | bytes):
            raise PartitionError(
                f"StaticPartitions takes a list of keys, got the single string {keys!r}; "
                f"write StaticPartitions([{keys!r}])"
            )
        self._keys = tuple(keys)
        if not self._keys:
            raise PartitionError("StaticPartitions needs at least one key")
        # Positions are keyed by encoding so that 1 and True, or equal instants in different
        # zones, are told apart (or matched) exactly as the store will.
        self._positions: dict[str, int] = {}
        for position, key in enumerate(self._keys):
            try:
                encoded = encode_partition(key)
            except PartitionError as exc:
                raise PartitionError(f"static partition key #{position}: {exc}") from exc
            if encoded in self._positions:
                raise PartitionError(
                    f"duplicate static partition key {_show(key)} (positions "
                    f"{self._positions[encoded]} and {position}); keys must be unique"
                )
            self._positions[encoded] = position
        # Human text -> position; None marks text shared by two keys (1 and "1").
        self._by_text: dict[str, int | None] = {}
        for position, key in enumerate(self._keys):
            text = partition_repr(key)
            self._by_text[text] = None if text in self._by_text else position

    def contains(self, key: Partition) -> bool:
        """Return whether ``key`` is one of the static keys."""
        return encode_partition(key) in self._positions

    def keys(self) -> Iterator[Partition]:
        """Iterate over the keys in the order given."""
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def validate(self, key: object) -> Partition:
        """Return the stored key equal to ``key``, or raise listing the valid keys."""
        return self._keys[self.index(cast("Partition", key))]

    def index(self, key: Partition) -> int:
        """Return the position of ``key`` in O(1)."""
        position = self._positions.get(encode_partition(key))
        if position is None:
            raise PartitionError(self._not_a_key(key))
        return position

    def key_at(self, index: int) -> Partition:
        """Return the key at position ``index``."""
        self._check_position(index)
        return self._keys[index]

    def parse(self, text: str) -> Partition:
        """Return the key whose human form is ``text`` ("us"), or decode a tagged key."""
        if text in self._by_text:
            position = self._by_text[text]
            if position is None:
                tagged = ", ".join(
                    repr(encode_partition(k)) for k in self._keys if partition_repr(k) == text
                )
                raise PartitionError(
                    f"{text!r} names several static partitions; use the tagged form: {tagged}"
                )
            return self._keys[position]
        if ":" in text:
            try:
                decoded = decode_partition(text)
            except PartitionError:
                pass  # a key that merely looks tagged ("x:y"): report it as unknown below
            else:
                return self.validate(decoded)
        raise PartitionError(self._not_a_key(text))

    def _iter_range(self, first: int, stop: int) -> Iterator[Partition]:
        return map(self._keys.__getitem__, range(first, stop))

    def _not_a_key(self, key: Partition) -> str:
        listed = ", ".join(_show(k) for k in self._keys[:_LISTED_KEYS])
        if len(self._keys) > _LISTED_KEYS:
            listed += f", ... ({len(self._keys)} keys)"
        message = f"{_show(key)} is not one of the static partitions {listed}"
        matches = suggest(partition_repr(key), (partition_repr(k) for k in self._keys))
        if matches:
            message += " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"
        if not any(type(k) is type(key) for k in self._keys):
            kinds = sorted({type(k).__name__ for k in self._keys})
            message += f"; the keys are {'/'.join(kinds)}, got {type(key).__name__}"
        return message

    def _identity(self) -> tuple[object, ...]:
        return tuple(self._positions)

    def __repr__(self) -> str:
        shown = ", ".join(repr(k) for k in self._keys[:_LISTED_KEYS])
        if len(self._keys) > _LISTED_KEYS:
            return f"StaticPartitions([{shown}, ...], {len(self._keys)} keys)"
        return f"StaticPartitions([{shown}])"


class MultiPartitions(PartitionsDefinition):
    """The product of two or more named definitions.

    Keys are tuples with one value per dimension, in the order the dimensions were given;
    :meth:`keys` varies the last dimension fastest.

    Args:
        dimensions: Dimension name to definition, at least two.

    Raises:
        PartitionError: Fewer than two dimensions, a name that is not a non-empty string, or a
            value that is not a :class:`PartitionsDefinition`.

    Example:
        >>> grid = MultiPartitions({"region": StaticPartitions(["us", "eu"]),
        ...                         "tier": StaticPartitions(["free", "paid"])})
        >>> len(grid), grid.key_at(1)
        (4, ('us', 'paid'))
        >>> grid.parse("eu|free")
        ('eu', 'free')
    """

    __slots__ = ("_dimensions", "_names")

    def __init__(self, dimensions: Mapping[str, PartitionsDefinition]) -> None:
        if not isinstance(dimensions, Mapping):
            raise PartitionError(
                "MultiPartitions takes a mapping of dimension name to definition, got "
                f"{type(dimensions).__name__}"
            )
        if len(dimensions) < 2:
            raise PartitionError(
                f"MultiPartitions needs at least two dimensions, got {len(dimensions)}; use "
                "the single definition directly"
            )
        for name, definition in dimensions.items():
            if not isinstance(name, str) or not name:
                raise PartitionError(f"dimension names must be non-empty strings, got {name!r}")
            if not isinstance(definition, PartitionsDefinition):
                raise PartitionError(
                    f"dimension {name!r} must be a PartitionsDefinition, got "
                    f"{type(definition).__name__}"
                )
        self._names = tuple(dimensions)
        self._dimensions = tuple(dimensions.values())

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """The dimension names, in key order."""
        return self._names

    @property
    def dimensions(self) -> Mapping[str, PartitionsDefinition]:
        """Dimension name to definition, in key order (read-only)."""
        return MappingProxyType(dict(zip(self._names, self._dimensions, strict=True)))

    def contains(self, key: Partition) -> bool:
        """Return whether every value of the tuple ``key`` is in its dimension."""
        parts = self._split(key)
        return all(d.contains(p) for d, p in zip(self._dimensions, parts, strict=True))

    def keys(self) -> Iterator[Partition]:
        """Iterate over the product lazily, without buffering any dimension."""
        return self._product(0, ())

    def _product(self, level: int, prefix: tuple[Partition, ...]) -> Iterator[Partition]:
        if level == len(self._dimensions) - 1:
            for key in self._dimensions[level]:
                yield (*prefix, key)
            return
        for key in self._dimensions[level]:
            yield from self._product(level + 1, (*prefix, key))

    def __len__(self) -> int:
        return math.prod(len(d) for d in self._dimensions)

    def validate(self, key: object) -> tuple[Partition, ...]:
        """Return the key with each value validated by its dimension."""
        parts: list[Partition] = []
        for name, d, part in zip(self._names, self._dimensions, self._split(key), strict=True):
            try:
                parts.append(d.validate(part))
            except PartitionError as exc:
                raise self._dimension_error(name, exc) from exc
        return tuple(parts)

    def index(self, key: Partition) -> int:
        """Return the position of ``key`` in O(dimensions)."""
        position = 0
        for name, d, part in zip(self._names, self._dimensions, self._split(key), strict=True):
            try:
                inner = d.index(part)
            except PartitionError as exc:
                raise self._dimension_error(name, exc) from exc
            position = position * len(d) + inner
        return position

    def key_at(self, index: int) -> Partition:
        """Return the key at position ``index`` in O(dimensions)."""
        self._check_position(index)
        parts: list[Partition] = []
        for d in reversed(self._dimensions):
            index, inner = divmod(index, len(d))
            parts.append(d.key_at(inner))
        return tuple(reversed(parts))

    def parse(self, text: str) -> Partition:
        """Parse ``"us|2025-01-15"`` (one human form per dimension) or a tagged tuple."""
        if text.startswith("t:("):
            return self.validate(decode_partition(text))
        parts = text.split("|")
        if len(parts) != len(self._names):
            example = "|".join(f"<{name}>" for name in self._names)
            raise PartitionError(
                f"cannot parse {text!r} as a partition of {self.describe()}: expected "
                f"{len(self._names)} values separated by '|' ({example})"
            )
        keys: list[Partition] = []
        for name, d, part in zip(self._names, self._dimensions, parts, strict=True):
            try:
                keys.append(d.parse(part.strip()))
            except PartitionError as exc:
                raise self._dimension_error(name, exc) from exc
        return tuple(keys)

    def _iter_range(self, first: int, stop: int) -> Iterator[Partition]:
        return map(self.key_at, range(first, stop))

    def _split(self, key: object) -> tuple[Partition, ...]:
        if not isinstance(key, tuple) or len(key) != len(self._names):
            raise PartitionError(
                f"expected a tuple of {len(self._names)} values ({', '.join(self._names)}) for "
                f"{self.describe()}, got {type(key).__name__} {key!r}"
            )
        return cast("tuple[Partition, ...]", key)

    def _dimension_error(self, name: str, exc: PartitionError) -> PartitionError:
        return PartitionError(f"dimension {name!r} of {self.describe()}: {exc}")

    def _identity(self) -> tuple[object, ...]:
        return tuple(zip(self._names, self._dimensions, strict=True))

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{n!r}: {d!r}" for n, d in zip(self._names, self._dimensions, strict=True)
        )
        return f"MultiPartitions({{{inner}}})"
