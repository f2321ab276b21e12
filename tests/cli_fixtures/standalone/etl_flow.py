"""Loaded by file path: it imports its sibling etl_helpers, which is not a package module."""

from __future__ import annotations

from etl_helpers import double  # type: ignore[import-not-found]

import flowstone as fs


@fs.asset
def numbers() -> list[int]:
    return [1, 2, 3]


@fs.asset
def doubled(numbers: list[int]) -> list[int]:
    return [double(n) for n in numbers]


etl = fs.Pipeline([numbers, doubled])
