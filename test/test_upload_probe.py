"""A robot's first upload to a server: the ETag style is learned before the first file,
so each byte is hashed once for the ETag the server will report (no second read).
Real S3 server (``rclone serve s3``, whole-file MD5 ETags for multipart objects)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.localserver import LocalS3Server
from support.sample import make_session

from xsquare_logger.config.model import LoggerConfig, apply_overrides, load_config
from xsquare_logger.upload.uploader import Uploader

MIB = 1024 * 1024


def test_first_upload_learns_etag_style_first_and_hashes_each_byte_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalS3Server(tmp_path / "s3", buckets=("sessions",)) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        net = tmp_path / "sys" / "class" / "net" / "wlan0"
        (net / "wireless").mkdir(parents=True)
        (net / "operstate").write_text("up\n")
        cfg = apply_overrides(
            LoggerConfig(),
            {
                "data_root": str(tmp_path / "data"),
                "upload.destination": "s3://sessions/fleet",
                "upload.s3.endpoint_url": server.endpoint,
                "upload.gate.sysfs_root": str(tmp_path / "sys"),
                "upload.part_size": 5 * MIB,
                "upload.retention.free_disk_reserve": 0,
                "upload.retention.delete_after": None,
            },
            "test",
        )
        session = make_session(cfg.data_root, "r1", 12 * MIB)
        mcap = session.name + "_0.mcap"
        with Uploader(cfg) as up:
            up.connect()  # the probe runs here, before any file
            styles = [v for k, v in _meta(up).items() if k.startswith("plain_md5_etags:")]
            assert styles == ["1"]
            up.scan()
            assert up.upload(session.name, force=True) == "verified"
            f = up.queue.file(session.name, mcap)
            # One pass computed the whole-file MD5 the server reports: had the parts gone
            # with per-part MD5s, the prediction would be "md5-of-md5s-N" and the file
            # would have been read again to add its whole MD5 (two expected ETags).
            whole = hashlib.md5(session.joinpath(mcap).read_bytes()).hexdigest()
            assert (f.expected_etags or "").split() == [whole]
        c = server.client()
        keys = [o["Key"] for o in c.list_objects_v2(Bucket="sessions").get("Contents", [])]
        assert not any(".xsq-etag-probe" in k for k in keys), keys
        assert c.list_multipart_uploads(Bucket="sessions").get("Uploads", []) == []


def _meta(up: Uploader) -> dict[str, str]:
    rows = up.queue._query("SELECT key, value FROM meta")
    return {r[0]: r[1] for r in rows}


def test_status_idle_passes_and_gate_never_write_to_a_fresh_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-only paths (``xsq upload status``, an idle uploader pass, the gate's
    destination probe, re-verification) leave a fresh bucket untouched: the ETag style
    probe writes only right before the first file is sent."""
    with LocalS3Server(tmp_path / "s3", buckets=("sessions",)) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        bucket = server.root / "sessions"
        before = bucket.stat().st_mtime_ns
        net = tmp_path / "sys" / "class" / "net" / "wlan0"
        (net / "wireless").mkdir(parents=True)
        (net / "operstate").write_text("up\n")
        config = tmp_path / "robot.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "data_root": str(tmp_path / "data"),
                    "upload": {
                        "destination": "s3://sessions/fleet",
                        "s3": {"endpoint_url": server.endpoint},
                        "gate": {"sysfs_root": str(tmp_path / "sys")},
                        "retention": {"delete_after": None, "free_disk_reserve": 0},
                    },
                }
            )
        )
        cfg = load_config(config)
        with Uploader(cfg) as up:
            assert up.run_once() == "idle"  # scan, retention, gate probe: nothing due
            assert up.gate.check() is None  # the destination answered
        for args in (("status",), ("status", "--json")):
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "xsquare_logger.cli.main",
                    "upload",
                    *args,
                    "--config",
                    str(config),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
            )
            assert r.returncode == 0, r.stderr
        # No object, no folder left by a deleted one, no upload in progress, untouched.
        assert sorted(os.listdir(bucket)) == []
        assert bucket.stat().st_mtime_ns == before
        c = server.client()
        assert c.list_objects_v2(Bucket="sessions").get("Contents", []) == []
        # (rclone answers ListMultipartUploads with NoSuchUpload on a bucket that never
        # had one: the empty folder above already says none was started.)
