"""Building subcommands: one parser shape for every `flowstone` command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

Handler = Callable[[argparse.Namespace], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    commands: Commands,
    name: str,
    handler: Handler | None,
    help_text: str,
    epilog: str,
    *,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """Add subcommand ``name``: its help line, a description made from it, examples in the
    epilog (kept as written), the shared options of ``common``, and its handler."""
    parser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser
