"""A sibling of etl_flow.py."""

from __future__ import annotations


def double(n: int) -> int:
    return 2 * n
