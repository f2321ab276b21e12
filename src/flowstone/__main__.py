"""``python -m flowstone``: the same as the ``flowstone`` command."""

from __future__ import annotations

from flowstone.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
