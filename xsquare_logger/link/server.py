"""The robot end of the tablet link: a ZeroMQ ROUTER for commands, a PUB for status.

One background thread owns both sockets and the :class:`VisitStateMachine`, so
commands are executed one at a time in arrival order. Every request message
gets exactly one reply; nothing a tablet sends can stop the loop.

Security: both sockets are CURVE servers. A ZAP handler (pyzmq's
ThreadAuthenticator with a callback) admits a client only if its public key is
in ``authorized/`` at handshake time. Because ZAP only runs at handshake, a
revocation also needs to reach open connections: every command is checked
against the current allow-list via the message's ``User-Id`` (the client key),
and when a key disappears the PUB socket is re-bound, which drops all
subscribers; the authorized ones reconnect on their own within ~0.1 s.
Refused handshakes and dropped commands of revoked keys are logged at most
once a minute per key (:class:`_LogLimiter`), whatever the tablet repeats.
``insecure=True`` disables all of this and logs a warning at every start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit

import zmq
from zmq.auth.thread import ThreadAuthenticator

from xsquare_logger.config.model import TabletConfig
from xsquare_logger.errors import XsqError
from xsquare_logger.link.keys import AllowList, KeyStore
from xsquare_logger.link.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ErrorCode,
    encode,
    error_reply,
)

__all__ = ["MAX_FRAME_BYTES", "TabletMachine", "TabletServer", "TabletServerError"]

log = logging.getLogger(__name__)

# The largest request frame (payload bytes) the transport accepts: up to this a
# frame is read and answered (TOO_LARGE above MAX_MESSAGE_BYTES); a larger one
# makes libzmq close the sender's connection without a reply (ZMQ_MAXMSGSIZE).
MAX_FRAME_BYTES = 1024 * 1024
# libzmq applies ZMQ_MAXMSGSIZE to the frame on the wire. Under CURVE that is a
# MESSAGE command: "\x07MESSAGE" (8) + nonce (8) + MAC (16) + flags (1) around the
# payload, so without this allowance payloads of 1,048,544..1,048,576 bytes were
# dropped unanswered.
_CURVE_FRAME_OVERHEAD = 33
# A stalled subscriber costs at most this many queued status messages.
_STATUS_HWM = 16
_KEY_CHECK_INTERVAL = 1.0
# Poll timeout cap: how quickly stop() is noticed.
_MAX_POLL_S = 0.1
_REBIND_TRIES = 50
_DENIAL_LOG_INTERVAL = 60.0
# Keys remembered by a _LogLimiter (a stranger can make up any number of keys).
_LOG_LIMITER_KEYS = 1024


class TabletMachine(Protocol):
    """What the server drives: the VisitStateMachine (link/visit.py) in this process, or
    one in the recorder's process (link/remote.py, the separate tablet bridge)."""

    @property
    def version(self) -> int: ...

    def handle_frame(self, frame: bytes, received_ns: int, client: str = "") -> bytes: ...

    def snapshot(self) -> dict[str, Any]: ...


class TabletServerError(XsqError):
    """The server could not start (bad endpoint, port in use, missing keys)."""


class _LogLimiter:
    """Lets a log message about one key through at most once per ``interval`` seconds.

    Whatever a tablet repeats (handshakes with a refused key, commands from a
    revoked one) must not grow the robot's log without bound. ``allow(key)``
    returns ``None`` to suppress, else how many were suppressed since the last
    message for that key. Memory is bounded too: at most ``max_keys`` keys are
    remembered (the oldest forgotten first). One instance per thread.
    """

    def __init__(
        self, interval: float = _DENIAL_LOG_INTERVAL, max_keys: int = _LOG_LIMITER_KEYS
    ) -> None:
        self._interval = interval
        self._max_keys = max_keys
        # key -> (time of the last message, suppressed since), oldest message first
        self._seen: OrderedDict[bytes, tuple[float, int]] = OrderedDict()

    def allow(self, key: bytes) -> int | None:
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._interval:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        return 0 if last is None else last[1]


def _suppressed(count: int) -> str:
    return f" ({count} more since the last report)" if count else ""


class _KeyCheck:
    """ZAP credentials provider: admits the keys of the allow-list, logs refusals."""

    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._denials = _LogLimiter()

    def callback(self, domain: str, key: bytes) -> bool:
        if self._allow.allows(key):
            return True
        # A refused client retries its handshake; log each key once a minute, not each time.
        suppressed = self._denials.allow(key)
        if suppressed is not None:
            log.warning(
                "refused a tablet whose key is not authorized: %s%s",
                key.decode(),
                _suppressed(suppressed),
            )
        return False


class TabletServer:
    """Serves tablet commands and publishes status; ``start()``/``stop()`` or ``with``.

    ``config`` gives the endpoints (``tcp://*:5555``, or port 0 for a free
    port), the keys directory, ``insecure`` and the status interval (seconds).
    ``robot_id`` is put in every status message.
    """

    def __init__(self, config: TabletConfig, robot_id: str, machine: TabletMachine) -> None:
        self._config = config
        self._robot_id = robot_id
        self._machine = machine
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._auth: ThreadAuthenticator | None = None
        self._allow: AllowList | None = None
        self._keys: tuple[bytes, bytes] | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._pub: zmq.Socket[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._status_seq = 0
        # Used by the server thread only (the ZAP thread has its own in _KeyCheck).
        self._revoked_log = _LogLimiter()
        self.command_endpoint = ""
        self.status_endpoint = ""

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Bind both sockets (errors raise here, in the caller) and start serving."""
        if self._thread is not None:
            raise TabletServerError("tablet server already started")
        self._ctx = zmq.Context()
        try:
            if not self._config.insecure:
                self._start_auth()
            self._router = self._make_router()
            self.command_endpoint = self._bind(
                self._router, self._config.command_endpoint, "tablet.command_endpoint"
            )
            self._pub = self._make_pub()
            self.status_endpoint = self._bind(
                self._pub, self._config.status_endpoint, "tablet.status_endpoint"
            )
        except BaseException:
            self._teardown()
            raise
        if self._config.insecure:
            log.warning(
                "tablet link is INSECURE (--insecure): no authentication, no encryption; "
                "anyone who can reach %s can control recording",
                self.command_endpoint,
            )
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="tablet-server", daemon=True)
        self._thread.start()
        log.info(
            "tablet link: commands on %s, status on %s (%s)",
            self.command_endpoint,
            self.status_endpoint,
            "INSECURE"
            if self._config.insecure
            else f"CURVE, {len(self._allow or ())} authorized tablet key(s)",
        )

    def stop(self) -> None:
        """Stop serving and release the ports; idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._teardown()

    def __enter__(self) -> TabletServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def command_port(self) -> int:
        return _port(self.command_endpoint)

    @property
    def status_port(self) -> int:
        return _port(self.status_endpoint)

    # --- setup ----------------------------------------------------------------------

    def _start_auth(self) -> None:
        assert self._ctx is not None
        store = KeyStore(self._config.keys_dir)
        try:
            self._keys = store.load_robot_keys()
        except Exception as exc:
            raise TabletServerError(str(exc)) from None
        self._allow = AllowList(store.authorized_dir)
        self._allow.refresh()
        if not len(self._allow):
            log.warning(
                "no tablet is authorized (%s is empty); run `xsq keys add-tablet NAME`",
                store.authorized_dir,
            )
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(__name__ + ".zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", _KeyCheck(self._allow))

    def _secure(self, sock: zmq.Socket[bytes]) -> None:
        sock.linger = 0
        if self._keys is not None:
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = self._keys

    def _make_router(self) -> zmq.Socket[bytes]:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.ROUTER)
        self._secure(sock)
        overhead = _CURVE_FRAME_OVERHEAD if self._keys is not None else 0
        sock.maxmsgsize = MAX_FRAME_BYTES + overhead
        return sock

    def _make_pub(self) -> zmq.Socket[bytes]:
        assert self._ctx is not None
        sock = self._ctx.socket(zmq.PUB)
        self._secure(sock)
        sock.sndhwm = _STATUS_HWM
        # Subscribers send only subscriptions; anything big is hostile.
        sock.maxmsgsize = 1024
        return sock

    @staticmethod
    def _bind(sock: zmq.Socket[bytes], endpoint: str, setting: str) -> str:
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            # zmq.strerror, not str(exc): pyzmq appends the address a second time.
            reason = zmq.strerror(exc.errno or 0)
            if exc.errno == zmq.EADDRINUSE:
                reason += " (another program, or another xsq run, holds that port)"
            raise TabletServerError(
                f"tablet link: cannot bind {endpoint} ({setting}): {reason}"
            ) from None
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _teardown(self) -> None:
        for sock in (self._router, self._pub):
            if sock is not None:
                sock.close(linger=0)
        self._router = self._pub = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # --- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        assert self._router is not None
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        published_version = -1
        next_status = time.monotonic()
        next_key_check = time.monotonic() + _KEY_CHECK_INTERVAL
        while not self._stopping.is_set():
            try:
                wait = min(next_status, next_key_check) - time.monotonic()
                events = dict(poller.poll(int(max(0.0, min(wait, _MAX_POLL_S)) * 1000)))
                if self._router in events:
                    self._drain()
                now = time.monotonic()
                if self._machine.version != published_version or now >= next_status:
                    published_version = self._machine.version
                    next_status = now + self._config.status_interval
                    self._publish_status()
                if self._allow is not None and now >= next_key_check:
                    next_key_check = now + _KEY_CHECK_INTERVAL
                    self._allow.refresh()
                    if self._allow.pop_removed():
                        self._rebind_pub()
            except Exception:
                # Whatever went wrong, the operator's link must outlive it.
                log.exception("tablet server loop error")
                time.sleep(_MAX_POLL_S)

    def _drain(self) -> None:
        """Answer every queued command (bounded so status keeps flowing under a flood)."""
        assert self._router is not None
        for _ in range(100):
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            received_ns = time.time_ns()
            try:
                self._serve(frames, received_ns)
            except Exception:
                log.exception("unexpected error while serving a tablet message")

    def _serve(self, frames: list[zmq.Frame], received_ns: int) -> None:
        assert self._router is not None
        identity, body = frames[0].bytes, frames[1:]
        client = ""
        if self._allow is not None and body:
            user = str(body[0].get("User-Id"))
            # ZAP admitted this connection, but the key may have been revoked since
            # (the allow-list is re-read every second by the loop, not per command).
            if user.encode() not in self._allow:
                # A revoked tablet may keep sending: one log line a minute, not one each.
                suppressed = self._revoked_log.allow(user.encode())
                if suppressed is not None:
                    log.warning(
                        "dropped a command from a revoked tablet key %s%s",
                        user,
                        _suppressed(suppressed),
                    )
                return
            client = user
        # A REQ socket puts an empty delimiter first; answer in the same envelope.
        envelope = [identity]
        if len(body) == 2 and body[0].bytes == b"":
            envelope.append(b"")
            body = body[1:]
        if len(body) != 1:
            reply = encode(
                error_reply(
                    None,
                    ErrorCode.BAD_REQUEST,
                    f"expected one frame holding one JSON request, got {len(body)} frames",
                )
            )
        else:
            try:
                reply = self._machine.handle_frame(body[0].bytes, received_ns, client)
            except Exception:
                log.exception("tablet request failed")
                reply = encode(error_reply(None, ErrorCode.INTERNAL, "internal error"))
        if len(reply) > MAX_MESSAGE_BYTES:  # cannot happen with bounded fields; stay in spec
            log.error("reply of %d bytes exceeds the protocol limit", len(reply))
            reply = encode(error_reply(None, ErrorCode.INTERNAL, "reply too large"))
        self._router.send_multipart([*envelope, reply], zmq.NOBLOCK)

    def _publish_status(self) -> None:
        assert self._pub is not None
        self._status_seq += 1
        message: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": "status", "seq": self._status_seq}
        try:
            message.update(self._machine.snapshot())
        except Exception:
            log.exception("status snapshot failed")
            return
        message["robot_id"] = self._robot_id
        # No room for slow subscribers: they get the next one.
        with contextlib.suppress(zmq.Again):
            self._pub.send(encode(message), zmq.NOBLOCK)

    def _rebind_pub(self) -> None:
        """Drop every status subscriber so revoked keys must handshake again (and fail)."""
        assert self._pub is not None
        endpoint = self.status_endpoint
        self._pub.close(linger=0)
        self._pub = self._make_pub()
        for _ in range(_REBIND_TRIES):
            try:
                self._pub.bind(endpoint)
                return
            except zmq.ZMQError as exc:
                # The old listener closes asynchronously in libzmq's I/O thread.
                if exc.errno != zmq.EADDRINUSE:
                    raise
                time.sleep(0.02)
        log.error("could not re-bind status socket %s; status publishing stopped", endpoint)


def _port(endpoint: str) -> int:
    port = urlsplit(endpoint).port
    if port is None:
        raise TabletServerError(f"endpoint {endpoint!r} has no port")
    return port
