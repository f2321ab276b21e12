"""Retry policies: how often, how soon, and after which errors an asset is tried again.

A policy is plain configuration attached to an asset (``@asset(retry=RetryPolicy(...))``). Both
executors apply it the same way: a failure the policy retries is recorded, the materialization
goes back to ``pending`` with the error (and a ``materialization.retry_scheduled`` audit event),
and it runs again after the backoff (the distributed job queue schedules it; the in-process
executor waits on the step's thread); the last failure is recorded ``failed``. Every attempt
carries its number on the materialization.

Waits grow exponentially, ``backoff * multiplier ** (attempt - 1)``, capped at ``max_backoff``,
then jitter adds up to ``jitter`` times that wait (never subtracts it), so the policy's wait is
a lower bound that many failing workers do not all hit at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from flowstone.errors import AssetExecutionError, DefinitionError
from flowstone.records import AuditEvent, MaterializationRecord, Status, materialization_event


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When to try an asset again after it failed.

    Args:
        max_attempts: Attempts in all, the first included (``1``: never retry).
        backoff: Seconds to wait before the second attempt.
        multiplier: Each further wait is this many times the previous one.
        max_backoff: No wait is longer than this many seconds (before jitter).
        jitter: Up to this fraction of the wait is added at random (``0``: none).
        retry_on: The exception types that are retried: the asset function's own exception
            (or FlowStone's, e.g. an I/O manager error) must be an instance of one of them.
            Default: every ``Exception``.

    Raises:
        DefinitionError: a value is out of range; the message says which.

    Example::

        @fs.asset(retry=fs.RetryPolicy(max_attempts=5, backoff=2.0, retry_on=(TimeoutError,)))
        def prices():
            return fetch_prices()  # a TimeoutError is retried after 2 s, 4 s, 8 s, 16 s
    """

    max_attempts: int = 3
    backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 300.0
    jitter: float = 0.1
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            problems.append(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        if self.backoff < 0:
            problems.append(f"backoff must be >= 0 seconds, got {self.backoff!r}")
        if self.multiplier < 1:
            problems.append(f"multiplier must be >= 1, got {self.multiplier!r}")
        if self.max_backoff < self.backoff:
            problems.append(
                f"max_backoff ({self.max_backoff!r}) must be >= backoff ({self.backoff!r})"
            )
        if not 0 <= self.jitter <= 1:
            problems.append(f"jitter must be between 0 and 1, got {self.jitter!r}")
        retry_on = _exception_types(self.retry_on)
        if retry_on is None:
            problems.append(
                "retry_on must be a tuple of exception classes, e.g. (TimeoutError, "
                f"ConnectionError), got {self.retry_on!r}"
            )
        else:
            object.__setattr__(self, "retry_on", retry_on)
        if problems:
            raise DefinitionError("Invalid RetryPolicy: " + "; ".join(problems) + ".")

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether a failure of attempt number ``attempt`` with ``error`` is tried again.

        ``error`` may be FlowStone's wrapper around the asset's exception; the asset's own
        exception is the one matched against ``retry_on``. ``KeyboardInterrupt`` and other
        ``BaseException`` s that are not ``Exception`` s are never retried.
        """
        if attempt >= self.max_attempts:
            return False
        cause = error.original if isinstance(error, AssetExecutionError) else error
        return isinstance(cause, Exception) and isinstance(cause, self.retry_on)

    def min_delay(self, attempt: int) -> float:
        """The wait, in seconds, after attempt number ``attempt`` failed, before jitter."""
        return min(self.max_backoff, self.backoff * self.multiplier ** max(0, attempt - 1))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait, in seconds, after attempt number ``attempt`` failed: at least
        :meth:`min_delay`, at most ``(1 + jitter)`` times it."""
        wait = self.min_delay(attempt)
        return wait * (1.0 + (rng or random).uniform(0.0, self.jitter))


def retry_scheduled_event(record: MaterializationRecord, delay_s: float) -> AuditEvent:
    """The audit event of a failed attempt that will be tried again in ``delay_s`` seconds."""
    return materialization_event(
        "materialization.retry_scheduled",
        record,
        next_attempt=record.attempt + 1,
        delay_s=round(delay_s, 3),
        error_type=record.error_type,
    )


def _exception_types(value: object) -> tuple[type[BaseException], ...] | None:
    if isinstance(value, type):
        value = (value,)
    if not isinstance(value, Iterable) or isinstance(value, str | bytes):
        return None
    types = tuple(value)
    if not types or not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        return None
    return types


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt that its policy tries again."""

    #: The wait, in seconds, before the next attempt.
    delay_s: float
    #: The step's record, ``pending`` again (it replaces the failed attempt's).
    waiting: MaterializationRecord
    #: Its ``materialization.retry_scheduled`` audit event.
    event: AuditEvent


def retry_after(
    policy: RetryPolicy | None, failed: MaterializationRecord, error: BaseException | None
) -> Retry | None:
    """What ``policy`` does with ``failed``, an attempt's final record (``error``: what it
    raised): a :class:`Retry`, or None when the record is the step's outcome. Both executors
    decide a retry here."""
    if (
        error is None
        or failed.status != Status.FAILED
        or policy is None
        or not policy.should_retry(error, failed.attempt)
    ):
        return None
    delay = policy.delay(failed.attempt)
    waiting = replace(failed, status=Status.PENDING, completed_at=None)
    return Retry(delay, waiting, retry_scheduled_event(failed, delay))
