"""The ``flowstone`` command line, driven in-process through ``main(argv)`` and, for the exit codes
a shell sees, through real ``python -m flowstone`` subprocesses.

Every test gets its own SQLite file and storage folder (``FLOWSTONE_DATABASE_URL`` and
``FLOWSTONE_HOME`` in tmp_path), and the pipeline modules it imported are forgotten afterwards,
so the next test imports them again against its own store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flowstone
from cli_harness import Cli, make_cli
from flowstone.store import migrate

TESTS = Path(__file__).parent
FIXTURES = TESTS / "cli_fixtures"
BASIC = "cli_fixtures.basic:pipeline"
FAILING = "cli_fixtures.failing:pipeline"
DAILY = "cli_fixtures.daily:pipeline"
HOURLY = "cli_fixtures.hourly:pipeline"


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh store and home; fixture modules and sys.path entries undone after the test."""
    db = tmp_path / "meta.db"
    monkeypatch.setenv("FLOWSTONE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWSTONE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.delenv("FLOWSTONE_PIPELINE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(TESTS))
    saved_path = list(sys.path)
    yield db
    sys.path[:] = saved_path
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and (Path(file).is_relative_to(FIXTURES) or Path(file).is_relative_to(tmp_path)):
            del sys.modules[name]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return make_cli(capsys)


# --- basics ----------------------------------------------------------------------------------
def test_help_lists_commands_and_exit_codes(cli: Cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for command in ("materialize", "status", "history", "lineage", "graph", "db", "audit"):
        assert command in result.out
    assert "exit codes:" in result.out
    assert "3  environment problem" in result.out


def test_subcommand_help_has_examples(cli: Cli) -> None:
    result = cli("materialize", "--help")
    assert result.code == 0
    assert "examples:" in result.out
    assert "--with-deps" in result.out


def test_version(cli: Cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.strip() == f"flowstone {flowstone.__version__}"


def test_missing_command_is_a_usage_error(cli: Cli) -> None:
    result = cli()
    assert result.code == 2
    assert "flowstone: error:" in result.err


def test_bad_tag_is_a_usage_error(cli: Cli) -> None:
    result = cli("-p", BASIC, "materialize", "raw_events", "--tag", "nokey")
    assert result.code == 2
    assert "expected KEY=VALUE" in result.err


# --- materialize -----------------------------------------------------------------------------
def test_materialize_with_deps_succeeds(cli: Cli) -> None:
    result = cli("-p", BASIC, "materialize", "report", "--with-deps")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["ASSET", "PARTITION", "STATUS", "DURATION"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["raw_events", "-", "success"],
        ["cleaned", "-", "success"],
        ["report", "-", "success"],
    ]
    assert "Materializing 3 assets" in result.err
    assert "✓ raw_events" in result.err
    assert " ms" in result.err
    assert "succeeded" in result.err


def test_materialize_without_deps_reads_earlier_runs(cli: Cli) -> None:
    first = cli("-p", BASIC, "materialize", "cleaned")
    assert first.code == 1  # raw_events was never materialized
    assert "MissingUpstreamError" in first.err
    assert cli("-p", BASIC, "materialize", "raw_events").code == 0
    second = cli("-p", BASIC, "materialize", "cleaned", "--json")
    assert second.code == 0
    assert [m["asset"] for m in second.json()["materializations"]] == ["cleaned"]


def test_materialize_failure_exits_1_and_names_the_failure(cli: Cli) -> None:
    result = cli("-p", FAILING, "materialize", "report", "--with-deps")
    assert result.code == 1
    assert "✗ cleaned" in result.err
    assert "ValueError: bad row 3" in result.err
    assert "- report" in result.err
    assert "skipped (upstream asset 'cleaned' failed)" in result.err
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("flowstone: error: run ")
    assert "cleaned failed (ValueError: bad row 3)" in last
    assert "flowstone history cleaned --errors" in last
    assert "Traceback" not in result.err
    statuses = {line.split()[0]: line.split()[2] for line in result.out.splitlines()[1:]}
    assert statuses == {"raw_events": "success", "cleaned": "failed", "report": "skipped"}


def test_materialize_json(cli: Cli) -> None:
    result = cli("-p", FAILING, "materialize", "report", "--with-deps", "--json", "--tag", "a=b")
    assert result.code == 1
    data = result.json()
    assert set(data) == {"run_id", "status", "ok", "partition", "partition_key", "materializations"}
    assert data["status"] == "failed" and data["ok"] is False
    assert data["partition"] is None and data["partition_key"] == "n:"
    by_asset = {m["asset"]: m for m in data["materializations"]}
    assert by_asset["cleaned"]["error_type"] == "ValueError"
    assert "Traceback" in by_asset["cleaned"]["error_traceback"]
    assert by_asset["report"]["status"] == "skipped"
    assert by_asset["raw_events"]["completed_at"].endswith("+00:00")
    assert "\x1b" not in result.out


def test_materialize_daily_partition(cli: Cli) -> None:
    result = cli(
        "-p", DAILY, "materialize", "daily_total", "--with-deps", "--partition", "2025-01-15"
    )
    assert result.code == 0, result.err
    assert "for partition 2025-01-15" in result.err
    rows = [line.split()[:3] for line in result.out.splitlines()[1:]]
    assert rows == [["events", "2025-01-15", "success"], ["daily_total", "2025-01-15", "success"]]
    # The tagged encoding is accepted too.
    again = cli("-p", DAILY, "materialize", "events", "--partition", "d:2025-01-16", "--json")
    assert again.code == 0
    assert again.json()["partition_key"] == "d:2025-01-16"


@pytest.mark.parametrize("text", ["2025-13-01", "2025-03-01", "yesterday"])
def test_bad_partition_exits_2(cli: Cli, text: str) -> None:
    result = cli("-p", DAILY, "materialize", "daily_total", "--partition", text)
    assert result.code == 2
    assert result.err.startswith("flowstone: error: ")
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


def test_partitioned_asset_without_partition_exits_2(cli: Cli) -> None:
    result = cli("-p", DAILY, "materialize", "events")
    assert result.code == 2
    assert "--partition 2025-01-01" in result.err


def test_partition_for_unpartitioned_assets_exits_2(cli: Cli) -> None:
    result = cli("-p", BASIC, "materialize", "raw_events", "--partition", "2025-01-15")
    assert result.code == 2
    assert "is partitioned" in result.err


def test_unknown_asset_exits_2_with_a_suggestion(cli: Cli) -> None:
    result = cli("-p", BASIC, "materialize", "raw_event")
    assert result.code == 2
    assert "No asset named 'raw_event'" in result.err
    assert "Did you mean 'raw_events'?" in result.err


def test_unknown_io_manager_exits_2(cli: Cli) -> None:
    result = cli("-p", BASIC, "materialize", "raw_events", "--io-manager", "memroy")
    assert result.code == 2
    assert "memory" in result.err


# --- status, history -------------------------------------------------------------------------
def test_status_lists_never_materialized_assets(cli: Cli) -> None:
    assert cli("-p", BASIC, "materialize", "raw_events").code == 0
    text = cli("-p", BASIC, "status")
    assert text.code == 0
    rows = [line.split() for line in text.out.splitlines()]
    assert rows[0] == ["ASSET", "PARTITION", "STATUS", "COMPLETED", "DURATION", "RUN"]
    assert rows[1][:3] == ["raw_events", "-", "success"]
    assert rows[2] == ["cleaned", "-", "never", "-", "-", "-"]
    assert rows[3] == ["report", "-", "never", "-", "-", "-"]

    data = cli("-p", BASIC, "status", "--json").json()
    assert [(r["asset"], r["status"]) for r in data] == [
        ("raw_events", "success"),
        ("cleaned", "never"),
        ("report", "never"),
    ]
    assert len(data[0]["run_id"]) == 32
    assert data[0]["run_id"][:8] == rows[1][-1]
    assert data[1]["completed_at"] is None


def test_status_of_partitions_and_one_asset(cli: Cli) -> None:
    for day in ("2025-01-02", "2025-01-01"):
        assert cli("-p", DAILY, "materialize", "events", "--partition", day).code == 0
    data = cli("-p", DAILY, "status", "events", "--json").json()
    assert [(r["partition"], r["partition_key"]) for r in data] == [
        ("2025-01-01", "d:2025-01-01"),
        ("2025-01-02", "d:2025-01-02"),
    ]
    assert cli("-p", DAILY, "status", "evnets").code == 2


def test_history_text_json_and_errors(cli: Cli) -> None:
    assert cli("-p", FAILING, "materialize", "report", "--with-deps").code == 1
    assert cli("-p", FAILING, "materialize", "report", "--with-deps").code == 1

    text = cli("-p", FAILING, "history", "cleaned")
    assert text.code == 0
    assert text.out.splitlines()[0].split()[:3] == ["STARTED", "PARTITION", "STATUS"]
    assert text.out.count("ValueError: bad row 3") == 2

    data = cli("-p", FAILING, "history", "cleaned", "--limit", "1", "--json").json()
    assert len(data) == 1
    assert data[0]["status"] == "failed"
    assert data[0]["error_message"] == "bad row 3"

    errors = cli("-p", FAILING, "history", "cleaned", "--errors")
    assert errors.code == 0
    assert "ValueError: bad row 3" in errors.out
    assert "Traceback (most recent call last)" in errors.out
    assert "failing.py" in errors.out

    nothing = cli("-p", FAILING, "history", "raw_events", "--errors")
    assert nothing.code == 0 and nothing.out == ""
    assert "No failed materializations of 'raw_events'" in nothing.err


def test_history_of_one_partition(cli: Cli) -> None:
    for day in ("2025-01-01", "2025-01-02"):
        assert cli("-p", DAILY, "materialize", "events", "--partition", day).code == 0
    data = cli("-p", DAILY, "history", "events", "--partition", "2025-01-02", "--json").json()
    assert [r["partition"] for r in data] == ["2025-01-02"]
    assert len(cli("-p", DAILY, "history", "events", "--json").json()) == 2
    text = cli("-p", DAILY, "history", "events").out
    assert text.splitlines()[0].split()[-2:] == ["VALUE", "ERROR"]
    assert "sha256:" in text  # the filesystem manager's content hash
    bad = cli("-p", BASIC, "history", "raw_events", "--partition", "2025-01-02")
    assert bad.code == 2
    assert "not partitioned" in bad.err


# --- lineage, graph, audit -------------------------------------------------------------------
def test_a_day_of_hours_through_a_partition_mapping(cli: Cli) -> None:
    run = cli(
        "-p", HOURLY, "materialize", "daily_clicks", "--partition", "2025-01-15", "--with-deps"
    )
    assert run.code == 0, run.err
    assert "clicks [2025-01-15T23:00:00+00:00]" in run.err  # steps of other partitions say which
    graph = cli("-p", HOURLY, "graph").out
    assert graph == "clicks\ndaily_clicks  <- clicks [TimeWindowMapping()]\n"
    up = cli("-p", HOURLY, "lineage", "upstream", "daily_clicks", "--partition", "2025-01-15")
    assert up.code == 0
    assert up.out.count("<- clicks [2025-01-15T") == 24
    [latest] = cli("-p", HOURLY, "history", "daily_clicks", "--json").json()
    assert latest["status"] == "success"


def test_lineage_text_and_json(cli: Cli) -> None:
    assert cli("-p", BASIC, "materialize", "report", "--with-deps").code == 0

    up = cli("-p", BASIC, "lineage", "upstream", "report")
    assert up.code == 0
    assert up.out.splitlines()[0] == "report [-]"
    assert up.out.splitlines()[1].startswith("  <- cleaned [-]  success")
    assert up.out.splitlines()[2].startswith("    <- raw_events [-]  success")

    down = cli("-p", BASIC, "lineage", "downstream", "raw_events", "--depth", "1", "--json").json()
    assert down["direction"] == "downstream"
    assert [(n["asset"], n["depth"]) for n in down["nodes"]] == [("cleaned", 1)]

    impact = cli("-p", BASIC, "lineage", "impact", "raw_events", "--json").json()
    assert [(n["asset"], n["status"]) for n in impact["nodes"]] == [
        ("cleaned", "success"),
        ("report", "success"),
    ]


def test_lineage_of_a_partition(cli: Cli) -> None:
    assert (
        cli(
            "-p", DAILY, "materialize", "daily_total", "--with-deps", "--partition", "2025-01-15"
        ).code
        == 0
    )
    data = cli(
        "-p", DAILY, "lineage", "upstream", "daily_total", "--partition", "2025-01-15", "--json"
    ).json()
    assert data["partition"] == "2025-01-15"
    assert [(n["asset"], n["partition_key"]) for n in data["nodes"]] == [("events", "d:2025-01-15")]
    missing = cli("-p", DAILY, "lineage", "upstream", "daily_total")
    assert missing.code == 2
    assert "--partition" in missing.err


def test_lineage_of_nothing_materialized(cli: Cli) -> None:
    result = cli("-p", BASIC, "lineage", "upstream", "report")
    assert result.code == 0
    assert result.out == "report [-]\n"
    assert "No upstream lineage recorded" in result.err


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", "cleaned     <- raw_events"),
        ("mermaid", "graph TD"),
        ("dot", '"raw_events" -> "cleaned";'),
    ],
)
def test_graph_formats(cli: Cli, fmt: str, expected: str) -> None:
    result = cli("-p", BASIC, "graph", "--format", fmt)
    assert result.code == 0
    assert expected in result.out


def test_graph_json(cli: Cli) -> None:
    data = cli("-p", DAILY, "graph", "--json").json()
    assert [a["name"] for a in data["assets"]] == ["events", "daily_total"]
    assert data["assets"][0]["dependents"] == ["daily_total"]
    assert data["assets"][1]["deps"] == ["events"]
    assert "2025-01-01" in data["assets"][0]["partitions"]
    assert cli("-p", BASIC, "graph", "--json", "--format", "dot").code == 2


def test_audit_by_run_prefix_and_asset(cli: Cli) -> None:
    run_id = cli("-p", BASIC, "materialize", "raw_events", "--json").json()["run_id"]
    assert cli("-p", BASIC, "materialize", "raw_events").code == 0

    data = cli("-p", BASIC, "audit", "--run", run_id[:8], "--json").json()
    assert {e["correlation_id"] for e in data} == {run_id}
    assert [e["action"] for e in data] == [
        "run.started",
        "materialization.success",
        "run.success",
    ]
    assert data[0]["occurred_at"].endswith("+00:00")

    text = cli("-p", BASIC, "audit", "--asset", "raw_events", "--limit", "1")
    assert text.code == 0
    assert len(text.out.splitlines()) == 2
    assert "materialization.success" in text.out

    assert cli("-p", BASIC, "audit", "--asset", "raw_evnts").code == 2


# --- locating the pipeline -------------------------------------------------------------------
def test_pipeline_by_module_without_attribute(cli: Cli) -> None:
    result = cli("-p", "cli_fixtures.basic", "graph")
    assert result.code == 0
    assert "report" in result.out


def test_pipeline_by_factory_function(cli: Cli) -> None:
    assert cli("-p", "cli_fixtures.basic:build", "graph").code == 0


def test_pipeline_by_file_path_with_a_sibling_import(cli: Cli) -> None:
    path = FIXTURES / "standalone" / "etl_flow.py"
    result = cli("-p", f"{path}:etl", "materialize", "doubled", "--with-deps")
    assert result.code == 0, result.err
    # Imported under its own name, and nothing else oddly named was left behind.
    assert sys.modules["etl_flow"].__file__ == str(path)
    assert not [name for name in sys.modules if "flowstone_pipeline" in name]
    # Loading it again (a second command in the same process) reuses the module.
    assert cli("-p", str(path), "status").code == 0


def test_pipeline_by_relative_file_path(cli: Cli, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "mine.py").write_text(
        "import flowstone as fs\n\n@fs.asset\ndef x():\n    return 1\n\np = fs.Pipeline([x])\n"
    )
    result = cli("-p", "flows/mine.py", "materialize", "x")
    assert result.code == 0, result.err


def test_pipeline_from_environment(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWSTONE_PIPELINE", BASIC)
    assert cli("materialize", "raw_events").code == 0
    # --pipeline wins over the environment.
    assert "events" in cli("-p", DAILY, "graph").out


def test_pipeline_from_pyproject(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.flowstone]\npipeline = "{BASIC}"\n'
    )
    result = cli("graph")
    assert result.code == 0
    assert "raw_events" in result.out


def test_global_options_after_the_command(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    result = cli("status", "-p", BASIC, "--database-url", f"sqlite:///{other}", "--json")
    assert result.code == 0
    assert other.exists()


def test_database_url_is_set_before_the_pipeline_is_imported(cli: Cli, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "x.db"
    assert (
        cli("--database-url", f"sqlite:///{other}", "-p", BASIC, "materialize", "raw_events").code
        == 0
    )
    assert other.exists()
    assert cli("-p", BASIC, "status", "--json").json()[0]["status"] == "success"  # env persists


def test_no_pipeline_anywhere_exits_3(cli: Cli) -> None:
    result = cli("status")
    assert result.code == 3
    assert "No pipeline given" in result.err
    assert "FLOWSTONE_PIPELINE" in result.err and "pyproject.toml" in result.err


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cli_fixtures.nothere", "no module named 'cli_fixtures.nothere'"),
        ("no_such_package.mod:p", "no module named 'no_such_package'"),
        ("missing/flow.py", "does not exist"),
        ("cli_fixtures.empty", "defines no flowstone Pipeline"),
        ("cli_fixtures.several", "cli_fixtures.several:first, cli_fixtures.several:second"),
        ("cli_fixtures.basic:pipelin", "Did you mean 'pipeline'?"),
        ("cli_fixtures.basic:raw_events", "not a flowstone Pipeline"),
        ("cli_fixtures.broken", "RuntimeError: the config service is down"),
        ("not a module", "expected package.module:attribute"),
    ],
)
def test_pipeline_not_found_exits_3(cli: Cli, spec: str, message: str) -> None:
    result = cli("-p", spec, "status")
    assert result.code == 3
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(cli: Cli) -> None:
    result = cli("--debug", "-p", "cli_fixtures.broken", "status")
    assert result.code == 3
    assert "Traceback (most recent call last)" in result.err
    assert "broken.py" in result.err


def test_invalid_pipeline_definition_exits_2(cli: Cli) -> None:
    result = cli("-p", "cli_fixtures.cyclic", "graph")
    assert result.code == 2
    assert "Dependency cycle" in result.err


def test_store_that_cannot_be_opened_exits_3(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    url = f"sqlite:///{tmp_path / 'blocker' / 'x.db'}"
    result = cli("--database-url", url, "-p", BASIC, "status")
    assert result.code == 3
    assert result.err.startswith("flowstone: error: ")


# --- db --------------------------------------------------------------------------------------
def test_db_upgrade_on_a_fresh_file(cli: Cli, tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "new.db"
    url = f"sqlite:///{db}"
    before = cli("db", "current", "--database-url", url, "--json")
    assert before.code == 0
    assert before.json()["revision"] is None and before.json()["up_to_date"] is False

    result = cli("db", "upgrade", "--database-url", url)
    assert result.code == 0, result.err
    assert result.out.strip() == f"{url}: (empty) -> {migrate.HEAD_REVISION}"
    assert db.exists()

    again = cli("db", "upgrade", "--database-url", url, "--json").json()
    assert again == {
        "url": url,
        "from": migrate.HEAD_REVISION,
        "to": migrate.HEAD_REVISION,
        "head": migrate.HEAD_REVISION,
    }
    current = cli("db", "current", "--database-url", url)
    assert current.out.strip() == f"{migrate.HEAD_REVISION} (head)"


def test_db_upgrade_uses_the_environment(cli: Cli, cli_env: Path) -> None:
    assert cli("db", "upgrade").code == 0
    assert cli_env.exists()


# --- real processes --------------------------------------------------------------------------
def _run_process(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    src = str(Path(flowstone.__file__).parents[1])
    env = {
        **os.environ,
        "FLOWSTONE_HOME": str(tmp_path / "home"),
        "FLOWSTONE_DATABASE_URL": f"sqlite:///{tmp_path / 'process.db'}",
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


def test_process_success(tmp_path: Path) -> None:
    path = FIXTURES / "basic.py"
    done = _run_process(tmp_path, "-p", f"{path}:pipeline", "materialize", "report", "--with-deps")
    assert done.returncode == 0, done.stderr
    assert "report" in done.stdout and "success" in done.stdout
    assert "✓ report" in done.stderr
    status = _run_process(tmp_path, "-p", f"{path}:pipeline", "status", "--json")
    assert status.returncode == 0
    assert {r["status"] for r in json.loads(status.stdout)} == {"success"}


def test_process_failure_exit_codes(tmp_path: Path) -> None:
    failed = _run_process(tmp_path, "-p", FAILING, "materialize", "report", "--with-deps")
    assert failed.returncode == 1
    assert "cleaned failed (ValueError: bad row 3)" in failed.stderr
    assert "Traceback" not in failed.stderr
    unknown = _run_process(tmp_path, "-p", FAILING, "materialize", "reprot")
    assert unknown.returncode == 2
    assert "Did you mean 'report'?" in unknown.stderr
    missing = _run_process(tmp_path, "materialize", "report")
    assert missing.returncode == 3
    assert missing.stdout == ""
