"""An asset but no pipeline."""

from __future__ import annotations

import flowstone as fs


@fs.asset
def lonely() -> int:
    return 1
