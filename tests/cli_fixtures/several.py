"""Two pipelines: the CLI must be told which one."""

from __future__ import annotations

import flowstone as fs


@fs.asset
def one() -> int:
    return 1


first = fs.Pipeline([one])
second = fs.Pipeline([one])
