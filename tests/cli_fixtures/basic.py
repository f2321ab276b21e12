"""raw_events -> cleaned -> report: everything succeeds."""

from __future__ import annotations

import flowstone as fs


@fs.asset
def raw_events() -> list[dict[str, int]]:
    """Events as they arrive."""
    return [{"n": 3}, {"n": 5}, {"n": -1}]


@fs.asset
def cleaned(raw_events: list[dict[str, int]]) -> list[dict[str, int]]:
    """Events with a positive count."""
    return [e for e in raw_events if e["n"] > 0]


@fs.asset(tags={"team": "finance"})
def report(cleaned: list[dict[str, int]]) -> dict[str, int]:
    """The total."""
    return {"total": sum(e["n"] for e in cleaned)}


pipeline = fs.Pipeline([raw_events, cleaned, report])


def build() -> fs.Pipeline:
    """A factory, for `basic:build`."""
    return fs.Pipeline([raw_events, cleaned, report])
