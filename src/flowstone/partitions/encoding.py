"""The tagged text encoding of partition keys.

Partition keys are persisted as text: in the metadata store's columns and in JSON job
arguments. This encoding is therefore a contract: changing it orphans every stored key.

Each value is a tag, a colon and a payload::

    None                                    n:
    "us-east"                               s:us-east
    "a,b (c) 100%"                          s:a%2Cb %28c%29 100%25
    "d:2025-01-01"                          s:d:2025-01-01
    42, -7                                  i:42, i:-7
    date(2025, 1, 15)                       d:2025-01-15
    datetime(2025, 1, 15, 10, 30)           ndt:2025-01-15T10:30:00.000000
    datetime(2025, 1, 15, 10, tzinfo=ZoneInfo("Europe/Oslo"))
                                            dt:2025-01-15T09:00:00.000000Z
    ("acme", (1, date(2025, 1, 15)))        t:(s:acme,t:(i:1,d:2025-01-15))
    ()                                      t:()

Rules:

- ``s:``: the string with exactly ``%``, ``,``, ``(`` and ``)`` escaped as ``%25``, ``%2C``,
  ``%28`` and ``%29`` (upper-case hex); every other character is kept as is. A string payload
  therefore never contains a separator, so tuples need no length prefixes.
- ``i:``: decimal, ``-`` for negatives, no ``+``, no leading zeros, no ``-0``. ``bool`` is
  rejected (``True == 1`` would make the encoding ambiguous). ``IntEnum`` members encode as ints.
- ``d:``: ``date.isoformat()``; years are zero-padded to 4 digits.
- ``dt:``: an aware datetime converted to UTC, always with 6 fraction digits and a ``Z``. It
  decodes with ``tzinfo=datetime.UTC``: the same instant, not the same time zone.
- ``ndt:``: a naive datetime, always with 6 fraction digits. ``fold`` is not kept.
- ``t:``: a tuple, ``t:(`` + the items' encodings joined by ``,`` + ``)``; at most 32 levels deep.

Decoding is canonical: it accepts exactly what encoding produces, so ``encode(decode(s)) == s``
for every text that decodes, and it raises :class:`~flowstone.errors.PartitionError` for
anything else. Within one kind (dates, naive datetimes, aware datetimes) the text order is the
time order, so the store can sort and range-scan keys as text. Ints and strings do not sort.

Example:
    >>> from datetime import date
    >>> encode_partition(("eu", date(2025, 1, 15)))
    't:(s:eu,d:2025-01-15)'
    >>> decode_partition("t:(s:eu,d:2025-01-15)")
    ('eu', datetime.date(2025, 1, 15))
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timezone
from typing import TypeAlias

from flowstone.errors import PartitionError

__all__ = ["Partition", "decode_partition", "encode_partition", "partition_repr"]

Partition: TypeAlias = date | datetime | int | str | tuple["Partition", ...] | None
"""A partition key: a date, a datetime, an int, a str, None, or a tuple of these."""

_SUPPORTED = "str, int, date, datetime, None, or a tuple of these"
# Deep enough for any real key, shallow enough that neither side can hit the recursion limit.
_MAX_DEPTH = 32

_INT = re.compile(r"-?[1-9][0-9]*|0")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_DATETIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})"
)
_BAD_ESCAPE = re.compile(r"%(?!25|2C|28|29)")
_ITEM_END = re.compile(r"[,)]")


def encode_partition(value: object) -> str:
    """Encode a partition key as canonical tagged text.

    Args:
        value: A ``str``, ``int`` (not ``bool``), ``date``, ``datetime``, ``None``, or a tuple
            of these, nested at most 32 levels.

    Returns:
        The encoded key; see the module docstring for the format.

    Raises:
        PartitionError: The value (or an item of a tuple) has an unsupported type, or an aware
            datetime falls outside the representable range once converted to UTC.

    Example:
        >>> encode_partition("a,b")
        's:a%2Cb'
        >>> encode_partition((1, None))
        't:(i:1,n:)'
    """
    return _encode(value, 0)


def _encode(value: object, depth: int) -> str:
    # Exact-type checks first: str and date keys are the hot path of every materialization.
    if type(value) is str:
        return "s:" + _escape(value)
    if type(value) is date:
        return "d:" + value.isoformat()
    if type(value) is int:
        return "i:" + _int_text(value)
    if value is None:
        return "n:"
    if type(value) is datetime:
        return _encode_datetime(value)
    if type(value) is tuple:
        return _encode_tuple(value, depth)
    return _encode_subclass(value, depth)


def _encode_subclass(value: object, depth: int) -> str:
    if isinstance(value, bool):
        raise PartitionError(
            f"cannot use bool {value!r} as a partition key: it is ambiguous with the int "
            f"{int(value)}. Use the strings 'true'/'false' or the ints 1/0."
        )
    if isinstance(value, datetime):
        return _encode_datetime(value)
    if isinstance(value, date):
        return f"d:{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, int):
        return "i:" + _int_text(int(value))
    if isinstance(value, str):
        return "s:" + _escape(str.__str__(value))
    if isinstance(value, tuple):
        return _encode_tuple(value, depth)
    if isinstance(value, list):
        raise PartitionError(
            f"cannot use a list as a partition key: {_short(repr(value))}. Use a tuple: lists "
            "would not round-trip (keys decode as tuples)."
        )
    raise PartitionError(
        f"cannot use {type(value).__name__} {_short(repr(value))} as a partition key: "
        f"supported types are {_SUPPORTED}."
    )


def _encode_tuple(value: tuple[object, ...], depth: int) -> str:
    if depth >= _MAX_DEPTH:
        raise PartitionError(f"partition key tuples nest at most {_MAX_DEPTH} levels deep")
    return "t:(" + ",".join([_encode(item, depth + 1) for item in value]) + ")"


def _escape(text: str) -> str:
    # "%" first so the escapes added afterwards are not escaped again.
    return text.replace("%", "%25").replace(",", "%2C").replace("(", "%28").replace(")", "%29")


def _int_text(value: int) -> str:
    try:
        return str(value)
    except ValueError as exc:  # beyond sys.get_int_max_str_digits()
        raise PartitionError(f"int partition key is too large to encode: {exc}") from exc


def _encode_datetime(value: datetime) -> str:
    if value.utcoffset() is None:
        return "ndt:" + _datetime_text(value)
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise PartitionError(
            f"cannot encode {value.isoformat()}: it is outside the datetime range once "
            "converted to UTC"
        ) from exc
    return "dt:" + _datetime_text(utc) + "Z"


def _datetime_text(v: datetime) -> str:
    # Spelled out (not isoformat) so the width is fixed and datetime subclasses format alike.
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T"
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


def decode_partition(text: str) -> Partition:
    """Decode text produced by :func:`encode_partition`.

    Args:
        text: The encoded key.

    Returns:
        The key. Aware datetimes come back in UTC; tuples (and tuple subclasses) come back as
        plain tuples.

    Raises:
        PartitionError: The text is not exactly what :func:`encode_partition` produces.

    Example:
        >>> decode_partition("t:(s:acme,i:-3)")
        ('acme', -3)
    """
    if type(text) is not str:
        raise PartitionError(
            f"decode_partition expects str, got {type(text).__name__} {_short(repr(text))}"
        )
    value, pos = _parse(text, 0, 0)
    if pos != len(text):
        raise _malformed(text, f"unexpected {_short(text[pos:])!r} after a complete value")
    return value


def _parse(text: str, pos: int, depth: int) -> tuple[Partition, int]:
    if text.startswith("t:", pos):
        return _parse_tuple(text, pos + 2, depth)
    match = _ITEM_END.search(text, pos)
    end = match.start() if match else len(text)
    return _decode_scalar(text, text[pos:end]), end


def _parse_tuple(text: str, pos: int, depth: int) -> tuple[Partition, int]:
    if depth >= _MAX_DEPTH:
        raise _malformed(text, f"tuples nested more than {_MAX_DEPTH} levels deep")
    if not text.startswith("(", pos):
        raise _malformed(text, "expected '(' after 't:'")
    pos += 1
    if text.startswith(")", pos):
        return (), pos + 1
    items: list[Partition] = []
    while True:
        item, pos = _parse(text, pos, depth + 1)
        items.append(item)
        if pos >= len(text):
            raise _malformed(text, "unbalanced parentheses: missing ')'")
        sep = text[pos]
        if sep == ")":
            return tuple(items), pos + 1
        if sep != ",":
            raise _malformed(text, f"expected ',' or ')' at position {pos}, found {sep!r}")
        pos += 1


def _decode_scalar(text: str, item: str) -> Partition:
    tag, colon, body = item.partition(":")
    if not colon:
        raise _malformed(
            text, f"{_short(item)!r} has no tag (expected n:, s:, i:, d:, dt:, ndt:, t:)"
        )
    if tag == "s":
        return _unescape(text, body)
    if tag == "d":
        return _decode_date(text, body)
    if tag == "i":
        if not _INT.fullmatch(body):
            raise _malformed(text, f"'i:' needs a canonical decimal integer, got {_short(body)!r}")
        try:
            return int(body)
        except ValueError as exc:  # beyond sys.get_int_max_str_digits()
            raise _malformed(text, "integer too large") from exc
    if tag == "n":
        if body:
            raise _malformed(text, f"'n:' takes no payload, got {_short(body)!r}")
        return None
    if tag == "dt":
        if not body.endswith("Z"):
            raise _malformed(text, "'dt:' needs a UTC time ending in 'Z'")
        return _decode_datetime(text, body[:-1], "dt:", UTC)
    if tag == "ndt":
        return _decode_datetime(text, body, "ndt:", None)
    raise _malformed(text, f"unknown tag {_short(tag)!r} (expected n, s, i, d, dt, ndt or t)")


def _unescape(text: str, body: str) -> str:
    if "(" in body:
        raise _malformed(text, "unescaped '(' in a string (encoded as %28)")
    if "%" not in body:
        return body
    if _BAD_ESCAPE.search(body):
        raise _malformed(text, "bad percent escape in a string (only %25, %2C, %28, %29)")
    # Every "%" starts one of the four escapes, so "%25" goes last and nothing is decoded twice.
    return body.replace("%2C", ",").replace("%28", "(").replace("%29", ")").replace("%25", "%")


def _decode_date(text: str, body: str) -> date:
    match = _DATE.fullmatch(body)
    if match is None:
        raise _malformed(text, f"'d:' needs YYYY-MM-DD, got {_short(body)!r}")
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError as exc:
        raise _malformed(text, f"invalid date {body!r}: {exc}") from exc


def _decode_datetime(text: str, body: str, tag: str, tz: timezone | None) -> datetime:
    match = _DATETIME.fullmatch(body)
    if match is None:
        raise _malformed(text, f"{tag!r} needs YYYY-MM-DDTHH:MM:SS.ffffff, got {_short(body)!r}")
    try:
        year, month, day, hour, minute, second, micro = map(int, match.groups())
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise _malformed(text, f"invalid datetime {body!r}: {exc}") from exc


def _malformed(text: str, expected: str) -> PartitionError:
    return PartitionError(f"cannot decode partition {_short(text)!r}: {expected}")


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def partition_repr(p: Partition) -> str:
    """Return a short human form of a key for messages and CLI tables.

    Dates and datetimes use ISO 8601 (with the UTC offset when aware), ``None`` is ``-``,
    strings are shown as they are, and tuple items are joined with ``|``.

    Example:
        >>> from datetime import date
        >>> partition_repr(("acme", date(2025, 1, 15)))
        'acme|2025-01-15'
        >>> partition_repr(None)
        '-'
    """
    if isinstance(p, tuple):
        if not p:
            return "()"
        return "|".join([_nested_repr(item) for item in p])
    return _nested_repr(p)


def _nested_repr(p: Partition) -> str:
    if p is None:
        return "-"
    if isinstance(p, str):
        return p
    if isinstance(p, date):
        return p.isoformat()
    if isinstance(p, tuple):
        return "(" + "|".join([_nested_repr(item) for item in p]) + ")"
    return str(p)
