"""``flowstone schedule|sensor|scheduler``, in-process through ``main(argv)`` and, for signals, as a
real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_harness import Cli, make_cli

TESTS = Path(__file__).parent
FIXTURES = TESTS / "cli_fixtures"
SCHEDULED = "cli_fixtures.scheduled:pipeline"


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh store; the fixture module is imported anew by each test."""
    db = tmp_path / "meta.db"
    monkeypatch.setenv("FLOWSTONE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWSTONE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    yield db
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).is_relative_to(FIXTURES):
            del sys.modules[name]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    run = make_cli(capsys)
    return lambda *argv: run("-p", SCHEDULED, *argv)


def test_help_lists_the_new_commands(cli: Cli) -> None:
    result = cli("--help")
    for command in ("schedule", "sensor", "scheduler"):
        assert command in result.out


def test_code_schedules_are_stored_and_listed(cli: Cli) -> None:
    result = cli("schedule", "list", "--json")
    assert result.code == 0, result.err
    [nightly] = result.json()
    assert nightly["name"] == "nightly" and nightly["source"] == "code"
    assert (nightly["cron"], nightly["timezone"], nightly["partition"]) == (
        "30 2 * * *",
        "Europe/Oslo",
        "previous_day",
    )
    assert nightly["next_tick"] is not None and nightly["last_tick"] is None
    table = cli("schedule", "list").out
    assert table.splitlines()[0].split()[:3] == ["NAME", "CRON", "ZONE"]


def test_add_pause_resume_remove(cli: Cli) -> None:
    added = cli(
        "schedule",
        "add",
        "hourly_ping",
        "ping",
        "--cron",
        "@hourly",
        "--catch-up",
        "all",
        "--catch-up-limit",
        "3",
        "--max-lateness",
        "600",
    )
    assert added.code == 0, added.err
    assert "added schedule hourly_ping: next tick" in added.out
    listed = {s["name"]: s for s in cli("schedule", "list", "--json").json()}
    assert listed["hourly_ping"]["source"] == "cli"
    assert (listed["hourly_ping"]["catch_up"], listed["hourly_ping"]["max_lateness_s"]) == (
        "all",
        600,
    )

    assert cli("schedule", "pause", "hourly_ping").code == 0
    paused = {s["name"]: s for s in cli("schedule", "list", "--json").json()}["hourly_ping"]
    assert paused["paused"] and paused["next_tick"] is None
    assert cli("schedule", "resume", "hourly_ping").code == 0
    resumed = {s["name"]: s for s in cli("schedule", "list", "--json").json()}["hourly_ping"]
    assert not resumed["paused"] and resumed["cursor"] is not None

    assert cli("schedule", "remove", "hourly_ping").code == 0
    assert "hourly_ping" not in {s["name"] for s in cli("schedule", "list", "--json").json()}
    audit = [e["action"] for e in json.loads(main_out(cli, "audit", "--json", "--limit", "100"))]
    for action in ("schedule.created", "schedule.paused", "schedule.resumed", "schedule.removed"):
        assert action in audit


def main_out(cli: Cli, *argv: str) -> str:
    result = cli(*argv)
    assert result.code == 0, result.err
    return result.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("schedule", "pause", "nightli"), "No schedule named 'nightli'. Did you mean 'nightly'?"),
        (("schedule", "ticks", "nope"), "No schedule named 'nope'"),
        (("sensor", "ticks", "pinge"), "Did you mean 'pinger'?"),
        (("schedule", "add", "x", "ping", "--cron", "61 * * * *"), "invalid cron expression"),
        (("schedule", "add", "x", "pnig", "--cron", "@daily"), "No asset named 'pnig'"),
        (
            ("schedule", "add", "x", "ping", "--cron", "@daily", "--timezone", "Mars/Base"),
            "unknown time zone",
        ),
        (("schedule", "add", "nightly", "ping", "--cron", "@daily"), "pass --replace"),
    ],
)
def test_mistakes_are_usage_errors_that_say_what_to_do(
    cli: Cli, argv: tuple[str, ...], message: str
) -> None:
    result = cli(*argv)
    assert result.code == 2
    assert message in result.err


def test_scheduler_once_polls_the_sensor_and_shows_its_ticks(cli: Cli) -> None:
    result = cli("scheduler", "--once")
    assert result.code == 0, result.err
    assert "sensor pinger: launched" in result.err
    ticks = cli("sensor", "ticks", "pinger", "--json").json()
    assert [t["status"] for t in ticks] == ["launched"]
    assert ticks[0]["details"]["requests"][0]["run_key"] == "first"
    [sensor] = cli("sensor", "list", "--json").json()
    assert (sensor["name"], sensor["cursor"], sensor["in_pipeline"]) == ("pinger", "done", True)
    table = cli("sensor", "ticks", "pinger").out
    assert table.splitlines()[0].split() == ["TICK", "STATUS", "RUNS", "PARTITION", "WHY"]
    assert cli("sensor", "pause", "pinger").code == 0
    assert cli("sensor", "list", "--json").json()[0]["paused"] is True


def test_schedule_ticks_shows_why(cli: Cli, cli_env: Path) -> None:
    # A tick recorded as missed, straight through the store (as a scheduler would).
    from datetime import UTC, datetime

    from flowstone.schedule_records import TickKind, TickRecord, TickStatus
    from flowstone.store import open_store

    assert cli("schedule", "list").code == 0
    store = open_store(f"sqlite:///{cli_env}")
    store.create_schedule_tick(
        TickRecord(
            kind=TickKind.SCHEDULE,
            name="nightly",
            tick_time=datetime(2025, 1, 2, 1, 30, tzinfo=UTC),
            status=TickStatus.MISSED,
            reason="found 3.0d after its time, more than max_lateness (1.0h)",
            details={"local_time": "2025-01-02T02:30:00+01:00"},
        )
    )
    store.close()
    out = cli("schedule", "ticks", "nightly").out
    row = out.splitlines()[1]
    assert row.startswith("2025-01-02T02:30:00+01:00  missed")
    assert "more than max_lateness" in row


def test_the_scheduler_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowstone", "-p", SCHEDULED, "scheduler", "--poll-interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()  # logged once the signal handlers are in place
    assert "Scheduler started: polling every 0.1s" in first, first
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "finishing runs in flight" in err
