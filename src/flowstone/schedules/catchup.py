"""What to do with the ticks a scheduler finds due: run, skip, or record as missed.

Normally one tick is due, found seconds after its time, and it runs. After downtime several are
due, some long ago; the schedule's policy decides, and every due tick gets a decision, so none
is ever silently dropped:

1. A tick found more than ``max_lateness`` after its time is ``missed`` (Prefect users saw runs
   start days late after an outage; a limit makes "too late" explicit).
2. Of the others, ``catch_up`` chooses: ``"skip"`` runs only ticks found within ``grace`` of
   their time (on time), ``"latest"`` runs the most recent one, ``"all"`` runs the
   ``catch_up_limit`` most recent ones, oldest first. The rest are ``skipped``.

A scheduler down for a year on a minutely schedule must not write half a million rows: beyond
the :data:`RECORDED_INDIVIDUALLY` most recent non-run ticks, older ones of each status are
summarized in one decision (its time is the oldest tick's, its details the count and range).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flowstone.schedule_records import CatchUp, TickStatus

#: Non-run ticks recorded one by one per evaluation; older ones are summarized.
RECORDED_INDIVIDUALLY = 100


@dataclass(frozen=True, slots=True)
class TickDecision:
    """One due tick (or a summary of many old ones) and what to do with it."""

    time: datetime
    #: LAUNCHED means "run it"; SKIPPED and MISSED are recorded as they are.
    status: TickStatus
    lateness_s: float
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CatchUpPolicy:
    """A schedule's catch-up settings.

    Example::

        policy = CatchUpPolicy(CatchUp.ALL, limit=3, max_lateness_s=6 * 3600)
    """

    mode: CatchUp = CatchUp.LATEST
    limit: int = 10
    max_lateness_s: float | None = None

    def decide(self, due: Iterable[datetime], now: datetime, grace_s: float) -> list[TickDecision]:
        """A decision for each tick in ``due`` (ascending), oldest first.

        Args:
            due: The ticks whose time is at or before ``now``, ascending.
            now: The evaluation time.
            grace_s: How late a tick may be found and still count as on time (``"skip"``).
        """
        keep = {CatchUp.LATEST: 1, CatchUp.ALL: max(1, self.limit)}.get(self.mode)
        candidates: deque[TickDecision] = deque()
        out = _NonRunRecorder()
        for time in due:
            lateness = (now - time).total_seconds()
            if self.max_lateness_s is not None and lateness > self.max_lateness_s:
                out.add(
                    TickDecision(
                        time,
                        TickStatus.MISSED,
                        lateness,
                        f"found {_duration(lateness)} after its time, more than "
                        f"max_lateness ({_duration(self.max_lateness_s)})",
                    )
                )
                continue
            if self.mode == CatchUp.SKIP and lateness > grace_s:
                out.add(
                    TickDecision(
                        time,
                        TickStatus.SKIPPED,
                        lateness,
                        f"came due while no scheduler ran ({_duration(lateness)} ago) and "
                        "catch_up is 'skip'",
                    )
                )
                continue
            candidates.append(TickDecision(time, TickStatus.LAUNCHED, lateness))
            if keep is not None and len(candidates) > keep:
                old = candidates.popleft()
                out.add(
                    TickDecision(
                        old.time,
                        TickStatus.SKIPPED,
                        old.lateness_s,
                        "a later tick ran instead (catch_up is 'latest')"
                        if self.mode == CatchUp.LATEST
                        else f"more than catch_up_limit ({keep}) ticks were due at once; the "
                        "most recent ones ran",
                    )
                )
        return sorted([*out.decisions(), *candidates], key=lambda d: d.time)


class _NonRunRecorder:
    """Keeps the most recent non-run decisions; counts older ones per status."""

    def __init__(self) -> None:
        self._recent: deque[TickDecision] = deque()
        self._summaries: dict[TickStatus, tuple[TickDecision, TickDecision, int]] = {}

    def add(self, decision: TickDecision) -> None:
        self._recent.append(decision)
        if len(self._recent) > RECORDED_INDIVIDUALLY:
            old = self._recent.popleft()
            first, _, count = self._summaries.get(old.status, (old, old, 0))
            self._summaries[old.status] = (first, old, count + 1)

    def decisions(self) -> list[TickDecision]:
        summaries = [
            TickDecision(
                first.time,
                status,
                first.lateness_s,
                f"{count} ticks from {first.time.isoformat()} to {last.time.isoformat()}, "
                f"summarized; the last: {last.reason}",
                {"summarized_ticks": count, "last_tick": last.time.isoformat()},
            )
            for status, (first, last, count) in self._summaries.items()
        ]
        return [*summaries, *self._recent]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
