"""The tagged partition encoding: a persisted contract, so every rule is pinned here."""

from __future__ import annotations

import doctest
import enum
import time
from collections import namedtuple
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

import flowstone.partitions.encoding as encoding_module
from flowstone.errors import FlowStoneError, PartitionError
from flowstone.partitions import Partition, decode_partition, encode_partition, partition_repr

OSLO = ZoneInfo("Europe/Oslo")


class Color(enum.IntEnum):
    RED = 1


class Region(enum.StrEnum):
    EU = "eu"


class CustomDate(date):
    pass


Pair = namedtuple("Pair", "a b")


# --- the format, value by value ---------------------------------------------------------------

ROUND_TRIPS: list[tuple[Partition, str]] = [
    (None, "n:"),
    ("", "s:"),
    ("us-east", "s:us-east"),
    ("a,b", "s:a%2Cb"),
    ("(x)", "s:%28x%29"),
    ("100%", "s:100%25"),
    ("%2C", "s:%252C"),
    ("%", "s:%25"),
    ("a|b:c", "s:a|b:c"),
    ("d:2025-01-01", "s:d:2025-01-01"),
    ("n:", "s:n:"),
    ("t:()", "s:t:%28%29"),
    ("i:1", "s:i:1"),
    ("ünïcødé 日本 🎉", "s:ünïcødé 日本 🎉"),
    (" spaced\ttab\nnewline ", "s: spaced\ttab\nnewline "),
    (0, "i:0"),
    (7, "i:7"),
    (-42, "i:-42"),
    (10**30, "i:1000000000000000000000000000000"),
    (date(2025, 1, 15), "d:2025-01-15"),
    (date(1, 1, 1), "d:0001-01-01"),
    (date(999, 12, 31), "d:0999-12-31"),
    (date(9999, 12, 31), "d:9999-12-31"),
    (datetime(2025, 1, 15, 10, 30), "ndt:2025-01-15T10:30:00.000000"),
    (datetime(2025, 1, 15, 10, 30, 5, 7), "ndt:2025-01-15T10:30:05.000007"),
    (datetime(1, 1, 1), "ndt:0001-01-01T00:00:00.000000"),
    (datetime(2025, 1, 15, 10, tzinfo=UTC), "dt:2025-01-15T10:00:00.000000Z"),
    (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "dt:9999-12-31T23:59:59.999999Z"),
    ((), "t:()"),
    (((),), "t:(t:())"),
    (("",), "t:(s:)"),
    (("", ""), "t:(s:,s:)"),
    (("a,b", None), "t:(s:a%2Cb,n:)"),
    (("acme", (1, date(2025, 1, 15))), "t:(s:acme,t:(i:1,d:2025-01-15))"),
    (("x)", ("(y", ("z,",))), "t:(s:x%29,t:(s:%28y,t:(s:z%2C)))"),
]


def same_shape(a: object, b: object) -> bool:
    """Equal, with the same types all the way down (so 1 vs '1' or date vs datetime differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        assert isinstance(b, tuple)
        return len(a) == len(b) and all(same_shape(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize(("value", "text"), ROUND_TRIPS)
def test_encode_matches_the_documented_format(value: Partition, text: str) -> None:
    assert encode_partition(value) == text


@pytest.mark.parametrize(("value", "text"), ROUND_TRIPS)
def test_decode_inverts_encode_with_the_same_types(value: Partition, text: str) -> None:
    assert same_shape(decode_partition(text), value)


def test_aware_datetimes_encode_as_utc_and_decode_with_utc_tzinfo() -> None:
    oslo_ten = datetime(2025, 1, 15, 10, tzinfo=OSLO)
    text = encode_partition(oslo_ten)
    assert text == "dt:2025-01-15T09:00:00.000000Z"
    decoded = decode_partition(text)
    assert isinstance(decoded, datetime)
    assert decoded.tzinfo is UTC
    assert decoded == oslo_ten
    offset = timezone(timedelta(hours=-3, minutes=-30))
    assert encode_partition(datetime(2025, 1, 15, 10, tzinfo=offset)) == (
        "dt:2025-01-15T13:30:00.000000Z"
    )


def test_the_two_instants_of_a_repeated_hour_encode_differently() -> None:
    first = datetime(2025, 10, 26, 2, tzinfo=OSLO)
    second = first.replace(fold=1)
    assert encode_partition(first) == "dt:2025-10-26T00:00:00.000000Z"
    assert encode_partition(second) == "dt:2025-10-26T01:00:00.000000Z"


def test_equal_instants_in_different_zones_encode_the_same() -> None:
    assert encode_partition(datetime(2025, 6, 1, 12, tzinfo=OSLO)) == encode_partition(
        datetime(2025, 6, 1, 10, tzinfo=UTC)
    )


def test_naive_datetime_ignores_fold() -> None:
    assert encode_partition(datetime(2025, 10, 26, 2, fold=1)) == "ndt:2025-10-26T02:00:00.000000"


def test_subclasses_encode_as_their_base_type() -> None:
    assert encode_partition(Color.RED) == "i:1"
    assert encode_partition(Region.EU) == "s:eu"
    assert encode_partition(CustomDate(2025, 1, 15)) == "d:2025-01-15"
    assert encode_partition(Pair("a", 1)) == "t:(s:a,i:1)"
    assert decode_partition("t:(s:a,i:1)") == ("a", 1)


# --- rejected values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        (True, ["bool", "ambiguous", "'true'/'false'"]),
        (False, ["bool", "ambiguous"]),
        (1.5, ["float", "supported types are str, int, date, datetime, None"]),
        (float("nan"), ["float"]),
        ([1, 2], ["list", "Use a tuple"]),
        ({"a": 1}, ["dict", "supported types"]),
        (b"raw", ["bytes", "supported types"]),
        ({1, 2}, ["set"]),
        (Decimal("1.5"), ["Decimal"]),
        (object(), ["object"]),
        (("ok", 2.5), ["float"]),
        (("ok", ("deeper", [1])), ["list"]),
        ((True,), ["bool"]),
    ],
)
def test_unsupported_values_are_rejected_with_the_type_named(
    value: object, fragments: list[str]
) -> None:
    with pytest.raises(PartitionError) as info:
        encode_partition(value)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_partition_error_is_a_flowstone_error() -> None:
    with pytest.raises(FlowStoneError):
        encode_partition(1.5)


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))),
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_aware_datetimes_that_overflow_in_utc_are_rejected(value: datetime) -> None:
    with pytest.raises(PartitionError, match="outside the datetime range"):
        encode_partition(value)


def nested(depth: int) -> Partition:
    value: Partition = ()
    for _ in range(depth):
        value = (value,)
    return value


def test_nesting_is_limited_on_both_sides() -> None:
    ok = nested(31)
    assert decode_partition(encode_partition(ok)) == ok
    with pytest.raises(PartitionError, match="32 levels"):
        encode_partition(nested(32))
    with pytest.raises(PartitionError, match="32 levels"):
        decode_partition("t:(" * 33 + ")" * 33)
    with pytest.raises(PartitionError):
        decode_partition("t:(" * 10_000)


# --- malformed text ---------------------------------------------------------------------------

MALFORMED = [
    ("", "no tag"),
    ("x", "no tag"),
    (":", "unknown tag"),
    ("us", "no tag"),
    ("q:1", "unknown tag 'q'"),
    ("S:abc", "unknown tag 'S'"),
    ("i:", "canonical decimal"),
    ("i:+1", "canonical decimal"),
    ("i: 1", "canonical decimal"),
    ("i:1 ", "canonical decimal"),
    ("i:007", "canonical decimal"),
    ("i:-0", "canonical decimal"),
    ("i:1.5", "canonical decimal"),
    ("i:1_000", "canonical decimal"),
    ("i:\u0661", "canonical decimal"),  # ARABIC-INDIC DIGIT ONE: int() would accept it
    ("i:" + "9" * 5000, "too large"),
    ("n:x", "no payload"),
    ("d:2025-1-15", "YYYY-MM-DD"),
    ("d:20250115", "YYYY-MM-DD"),
    ("d:2025-02-30", "invalid date"),
    ("d:0000-01-01", "invalid date"),
    ("d:2025-01-15T00:00", "YYYY-MM-DD"),
    ("dt:2025-01-15T10:00:00.000000", "ending in 'Z'"),
    ("dt:2025-01-15T10:00:00Z", "YYYY-MM-DDTHH:MM:SS.ffffff"),
    ("dt:2025-01-15T10:00:00.000000+00:00", "ending in 'Z'"),
    ("dt:2025-01-15T24:00:00.000000Z", "invalid datetime"),
    ("ndt:2025-01-15T10:00:00.000000Z", "YYYY-MM-DDTHH:MM:SS.ffffff"),
    ("ndt:2025-01-15 10:00:00.000000", "YYYY-MM-DDTHH:MM:SS.ffffff"),
    ("s:a,b", "unexpected ',b'"),
    ("s:a(b", "unescaped '('"),
    ("s:a)b", "unexpected ')b'"),
    ("s:100%", "bad percent escape"),
    ("s:%2c", "bad percent escape"),
    ("s:%41", "bad percent escape"),
    ("t:", "expected '('"),
    ("t:(", "no tag"),
    ("t:(i:1", "missing ')'"),
    ("t:(i:1))", "unexpected ')'"),
    ("t:(i:1,)", "no tag"),
    ("t:(,)", "no tag"),
    ("t:(t:()x)", "expected ',' or ')'"),
    ("t:()t:()", "unexpected 't:()'"),
    ("t(i:1)", "unknown tag"),
    (" i:1", "unknown tag"),
]


@pytest.mark.parametrize(("text", "expected"), MALFORMED)
def test_malformed_text_is_rejected_quoting_text_and_expectation(text: str, expected: str) -> None:
    with pytest.raises(PartitionError) as info:
        decode_partition(text)
    message = str(info.value)
    shown = text if len(text) <= 120 else text[:120] + "..."  # long input is cut in messages
    assert message.startswith(f"cannot decode partition {shown!r}")
    assert expected in message


def test_decode_rejects_non_text() -> None:
    with pytest.raises(PartitionError, match="expects str, got bytes"):
        decode_partition(b"s:a")  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

SAFE_MIN = datetime(2, 1, 1)
SAFE_MAX = datetime(9998, 12, 31)

aware_datetimes = st.datetimes(
    min_value=SAFE_MIN, max_value=SAFE_MAX, timezones=st.timezones()
)  # away from the year 1 / 9999 edges, where converting to UTC can overflow
scalars = st.one_of(
    st.none(),
    st.text(),
    st.integers(),
    st.dates(),
    st.datetimes(),
    aware_datetimes,
)
partitions = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4).map(tuple))


def canonical(value: Partition) -> object:
    """What a key decodes back to: aware datetimes in UTC, types kept, recursively."""
    if isinstance(value, tuple):
        return tuple(canonical(item) for item in value)
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(UTC)
    return value


def typed(value: object) -> object:
    if isinstance(value, tuple):
        return ("tuple", tuple(typed(item) for item in value))
    return (type(value).__name__, value)


@given(partitions)
def test_decode_inverts_encode(value: Partition) -> None:
    assert same_shape(decode_partition(encode_partition(value)), canonical(value))


@given(partitions, partitions)
def test_encode_is_injective(a: Partition, b: Partition) -> None:
    same_key = typed(canonical(a)) == typed(canonical(b))
    assert (encode_partition(a) == encode_partition(b)) == same_key


@given(st.dates(), st.dates())
def test_date_text_order_is_time_order(a: date, b: date) -> None:
    assert (a < b) == (encode_partition(a) < encode_partition(b))


@given(st.datetimes(), st.datetimes())
def test_naive_datetime_text_order_is_time_order(a: datetime, b: datetime) -> None:
    assert (a < b) == (encode_partition(a) < encode_partition(b))


@given(aware_datetimes, aware_datetimes)
def test_aware_datetime_text_order_is_instant_order(a: datetime, b: datetime) -> None:
    # Compared in UTC: Python compares two datetimes of one zone by wall time, ignoring fold.
    assert (a.astimezone(UTC) < b.astimezone(UTC)) == (encode_partition(a) < encode_partition(b))


TOKENS = [
    "n:",
    "s:",
    "i:",
    "d:",
    "dt:",
    "ndt:",
    "t:(",
    "(",
    ")",
    ",",
    "%2C",
    "%25",
    "%28",
    "%",
    "2C",
    "-",
    "0",
    "7",
    "a",
    ":",
    "2025-01-15",
    "T10:00:00.000000",
    "Z",
]
texts = st.one_of(
    st.text(),
    st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
    partitions.map(encode_partition),
)


@given(texts)
def test_decode_accepts_only_canonical_text(text: str) -> None:
    try:
        value = decode_partition(text)
    except PartitionError:
        return
    assert encode_partition(value) == text


def is_partition(value: object) -> bool:
    if isinstance(value, tuple):
        return all(is_partition(item) for item in value)
    return value is None or type(value) in (str, int, date, datetime)


@given(texts)
def test_decode_returns_a_key_or_raises_partition_error(text: str) -> None:
    # Any other exception (ValueError, RecursionError, IndexError...) fails the test.
    try:
        value = decode_partition(text)
    except PartitionError as exc:
        assert str(exc).startswith("cannot decode partition")
    else:
        assert is_partition(value)


# --- human form -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"),
        ("us", "us"),
        ("", ""),
        (42, "42"),
        (date(2025, 1, 15), "2025-01-15"),
        (datetime(2025, 1, 15, 10, tzinfo=OSLO), "2025-01-15T10:00:00+01:00"),
        (datetime(2025, 1, 15, 10), "2025-01-15T10:00:00"),
        (("a", date(2025, 1, 15)), "a|2025-01-15"),
        (("a", ("b", 1), None), "a|(b|1)|-"),
        ((), "()"),
    ],
)
def test_partition_repr(value: Partition, shown: str) -> None:
    assert partition_repr(value) == shown


# --- speed and docs ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["us-east-1", date(2025, 1, 15)])
def test_encoding_hot_keys_takes_microseconds(value: Partition) -> None:
    text = encode_partition(value)
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        encode_partition(value)
        decode_partition(text)
    per_pair = (time.perf_counter() - started) / rounds
    assert per_pair < 50e-6  # ~5 us on a laptop; generous for loaded CI machines


def test_docstring_examples_run() -> None:
    assert doctest.testmod(encoding_module).failed == 0
