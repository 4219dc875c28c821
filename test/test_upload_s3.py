"""The uploader against a real S3 server (``rclone serve s3`` on 127.0.0.1, started here).

Sessions are written by the real SessionWriter. Port and credentials are picked
at run time. The only fake is ``/sys``: interface state cannot be changed on this
machine, so the gate reads a temp tree shaped like ``/sys/class/net`` (wlan0 up,
wireless) unless a test says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.localserver import STORE_PARTS, LocalS3Server
from support.sample import make_session
from support.waiting import wait_until
from support.wirecount import CountingProxy

from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.upload.queue import UploadQueue
from xsquare_logger.upload.uploader import Uploader, default_queue_path

MIB = 1024 * 1024
BUCKET = "sessions"


def fake_sysfs(root: Path, interfaces: dict[str, tuple[str, bool]]) -> Path:
    """A stand-in for /sys: ``{name: (operstate, wireless)}`` under class/net."""
    for name, (state, wireless) in interfaces.items():
        d = root / "class" / "net" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "operstate").write_text(state + "\n")
        if wireless:
            (d / "wireless").mkdir(exist_ok=True)
    return root


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...]) -> Any:
    server = LocalS3Server(tmp_path / "s3", buckets=(BUCKET,), extra_args=extra).start()
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    return server


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalS3Server]:
    server = _serve(tmp_path, monkeypatch, ())
    yield server
    server.stop()


@pytest.fixture
def s3_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalS3Server]:
    """rclone keeping parts apart until completion, as real S3 servers do (by default it
    streams them into one file and may drop an upload whose client died mid-part)."""
    server = _serve(tmp_path, monkeypatch, STORE_PARTS)
    yield server
    server.stop()


def client(server: LocalS3Server, endpoint: str | None = None) -> Any:
    return server.client(endpoint)


def make_config(tmp_path: Path, endpoint: str, **upload: Any) -> LoggerConfig:
    sysfs = fake_sysfs(tmp_path / "sys", {"eth0": ("up", False), "wlan0": ("up", True)})
    overrides = {
        "data_root": str(tmp_path / "data"),
        "upload.destination": f"s3://{BUCKET}/fleet",
        "upload.s3.endpoint_url": endpoint,
        "upload.gate.sysfs_root": str(sysfs),
        "upload.part_size": 5 * MIB,
        "upload.max_concurrency": 2,
        "upload.retry.initial": 0.1,
        "upload.retry.maximum": 0.5,
        "upload.retention.free_disk_reserve": 0,
        "upload.retention.delete_after": None,
    }
    overrides.update({f"upload.{k}": v for k, v in upload.items()})
    return apply_overrides(LoggerConfig(), overrides, "test")


def remote_objects(server: LocalS3Server) -> dict[str, bytes]:
    c = client(server)
    out = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = c.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    return out


def local_files(session: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in session.iterdir() if p.name != ".recording.lock"}


# --- full flow ---------------------------------------------------------------------------


def test_session_uploads_verifies_then_local_copy_is_deleted(tmp_path: Path, s3) -> None:
    cfg = make_config(tmp_path, s3.endpoint, **{"retention.delete_after": 0})
    session = make_session(cfg.data_root, "r1", 12 * MIB, max_file_bytes=8 * MIB)
    local = local_files(session)
    u = Uploader(cfg)
    try:
        assert u.run_once() == "verified"
        row = u.queue.session(session.name)
        assert row is not None and row.state == "verified"
        # Verified, and not yet deleted: retention runs on the next pass.
        assert session.is_dir()
        manifest = json.loads(local["session.json"])
        day = datetime.fromtimestamp(manifest["started_ns"] / 1e9, UTC).strftime("%Y-%m-%d")
        prefix = f"fleet/r1/{day}/{session.name}/"
        assert row.remote_prefix + "/" == prefix
        remote = remote_objects(s3)
        assert {k.removeprefix(prefix): v for k, v in remote.items()} == local
        for f in manifest["files"]:
            assert hashlib.sha256(remote[prefix + f["path"]]).hexdigest() == f["sha256"]
        assert len(manifest["files"]) == 2  # split: a multipart file and a single PUT
        u.wake()
        u.run_once()
        assert not session.exists()
        assert u.queue.session(session.name).state == "deleted"
        assert u.backlog() == {"sessions": 0, "bytes": 0}
    finally:
        u.stop()


def test_open_session_is_not_uploaded(tmp_path: Path, s3) -> None:
    from xsquare_logger.session.fsutil import SessionLock

    cfg = make_config(tmp_path, s3.endpoint)
    session = make_session(cfg.data_root, "r1", 1 * MIB)
    lock = SessionLock(session)
    assert lock.acquire()  # as a recorder (or recovery) holding the session would
    u = Uploader(cfg, is_recording=lambda: False)
    try:
        assert u.run_once() == "idle"
        assert remote_objects(s3) == {}
        lock.release(remove=False)
        u.wake()
        assert u.run_once() == "verified"
    finally:
        u.stop()


# --- kill and resume ---------------------------------------------------------------------


def test_killed_uploader_resumes_without_resending_completed_parts(
    tmp_path: Path, s3_parts: LocalS3Server
) -> None:
    s3 = s3_parts
    part = 5 * MIB
    with CountingProxy(s3.port) as proxy1:
        cfg = make_config(
            tmp_path,
            proxy1.endpoint,
            bandwidth_limit=20 * MIB,
            max_concurrency=1,
            scan_interval=0.2,
        )
        session = make_session(cfg.data_root, "r1", 40 * MIB)
        cfg_file = tmp_path / "robot.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        env = dict(os.environ)
        cmd = [
            sys.executable,
            "-m",
            "xsquare_logger.cli.upload",
            "upload",
            "run",
            "--config",
            str(cfg_file),
        ]
        log1 = open(tmp_path / "uploader1.log", "wb")  # noqa: SIM115 - closed below
        p = subprocess.Popen(cmd, env=env, stdout=log1, stderr=log1)
        queue = UploadQueue(default_queue_path(cfg))
        mcap = session.name + "_0.mcap"

        def parts_done() -> int:
            f = [x for x in queue.files(session.name) if x.name == mcap]
            return f[0].bytes_done // part if f else 0

        try:
            wait_until(lambda: parts_done() >= 3, what="3 parts uploaded")
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        finally:
            if p.poll() is None:
                p.kill()
            log1.close()
        done_at_kill = parts_done()
        size = session.joinpath(mcap).stat().st_size
        f = queue.file(session.name, mcap)
        recorded = queue.parts(session.name, mcap, f.upload_id)
        data = session.joinpath(mcap).read_bytes()
        # Every confirmed part is on record with the MD5 of its bytes (sent as
        # Content-MD5), which the resume compares with what the server lists.
        assert recorded and all(
            p.md5 == hashlib.md5(data[(n - 1) * part : n * part]).hexdigest()
            for n, p in recorded.items()
        ), recorded
        assert done_at_kill < size // part, "the kill came too late to test a resume"

    with CountingProxy(s3.port) as proxy2:
        cfg2 = cfg.model_copy(deep=True)
        cfg2.upload.s3.endpoint_url = proxy2.endpoint
        cfg2.upload.bandwidth_limit = 0
        u = Uploader(cfg2)
        try:
            assert u.run_once() == "verified"
        finally:
            u.stop()
        total = sum(p.stat().st_size for p in session.iterdir() if p.name != ".recording.lock")
        resent_budget = total - done_at_kill * part
        # Requests carry headers too: allow 64 KiB of them, never another part.
        assert proxy2.sent <= resent_budget + 64 * 1024, (proxy2.sent, resent_budget)
    remote = remote_objects(s3)
    key = next(k for k in remote if k.endswith(mcap))
    assert remote[key] == session.joinpath(mcap).read_bytes()
    queue.close()


def test_server_down_then_up_retries_and_completes(tmp_path: Path, s3) -> None:
    cfg = make_config(tmp_path, s3.endpoint, bandwidth_limit=20 * MIB, scan_interval=0.2)
    session = make_session(cfg.data_root, "r1", 30 * MIB)
    u = Uploader(cfg)
    q = u.queue

    def bytes_done() -> int:
        row = q.session(session.name)
        return row.bytes_done if row else 0

    u.start()
    try:
        wait_until(lambda: bytes_done() >= 5 * MIB, what="first part")
        s3.stop()  # in-progress multipart uploads die with it (rclone keeps them in memory)
        wait_until(
            lambda: (
                q.session(session.name).attempts >= 1
                or "not answering" in (q.get_meta("gate") or "")
            ),
            what="a failed attempt",
        )
        s3.start()
        wait_until(lambda: q.session(session.name).state == "verified", what="verified")
    finally:
        u.stop()
    remote = remote_objects(s3)
    local = local_files(session)
    assert sorted(k.rsplit("/", 1)[1] for k in remote) == sorted(local)
    for key, data in remote.items():
        assert data == local[key.rsplit("/", 1)[1]]


# --- refusals ----------------------------------------------------------------------------


def test_wrong_secret_fails_clearly_keeps_session_then_retries_on_change(
    tmp_path: Path, s3, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_config(tmp_path, s3.endpoint, **{"retention.delete_after": 0})
    session = make_session(cfg.data_root, "r1", 1 * MIB)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    u = Uploader(cfg)
    try:
        assert u.run_once() == "failed"
        row = u.queue.session(session.name)
        assert row.state == "failed" and row.error_kind == "permanent"
        assert "wrong credentials" in row.last_error
        assert "SignatureDoesNotMatch" in row.last_error
        assert "not-the-secret" not in row.last_error
        assert u.backlog() == {"sessions": 1, "bytes": row.total_bytes}
        u.wake()
        assert u.run_once() == "idle"  # not retried while nothing changed
        assert session.is_dir() and remote_objects(s3) == {}
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
        u.wake()
        assert u.run_once() == "verified"
    finally:
        u.stop()


def test_missing_bucket_is_a_permanent_error(tmp_path: Path, s3) -> None:
    cfg = make_config(tmp_path, s3.endpoint, destination="s3://no-such-bucket/x")
    session = make_session(cfg.data_root, "r1", 1 * MIB)
    u = Uploader(cfg)
    try:
        assert u.run_once() == "failed"
        row = u.queue.session(session.name)
        assert "bucket does not exist" in row.last_error
        assert session.is_dir()
    finally:
        u.stop()


@pytest.mark.parametrize("tamper", ["same-size-forged-metadata", "truncated-on-server-disk"])
def test_tampered_remote_object_is_not_verified_and_nothing_is_deleted(
    tmp_path: Path, s3, tamper: str
) -> None:
    cfg = make_config(tmp_path, s3.endpoint)
    session = make_session(cfg.data_root, "r1", 8 * MIB)
    u = Uploader(cfg)
    try:
        assert u.run_once() == "verified"
        row = u.queue.session(session.name)
    finally:
        u.stop()
    mcap = session.name + "_0.mcap"
    key = f"{row.remote_prefix}/{mcap}"
    good = session.joinpath(mcap).read_bytes()
    if tamper == "same-size-forged-metadata":
        bad = bytearray(good)
        bad[1000] ^= 0xFF
        sha = hashlib.sha256(good).hexdigest()  # claims to be the right file
        client(s3).put_object(Bucket=BUCKET, Key=key, Body=bytes(bad), Metadata={"sha256": sha})
    else:
        path = s3.root / BUCKET / key
        path.write_bytes(good[:-10])
    # Retention now wants it gone: it re-checks the remote copy first.
    cfg.upload.retention.delete_after = 0
    u = Uploader(cfg)
    try:
        u.run_once()
        row = u.queue.session(session.name)
        assert row.state == "failed" and row.error_kind == "verify"
        assert mcap in row.last_error
        # rclone may serve a cached size for a file changed under it; the ETag still differs.
        assert "ETag" in row.last_error or "size" in row.last_error
        assert session.joinpath(mcap).read_bytes() == good  # nothing deleted
        # The operator asks again: the damaged object is sent again and verified.
        u.retry(session.name)
        assert u.run_once() == "verified"
        assert remote_objects(s3)[key] == good
    finally:
        u.stop()


# --- the gate ----------------------------------------------------------------------------


def test_gate_closed_nothing_uploads_until_it_opens(tmp_path: Path, s3) -> None:
    cfg = make_config(tmp_path, s3.endpoint)
    sysfs = Path(cfg.upload.gate.sysfs_root)
    (sysfs / "class" / "net" / "wlan0" / "operstate").write_text("down\n")  # Wi-Fi lost
    session = make_session(cfg.data_root, "r1", 1 * MIB)
    recording = [False]
    u = Uploader(cfg, is_recording=lambda: recording[0])
    try:
        assert u.run_once() == "waiting: no wireless interface up"
        (sysfs / "class" / "net" / "wlan0" / "operstate").write_text("up\n")
        recording[0] = True
        assert u.run_once().startswith("waiting: a session is being recorded")
        assert remote_objects(s3) == {}
        assert u.queue.session(session.name).state == "queued"
        recording[0] = False
        assert u.run_once() == "verified"
    finally:
        u.stop()


def test_gate_waits_while_destination_does_not_answer(tmp_path: Path, s3) -> None:
    cfg = make_config(tmp_path, s3.endpoint)
    make_session(cfg.data_root, "r1", 1 * MIB)
    s3.stop()
    u = Uploader(cfg)
    try:
        assert u.run_once().startswith("waiting: destination not answering")
        s3.start()
        assert u.run_once() == "verified"
    finally:
        u.stop()


def test_gate_closing_mid_upload_pauses_and_resumes_from_last_part(tmp_path: Path, s3) -> None:
    cfg = make_config(tmp_path, s3.endpoint, max_concurrency=1)
    session = make_session(cfg.data_root, "r1", 30 * MIB)
    recording = [False]
    u = Uploader(cfg, is_recording=lambda: recording[0])
    parts = [0]

    def progress() -> None:
        parts[0] += 1
        if parts[0] == 2:
            recording[0] = True  # a visit starts while the upload runs

    try:
        u.scan()
        assert u.upload(session.name, progress=progress) == "paused"
        row = u.queue.session(session.name)
        assert row.state == "uploading" and "being recorded" in row.last_error
        assert 0 < row.bytes_done < row.total_bytes
        names = [k.rsplit("/", 1)[1] for k in remote_objects(s3)]
        assert "session.json" not in names  # the commit marker comes last
        recording[0] = False
        assert u.upload(session.name) == "verified"
        sent = sum(f.bytes_sent for f in u.queue.files(session.name))
        assert sent == row.total_bytes  # no byte sent twice
    finally:
        u.stop()
