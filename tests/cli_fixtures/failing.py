"""raw_events -> cleaned (raises) -> report."""

from __future__ import annotations

import flowstone as fs


@fs.asset
def raw_events() -> list[int]:
    return [1, 2, 3]


@fs.asset
def cleaned(raw_events: list[int]) -> list[int]:
    raise ValueError(f"bad row {len(raw_events)}")


@fs.asset
def report(cleaned: list[int]) -> int:
    return sum(cleaned)


pipeline = fs.Pipeline([raw_events, cleaned, report])
