"""``flowstone approvals``: driven in-process through ``main(argv)``, and in real processes for
the restart case (the request made by one process, approved by another).

Each test has its own SQLite file and storage folder; the fixture pipeline module is forgotten
afterwards so the next test imports it against its own store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import flowstone
from cli_harness import Cli, make_cli
from flowstone.checkpoints import ApprovalStatus
from flowstone.records import utcnow

TESTS = Path(__file__).parent
FIXTURES = TESTS / "cli_fixtures"
FLOW = "cli_fixtures.approvals_flow:pipeline"


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    db = tmp_path / "meta.db"
    monkeypatch.setenv("FLOWSTONE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWSTONE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("FLOWSTONE_PIPELINE", FLOW)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    yield db
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and Path(file).is_relative_to(FIXTURES):
            del sys.modules[name]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return make_cli(capsys)


def ask(cli: Cli, *days: int) -> list[dict[str, Any]]:
    """Materialize notify for these January days; return the pending requests."""
    for day in days:
        done = cli("materialize", "notify", "--with-deps", "--partition", f"2025-01-{day:02d}")
        assert done.code == 0, done.err
    return list(cli("approvals", "list", "--json").json())


def test_a_run_waiting_for_approval_is_not_an_error(cli: Cli) -> None:
    done = cli("materialize", "notify", "--with-deps", "--partition", "2025-01-02")
    assert done.code == 0
    assert "waiting for approval" in done.err and "flowstone approvals list" in done.err
    assert "error" not in done.err
    assert "waiting_approval" in done.out and "pending" in done.out


def test_list_and_show(cli: Cli) -> None:
    [request] = ask(cli, 2)
    assert request["asset"] == "publish" and request["partition"] == "2025-01-02"
    assert request["status"] == "pending" and request["context"] == {"total": 20}
    assert request["message"] == "Publish 20 for 2025-01-02?"
    assert request["timeout_at"] is not None and request["decided_by"] is None

    table = cli("approvals", "list")
    assert table.code == 0
    assert request["id"][:8] in table.out and "Publish 20 for 2025-01-02?" in table.out

    shown = cli("approvals", "show", request["id"][:8])
    assert shown.code == 0
    assert request["id"] in shown.out and '"total": 20' in shown.out
    assert cli("approvals", "show", request["id"], "--json").json() == request

    assert cli("approvals", "list", "--asset", "notify", "--json").json() == []
    assert cli("approvals", "list", "--status", "approved").err.startswith("No approved")
    unknown = cli("approvals", "list", "--asset", "pubish")
    assert unknown.code == 2 and "Did you mean 'publish'" in unknown.err


def test_approve_resumes_the_run_here(cli: Cli) -> None:
    [request] = ask(cli, 3)
    done = cli(
        "approvals",
        "approve",
        request["id"][:8],
        "--by",
        "ana",
        "--reason",
        "checked",
        "--input",
        '{"to": "web"}',
        "--json",
    )
    assert done.code == 0, done.err
    decided = done.json()
    assert decided["approval"]["status"] == "approved"
    assert decided["approval"]["decided_by"] == "ana" and decided["approval"]["reason"] == "checked"
    assert decided["approval"]["input"] == {"to": "web"}
    assert decided["run"]["status"] == "success"
    statuses = {m["asset"]: (m["status"], m["attempt"]) for m in decided["run"]["materializations"]}
    assert statuses == {
        "daily_report": ("success", 1),
        "publish": ("success", 2),
        "notify": ("success", 1),
    }
    assert "Approved" in done.err and "succeeded" in done.err
    audit = cli("audit", "--asset", "publish", "--json").json()
    approved = [e for e in audit if e["action"] == "approval.approved"]
    assert [(e["actor"], e["details"]["reason"]) for e in approved] == [("ana", "checked")]

    again = cli("approvals", "approve", request["id"], "--by", "bob")
    assert again.code == 1
    assert "already approved by ana" in again.err


def test_reject_needs_a_reason_and_fails_the_asset(cli: Cli) -> None:
    [request] = ask(cli, 4)
    assert cli("approvals", "reject", request["id"], "--by", "bob").code == 2
    done = cli("approvals", "reject", request["id"], "--by", "bob", "--reason", "too high")
    assert done.code == 0, done.err
    assert "failed" in done.out and "skipped" in done.out
    errors = cli("history", "publish", "--errors").out
    assert "ApprovalRejectedError" in errors and "rejected by bob: too high" in errors


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["approve", "abcdef12", "--by", "ana"], "No approval request 'abcdef12'"),
        (["approve", "{id}", "--by", "ana", "--input", "{oops"], "not valid JSON"),
        (["approve", "{id}", "--by", "ana", "--input", "[1, 2]"], "expected a JSON object"),
        (["approve", "{id}", "--all", "--by", "ana"], "not allowed with argument"),
        (["approve", "{id}", "--by", "ana", "--asset", "publish"], "choose requests for --all"),
        (["approve", "--by", "ana"], "one of the arguments"),
        (["approve", "--all", "--by", "ana", "--partition-range", "2025-01-01"], "FROM..TO"),
        (["approve", "--all", "--by", "ana", "--partition", "2025-01-01"], "need --asset"),
        (
            ["approve", "--all", "--by", "ana", "--asset", "publish", "--partition", "jan"],
            "jan",
        ),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(cli: Cli, argv: list[str], message: str) -> None:
    [request] = ask(cli, 5)
    done = cli("approvals", *[a.replace("{id}", request["id"]) for a in argv])
    assert done.code == 2, done.err
    assert message in done.err
    assert cli("approvals", "list", "--json").json() == [request]


def test_bulk_decisions_over_a_partition_range(cli: Cli) -> None:
    requests = ask(cli, 1, 2, 3, 4)
    assert len(requests) == 4
    rejected = cli(
        "approvals",
        "reject",
        "--all",
        "--asset",
        "publish",
        "--partition-range",
        "2025-01-02..2025-01-03",
        "--by",
        "bob",
        "--reason",
        "holiday",
        "--json",
    )
    assert rejected.code == 0, rejected.err
    assert sorted(a["partition"] for a in rejected.json()) == ["2025-01-02", "2025-01-03"]
    approved = cli("approvals", "approve", "--all", "--asset", "publish", "--by", "ana")
    assert approved.code == 0 and "Approved 2 requests." in approved.err
    left = cli("approvals", "list", "--status", "all", "--json").json()
    assert {a["partition"]: a["status"] for a in left} == {
        "2025-01-01": "approved",
        "2025-01-02": "rejected",
        "2025-01-03": "rejected",
        "2025-01-04": "approved",
    }
    assert "None matched." in cli("approvals", "approve", "--all", "--by", "ana").err


def test_every_command_first_expires_what_is_past_its_timeout(cli: Cli) -> None:
    done = cli("materialize", "hurried")
    assert done.code == 0
    listed = cli("approvals", "list")
    assert "Expired 1 request past their timeout" in listed.err
    assert "No pending approval requests." in listed.err
    [expired] = cli("approvals", "list", "--status", "expired", "--json").json()
    assert expired["asset"] == "hurried" and expired["decided_by"] is None
    errors = cli("history", "hurried", "--errors").out
    assert "ApprovalExpiredError" in errors
    assert cli("approvals", "expire").err.startswith("Nothing is past its timeout")
    late = cli("approvals", "approve", expired["id"], "--by", "ana")
    assert late.code == 1 and "already expired by its timeout" in late.err


def test_resume_finishes_a_run_whose_continuation_died(cli: Cli) -> None:
    [request] = ask(cli, 6)
    from cli_fixtures.approvals_flow import pipeline  # the module the CLI loaded

    stored = pipeline.get_approval(request["id"])
    decided = replace(stored, status=ApprovalStatus.APPROVED, decided_by="ana", decided_at=utcnow())
    assert pipeline.store.decide_approval(decided)  # and then the process died
    pipeline.close()
    done = cli("approvals", "resume", request["run_id"][:8], "--json")
    assert done.code == 0, done.err
    assert done.json()["status"] == "success"
    assert cli("approvals", "resume", "ffffffff").code == 2


def test_help_lists_the_approvals_commands(cli: Cli) -> None:
    assert "approvals" in cli("--help").out
    text = cli("approvals", "--help").out
    for command in ("list", "show", "approve", "reject", "expire", "resume"):
        assert command in text


# --- real processes --------------------------------------------------------------------------
def run_process(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(flowstone.__file__).parents[1])
    env = {
        **os.environ,
        "FLOWSTONE_HOME": str(tmp_path / "home"),
        "FLOWSTONE_DATABASE_URL": f"sqlite:///{tmp_path / 'process.db'}",
        "FLOWSTONE_PIPELINE": FLOW,
        "PYTHONPATH": os.pathsep.join([src, str(TESTS)]),
        "PYTHONIOENCODING": "utf-8",
    }
    return subprocess.run(
        [sys.executable, "-m", "flowstone", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )


def test_one_process_asks_another_approves(tmp_path: Path) -> None:
    asked = run_process(
        tmp_path, "materialize", "notify", "--with-deps", "--partition", "2025-01-07"
    )
    assert asked.returncode == 0, asked.stderr
    [request] = json.loads(run_process(tmp_path, "approvals", "list", "--json").stdout)
    approved = run_process(
        tmp_path, "approvals", "approve", request["id"], "--by", "ana", "--input", '{"n": 1}'
    )
    assert approved.returncode == 0, approved.stderr
    status = json.loads(run_process(tmp_path, "status", "notify", "--json").stdout)
    assert [row["status"] for row in status] == ["success"]
    history = json.loads(run_process(tmp_path, "history", "publish", "--json").stdout)
    assert [(h["status"], h["attempt"]) for h in history] == [("success", 2)]
