"""Shared fixtures: every test gets its own FlowStone home, so runs never see each other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distributed_fixtures.harness import Cluster, cluster
from test_store_contract import require_postgres


@pytest.fixture(autouse=True)
def flowstone_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the embedded defaults (SQLite file, storage folder) at a fresh folder."""
    home = tmp_path / "flowstone-home"
    monkeypatch.setenv("FLOWSTONE_HOME", str(home))
    monkeypatch.delenv("FLOWSTONE_DATABASE_URL", raising=False)
    monkeypatch.delenv("FLOWSTONE_PIPELINE", raising=False)
    monkeypatch.delenv("FLOWSTONE_EXECUTOR", raising=False)  # distributed execution (issue 3)
    return home


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A metadata store URL: the in-memory store, then a SQLite file."""
    if request.param == "memory":
        yield "memory"
    else:
        yield f"sqlite:///{tmp_path / 'meta.db'}"


@pytest.fixture
def pg_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A schema of its own on the test PostgreSQL, for real ``flowstone worker`` processes
    (stopped at the end); skipped with the reason when no server answers (not on CI)."""
    require_postgres()
    with cluster(tmp_path / "cluster") as made:
        yield made
