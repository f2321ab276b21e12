"""The ``flowstone`` command line.

Run ``flowstone --help`` (or ``python -m flowstone --help``) for the commands. Every command is
also callable in-process, which is how the tests drive it::

    from flowstone.cli import main

    exit_code = main(["--pipeline", "flows/etl.py:pipeline", "status", "--json"])
"""

from __future__ import annotations

from flowstone.cli.app import main

__all__ = ["main"]
