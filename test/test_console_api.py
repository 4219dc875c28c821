"""The operator console's HTTP API against a real console and a real robot-side bridge.

The robot is ``support.tablet_robot`` in its own process: the real TabletServer
and visit state machine with CURVE keys made in tmp, and a controller that
stands in for the recorder by writing each call to a JSON-lines file.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xsquare_logger.link.keys import KeyStore
from xsquare_logger.tablet.client import CurveKeys, keys_from_files
from xsquare_logger.tablet.console import ConsoleBackend, ConsoleServer, run_console
from xsquare_logger.tablet.console.server import MAX_BODY_BYTES

TASKS = ["fold towel", "wipe table"]


@dataclass
class Robot:
    proc: Any  # conftest.Proc
    command_port: int
    status_port: int
    keys: CurveKeys
    events: Path
    keys_dir: Path

    def calls(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines()]


def start_robot(
    procs: Callable[..., Any], env: dict[str, str], tmp: Path, status_interval: float = 0.2
) -> Robot:
    """The robot bridge in a subprocess, with a robot key pair and one authorized tablet."""
    store = KeyStore(tmp / "keys")
    store.init_robot()
    tablet_secret = store.add_tablet("console")
    events = tmp / "robot-events.jsonl"
    args = ["-m", "support.tablet_robot", "--keys-dir", str(store.keys_dir), "--events"]
    args += [str(events), "--status-interval", str(status_interval)]
    proc = procs(args, env, "robot")
    proc.wait_for("tablet robot ready")
    ports = json.loads(proc.stdout().splitlines()[0])
    return Robot(
        proc,
        ports["command_port"],
        ports["status_port"],
        keys_from_files(store.robot_public_file, tablet_secret),
        events,
        store.keys_dir,
    )


def free_port() -> int:
    """A port nobody listens on (bound, then released): connecting there goes nowhere."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post(console: ConsoleServer, doc: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps(doc).encode()
    return http_json(console.url + "api/command", body, {"Content-Type": "application/json"})


def get(console: ConsoleServer, path: str) -> tuple[int, dict[str, Any]]:
    return http_json(console.url + path)


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def robot(procs: Callable[..., Any], env: dict[str, str], tmp_path: Path) -> Robot:
    return start_robot(procs, env, tmp_path)


@pytest.fixture
def console(robot: Robot) -> Iterator[ConsoleServer]:
    server = run_console(
        "127.0.0.1",
        robot.command_port,
        robot.status_port,
        port=0,
        tasks=TASKS,
        timeout=1.0,
        retries=1,
        stale_after=0.8,
        **robot.keys,
    )
    yield server
    server.close()


@pytest.fixture
def offline_console() -> Iterator[ConsoleServer]:
    """A console whose robot does not exist (nothing listens on either port)."""
    server = run_console(
        "127.0.0.1", free_port(), free_port(), port=0, tasks=TASKS, timeout=0.3, retries=1
    )
    yield server
    server.close()


# --- static page and config ----------------------------------------------------------------


def test_serves_the_page_offline_with_strict_headers(offline_console: ConsoleServer) -> None:
    with urllib.request.urlopen(offline_console.url, timeout=10) as resp:
        html = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/html")
        csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert 'data-testid="status-panel"' in html
    # Works with no internet: nothing is loaded from another host.
    assert "http://" not in html and "https://" not in html
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        with urllib.request.urlopen(offline_console.url + name, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith(ctype)
            text = resp.read().decode()
        assert "http://" not in text and "https://" not in text
    for path in ("server.py", "../server.py", "static/app.js", "%2e%2e/server.py"):
        status, reply = get(offline_console, path)
        assert status == 404 and reply["error"]["code"] == "NOT_FOUND", path


def test_config_lists_tasks_and_robot(offline_console: ConsoleServer) -> None:
    status, cfg = get(offline_console, "api/config")
    assert status == 200
    assert cfg["tasks"] == TASKS
    assert cfg["robot"]["command_endpoint"].startswith("tcp://127.0.0.1:")
    assert cfg["robot"]["secure"] is False


def test_without_a_task_list_the_console_offers_the_robots(robot: Robot) -> None:
    """`xsq tablet console` without --config reads no robot YAML: the buttons come from
    the robot's hello (its tablet.tasks), asked again until the robot answers."""
    server = run_console(
        "127.0.0.1", robot.command_port, robot.status_port, port=0, timeout=1.0, retries=1,
        **robot.keys,
    )
    try:
        status, cfg = get(server, "api/config")
        assert status == 200
        assert cfg["tasks"] == ["fold towel"]  # support/tablet_robot.py's list
    finally:
        server.close()


def test_config_with_an_unreachable_robot_has_no_tasks_yet() -> None:
    server = run_console("127.0.0.1", free_port(), free_port(), port=0, timeout=0.2, retries=0)
    try:
        status, cfg = get(server, "api/config")
        assert status == 200 and cfg["tasks"] == []
    finally:
        server.close()


# --- bad requests ----------------------------------------------------------------------------


def raw_post(
    console: ConsoleServer, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    host, port = console.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        conn.putrequest("POST", "/api/command", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (b"not json", JSON, "BAD_REQUEST"),
        (b"[1, 2]", JSON, "BAD_REQUEST"),
        (b'{"args": {}}', JSON, "BAD_REQUEST"),  # no cmd
        (b'{"cmd": "hello", "args": [1]}', JSON, "BAD_REQUEST"),
        (b'{"cmd": "hello", "extra": 1}', JSON, "BAD_REQUEST"),
        (b'{"cmd": "hello", "id": ""}', JSON, "BAD_REQUEST"),
        (b'{"cmd": "hello\\n"}', JSON, "BAD_REQUEST"),
        (b'{"cmd": "hello"}', {"Content-Type": "text/plain"}, "BAD_REQUEST"),
        (b'{"cmd": "hello"}', {}, "BAD_REQUEST"),
        (b'{"cmd": "hello"}', {**JSON, "Origin": "http://evil.example"}, "FORBIDDEN"),
        (b'{"cmd": "hello"}', {**JSON, "Host": "evil.example:8080"}, "FORBIDDEN"),
    ],
)
def test_bad_requests_are_refused(
    offline_console: ConsoleServer, body: bytes, headers: dict[str, str], code: str
) -> None:
    headers = {"Content-Length": str(len(body)), **headers}
    headers.setdefault("Host", offline_console.url.split("/")[2])
    status, reply = raw_post(offline_console, body, headers)
    assert status == (403 if code == "FORBIDDEN" else 400)
    assert reply["ok"] is False and reply["error"]["code"] == code, reply


def test_oversized_and_lengthless_bodies_are_refused(offline_console: ConsoleServer) -> None:
    host = offline_console.url.split("/")[2]
    big = json.dumps({"cmd": "mark", "args": {"label": "x" * MAX_BODY_BYTES}}).encode()
    status, reply = raw_post(
        offline_console, big, {**JSON, "Host": host, "Content-Length": str(len(big))}
    )
    assert (status, reply["error"]["code"]) == (400, "BODY_TOO_LARGE")
    status, reply = raw_post(offline_console, b"", {**JSON, "Host": host})
    assert (status, reply["error"]["code"]) == (400, "BAD_REQUEST")


# --- the robot is not there -------------------------------------------------------------------


def test_unreachable_robot_is_robot_unreachable(offline_console: ConsoleServer) -> None:
    status, reply = post(offline_console, {"cmd": "hello", "id": "browser-1"})
    assert status == 504
    assert reply["ok"] is False and reply["id"] == "browser-1"
    assert reply["error"]["code"] == "ROBOT_UNREACHABLE"
    assert "tcp://127.0.0.1:" in reply["error"]["message"]
    # No status ever arrived: the page must not show numbers as if they were live.
    status, st = get(offline_console, "api/status")
    assert status == 200
    assert st["state"] == "unknown" and st["age_sec"] is None and st["stale"] is True


# --- with the robot -----------------------------------------------------------------------------


def test_commands_are_proxied_with_the_robots_errors(console: ConsoleServer, robot: Robot) -> None:
    status, reply = post(console, {"cmd": "hello"})
    assert status == 200 and reply["ok"] is True, reply
    assert reply["result"]["protocol_version"] == 1
    assert isinstance(reply["robot_time_ns"], int)

    status, reply = post(console, {"cmd": "task.start", "args": {"task": "fold towel"}})
    assert (status, reply["error"]["code"]) == (200, "INVALID_STATE")

    visit = {"visit_id": "v1", "operator": "ana", "consent": False}
    status, reply = post(console, {"cmd": "session.start", "args": visit})
    assert reply["error"]["code"] == "CONSENT_REQUIRED"

    visit["consent"] = True
    first = post(console, {"cmd": "session.start", "args": visit, "id": "tap-1"})[1]
    assert first["ok"] is True and first["id"] == "tap-1"
    # The page's Retry re-sends the same id: the robot answers, but does not start twice.
    again = post(console, {"cmd": "session.start", "args": visit, "id": "tap-1"})[1]
    assert again["result"] == first["result"]
    assert [c["call"] for c in robot.calls()] == ["start_session", "record_event"]

    status, reply = post(console, {"cmd": "no.such", "args": {}})
    assert reply["error"]["code"] == "UNKNOWN_COMMAND"
    assert post(console, {"cmd": "session.stop"})[1]["ok"] is True


def test_status_is_live_then_stale_when_the_robot_goes(
    console: ConsoleServer, robot: Robot
) -> None:
    st = wait_until(
        lambda: (s := get(console, "api/status")[1])["age_sec"] is not None and s,
        what="first status",
    )
    assert st["type"] == "status" and st["robot_id"] == "test-robot"
    assert st["state"] == "idle" and st["stale"] is False and st["age_sec"] < 0.8
    assert st["link_error"] is None

    visit = {"visit_id": "v2", "operator": "bo", "consent": True}
    session_id = post(console, {"cmd": "session.start", "args": visit})[1]["result"]["session_id"]
    st = wait_until(
        lambda: (s := get(console, "api/status")[1])["state"] == "recording" and s,
        what="recording status",
    )
    assert st["session_id"] == session_id

    robot.proc.stop(timeout=10)
    st = wait_until(lambda: (s := get(console, "api/status")[1])["stale"] and s, what="stale")
    assert st["age_sec"] > console.backend.stale_after
    # The last known values stay visible (marked stale), not blanked.
    assert st["session_id"] == session_id

    status, reply = post(console, {"cmd": "status"})
    assert (status, reply["error"]["code"]) == (504, "ROBOT_UNREACHABLE")


def test_wrong_tablet_key_is_reported_not_hidden(robot: Robot, tmp_path: Path) -> None:
    """A key the robot never authorized: commands fail with AUTH_REFUSED, status says why."""
    other = KeyStore(tmp_path / "other")
    other.init_robot()
    stranger = keys_from_files(robot.keys_dir / "robot.key", other.add_tablet("stranger"))
    server = run_console(
        "127.0.0.1",
        robot.command_port,
        robot.status_port,
        port=0,
        timeout=1.0,
        retries=0,
        **stranger,
    )
    try:
        _, reply = post(server, {"cmd": "hello"})
        assert reply["ok"] is False and reply["error"]["code"] == "AUTH_REFUSED", reply
        st = wait_until(
            lambda: (s := get(server, "api/status")[1])["link_error"] and s, what="link error"
        )
        assert st["link_error"]["code"] == "AUTH_REFUSED" and st["stale"] is True
    finally:
        server.close()


# --- the backend alone (clock under test control) -------------------------------------------


class _NoClient:
    def request(self, cmd: str, args: Any = None, request_id: str | None = None) -> dict:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


class _SilentSubscriber:
    def recv(self, timeout: float | None = None) -> None:
        time.sleep(timeout or 0)

    def close(self) -> None:
        pass


def test_status_age_follows_the_clock() -> None:
    now = [100.0]
    backend = ConsoleBackend(_NoClient(), _SilentSubscriber, stale_after=3.0, clock=lambda: now[0])
    backend.update_status({"v": 1, "type": "status", "state": "recording", "session_id": "s"})
    now[0] += 1.25
    st = backend.status()
    assert (st["age_sec"], st["stale"], st["state"]) == (1.25, False, "recording")
    now[0] += 2.0
    assert backend.status()["stale"] is True
    backend.update_status({"v": 1, "type": "status", "state": "idle", "session_id": ""})
    assert backend.status()["age_sec"] == 0.0 and backend.status()["stale"] is False
    backend.close()
