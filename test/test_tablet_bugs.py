"""Regression tests for bugs an outside acceptance test found in the tablet link.

Each runs the real TabletServer in this process over real ZeroMQ (CURVE unless
the test is about insecure mode), with keys made by `xsq keys`; the controller
is support.tablet_robot's JSON-lines stand-in for the recorder, as in
test_tablet_link.py. Being in-process lets the tests read the server's log
records and count the frames it has handled (a probe wrapped around the
server's per-frame method, so "all 2,000 were handled" is known without
sleeping).
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
from support.tablet_robot import ROBOT_ID, JsonlController
from test_tablet_link import PATIENCE_S, xsq
from zmq.utils.monitor import recv_monitor_message

from xsquare_logger.config.model import TabletConfig
from xsquare_logger.errors import XsqError
from xsquare_logger.link.keys import KeyStore, KeyStoreError
from xsquare_logger.link.protocol import MAX_MESSAGE_BYTES, Reply
from xsquare_logger.link.server import TabletServer, TabletServerError
from xsquare_logger.link.visit import VisitStateMachine
from xsquare_logger.tablet.client import CurveKeys, TabletClient, TabletError, keys_from_files

SERVER_LOGGER = "xsquare_logger.link"
# docs/tablet-protocol.md §3: the largest frame the transport takes (and answers).
MAX_FRAME_BYTES = 1024 * 1024


@dataclass
class Link:
    server: TabletServer
    keys: Path
    insecure: bool
    handled: list[int]  # frames the server has handled (probe; see the module docstring)

    @property
    def command(self) -> str:
        return f"tcp://127.0.0.1:{self.server.command_port}"

    def tablet_keys(self, name: str) -> CurveKeys:
        store = KeyStore(self.keys)
        return keys_from_files(store.robot_public_file, store.issued_dir / f"{name}.key_secret")

    def dealer(self, ctx: zmq.Context[zmq.Socket[bytes]], name: str = "tab1") -> zmq.Socket[bytes]:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        if not self.insecure:
            keys = self.tablet_keys(name)
            sock.curve_serverkey = keys["server_public_key"]
            sock.curve_publickey = keys["client_public_key"]
            sock.curve_secretkey = keys["client_secret_key"]
        sock.rcvtimeo = int(PATIENCE_S * 1000)
        sock.connect(self.command)
        return sock


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    assert xsq("keys", "init", "--keys-dir", str(keys)) == 0
    for name in ("tab1", "tab2"):
        assert xsq("keys", "add-tablet", name, "--keys-dir", str(keys)) == 0
    return keys


@pytest.fixture
def start_link(tmp_path: Path, keys: Path) -> Iterator[Callable[..., Link]]:
    started: list[TabletServer] = []

    def start(insecure: bool = False) -> Link:
        config = TabletConfig(
            command_endpoint="tcp://127.0.0.1:0",
            status_endpoint="tcp://127.0.0.1:0",
            keys_dir=keys,
            insecure=insecure,
            status_interval=0.2,
        )
        events = tmp_path / f"events-{len(started)}.jsonl"
        machine = VisitStateMachine(JsonlController(events), ROBOT_ID, tasks=["fold towel"])
        server = TabletServer(config, ROBOT_ID, machine)
        handled = [0]
        serve = server._serve

        def counting_serve(frames: list[zmq.Frame], received_ns: int) -> None:
            try:
                serve(frames, received_ns)
            finally:
                handled[0] += 1

        server._serve = counting_serve  # type: ignore[method-assign]
        server.start()
        started.append(server)
        return Link(server, keys, insecure, handled)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def link(start_link: Callable[..., Link]) -> Link:
    return start_link()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)  # also closes sockets a failed test left open


def ask(sock: zmq.Socket[bytes], data: bytes) -> tuple[bytes, dict[str, Any]]:
    sock.send(data)
    raw = sock.recv()
    reply = json.loads(raw.decode("utf-8"))  # strict: the reply is valid UTF-8
    Reply.model_validate(reply)
    return raw, reply


# --- 1. unencodable text (escaped lone surrogates) -------------------------------------

# (request text with a JSON escape of a lone surrogate, id the reply must carry,
# field the message must name)
SURROGATES = {
    "id": (rb'{"v":1,"id":"a\ud800","cmd":"hello","args":{}}', None, "id"),
    "id low half": (rb'{"v":1,"id":"\udfffz","cmd":"hello"}', None, "id"),
    "cmd": (rb'{"v":1,"id":"s-cmd","cmd":"x\ud800"}', "s-cmd", "cmd"),
    "unknown top-level key": (
        rb'{"v":1,"id":"s-key","cmd":"hello","\ud800":1}',
        "s-key",
        "\\ud800",
    ),
    "arg value": (
        rb'{"v":1,"id":"s-arg","cmd":"session.start","args":{"visit_id":"v\ud800",'
        rb'"operator":"ana","consent":true}}',
        "s-arg",
        "args.visit_id",
    ),
    "note": (
        rb'{"v":1,"id":"s-note","cmd":"mark","args":{"label":"x","note":"a\udc80b"}}',
        "s-note",
        "args.note",
    ),
    "unknown arg key": (rb'{"v":1,"id":"s-ak","cmd":"hello","args":{"\ud800":1}}', "s-ak", "args"),
    "nested in a list": (
        rb'{"v":1,"id":"s-list","cmd":"mark","args":{"label":["ok","\ud800"]}}',
        "s-list",
        "args.label",
    ),
}


def test_lone_surrogates_are_bad_request_not_internal(
    link: Link, ctx: zmq.Context[zmq.Socket[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sock = link.dealer(ctx)
    for name, (data, rid, where) in SURROGATES.items():
        raw, reply = ask(sock, data)
        assert reply["ok"] is False, (name, reply)
        assert reply["error"]["code"] == "BAD_REQUEST", (name, reply)
        assert reply["id"] == rid, (name, reply)
        message = reply["error"]["message"]
        assert message.startswith(where) and "UTF-8" in message, (name, message)
        if rid is not None:
            # A readable id is answered like any other error: a retry gets the same bytes.
            assert ask(sock, data)[0] == raw
    # A proper surrogate *pair* is an ordinary character and is accepted.
    _, reply = ask(sock, rb'{"v":1,"id":"pair","cmd":"hello","args":{}}')
    assert reply["ok"]
    _, reply = ask(sock, rb'{"v":1,"id":"emoji\ud83d\ude00","cmd":"hello"}')
    assert reply["ok"] and reply["id"] == "emoji\U0001f600"
    sock.close()
    # Refusing bad input is not a robot failure: no traceback, nothing above INFO.
    server_records = [r for r in caplog.records if r.name.startswith(SERVER_LOGGER)]
    assert not [r for r in server_records if r.exc_info or r.levelno >= logging.WARNING]


def test_client_refuses_unencodable_text_with_a_clear_error(link: Link) -> None:
    # e.g. a command-line argument from a non-UTF-8 terminal (surrogateescape).
    keys = link.tablet_keys("tab1")
    with TabletClient(
        link.command,
        server_public_key=keys["server_public_key"],
        client_public_key=keys["client_public_key"],
        client_secret_key=keys["client_secret_key"],
    ) as c:
        with pytest.raises(TabletError) as info:
            c.mark("bad \udcff label")
        assert info.value.code == "BAD_REQUEST" and "UTF-8" in info.value.message
        assert c.hello()["state"] == "idle"


# --- 2. frame sizes at and around the limits --------------------------------------------


def padded_hello(size: int, rid: str = "pad") -> bytes:
    """A valid hello request of exactly ``size`` bytes (JSON allows trailing blanks)."""
    base = json.dumps({"v": 1, "id": rid, "cmd": "hello"}).encode()
    assert size >= len(base)
    return base + b" " * (size - len(base))


def wait_disconnect(monitor: zmq.Socket[bytes]) -> None:
    monitor.rcvtimeo = int(PATIENCE_S * 1000)
    while recv_monitor_message(monitor)["event"] != zmq.EVENT_DISCONNECTED:
        pass


@pytest.mark.parametrize("insecure", [False, True], ids=["curve", "insecure"])
def test_every_frame_up_to_the_transport_limit_is_answered(
    start_link: Callable[..., Link], ctx: zmq.Context[zmq.Socket[bytes]], insecure: bool
) -> None:
    link = start_link(insecure=insecure)
    sock = link.dealer(ctx)
    for size in (MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES):
        _, reply = ask(sock, padded_hello(size))
        assert reply["ok"], (size, reply)
    sizes = [MAX_MESSAGE_BYTES + 1, 512 * 1024]
    # 1,048,544..1,048,576: where CURVE's 33 bytes of framing used to cross libzmq's limit.
    sizes += [1_048_543, 1_048_544, 1_048_545, 1_048_560, 1_048_575, MAX_FRAME_BYTES]
    for size in sizes:
        _, reply = ask(sock, padded_hello(size))
        assert not reply["ok"] and reply["error"]["code"] == "TOO_LARGE", (size, reply)
        assert reply["id"] is None and f"{size} bytes" in reply["error"]["message"]
    # Above MAX_FRAME_BYTES the transport closes the connection, without a reply ...
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    for size in (MAX_FRAME_BYTES + 1, 4 * MAX_FRAME_BYTES):
        sock.send(padded_hello(size, rid=f"over-{size}"))
        wait_disconnect(monitor)
        # ... and the same socket, reconnected by libzmq, is served again; the first
        # reply it gets is the hello's (none for the dropped frame).
        _, reply = ask(sock, padded_hello(100, rid=f"after-{size}"))
        assert reply["id"] == f"after-{size}" and reply["ok"]
    sock.disable_monitor()
    monitor.close()
    sock.close()


# --- 3. a revoked tablet flooding its open connection ----------------------------------


def test_revoked_tablet_flood_gives_a_bounded_log(
    link: Link, ctx: zmq.Context[zmq.Socket[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sock = link.dealer(ctx, "tab2")
    assert ask(sock, padded_hello(100, "before"))[1]["ok"]
    revoked = link.keys / "authorized" / "tab2.key"
    assert revoked.exists()
    assert xsq("keys", "revoke", "tab2", "--keys-dir", str(link.keys)) == 0
    # Wait until the open connection is no longer served (the allow-list is re-read
    # about once a second).
    sock.rcvtimeo = 2000
    deadline = time.monotonic() + PATIENCE_S
    n = 0
    while True:
        n += 1
        sock.send(padded_hello(100, f"probe-{n}"))
        try:
            sock.recv()
        except zmq.Again:
            break
        assert time.monotonic() < deadline, "revoked tablet still served"
    base = link.handled[0]
    for i in range(2000):
        sock.send(padded_hello(100, f"flood-{i}"))
    deadline = time.monotonic() + PATIENCE_S
    while link.handled[0] < base + 2000:
        assert time.monotonic() < deadline, f"only {link.handled[0] - base} of 2000 handled"
        time.sleep(0.05)
    with pytest.raises(zmq.Again):
        sock.recv(zmq.NOBLOCK)  # nothing was answered
    sock.close()
    lines = [r for r in caplog.records if r.name.startswith(SERVER_LOGGER)]
    revoked_lines = [r for r in lines if "revoked" in r.getMessage()]
    assert 1 <= len(revoked_lines) <= 2, len(revoked_lines)
    assert len(lines) <= 10, [r.getMessage() for r in lines]
    # tab1 is unaffected.
    sock = link.dealer(ctx, "tab1")
    assert ask(sock, padded_hello(100, "tab1"))[1]["ok"]
    sock.close()


# --- errors: XsqError, and a busy port named in one line --------------------------------


def test_link_errors_are_xsq_errors() -> None:
    assert issubclass(TabletServerError, XsqError)
    assert issubclass(KeyStoreError, XsqError)
    assert issubclass(TabletError, XsqError)


@pytest.mark.parametrize("which", ["command_endpoint", "status_endpoint"])
def test_busy_port_is_one_clear_xsq_error(keys: Path, tmp_path: Path, which: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        endpoint = f"tcp://127.0.0.1:{busy.getsockname()[1]}"
        free = "tcp://127.0.0.1:0"
        config = TabletConfig(command_endpoint=free, status_endpoint=free, keys_dir=keys)
        config = config.model_copy(update={which: endpoint})
        machine = VisitStateMachine(JsonlController(tmp_path / "e.jsonl"), ROBOT_ID)
        server = TabletServer(config, ROBOT_ID, machine)
        with pytest.raises(XsqError) as info:
            server.start()
    assert isinstance(info.value, TabletServerError)
    message = str(info.value)
    assert "\n" not in message and endpoint in message and f"tablet.{which}" in message
    assert "in use" in message
    # Nothing was left bound or running: the same server starts once the port is free.
    server.start()
    server.stop()


def test_missing_robot_keys_are_one_clear_xsq_error(tmp_path: Path, keys: Path) -> None:
    empty = tmp_path / "nokeys"
    shutil.copytree(keys / "authorized", empty / "authorized")
    config = TabletConfig(
        command_endpoint="tcp://127.0.0.1:0", status_endpoint="tcp://127.0.0.1:0", keys_dir=empty
    )
    machine = VisitStateMachine(JsonlController(tmp_path / "e.jsonl"), ROBOT_ID)
    with pytest.raises(TabletServerError) as info:
        TabletServer(config, ROBOT_ID, machine).start()
    assert "\n" not in str(info.value) and str(empty) in str(info.value)
