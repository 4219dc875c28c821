"""`make bench`'s recorder phase, briefly: the ceiling, the recorder and the naive recorder all
run against the sim and their figures reach the table and the JSON.

What is checked is the report an engineer reads (every topic, all three phases, the losses
and skipped ticks accounted), not any speed: the run is 3 s of the light profile, and the
figures of record come from 60 s runs on a quiet machine (docs/architecture.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parent.parent
SKIP = ["--skip-writer", "--skip-tablet", "--skip-clip", "--skip-upload", "--skip-floor",
        "--skip-export", "--skip-health"]  # fmt: skip


def test_bench_reports_ceiling_recorder_and_naive_per_topic(
    env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--profile", "light", "--duration", "3",
         "--cameras", "raw", *SKIP, "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())["humanoid"]["raw"]
    rows = {r["topic"]: r for r in result["rows"]}
    assert "/joint_states" in rows and "/camera/head/image_raw" in rows
    for topic, row in rows.items():
        # Each phase got data on every topic, and every loss is put down to a cause.
        assert row["ceiling_received"] > 0 and row["recorded"] > 0, topic
        assert row["naive_ratio"] is not None and row["naive_ratio"] > 0, topic
        assert row["lost"] == sum(row["lost_by_kind"].values()), topic
        assert row["ceiling_gaps"] >= 0
    assert set(result["sim_skipped_percent"]) == {"ceiling", "recorder", "naive"}
    text = run.stdout
    assert "recorded ÷ ceiling (all topics)" in text
    assert "naive rclpy + mcap Writer (zstd) in the callback ÷ ceiling" in text
    assert "sim ticks skipped" in text and "CPU: recorder" in text
    for topic in rows:
        assert topic in text
