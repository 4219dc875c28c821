"""Uploads cut short: a local file that shrank, SIGTERM under a bandwidth cap, and what
``-v`` logs. Against a real S3 server (``rclone serve s3`` on 127.0.0.1) with real
processes. The only fake: a temp tree shaped like ``/sys/class/net`` for the gate.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.localserver import STORE_PARTS, LocalS3Server
from support.sample import make_session

from xsquare_logger.config.model import LoggerConfig, load_config
from xsquare_logger.upload.queue import UploadQueue
from xsquare_logger.upload.uploader import Uploader, default_queue_path

MIB = 1024 * 1024
BUCKET = "sessions"


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalS3Server]:
    # Parts kept apart until completion, as real S3 servers do (see localserver.py).
    server = LocalS3Server(tmp_path / "s3", buckets=(BUCKET,), extra_args=STORE_PARTS).start()
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    yield server
    server.stop()


def client(server: LocalS3Server) -> Any:
    return server.client()


def write_config(tmp_path: Path, endpoint: str, **upload: Any) -> Path:
    net = tmp_path / "sys" / "class" / "net" / "wlan0"
    (net / "wireless").mkdir(parents=True, exist_ok=True)
    (net / "operstate").write_text("up\n")
    cfg = {
        "data_root": str(tmp_path / "data"),
        "upload": {
            "destination": f"s3://{BUCKET}/fleet",
            "part_size": 5 * MIB,
            "max_concurrency": 2,
            "scan_interval": 0.2,
            "retry": {"initial": 0.1, "maximum": 0.2},
            "s3": {"endpoint_url": endpoint},
            "gate": {"sysfs_root": str(tmp_path / "sys"), "while_recording": True},
            "retention": {"delete_after": None, "free_disk_reserve": 0},
            **upload,
        },
    }
    path = tmp_path / "robot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def mcap_of(session: Path) -> Path:
    return next(p for p in session.iterdir() if p.suffix == ".mcap")


def test_file_found_short_mid_multipart_leaves_no_upload_on_the_server(
    tmp_path: Path, s3: LocalS3Server
) -> None:
    cfg: LoggerConfig = load_config(write_config(tmp_path, s3.endpoint))
    session = make_session(tmp_path / "data", "r1", 14 * MIB)
    with Uploader(cfg) as up:
        up.scan()
        with open(mcap_of(session), "r+b") as fh:  # shrinks after close: 1 whole part + a bit
            fh.truncate(7 * MIB)
        assert up.upload(session.name, force=True) == "failed"
        row = up.queue.session(session.name)
        assert row is not None and "changed since the session was closed" in (row.last_error or "")
    uploads = client(s3).list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    assert uploads == []


def _parts_confirmed(queue: UploadQueue, sid: str) -> int:
    return sum(f.bytes_done for f in queue.files(sid))


def test_sigterm_under_bandwidth_cap_pauses_at_part_boundary_and_resumes(
    tmp_path: Path, s3: LocalS3Server
) -> None:
    config = write_config(tmp_path, s3.endpoint, bandwidth_limit=4_000_000)
    cfg = load_config(config)
    session = make_session(tmp_path / "data", "r1", 30 * MIB)
    mcap = mcap_of(session)
    env = dict(os.environ) | s3.env()
    proc = subprocess.Popen(
        [sys.executable, "-m", "xsquare_logger.cli.main", "upload", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        qpath = default_queue_path(cfg)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not qpath.exists():
            time.sleep(0.05)
        queue = UploadQueue(qpath)
        while time.monotonic() < deadline:  # first part of the MCAP file confirmed
            if queue.session(session.name) and queue.file(session.name, mcap.name).bytes_done:
                break
            time.sleep(0.05)
        else:
            pytest.fail("no part confirmed within 60 s")
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    row = queue.session(session.name)
    assert row is not None
    assert row.error_kind == "paused", (row.state, row.last_error)
    assert row.last_error == "paused: uploader stopping"
    assert "Traceback" not in err and "WARNING" not in err and "ERROR" not in err
    # Resume: every part is sent (and confirmed) exactly once over both runs.
    with Uploader(cfg) as up:
        assert up.upload(session.name, force=True) == "verified"
        f = up.queue.file(session.name, mcap.name)
        assert f.bytes_sent == f.size
    queue.close()


def test_verbose_never_logs_credentials(tmp_path: Path, s3: LocalS3Server) -> None:
    config = write_config(tmp_path, s3.endpoint)
    make_session(tmp_path / "data", "r1", 6 * MIB)  # single PUT and multipart requests
    env = dict(os.environ) | s3.env()
    r = subprocess.run(
        [sys.executable, "-m", "xsquare_logger.cli.main", "-v", "upload", "now", "--config",
         str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "DEBUG" in r.stderr  # -v is on: the test would prove nothing otherwise
    for secret in (s3.access_key, s3.secret_key):
        assert secret not in r.stdout and secret not in r.stderr
