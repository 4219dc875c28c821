"""Client side of the tablet link: requests with retries, and the status subscription.

A tablet (or `xsq tablet`, or a test) talks to the robot through
:class:`TabletClient`. Each request carries an id; a retry after a timeout
re-sends the *same* id, so the robot executes it at most once and answers a
duplicate with its first reply. After a timeout the DEALER socket is replaced,
so a late reply to an earlier attempt can never be taken for the answer to a
later request.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict

import zmq
from pydantic import ValidationError
from zmq.utils.monitor import parse_monitor_message

from xsquare_logger.errors import XsqError
from xsquare_logger.link.keys import KeyStore, load_key_file
from xsquare_logger.link.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Reply,
    StatusMessage,
    find_unencodable,
)

__all__ = [
    "CurveKeys",
    "StatusSubscriber",
    "TabletAuthError",
    "TabletClient",
    "TabletError",
    "TabletTimeout",
    "keys_from_files",
]

log = logging.getLogger(__name__)

_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


class TabletError(XsqError):
    """The robot answered ``ok: false`` (``code`` is the protocol's error code),
    or the link failed (``TIMEOUT``, ``AUTH_REFUSED``, ``HANDSHAKE_FAILED``, ``BAD_REPLY``)."""

    def __init__(self, code: str, message: str, missing: list[str] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # MISSING_FIELDS: the visit fields the robot requires and the request lacked.
        self.missing = list(missing or [])


class TabletTimeout(TabletError):
    """No reply after all attempts."""


class TabletAuthError(TabletError):
    """The CURVE handshake failed: key not authorized, wrong robot key, or one side insecure."""


class _Keys:
    """CURVE client keys, or none (``insecure``); refuses half-configured security."""

    def __init__(
        self,
        server_public_key: bytes | None,
        client_public_key: bytes | None,
        client_secret_key: bytes | None,
        insecure: bool,
    ) -> None:
        given = [k is not None for k in (server_public_key, client_public_key, client_secret_key)]
        if insecure and any(given):
            raise ValueError("insecure=True and CURVE keys given: choose one")
        if not insecure and not all(given):
            raise ValueError(
                "CURVE needs server_public_key, client_public_key and client_secret_key "
                "(or insecure=True, which the robot must also run with)"
            )
        self.server_public = server_public_key
        self.client_public = client_public_key
        self.client_secret = client_secret_key

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        sock.linger = 0
        if self.server_public is not None:
            sock.curve_serverkey = self.server_public
            sock.curve_publickey = self.client_public
            sock.curve_secretkey = self.client_secret


class CurveKeys(TypedDict):
    """The CURVE keyword arguments of :class:`TabletClient` and :class:`StatusSubscriber`."""

    server_public_key: bytes
    client_public_key: bytes
    client_secret_key: bytes


def keys_from_files(robot_public_file: Path, tablet_secret_file: Path) -> CurveKeys:
    """The CURVE keyword arguments of the client classes, read from key files.

    ``robot_public_file`` is the robot's ``robot.key``; ``tablet_secret_file``
    the tablet's ``<name>.key_secret``. Raises KeyStoreError naming the file.
    """
    server, _ = load_key_file(Path(robot_public_file), need_secret=False)
    public, secret = load_key_file(Path(tablet_secret_file), need_secret=True)
    assert secret is not None
    return {"server_public_key": server, "client_public_key": public, "client_secret_key": secret}


def _handshake_error(monitor: zmq.Socket[bytes]) -> TabletAuthError | None:
    """A handshake failure reported on ``monitor`` since the last call, if any."""
    while monitor.poll(0):
        event = parse_monitor_message(monitor.recv_multipart())
        if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return TabletAuthError(
                "AUTH_REFUSED",
                "the robot refused this tablet's key (not in its allow-list; "
                "provision with `xsq keys add-tablet NAME`)",
            )
        if event["event"] & _HANDSHAKE_FAILURES:
            return TabletAuthError(
                "HANDSHAKE_FAILED",
                "secure handshake with the robot failed: wrong robot public key, "
                "or only one side runs --insecure",
            )
    return None


class TabletClient:
    """Sends commands to the robot's command socket (ROUTER) and returns results.

    ``endpoint``: e.g. ``tcp://192.168.1.20:5555``. Keys are Z85 (40 bytes):
    the robot's public key and this tablet's key pair; with ``insecure=True``
    give none. ``timeout`` is seconds per attempt; ``retries`` is how many times
    a request is re-sent (same id) after a timeout, so it is tried
    ``retries + 1`` times in all.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        server_public_key: bytes | None = None,
        client_public_key: bytes | None = None,
        client_secret_key: bytes | None = None,
        timeout: float = 2.0,
        retries: int = 3,
        insecure: bool = False,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        if timeout <= 0 or retries < 0:
            raise ValueError("timeout must be > 0 and retries >= 0")
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self._keys = _Keys(server_public_key, client_public_key, client_secret_key, insecure)
        self._ctx = context or zmq.Context.instance()
        self._sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self.last_reply: Reply | None = None

    @classmethod
    def from_key_files(
        cls, endpoint: str, robot_public_file: Path, tablet_secret_file: Path, **kwargs: Any
    ) -> Self:
        """Keys from files: ``robot.key`` and the tablet's ``<name>.key_secret``."""
        return cls(endpoint, **keys_from_files(robot_public_file, tablet_secret_file), **kwargs)

    @classmethod
    def from_keys_dir(cls, endpoint: str, keys_dir: Path, tablet_name: str, **kwargs: Any) -> Self:
        """Keys from a robot key store (``robot.key``, ``issued/<name>.key_secret``)."""
        store = KeyStore(keys_dir)
        return cls.from_key_files(
            endpoint,
            store.robot_public_file,
            store.issued_dir / f"{tablet_name}.key_secret",
            **kwargs,
        )

    # --- requests -------------------------------------------------------------------

    def request(
        self, cmd: str, args: dict[str, Any] | None = None, request_id: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its ``result``.

        ``request_id`` defaults to a fresh UUID. Raises :class:`TabletError` for
        an error reply, :class:`TabletAuthError` when the handshake fails and
        :class:`TabletTimeout` when no attempt got a reply.
        """
        rid = request_id or uuid.uuid4().hex
        doc = {"v": PROTOCOL_VERSION, "id": rid, "cmd": cmd, "args": args or {}}
        # e.g. an argument from a non-UTF-8 terminal (surrogateescape): the robot
        # would refuse it, so say so here rather than fail to encode it.
        unencodable = find_unencodable(doc)
        if unencodable is not None:
            raise TabletError("BAD_REQUEST", unencodable)
        frame = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        if len(frame) > MAX_MESSAGE_BYTES:
            raise TabletError(
                "TOO_LARGE", f"request is {len(frame)} bytes; the limit is {MAX_MESSAGE_BYTES}"
            )
        for attempt in range(self.retries + 1):
            if attempt:
                log.info("no reply to %s (id %s); retry %d", cmd, rid, attempt)
            reply = self._attempt(frame, rid)
            if reply is not None:
                self.last_reply = reply
                if reply.ok:
                    assert reply.result is not None
                    return reply.result
                assert reply.error is not None
                raise TabletError(reply.error.code, reply.error.message, reply.error.missing)
        raise TabletTimeout(
            "TIMEOUT",
            f"no reply from {self.endpoint} to {cmd} after {self.retries + 1} attempts "
            f"of {self.timeout:g} s",
        )

    def _attempt(self, frame: bytes, rid: str) -> Reply | None:
        sock, monitor = self._socket()
        sock.send(frame)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + self.timeout
        while (remaining := deadline - time.monotonic()) > 0:
            events = dict(poller.poll(int(remaining * 1000)))  # pyzmq truncates to ms anyway
            if monitor in events:
                failure = _handshake_error(monitor)
                if failure is not None:
                    self._reset()
                    raise failure
            if sock not in events:
                continue
            data = sock.recv_multipart()
            try:
                reply = Reply.model_validate_json(data[-1])
            except ValidationError as exc:
                self._reset()
                raise TabletError("BAD_REPLY", f"malformed reply from the robot: {exc}") from None
            # id null: the robot could not read our id (TOO_LARGE, bad JSON); one
            # request is in flight per socket, so the answer is ours.
            if reply.id in (rid, None):
                return reply
            log.debug("discarded a stale reply (id %s, waiting for %s)", reply.id, rid)
        # The lost reply might still arrive: a fresh socket for the next attempt.
        self._reset()
        return None

    def _socket(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        if self._sock is None or self._monitor is None:
            sock = self._ctx.socket(zmq.DEALER)
            self._keys.apply(sock)
            self._monitor = sock.get_monitor_socket(_HANDSHAKE_FAILURES)
            sock.connect(self.endpoint)
            self._sock = sock
        return self._sock, self._monitor

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.disable_monitor()
            self._sock.close(linger=0)
            self._sock = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- commands -------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Robot id, protocol version, state, task list."""
        return self.request("hello")

    def start_visit(
        self,
        visit_id: str,
        operator: str,
        consent: bool,
        site: str = "",
        notes: str = "",
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """``session.start``; returns ``session_id`` and ``event_id``. ``metadata``: the
        visit fields the robot requires (``hello``'s ``required_fields``)."""
        args: dict[str, Any] = {"visit_id": visit_id, "operator": operator, "consent": consent}
        if site:
            args["site"] = site
        if notes:
            args["notes"] = notes
        if metadata:
            args["metadata"] = dict(metadata)
        return self.request("session.start", args)

    def start_task(self, task: str, instruction: str = "") -> dict[str, Any]:
        """``task.start``; returns ``episode_index`` and ``event_id``."""
        args = {"task": task, **({"instruction": instruction} if instruction else {})}
        return self.request("task.start", args)

    def end_task(self, outcome: str, note: str = "") -> dict[str, Any]:
        """``task.end`` with ``outcome`` success, failure or aborted."""
        return self.request("task.end", {"outcome": outcome, **({"note": note} if note else {})})

    def discard_task(self, episode_index: int | None = None, note: str = "") -> dict[str, Any]:
        """``task.discard``: the last ended episode (``episode_index``, when given, must be
        it). Re-record = this, then :meth:`start_task` with the reply's task/instruction."""
        args: dict[str, Any] = {"note": note} if note else {}
        if episode_index is not None:
            args["episode_index"] = episode_index
        return self.request("task.discard", args)

    def privacy_pause(self, note: str = "") -> dict[str, Any]:
        """``privacy.pause``: camera streams are not written until :meth:`privacy_resume`."""
        return self.request("privacy.pause", {"note": note} if note else {})

    def privacy_resume(self, note: str = "") -> dict[str, Any]:
        """``privacy.resume``: camera streams are written again."""
        return self.request("privacy.resume", {"note": note} if note else {})

    def mark(self, label: str, note: str = "") -> dict[str, Any]:
        """``mark``: a labelled instant, stamped with the robot's receive time."""
        return self.request("mark", {"label": label, **({"note": note} if note else {})})

    def stop_visit(self) -> dict[str, Any]:
        """``session.stop``; an open task is ended as aborted first."""
        return self.request("session.stop")

    def status(self) -> dict[str, Any]:
        """The robot's current status (same fields as the status messages)."""
        return self.request("status")


class StatusSubscriber:
    """Receives the robot's status messages (PUB socket, about one a second and on change).

    Keys as for :class:`TabletClient`. ``recv(timeout)`` returns one message or
    ``None``; iterating yields messages until closed.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        server_public_key: bytes | None = None,
        client_public_key: bytes | None = None,
        client_secret_key: bytes | None = None,
        insecure: bool = False,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
    ) -> None:
        keys = _Keys(server_public_key, client_public_key, client_secret_key, insecure)
        self.endpoint = endpoint
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        keys.apply(self._sock)
        # A status message has bounded fields; anything far bigger is not one.
        self._sock.maxmsgsize = MAX_MESSAGE_BYTES
        self._sock.subscribe(b"")
        self._monitor = self._sock.get_monitor_socket(_HANDSHAKE_FAILURES)
        self._sock.connect(endpoint)

    @classmethod
    def from_key_files(
        cls, endpoint: str, robot_public_file: Path, tablet_secret_file: Path, **kwargs: Any
    ) -> Self:
        return cls(endpoint, **keys_from_files(robot_public_file, tablet_secret_file), **kwargs)

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next status message as a dict, or ``None`` after ``timeout`` seconds.

        Raises :class:`TabletAuthError` when the robot refuses the handshake.
        """
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = dict(poller.poll(None if remaining is None else int(remaining * 1000)))
            if self._monitor in events:
                failure = _handshake_error(self._monitor)
                if failure is not None:
                    raise failure
            if self._sock not in events:
                if remaining is not None and remaining <= 0:
                    return None
                continue
            data = self._sock.recv()
            try:
                StatusMessage.model_validate_json(data)
            except ValidationError:
                log.warning("ignored a malformed status message (%d bytes)", len(data))
                continue
            message: dict[str, Any] = json.loads(data)
            return message

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            message = self.recv()
            if message is not None:
                yield message

    def close(self) -> None:
        self._sock.disable_monitor()
        self._sock.close(linger=0)
        self._monitor.close(linger=0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
