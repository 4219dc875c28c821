"""`xsq node uploader` apart from `xsq node recorder`, with real processes: a SIGKILLed
uploader does not stop a recording, and a restarted one uploads the finished session.

Destination: a ``file://`` depot (the same flow and checks as S3, test_upload_file.py).
The only fake is ``/sys`` (a temp tree shaped like ``/sys/class/net``, wlan0 up): interface
state cannot be changed on this machine.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_ros_services import JOINTS, RosSide, _joint_numbers, _recorder, _visit

from xsquare_logger.upload.queue import VERIFIED, UploadQueue

pytestmark = pytest.mark.ros

DOMAIN = 70


@pytest.fixture
def ros70(env: dict[str, str]) -> Iterator[tuple[dict[str, str], RosSide]]:
    env["ROS_DOMAIN_ID"] = str(DOMAIN)
    side = RosSide(DOMAIN)
    try:
        yield env, side
    finally:
        side.close()


def _uploader(
    procs: Callable[..., Any], env: dict[str, str], tmp_path: Path, data: Path, name: str
) -> Any:
    net = tmp_path / "sys" / "class" / "net" / "wlan0"
    (net / "wireless").mkdir(parents=True, exist_ok=True)
    (net / "operstate").write_text("up\n")
    up = procs(
        [
            "-m", "xsquare_logger.cli.main", "node", "uploader",
            "--robot-id", "i13bot", "--data-root", str(data),
            "--set", f"upload.destination=file://{tmp_path / 'depot'}",
            "--set", f"upload.gate.sysfs_root={tmp_path / 'sys'}",
            "--set", "upload.scan_interval=0.2",
            "--set", "upload.retention.delete_after=null",
            "--set", "upload.retention.free_disk_reserve=0",
        ],
        env,
        name,
    )
    up.wait_for("uploader ready")
    return up


def _session_state(queue_db: Path, session_id: str) -> str | None:
    if not queue_db.exists():
        return None
    queue = UploadQueue(queue_db)
    try:
        row = queue.session(session_id)
        return None if row is None else row.state
    finally:
        queue.close()


def test_uploader_crash_does_not_stop_recording_restart_uploads(
    procs: Callable[..., Any], ros70: tuple[dict[str, str], RosSide], tmp_path: Path
) -> None:
    env, ros = ros70
    rec, data = _recorder(procs, env, tmp_path)
    uploader = _uploader(procs, env, tmp_path, data, "uploader1")
    queue_db = data / ".upload" / "queue.db"
    try:
        started = _visit(ros)
        assert started.ok, started.message
        sent = ros.publish(40)
        ros.wait_received(len(sent))

        uploader.p.send_signal(signal.SIGKILL)
        assert uploader.wait(10) == -signal.SIGKILL
        # No uploader: the recorder goes on receiving and writing.
        sent += ros.publish(40)
        ros.wait_received(len(sent))
        deadline = time.monotonic() + 30
        while (status := ros.status())["topics"][JOINTS]["written"] < len(sent):
            assert time.monotonic() < deadline, f"recorder stopped writing: {status}"
            time.sleep(0.1)
        assert status["recording"] and status["session_id"] == started.session_id
        assert status["messages_lost"] == 0
        # The live session was never sent (gate: not while recording).
        assert _session_state(queue_db, started.session_id) != VERIFIED

        stopped = ros.call("stop_session", "StopSession")
        assert stopped.ok, stopped.message
        ros.spin_until(lambda: len(ros.closed) >= 1, what="session_closed event")

        uploader = _uploader(procs, env, tmp_path, data, "uploader2")
        deadline = time.monotonic() + 60
        while _session_state(queue_db, started.session_id) != VERIFIED:
            assert time.monotonic() < deadline, uploader.stderr()[-3000:]
            assert uploader.p.poll() is None, uploader.stderr()[-3000:]
            time.sleep(0.2)
    finally:
        assert uploader.stop() in (0, -signal.SIGKILL), uploader.stderr()
        assert rec.stop() == 0, rec.stderr()

    session = data / started.session_id
    manifest = json.loads((session / "session.json").read_text())
    assert manifest["topics"][JOINTS]["written"] == len(sent)
    numbers = [n for f in sorted(session.glob("*.mcap")) for n in _joint_numbers(f)]
    assert numbers == sent  # nothing lost across the uploader's crash

    queue = UploadQueue(queue_db)
    try:
        row = queue.session(started.session_id)
    finally:
        queue.close()
    assert row is not None and row.state == VERIFIED
    prefix = tmp_path / "depot" / row.remote_prefix
    assert prefix.parts[-1] == started.session_id
    local = {
        p.name: p.read_bytes()
        for p in session.iterdir()
        if p.is_file() and p.name != ".recording.lock"
    }
    remote = {p.name: p.read_bytes() for p in prefix.iterdir() if p.is_file()}
    assert remote == local  # session.json marker included, every file byte for byte
    for f in manifest["files"]:
        assert hashlib.sha256(remote[f["path"]]).hexdigest() == f["sha256"]
