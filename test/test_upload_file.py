"""The uploader into a ``file://`` depot: the same flow and checks as S3, nothing else needed.

The only fake is ``/sys`` (a temp tree shaped like ``/sys/class/net``): interface
state cannot be changed on this machine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from support.sample import make_session

from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.upload.uploader import Uploader

MIB = 1024 * 1024


def make_config(tmp_path: Path, **upload: Any) -> LoggerConfig:
    net = tmp_path / "sys" / "class" / "net" / "wlan0"
    (net / "wireless").mkdir(parents=True)
    (net / "operstate").write_text("up\n")
    overrides = {
        "data_root": str(tmp_path / "data"),
        "upload.destination": f"file://{tmp_path / 'depot'}",
        "upload.gate.sysfs_root": str(tmp_path / "sys"),
        "upload.part_size": 5 * MIB,
        "upload.max_concurrency": 2,
        "upload.retention.free_disk_reserve": 0,
        "upload.retention.delete_after": None,
    }
    overrides.update({f"upload.{k}": v for k, v in upload.items()})
    return apply_overrides(LoggerConfig(), overrides, "test")


def depot_files(depot: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(depot)): p.read_bytes()
        for p in depot.rglob("*")
        if p.is_file() and ".uploads" not in p.parts
    }


def test_file_depot_full_flow(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, **{"retention.delete_after": 0})
    session = make_session(cfg.data_root, "r7", 12 * MIB, max_file_bytes=8 * MIB)
    local = {p.name: p.read_bytes() for p in session.iterdir() if p.name != ".recording.lock"}
    u = Uploader(cfg)
    try:
        assert u.run_once() == "verified"
        assert session.is_dir()
        row = u.queue.session(session.name)
        depot = tmp_path / "depot"
        remote = depot_files(depot)
        prefix = row.remote_prefix + "/"
        assert prefix.startswith("r7/") and prefix.endswith(f"/{session.name}/")
        assert {k.removeprefix(prefix): v for k, v in remote.items()} == local
        for f in json.loads(local["session.json"])["files"]:
            assert hashlib.sha256(remote[prefix + f["path"]]).hexdigest() == f["sha256"]
        assert not any((depot / ".uploads").iterdir())  # no upload left behind
        u.wake()
        u.run_once()
        assert not session.exists()
    finally:
        u.stop()


def test_file_depot_tampered_copy_is_not_verified_nothing_deleted(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    session = make_session(cfg.data_root, "r7", 2 * MIB)
    u = Uploader(cfg)
    try:
        assert u.run_once() == "verified"
        row = u.queue.session(session.name)
    finally:
        u.stop()
    mcap = session.name + "_0.mcap"
    stored = tmp_path / "depot" / row.remote_prefix / mcap
    data = bytearray(stored.read_bytes())
    data[500] ^= 1  # one flipped bit, same size
    stored.write_bytes(bytes(data))
    cfg.upload.retention.delete_after = 0
    u = Uploader(cfg)
    try:
        u.run_once()
        row = u.queue.session(session.name)
        assert row.state == "failed" and row.error_kind == "verify"
        assert f"{mcap}: remote sha256" in row.last_error
        assert session.joinpath(mcap).is_file()
        u.retry(session.name)
        assert u.run_once() == "verified"
        assert stored.read_bytes() == session.joinpath(mcap).read_bytes()
    finally:
        u.stop()


def test_file_depot_resumes_from_last_part_in_a_new_process_state(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_concurrency=1)
    session = make_session(cfg.data_root, "r7", 24 * MIB)
    stop_after = [2]

    def progress() -> None:
        stop_after[0] -= 1

    u = Uploader(cfg, is_recording=lambda: stop_after[0] <= 0)
    try:
        u.scan()
        assert u.upload(session.name, progress=progress) == "paused"
        done = u.queue.session(session.name).bytes_done
        assert 0 < done < 24 * MIB
    finally:
        u.stop()
    # A fresh Uploader knows only the queue database and the depot, as after a reboot.
    u = Uploader(cfg, is_recording=lambda: False)
    try:
        assert u.run_once() == "verified"
        files = u.queue.files(session.name)
        assert sum(f.bytes_sent for f in files) == sum(f.size for f in files)
    finally:
        u.stop()


@pytest.mark.parametrize("damage", ["bit-rot", "truncated", "missing"])
def test_local_file_changed_after_close_is_never_uploaded(tmp_path: Path, damage: str) -> None:
    cfg = make_config(tmp_path, **{"retention.delete_after": 0})
    session = make_session(cfg.data_root, "r7", 7 * MIB)
    mcap = session / (session.name + "_0.mcap")
    data = bytearray(mcap.read_bytes())
    if damage == "bit-rot":
        data[4096] ^= 0x10
        mcap.write_bytes(bytes(data))
    elif damage == "truncated":
        mcap.write_bytes(bytes(data[:-100]))
    else:
        mcap.unlink()
    u = Uploader(cfg)
    try:
        assert u.run_once() == "failed"
        row = u.queue.session(session.name)
        assert row.error_kind == "permanent"
        expected = "No such file" if damage == "missing" else "changed since the session was"
        assert expected in row.last_error and mcap.name in row.last_error
        depot = tmp_path / "depot"
        names = [Path(k).name for k in depot_files(depot)]
        assert mcap.name not in names and "session.json" not in names
        u.wake()
        u.run_once()
        assert session.is_dir()  # unverified: never deleted
        assert u.queue.session(session.name).state == "failed"
    finally:
        u.stop()


def test_retry_takes_a_fresh_look_at_a_repaired_session(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    session = make_session(cfg.data_root, "r7", 1 * MIB)
    u = Uploader(cfg)
    try:
        assert u.scan() == [session.name]
        marker = session / "session.json"
        doc = json.loads(marker.read_text())
        doc["close_reason"] = "stopped (note added by an operator tool)"
        marker.write_text(json.dumps(doc, indent=2) + "\n")  # after it was queued
        assert u.run_once() == "failed"
        assert "session.json changed since" in u.queue.session(session.name).last_error
        assert u.retry(session.name).state == "queued"
        assert u.run_once() == "verified"
        row = u.queue.session(session.name)
        stored = tmp_path / "depot" / row.remote_prefix / "session.json"
        assert stored.read_bytes() == marker.read_bytes()
    finally:
        u.stop()
