"""An invalid pipeline: a -> b -> a. Importing it raises CycleError."""

from __future__ import annotations

import flowstone as fs


@fs.asset(depends_on=["b"])
def a() -> int:
    return 1


@fs.asset(depends_on=["a"])
def b() -> int:
    return 2


pipeline = fs.Pipeline([a, b])
