"""``xsq upload status | now | retry`` as an operator runs them (real processes, no fakes).

Run through ``python -m xsquare_logger.cli.upload`` so they work before the lead
hooks ``upload`` into ``xsq``; the arguments are the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from support.localserver import LocalS3Server
from support.sample import make_session

MIB = 1024 * 1024


def upload_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xsquare_logger.cli.upload", "upload", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def write_config(tmp_path: Path, destination: str, **s3: object) -> Path:
    cfg = {
        "data_root": str(tmp_path / "data"),
        "upload": {
            "destination": destination,
            "part_size": 5 * MIB,
            "retry": {"initial": 0.1, "maximum": 0.2},
            "s3": s3,
        },
    }
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_status_now_status_on_a_file_depot(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"file://{tmp_path / 'depot'}")
    r = upload_cli("status", "--config", str(config))
    assert r.returncode == 0 and "no upload queue" in r.stdout
    a = make_session(tmp_path / "data", "r1", 6 * MIB)
    b = make_session(tmp_path / "data", "r1", 1 * MIB)
    r = upload_cli("now", a.name, "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert f"{a.name}: verified" in r.stdout
    r = upload_cli("status", "--json", "--config", str(config))
    doc = json.loads(r.stdout)
    states = {s["session_id"]: s["state"] for s in doc["sessions"]}
    assert states == {a.name: "verified", b.name: "queued"}
    assert doc["backlog"]["sessions"] == 1
    assert doc["backlog"]["bytes"] == next(
        s["total_bytes"] for s in doc["sessions"] if s["session_id"] == b.name
    )
    r = upload_cli("status", "--config", str(config))
    assert b.name in r.stdout and "backlog: 1 session(s)" in r.stdout
    r = upload_cli("now", "--config", str(config))  # everything left
    assert r.returncode == 0 and f"{b.name}: verified" in r.stdout
    r = upload_cli("retry", "nope", "--config", str(config))
    assert r.returncode == 1 and "no session 'nope'" in r.stderr


def test_now_with_wrong_credentials_exits_1_with_the_reason(tmp_path: Path) -> None:
    with LocalS3Server(tmp_path / "s3", buckets=("sessions",)) as server:
        config = write_config(tmp_path, "s3://sessions/fleet", endpoint_url=server.endpoint)
        session = make_session(tmp_path / "data", "r1", 1 * MIB)
        env = dict(os.environ) | server.env() | {"AWS_SECRET_ACCESS_KEY": "wrong"}
        r = upload_cli("now", "--config", str(config), env=env)
        assert r.returncode == 1
        assert f"{session.name}: failed:" in r.stdout
        assert "wrong credentials" in r.stdout
        assert server.secret_key not in r.stdout + r.stderr
        r = upload_cli("status", "--json", "--config", str(config), env=env)
        row = json.loads(r.stdout)["sessions"][0]
        assert row["state"] == "failed" and row["error_kind"] == "permanent"
        # Fixed credentials + explicit retry: it goes through.
        good = dict(os.environ) | server.env()
        r = upload_cli("retry", session.name, "--config", str(config), env=good)
        assert r.returncode == 0 and "queued" in r.stdout
        r = upload_cli("now", session.name, "--config", str(config), env=good)
        assert r.returncode == 0, r.stdout + r.stderr
        assert session.is_dir()  # the default retention keeps it for a day
