"""Retry policies: validation, which errors retry, and the waits."""

from __future__ import annotations

import random

import pytest

import flowstone as fs
from flowstone.errors import AssetExecutionError, DefinitionError


class Flaky(Exception):
    pass


def test_defaults_retry_every_exception_three_times() -> None:
    policy = fs.RetryPolicy()
    assert policy.should_retry(ValueError("x"), 1)
    assert policy.should_retry(ValueError("x"), 2)
    assert not policy.should_retry(ValueError("x"), 3)


def test_only_the_listed_exceptions_retry_matched_on_the_asset_s_own_error() -> None:
    policy = fs.RetryPolicy(max_attempts=5, retry_on=(Flaky, TimeoutError))
    wrapped = AssetExecutionError("prices", None, Flaky("upstream down"))
    assert policy.should_retry(wrapped, 1)
    assert policy.should_retry(TimeoutError(), 4)
    assert not policy.should_retry(AssetExecutionError("prices", None, ValueError()), 1)
    assert not policy.should_retry(KeyboardInterrupt(), 1)  # never a BaseException


def test_a_single_exception_class_is_accepted() -> None:
    assert fs.RetryPolicy(retry_on=Flaky).retry_on == (Flaky,)  # type: ignore[arg-type]


def test_waits_grow_exponentially_up_to_the_cap() -> None:
    policy = fs.RetryPolicy(max_attempts=10, backoff=1.5, multiplier=3.0, max_backoff=20.0)
    assert [policy.min_delay(a) for a in range(1, 6)] == [1.5, 4.5, 13.5, 20.0, 20.0]


def test_jitter_only_adds_up_to_its_fraction() -> None:
    policy = fs.RetryPolicy(backoff=2.0, jitter=0.25)
    rng = random.Random(7)
    waits = [policy.delay(2, rng) for _ in range(500)]
    assert all(4.0 <= w <= 5.0 for w in waits)
    assert max(waits) - min(waits) > 0.5  # really spread, not a constant
    assert fs.RetryPolicy(backoff=2.0, jitter=0).delay(2) == 4.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer >= 1"),
        ({"backoff": -1}, "backoff must be >= 0"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"backoff": 10, "max_backoff": 5}, "max_backoff (5) must be >= backoff (10)"),
        ({"jitter": 2}, "jitter must be between 0 and 1"),
        ({"retry_on": ("TimeoutError",)}, "retry_on must be a tuple of exception classes"),
        ({"retry_on": ()}, "retry_on must be a tuple of exception classes"),
    ],
)
def test_invalid_policies_say_what_is_wrong(options: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError, match="Invalid RetryPolicy") as raised:
        fs.RetryPolicy(**options)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_assets_carry_their_policy() -> None:
    policy = fs.RetryPolicy(max_attempts=2)

    @fs.asset(retry=policy)
    def prices() -> int:
        return 1

    @fs.asset
    def plain() -> int:
        return 1

    assert prices.retry is policy
    assert plain.retry is None
    with pytest.raises(DefinitionError, match=r"retry must be fs\.RetryPolicy"):
        fs.asset(name="prices", retry=3)(lambda: 1)  # type: ignore[arg-type]
