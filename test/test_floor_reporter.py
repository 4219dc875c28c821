"""The robot's floor reporter against a real HTTP server on 127.0.0.1.

The server is a stdlib ThreadingHTTPServer in this file that records every request
and answers with a status the test chooses: the reporter speaks real HTTP to it
(urllib, sockets, headers), nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support.localserver import free_port

from xsquare_logger.config.floor import FloorConfig
from xsquare_logger.floor.protocol import Heartbeat, SessionReport
from xsquare_logger.floor.reporter import (
    FloorConfigError,
    FloorReporter,
    build_session_report,
    load_token,
)
from xsquare_logger.session.manifest import SessionManifest, TaskEntry, write_manifest

TOKEN = "xsqrobot-s3cr3t-T0KEN-0123456789abcdef"
ROBOT = "humanoid-07"


class Floor:
    """A recording HTTP server; ``status`` answers every request (default 200)."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, object]] = []
        self.status = 200
        self.detail = ""
        self.accept = ""  # when set: 200 for this token, 401 for any other
        floor = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = floor.status
                if floor.accept:
                    status = 200 if self.headers.get("Authorization") == \
                        f"Bearer {floor.accept}" else 401
                floor.requests.append({
                    "method": self.command,
                    "path": self.path,
                    "auth": self.headers.get("Authorization"),
                    "type": self.headers.get("Content-Type"),
                    "body": json.loads(body) if body else None,
                    "status": status,
                })
                reply = json.dumps({"detail": floor.detail or "ok"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sessions(self) -> list[dict[str, object]]:
        return [r for r in self.requests if r["method"] == "PUT" and r["status"] == 200]

    def heartbeats(self) -> list[dict[str, object]]:
        return [r for r in self.requests if r["method"] == "POST"]


@pytest.fixture
def floor() -> Iterator[Floor]:
    f = Floor()
    yield f
    f.stop()


def wait_for(condition: Callable[[], object], what: str, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def manifest(session_id: str, tasks: int = 1) -> SessionManifest:
    return SessionManifest(
        session_id=session_id, robot_id=ROBOT, software_version="t", config_digest="d",
        state="closed", started_ns=1, ended_ns=2,
        tasks=[TaskEntry(episode_index=i, task="fold towel", start_ns=i, end_ns=i + 1,
                         outcome="success", lost={"/camera/head/image_raw": 3})
               for i in range(tasks)],
    )


def report(session_id: str, state: str = "pending") -> SessionReport:
    return SessionReport.model_validate(
        {"manifest": manifest(session_id), "upload_state": state, "bytes": 10}
    )


def beat() -> Heartbeat:
    return Heartbeat(robot_id=ROBOT, sent_ns=time.time_ns(), state="recording",
                     session_id="s1", task="fold towel", episode_index=2, elapsed_sec=3.5,
                     streams={"/joint_states": {"received": 10, "lost": 1}}, messages_lost=1,
                     disk_free_bytes=5, disk_reserve_bytes=4, software_version="t",
                     config_digest="sha256:x")


def make(url: str, tmp_path: Path, heartbeat: Callable[[], Heartbeat] | None = None,
         **cfg: object) -> FloorReporter:
    config = FloorConfig.model_validate({"url": url, "heartbeat_interval": 0.05} | cfg)
    return FloorReporter(config, ROBOT, tmp_path / "outbox", heartbeat, token=TOKEN,
                         backoff_initial=0.05, backoff_max=0.2)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_heartbeats_arrive_with_the_fields_and_the_token(floor: Floor, tmp_path: Path) -> None:
    rep = make(floor.url, tmp_path, beat)
    rep.start()
    try:
        wait_for(lambda: len(floor.heartbeats()) >= 3, "three heartbeats")
    finally:
        rep.stop()
    first = floor.heartbeats()[0]
    assert first["path"] == f"/api/v1/robots/{ROBOT}/heartbeats"
    assert first["auth"] == f"Bearer {TOKEN}"
    assert first["type"] == "application/json"
    sent = Heartbeat.model_validate(first["body"])
    assert sent.model_dump(exclude={"sent_ns"}) == beat().model_dump(exclude={"sent_ns"})
    # Each heartbeat is built fresh (only the latest matters): sent_ns moves on.
    stamps = [r["body"]["sent_ns"] for r in floor.heartbeats()]  # type: ignore[index]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_floor_down_at_start_then_up_gets_every_report_in_order(tmp_path: Path) -> None:
    port = free_port()
    rep = make(f"http://127.0.0.1:{port}", tmp_path, beat)
    rep.start()
    try:
        ids = [f"{ROBOT}_2026120{i}T000000Z_abcdef" for i in range(5)]
        for sid in ids:
            rep.report(report(sid))
        assert len(rep.pending()) == 5  # queued on the robot while nobody answers
        floor = Floor(port)
        try:
            wait_for(lambda: len(floor.sessions()) == 5, "all five reports")
            wait_for(lambda: not rep.pending(), "outbox empty")
            wait_for(lambda: floor.heartbeats(), "a heartbeat once the floor is up")
        finally:
            floor.stop()
    finally:
        rep.stop()
    got = [r["body"]["manifest"]["session_id"] for r in floor.sessions()]  # type: ignore[index]
    assert got == ids
    put = floor.sessions()[0]
    assert put["path"] == f"/api/v1/robots/{ROBOT}/sessions/{ids[0]}"
    assert SessionReport.model_validate(put["body"]) == report(ids[0])


def test_outbox_is_bounded_oldest_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rep = make(dead_url(), tmp_path, max_queued_reports=3)
    with caplog.at_level(logging.WARNING, logger="xsquare_logger.floor"):
        for i in range(5):
            rep.report(report(f"{ROBOT}_s{i}"))
    names = [p.name for p in rep.pending()]
    assert len(names) == 3
    assert [n.split("-", 1)[1] for n in names] == [f"{ROBOT}_s{i}-pending.json" for i in (2, 3, 4)]
    dropped = [r.getMessage() for r in caplog.records if "outbox full" in r.getMessage()]
    assert len(dropped) == 2 and "xsq floor sync" in dropped[0] and f"{ROBOT}_s0" in dropped[0]


def test_a_newer_report_replaces_the_queued_one_of_its_session(tmp_path: Path) -> None:
    rep = make(dead_url(), tmp_path)
    rep.report(report("sA"))
    rep.report(report("sB"))
    rep.report(report("sA", "verified"))
    assert [p.name.split("-", 1)[1] for p in rep.pending()] == [
        "sB-pending.json", "sA-verified.json"]


def test_reporter_restart_resends_the_spooled_reports(floor: Floor, tmp_path: Path) -> None:
    first = make(dead_url(), tmp_path, beat)
    first.start()
    first.report(report("s1"))
    first.report(report("s2", "verified"))
    first.stop()
    assert len(first.pending()) == 2
    second = make(floor.url, tmp_path)  # same outbox, a new process would do the same
    second.start()
    try:
        wait_for(lambda: len(floor.sessions()) == 2, "both spooled reports")
    finally:
        second.stop()
    states = [(r["body"]["manifest"]["session_id"], r["body"]["upload_state"])  # type: ignore[index]
              for r in floor.sessions()]
    assert states == [("s1", "pending"), ("s2", "verified")]
    assert second.pending() == []


def test_401_keeps_the_report_logs_one_line_and_never_the_token(
    floor: Floor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    floor.status, floor.detail = 401, f"unknown robot token {TOKEN}"  # even if echoed back
    caplog.set_level(logging.DEBUG)  # every logger, every level
    rep = make(floor.url, tmp_path, beat)
    rep.start()
    try:
        rep.report(report("s1"))
        wait_for(lambda: len(floor.requests) >= 4, "several refused attempts")
        assert [p.name.split("-", 1)[1] for p in rep.pending()] == ["s1-pending.json"]
        floor.status = 200  # the operator fixed the token on the floor side
        wait_for(lambda: floor.sessions(), "the kept report once accepted")
        wait_for(lambda: not rep.pending(), "outbox empty")
    finally:
        rep.stop()
    refused = [r for r in caplog.records if "refused the robot token (401)" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in caplog.records]
    assert "revoked" in refused[0].getMessage()
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in str(record.args) and TOKEN not in (record.exc_text or "")


def test_422_drops_the_report_with_an_error_line(
    floor: Floor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    floor.status, floor.detail = 422, "manifest.session_id: field required"
    rep = make(floor.url, tmp_path)
    with caplog.at_level(logging.ERROR, logger="xsquare_logger.floor"):
        rep.start()
        try:
            rep.report(report("s1"))
            wait_for(lambda: not rep.pending(), "the refused report dropped")
        finally:
            rep.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["floor refused the report of s1 (422), dropped it: "
                      "manifest.session_id: field required"]


def test_5xx_is_retried_until_accepted(floor: Floor, tmp_path: Path) -> None:
    floor.status = 503
    rep = make(floor.url, tmp_path)
    rep.start()
    try:
        rep.report(report("s1"))
        wait_for(lambda: len(floor.requests) >= 3, "retries")
        assert rep.pending()
        floor.status = 200
        wait_for(lambda: floor.sessions(), "accepted after the floor recovered")
    finally:
        rep.stop()
    assert rep.pending() == []


def test_session_report_from_a_directory(tmp_path: Path) -> None:
    d = tmp_path / "s1"
    d.mkdir()
    write_manifest(d, manifest("s1", tasks=2))
    (d / "s1_0.mcap").write_bytes(b"x" * 1000)
    rep = build_session_report(d, "verified", "s3://b/p/s1")
    assert rep.manifest.session_id == "s1" and len(rep.manifest.tasks) == 2
    assert rep.manifest.tasks[0].lost == {"/camera/head/image_raw": 3}
    assert rep.bytes == 0  # session.json's files (none listed here), as sync counts them
    assert (rep.upload_state, rep.remote) == ("verified", "s3://b/p/s1")


def test_token_sources_and_errors_never_show_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XSQ_FLOOR_TOKEN", raising=False)
    url = "http://127.0.0.1:9"
    with pytest.raises(FloorConfigError, match="no robot token"):
        load_token(FloorConfig(url=url))
    with pytest.raises(FloorConfigError, match=r"cannot read floor\.token_file"):
        load_token(FloorConfig(url=url, token_file=tmp_path / "missing"))
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    assert load_token(FloorConfig(url=url, token_file=token_file)) == TOKEN
    token_file.write_text(f"{TOKEN} with a space\n")
    with pytest.raises(FloorConfigError) as err:
        load_token(FloorConfig(url=url, token_file=token_file))
    assert TOKEN not in str(err.value) and "printable ASCII" in str(err.value)
    monkeypatch.setenv("XSQ_FLOOR_TOKEN", "from-env")
    assert load_token(FloorConfig(url=url, token_file=token_file)) == "from-env"
    with pytest.raises(ValueError, match="must start with http"):
        FloorConfig(url="floor.local:8600")


def test_reporter_imports_without_the_floor_service_or_ros() -> None:
    """A robot install has neither FastAPI/SQLAlchemy/httpx; the reporter must not need them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'fastapi', 'sqlalchemy', 'httpx', 'uvicorn',\n"
        "                                  'starlette', 'requests', 'rclpy', 'zmq'}:\n"
        "            raise ImportError(f'blocked: {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import xsquare_logger.floor.reporter, xsquare_logger.floor.protocol\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("status", [404, 301])
def test_wrong_url_keeps_the_report_and_says_so_once(
    floor: Floor, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    floor.status = status  # a 301 is not followed: it would carry the token elsewhere
    rep = make(floor.url, tmp_path, beat)
    with caplog.at_level(logging.WARNING, logger="xsquare_logger.floor"):
        rep.start()
        try:
            rep.report(report("s1"))
            wait_for(lambda: len(floor.requests) >= 3, "several attempts")
        finally:
            rep.stop()
    assert len(rep.pending()) == 1
    lines = [r.getMessage() for r in caplog.records if "is not a floor API" in r.getMessage()]
    assert len(lines) == 1 and f"({status})" in lines[0]


def test_a_floor_that_never_answers_times_out_and_keeps_the_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import socket

    silent = socket.socket()  # accepts connections (kernel backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        rep = make(url, tmp_path, beat, timeout=0.2)
        with caplog.at_level(logging.WARNING, logger="xsquare_logger.floor"):
            rep.start()
            rep.report(report("s1"))
            wait_for(lambda: any("does not answer" in r.getMessage() for r in caplog.records),
                     "the timeout noticed")
            rep.stop()
    finally:
        silent.close()
    assert len(rep.pending()) == 1


def test_an_outbox_that_cannot_be_created_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(FloorConfigError, match="cannot create the floor outbox"):
        FloorReporter(FloorConfig(url="http://127.0.0.1:9"), ROBOT, tmp_path / "file" / "x",
                      token=TOKEN)


def test_a_token_file_fixed_while_running_is_read_again_after_a_401(
    floor: Floor, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XSQ_FLOOR_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("old-revoked-token\n")
    floor.accept = TOKEN
    config = FloorConfig(url=floor.url, token_file=token_file)
    rep = FloorReporter(config, ROBOT, tmp_path / "outbox", backoff_initial=0.05, backoff_max=0.2)
    caplog.set_level(logging.DEBUG)
    rep.start()
    try:
        rep.report(report("s1"))
        wait_for(lambda: floor.requests, "a refused attempt")
        assert rep.pending() and floor.requests[0]["status"] == 401
        token_file.write_text(TOKEN + "\n")  # the operator put the new token in place
        wait_for(lambda: floor.sessions(), "the report sent with the new token")
    finally:
        rep.stop()
    assert floor.sessions()[0]["auth"] == f"Bearer {TOKEN}" and rep.pending() == []
    assert any("token changed" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and "old-revoked" not in record.getMessage()
