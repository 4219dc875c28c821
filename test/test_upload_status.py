"""What ``xsq upload status`` / ``now`` tell the operator, checked as an operator sees it.

Real processes (``python -m xsquare_logger.cli.main ...``), stdout piped (not a
terminal), a real S3 server (``rclone serve s3``) where a destination is needed.
The only fake: a temp tree shaped like ``/sys/class/net`` for the gate (interface
state cannot be changed on a build machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from support.localserver import LocalS3Server, free_port
from support.sample import make_session

from xsquare_logger.config.model import load_config
from xsquare_logger.upload.uploader import Uploader

MIB = 1024 * 1024


def xsq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xsquare_logger.cli.main", *args],
        capture_output=True,  # stdout is a pipe, as in `xsq upload status | less`
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def fake_sysfs(root: Path, wireless_up: bool) -> Path:
    d = root / "class" / "net" / ("wlan0" if wireless_up else "eth0")
    d.mkdir(parents=True, exist_ok=True)
    (d / "operstate").write_text("up\n")
    if wireless_up:
        (d / "wireless").mkdir(exist_ok=True)
    return root


def write_config(tmp_path: Path, destination: str, wireless_up: bool = True, **upload: Any) -> Path:
    cfg: dict[str, Any] = {
        "data_root": str(tmp_path / "data"),
        "upload": {
            "destination": destination,
            "part_size": 5 * MIB,
            "retry": {"initial": 0.1, "maximum": 0.2},
            "gate": {"sysfs_root": str(fake_sysfs(tmp_path / "sys", wireless_up))},
            "retention": {"delete_after": None, "free_disk_reserve": 0},
            **upload,
        },
    }
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def s3_client(server: LocalS3Server) -> Any:
    return server.client()


def test_now_and_status_show_where_the_objects_really_are(tmp_path: Path) -> None:
    with LocalS3Server(tmp_path / "s3", buckets=("bucket1",)) as server:
        config = write_config(tmp_path, "s3://bucket1/tc3", s3={"endpoint_url": server.endpoint})
        session = make_session(tmp_path / "data", "r1", 1 * MIB)
        env = dict(os.environ) | server.env()
        r = xsq("upload", "now", "--config", str(config), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"{session.name}: verified"))
        shown = line.rsplit("-> ", 1)[1].strip()
        assert "tc3/tc3" not in r.stdout
        assert shown.startswith("s3://bucket1/tc3/r1/") and shown.endswith(session.name)
        # The location shown is where the objects are.
        key = shown.removeprefix("s3://bucket1/") + "/session.json"
        s3_client(server).head_object(Bucket="bucket1", Key=key)
        doc = json.loads(xsq("upload", "status", "--json", "--config", str(config)).stdout)
        assert doc["sessions"][0]["remote"] == shown


def test_status_reports_the_gates_real_verdict_when_nothing_waits(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"file://{tmp_path / 'depot'}", wireless_up=False)
    (tmp_path / "data").mkdir()
    with Uploader(load_config(config)) as up:
        assert up.run_once() == "idle"  # nothing to upload, and no Wi-Fi
    r = xsq("upload", "status", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert "gate: open" not in r.stdout
    assert "gate: closed: no wireless interface up" in r.stdout
    gate = json.loads(xsq("upload", "status", "--json", "--config", str(config)).stdout)["gate"]
    assert gate["open"] is False and gate["reason"] == "no wireless interface up"


def test_failed_try_shows_backoff_and_retry_time(tmp_path: Path) -> None:
    # Dead network: nothing listens on the endpoint. A long backoff keeps the retry ahead.
    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path,
        "s3://sessions/fleet",
        s3={"endpoint_url": dead, "connect_timeout": 1.0},
        retry={"initial": 600.0, "maximum": 1200.0},
    )
    session = make_session(tmp_path / "data", "r1", 1 * MIB)
    env = dict(os.environ) | {
        "AWS_ACCESS_KEY_ID": "XSQTESTKEY0000000000",
        "AWS_SECRET_ACCESS_KEY": "not-a-secret",
    }
    r = xsq("upload", "now", "--attempts", "1", "--config", str(config), env=env)
    assert r.returncode == 1
    assert f"{session.name}: retry:" in r.stdout
    row = json.loads(xsq("upload", "status", "--json", "--config", str(config)).stdout)[
        "sessions"
    ][0]
    assert row["state"] == "backoff"
    assert row["error_kind"] == "transient" and row["next_attempt_ns"]
    assert "\n" not in row["last_error"]
    table = xsq("upload", "status", "--config", str(config)).stdout
    assert "backoff" in table and "retry at " in table
    assert "uploading" not in table


def test_piped_status_shows_full_session_ids(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"file://{tmp_path / 'depot'}")
    robot = "humanoid-training-center-3-unit-0017"
    ids = [make_session(tmp_path / "data", robot, 64 * 1024, seed=i).name for i in range(2)]
    with Uploader(load_config(config)) as up:
        up.scan()
    r = xsq("upload", "status", "--config", str(config))
    assert r.returncode == 0, r.stderr
    for sid in ids:
        assert sid in r.stdout.split(), r.stdout
    assert "…" not in r.stdout and "..." not in r.stdout
