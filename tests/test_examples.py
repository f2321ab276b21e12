"""The examples run from a clean folder, as a user would run them (the sales example is also
run by CI, as the README's first command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_web_traffic_example_rolls_hours_into_days(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWSTONE_")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "web_traffic" / "run.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" in ")[0] for line in lines[:3]] == [
        "backfill page_views: 335 partitions",  # 14 days of hours, one of them 23 hours long
        "backfill daily_views: 14 partitions",
        "backfill versus_last_week: 14 partitions",
    ]
    assert "2025-03-30:  3167 views in 23 hours" in done.stdout  # spring forward in Oslo
    assert lines[-1] == (
        "daily_views 2025-03-30 read 23 hourly partitions: 2025-03-30T00:00:00+01:00 .. "
        "2025-03-30T23:00:00+02:00"
    )
    assert (tmp_path / ".flowstone").is_dir()  # the embedded default, in the user's folder
