"""Running the CLI in-process for tests: its exit code and what it printed."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from flowstone.cli import main


class Result:
    """What one `flowstone ...` call did."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


Cli = Callable[..., Result]


def make_cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """A function that runs `flowstone *argv` and returns its :class:`Result`."""

    def run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
