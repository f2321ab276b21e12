"""``flowstone backfill ...`` driven in-process through ``main(argv)`` (the fixtures of
``test_cli.py``: a fresh SQLite store and home per test)."""

# The fixtures imported from test_cli are parameters of the tests below, which ruff reads as
# redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from cli_harness import Cli, Result
from flowstone.backfill_progress import BackfillProgress
from flowstone.cli import main
from flowstone.cli.backfill_output import Progress, progress_line
from test_cli import DAILY, cli, cli_env  # noqa: F401 (fixtures)

FLAKY = "cli_fixtures.daily_flaky:pipeline"


def backfill_id(result: Result) -> str:
    return str(result.json()["id"])


def test_help_lists_the_backfill_commands(cli: Cli) -> None:
    result = cli("backfill", "--help")
    assert result.code == 0
    for command in ("run", "list", "show", "resume", "retry-failed", "cancel"):
        assert command in result.out
    assert "examples:" in result.out


def test_run_a_range(cli: Cli) -> None:
    result = cli(
        "-p",
        DAILY,
        "backfill",
        "run",
        "daily_total",
        "--with-deps",
        "--from",
        "2025-01-03",
        "--to",
        "2025-01-12",
        "--parallel",
        "2",
    )
    assert result.code == 0, result.err
    header, row = result.out.splitlines()
    assert header.split()[:8] == [
        "ID",
        "STATUS",
        "ASSETS",
        "TOTAL",
        "DONE",
        "FAILED",
        "CANCELED",
        "LEFT",
    ]
    assert row.split()[1:8] == ["success", "daily_total", "10", "10", "0", "0", "0"]
    # Not a terminal: plain progress lines, the last one with the final counts.
    assert "10/10 done, 0 failed, 0 running, 0 left" in result.err
    assert "\r" not in result.err
    assert "succeeded" in result.err


def test_run_partitions_all_force_and_json(cli: Cli) -> None:
    first = cli(
        "-p",
        DAILY,
        "backfill",
        "run",
        "events",
        "--partitions",
        "2025-01-02,2025-01-05",
        "--partitions",
        "2025-01-03",
        "--json",
    )
    assert first.code == 0, first.err
    data = first.json()
    assert (data["total"], data["success"], data["skipped"]) == (3, 3, 0)
    assert len(data["run_ids"]) == 1 and data["created_by"]
    everything = cli("-p", DAILY, "backfill", "run", "events", "--all", "--json").json()
    assert (everything["total"], everything["success"], everything["skipped"]) == (31, 28, 3)
    forced = cli(
        "-p",
        DAILY,
        "backfill",
        "run",
        "events",
        "--from",
        "2025-01-02",
        "--to",
        "2025-01-03",
        "--force",
        "--json",
    ).json()
    assert (forced["success"], forced["skipped"]) == (2, 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["events"], "Say which partitions"),
        (["events", "--all", "--from", "2025-01-01"], "not several"),
        (["events", "--partitions", "2025-13-01"], "2025-13-01"),
        (["nope", "--all"], "No asset named 'nope'"),
    ],
)
def test_bad_input_exits_2(cli: Cli, args: list[str], message: str) -> None:
    result = cli("-p", DAILY, "backfill", "run", *args)
    assert result.code == 2
    assert message in result.err
    assert cli("-p", DAILY, "backfill", "list", "--json").json() == []


def test_an_unpartitioned_asset_exits_2(cli: Cli) -> None:
    result = cli("-p", FLAKY, "backfill", "run", "lookup", "--all")
    assert result.code == 2
    assert "materialize" in result.err


def test_failures_are_shown_and_retried(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAKY_DAYS", "4,9")
    run = cli(
        "-p",
        FLAKY,
        "backfill",
        "run",
        "readings",
        "--from",
        "2025-01-01",
        "--to",
        "2025-01-10",
        "--json",
    )
    assert run.code == 1
    assert "2 failed" in run.err and "retry-failed" in run.err
    assert "ConnectionError: sensor offline on 2025-01-04" in run.err
    ident = backfill_id(run)

    show = cli("-p", FLAKY, "backfill", "show", ident[:8])
    assert show.code == 0
    assert "8 success, 0 skipped (already done), 2 failed" in show.out
    failing = [line.split()[:4] for line in show.out.splitlines() if "ConnectionError" in line]
    assert failing == [
        ["2025-01-04", "failed", "readings", "1"],
        ["2025-01-09", "failed", "readings", "1"],
    ]
    shown = cli("-p", FLAKY, "backfill", "show", ident, "--json").json()
    assert [f["partition"] for f in shown["failures"]] == ["2025-01-04", "2025-01-09"]
    assert shown["active"] is False and shown["partitions"] == "2025-01-01..2025-01-10"

    monkeypatch.setenv("FLAKY_DAYS", "")
    retried = cli("-p", FLAKY, "backfill", "retry-failed", ident, "--json")
    assert retried.code == 0, retried.err
    assert (retried.json()["success"], retried.json()["failed"]) == (10, 0)
    listed = cli("-p", FLAKY, "backfill", "list", "--json").json()
    assert [(b["id"], b["status"]) for b in listed] == [(ident, "success")]
    assert cli("-p", FLAKY, "backfill", "resume", ident).code == 0  # nothing left: a no-op


def test_cancel_and_unknown_ids(cli: Cli) -> None:
    done = cli(
        "-p",
        DAILY,
        "backfill",
        "run",
        "events",
        "--from",
        "2025-01-01",
        "--to",
        "2025-01-02",
        "--json",
    )
    finished = cli("-p", DAILY, "backfill", "cancel", backfill_id(done))
    assert finished.code == 1
    assert "nothing to cancel" in finished.err
    for command in ("show", "resume", "retry-failed", "cancel"):
        unknown = cli("-p", DAILY, "backfill", command, "0000dead")
        assert unknown.code == 2, command
        assert "No backfill with id '0000dead'" in unknown.err


def test_list_when_there_is_none(cli: Cli) -> None:
    result = cli("-p", DAILY, "backfill", "list")
    assert result.code == 0 and result.out == ""
    assert "No backfills yet" in result.err


# --- the progress line ---------------------------------------------------------------------


def snapshot(**fields: Any) -> BackfillProgress:
    values: dict[str, Any] = dict(
        backfill_id="3f2a9c1e" + "0" * 24,
        total=365,
        success=100,
        skipped=20,
        failed=3,
        canceled=0,
        running=4,
        remaining=238,
        elapsed_s=2.0,
        rate=50.0,
        eta_s=4.84,
    )
    values.update(fields)
    return BackfillProgress(**values)


def test_progress_line_shows_counts_rate_and_eta() -> None:
    assert progress_line(snapshot(), bar=True) == (
        "backfill 3f2a9c1e [#######.............] 120/365 done, 3 failed, 4 running, "
        "238 left, 50.0/s, ETA 0:05"
    )
    line = progress_line(snapshot(rate=None, eta_s=None, success=0, skipped=0), bar=False)
    assert line == "backfill 3f2a9c1e 0/365 done, 3 failed, 4 running, 238 left, -, ETA -"
    assert progress_line(snapshot(eta_s=3725.0), bar=False).endswith("ETA 1:02:05")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_line_is_redrawn() -> None:
    stream = FakeTerminal()
    with Progress(stream, every=3600) as progress:
        progress(snapshot(success=1))
        progress(snapshot(success=2))  # throttled: not drawn
        progress(snapshot(success=245, skipped=20, running=0, remaining=0))
    text = stream.getvalue()
    first, last = text.split("\r")[1:]
    assert first.startswith("backfill 3f2a9c1e [#...................] 21/365 done")
    # The last state is drawn when the backfill ends, over the first (padded to its width).
    assert last.rstrip() == (
        "backfill 3f2a9c1e [###############.....] 265/365 done, 3 failed, 0 running, "
        "0 left, 50.0/s, ETA 0:05"
    )
    assert len(last.rstrip("\n")) >= len(first) and text.endswith("\n")
    assert "22/365" not in text


def test_json_of_show_has_stable_keys(cli: Cli) -> None:
    done = cli("-p", DAILY, "backfill", "run", "events", "--partitions", "2025-01-02", "--json")
    shown = cli("-p", DAILY, "backfill", "show", backfill_id(done), "--json")
    keys = set(json.loads(shown.out))
    assert {
        "id",
        "status",
        "total",
        "success",
        "skipped",
        "failed",
        "canceled",
        "remaining",
        "partitions",
        "active",
        "failures",
        "created_by",
        "owner",
    } <= keys


def test_main_is_the_entry_point() -> None:
    assert main(["backfill", "list", "--help"]) == 0
