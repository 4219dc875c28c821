"""How a freshly sent file is verified, against a real S3 server (``rclone serve s3``).

Each byte is read once and hashed for exactly what the server checks and answers:
per-part MD5s go as Content-MD5 (the server refuses a damaged part), and the
server's answer to CompleteMultipartUpload (``md5(its part md5s)-N``) proves the
object, so no HEAD follows the upload (rclone would re-read and hash the whole
object to answer one). Re-verification before deletion still HEADs every object.
The client is observed through botocore's own event hooks, on the real wire.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.localserver import LocalS3Server
from support.sample import make_session

from xsquare_logger.config.model import LoggerConfig, apply_overrides, load_config
from xsquare_logger.upload.uploader import Uploader
from xsquare_logger.upload.verify import multipart_etag

MIB = 1024 * 1024
PART = 5 * MIB


def _config(tmp_path: Path, server: LocalS3Server) -> LoggerConfig:
    net = tmp_path / "sys" / "class" / "net" / "wlan0"
    (net / "wireless").mkdir(parents=True)
    (net / "operstate").write_text("up\n")
    return apply_overrides(
        LoggerConfig(),
        {
            "data_root": str(tmp_path / "data"),
            "upload.destination": "s3://sessions/fleet",
            "upload.s3.endpoint_url": server.endpoint,
            "upload.gate.sysfs_root": str(tmp_path / "sys"),
            "upload.part_size": PART,
            "upload.retry.initial": 0.05,
            "upload.retry.maximum": 0.1,
            "upload.retention.free_disk_reserve": 0,
            "upload.retention.delete_after": None,
        },
        "test",
    )


def _events(up: Uploader) -> Any:
    # The real botocore client of the uploader's S3 backend (observed, not replaced).
    return up._get_backend()._client.meta.events  # type: ignore[attr-defined]  # S3Backend


def _part_md5s(data: bytes) -> list[str]:
    return [hashlib.md5(data[i : i + PART]).hexdigest() for i in range(0, len(data), PART)]


def test_fresh_upload_is_verified_by_the_servers_answers_without_a_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalS3Server(tmp_path / "s3", buckets=("sessions",)) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        cfg = _config(tmp_path, server)
        session = make_session(cfg.data_root, "r1", 12 * MIB)
        mcap = session.name + "_0.mcap"
        data = session.joinpath(mcap).read_bytes()
        calls: Counter[str] = Counter()
        with Uploader(cfg) as up:
            _events(up).register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
            up.scan()
            assert up.upload(session.name, force=True) == "verified"
            # Every object proven by the answer to the request that created it: no HEAD
            # (and nothing but the session's own objects written: no probe object).
            assert calls["HeadObject"] == 0, calls
            assert calls["DeleteObject"] == 0, calls
            assert calls["CreateMultipartUpload"] == 1, calls
            assert calls["PutObject"] == 2, calls  # metadata.yaml, session.json
            f = up.queue.file(session.name, mcap)
            want = multipart_etag(_part_md5s(data))
            assert (f.expected_etags or "").split() == [want]
            assert (f.etag or "").lower() == want  # the server's CompleteMultipartUpload
            # Before deleting, every object is asked for again; rclone then reports the
            # whole file's MD5, checked against the local file once more.
            calls.clear()
            assert up.verify_remote(session.name) is None
            assert calls["HeadObject"] == 3, calls
            f = up.queue.file(session.name, mcap)
            assert hashlib.md5(data).hexdigest() in (f.expected_etags or "").split()
        c = server.client()
        key = next(
            o["Key"]
            for o in c.list_objects_v2(Bucket="sessions")["Contents"]
            if o["Key"].endswith(mcap)
        )
        assert c.get_object(Bucket="sessions", Key=key)["Body"].read() == data


def test_bytes_damaged_on_the_way_never_complete_and_are_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part damaged on the wire is caught by the server's MD5 of it (its ETag) and the
    upload dropped; a damaged single PUT (metadata.yaml) is refused by the server
    (Content-MD5). Either way the next try sends the file again and it verifies."""
    with LocalS3Server(tmp_path / "s3", buckets=("sessions",)) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        cfg = _config(tmp_path, server)
        session = make_session(cfg.data_root, "r1", 12 * MIB)
        local = {p.name: p.read_bytes() for p in session.iterdir() if p.is_file()}
        local.pop(".recording.lock", None)
        damaged: list[str] = []
        answers: list[str] = []

        def damage_once(request: Any, operation_name: str = "", **_: Any) -> None:
            # One bit flipped after the request was built and signed: what a bad NIC,
            # a buggy proxy or RAM would do to the bytes on their way.
            if "partNumber=2&" in request.url + "&":
                what = "part 2"
            elif request.method == "PUT" and request.url.endswith("/metadata.yaml"):
                what = "metadata.yaml"
            else:
                return
            if what in damaged:
                return
            body = request.body
            raw = body if isinstance(body, bytes) else (body.seek(0), body.read())[1]
            bad = bytearray(raw)
            bad[len(bad) // 2] ^= 0x01
            request.body = bytes(bad)
            damaged.append(what)

        def answer(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
            answers.append(str(parsed.get("Error", {}).get("Code", http_response.status_code)))

        errors = []
        with Uploader(cfg) as up:
            events = _events(up)
            events.register("before-send.s3.UploadPart", damage_once)
            events.register("before-send.s3.PutObject", damage_once)
            events.register("after-call.s3.PutObject", answer)
            up.scan()
            for _ in range(4):
                outcome = up.upload(session.name, force=True)
                if outcome == "verified":
                    break
                row = up.queue.session(session.name)
                assert outcome == "retry" and row is not None, (outcome, row)
                errors.append(row.last_error or "")
            assert outcome == "verified", errors
        assert sorted(damaged) == ["metadata.yaml", "part 2"]
        assert any("part 2 arrived damaged" in e for e in errors), errors
        assert "BadDigest" in answers, answers  # the server itself refused the PUT
        c = server.client()
        remote = {
            o["Key"].rsplit("/", 1)[1]: c.get_object(Bucket="sessions", Key=o["Key"])["Body"].read()
            for o in c.list_objects_v2(Bucket="sessions")["Contents"]
        }
        assert remote == local


def test_status_idle_passes_and_gate_never_write_to_a_fresh_bucket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-only paths (``xsq upload status``, an idle uploader pass, the gate's
    destination probe, re-verification) leave a fresh bucket untouched."""
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
