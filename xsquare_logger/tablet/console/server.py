"""The operator console's local HTTP server: static page plus a JSON proxy to the robot.

The browser never speaks ZeroMQ. It calls these endpoints on this process
(docs/console.md has the page's side):

``POST /api/command``
    Body ``{"cmd": "task.start", "args": {...}, "id": "..."}`` (JSON, at most
    :data:`MAX_BODY_BYTES`). Sent to the robot through one
    :class:`~xsquare_logger.tablet.client.TabletClient`; the answer is the robot's
    reply (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}``);
    every error also carries ``error.text``, the sentence for the operator
    (:mod:`.wording`), beside the robot's ``code`` and ``message``.
    The page makes the request id, so pressing *Retry* after a lost reply re-sends
    the same id and the robot answers from its replay cache instead of acting twice.
    No reply at all becomes ``ROBOT_UNREACHABLE`` (HTTP 504).
``GET /api/status``
    The latest status the robot published, plus ``age_sec`` (seconds since it
    arrived, ``null`` before the first) and ``stale`` (older than ``stale_after``),
    so the page can say "robot not responding" instead of showing old numbers,
    and ``console``: the visit's episode list and marks as this console saw them
    (:mod:`.visitlog`).
``GET /api/config``
    Task names for the buttons, the visit fields the robot requires, the robot
    endpoints.
``GET /api/preview?camera=NAME``
    The newest preview of one camera (:mod:`.previews`): asked from the robot only
    when a page asks here, so a closed page costs the robot nothing.

Bound to 127.0.0.1 by default: the console holds the tablet's CURVE secret key,
so only the tablet itself should be able to drive it. Requests whose ``Host`` is
not a loopback name (DNS rebinding) or whose ``Origin`` is another site (CSRF)
are refused while bound to loopback.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from xsquare_logger.tablet.client import (
    StatusSubscriber,
    TabletClient,
    TabletError,
    TabletTimeout,
)
from xsquare_logger.tablet.console.previews import CAMERA_NAME, PreviewSource
from xsquare_logger.tablet.console.visitlog import VisitLog
from xsquare_logger.tablet.console.wording import operator_text

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_BODY_BYTES",
    "STATIC_DIR",
    "ConsoleBackend",
    "ConsoleServer",
    "run_console",
]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_PORT = 8080
#: Largest accepted ``POST /api/command`` body. A visit's notes fit many times over.
MAX_BODY_BYTES = 16 * 1024
#: Per-attempt reply timeout (seconds) and re-sends: on a home Wi-Fi a reply takes
#: milliseconds, so the operator learns "robot unreachable" after ~3 s, not ~8 s.
DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 2
#: Previews are a picture, not an action: one short try, so a missing robot costs the
#: preview request well under a second and never a retry.
PREVIEW_TIMEOUT = 0.7
# Same variables as `xsq tablet`, so one shell setup serves both.
#: Status older than this (seconds) is reported ``stale``: the robot publishes about
#: once a second, so three missed updates means the link or the robot is down.
DEFAULT_STALE_AFTER = 3.0

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# Everything the page needs is served from here: no CDN, no fonts, no inline script.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class _Client(Protocol):
    def request(
        self, cmd: str, args: dict[str, Any] | None = None, request_id: str | None = None
    ) -> dict[str, Any]: ...

    def close(self) -> None: ...


class _Subscriber(Protocol):
    def recv(self, timeout: float | None = None) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class _CommandBody(BaseModel):
    """What the page may POST to ``/api/command`` (the robot validates the args)."""

    model_config = ConfigDict(extra="forbid")

    cmd: str = Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")
    args: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")


def _error(
    code: str,
    message: str,
    request_id: str | None = None,
    *,
    cmd: str = "",
    status: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An error reply in the robot's shape, plus ``text`` for the operator.

    ``extra``: further fields of the robot's error body (e.g. ``missing``), kept.
    """
    body: dict[str, Any] = {**(extra or {}), "code": code, "message": message}
    missing = body.get("missing")
    names = [str(m) for m in missing] if isinstance(missing, list) else []
    body["text"] = operator_text(code, cmd, status, names)
    return {"v": 1, "id": request_id, "ok": False, "error": body}


class ConsoleBackend:
    """The robot side of the console: one serialized client and the latest status.

    ``client`` sends commands to the robot's ROUTER. A ZeroMQ socket is not
    thread-safe and the HTTP server runs each request on its own thread, so every
    use goes through one lock (a second tap waits for the first reply).
    ``subscriber_factory`` builds the status subscriber on the status thread, so
    that socket is created, used and closed on one thread.
    ``stale_after`` is in seconds; ``clock`` returns seconds (monotonic).
    """

    def __init__(
        self,
        client: _Client,
        subscriber_factory: Callable[[], _Subscriber],
        *,
        tasks: Sequence[str] = (),
        robot: dict[str, Any] | None = None,
        stale_after: float = DEFAULT_STALE_AFTER,
        clock: Callable[[], float] = time.monotonic,
        previews: PreviewSource | None = None,
    ) -> None:
        self._client = client
        self.previews = previews
        self.visit_log = VisitLog()
        # hello's answer: the task list and the required visit fields come from it
        self._hello: dict[str, Any] | None = None
        self._subscriber_factory = subscriber_factory
        self.tasks = list(tasks)
        self.robot = dict(robot or {})
        self.stale_after = stale_after
        self._clock = clock
        self._client_lock = threading.Lock()
        self._status_lock = threading.Lock()
        self._status: dict[str, Any] | None = None
        self._status_at = 0.0
        self._link_error: dict[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the status thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._status_loop, name="console-status", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the status thread and close the command client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._client_lock:
            self._client.close()
        if self.previews is not None:
            self.previews.close()

    # -- commands --------------------------------------------------------------------
    def command(
        self, cmd: str, args: dict[str, Any], request_id: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Send one command; return (HTTP status, reply JSON in the robot's shape)."""
        request_id = request_id or uuid.uuid4().hex
        with self._client_lock:
            try:
                result = self._client.request(cmd, args, request_id=request_id)
                last = getattr(self._client, "last_reply", None)
                robot_time_ns = getattr(last, "robot_time_ns", None)
            except TabletTimeout as exc:
                return HTTPStatus.GATEWAY_TIMEOUT, _error(
                    "ROBOT_UNREACHABLE",
                    f"{exc.message or 'no reply from the robot'}. "
                    "Check that the robot is on and on this network, then retry.",
                    request_id,
                    cmd=cmd,
                )
            except TabletError as exc:
                return HTTPStatus.OK, _error(
                    exc.code,
                    exc.message,
                    request_id,
                    cmd=cmd,
                    status=self._latest_status(),
                    extra=self._error_extra(request_id),
                )
            except Exception as exc:
                log.exception("console: %s failed", cmd)
                return HTTPStatus.INTERNAL_SERVER_ERROR, _error(
                    "CONSOLE_ERROR", f"{type(exc).__name__}: {exc}", request_id, cmd=cmd
                )
        self.visit_log.record(cmd, args, result, robot_time_ns)
        reply = {"v": 1, "id": request_id, "ok": True, "result": result}
        if robot_time_ns is not None:
            reply["robot_time_ns"] = robot_time_ns
        return HTTPStatus.OK, reply

    def _error_extra(self, request_id: str) -> dict[str, Any]:
        """Fields of the robot's error body beyond code and message (e.g. ``missing``)."""
        last = getattr(self._client, "last_reply", None)
        error = getattr(last, "error", None)
        if error is None or getattr(last, "id", None) != request_id:
            return {}
        dump = getattr(error, "model_dump", None)
        fields: dict[str, Any] = dump(exclude_none=True) if callable(dump) else {}
        return {k: v for k, v in fields.items() if k not in ("code", "message", "text")}

    def _latest_status(self) -> dict[str, Any] | None:
        with self._status_lock:
            return self._status

    # -- status ----------------------------------------------------------------------
    def update_status(self, status: dict[str, Any]) -> None:
        """Record a status message as the latest (the status thread calls this)."""
        with self._status_lock:
            self._status = status
            self._status_at = self._clock()
            self._link_error = None
        self.visit_log.sync(status)

    def status(self) -> dict[str, Any]:
        """Latest status plus ``age_sec`` (``None`` before the first) and ``stale``.

        ``link_error`` (``{"code", "message"}`` or ``None``) says why the status
        subscription is failing, e.g. ``AUTH_REFUSED`` when the robot refuses our key.
        """
        with self._status_lock:
            latest, at, link_error = self._status, self._status_at, self._link_error
        console = self.visit_log.snapshot()
        if latest is None:
            return {
                "v": 1,
                "type": "status",
                "state": "unknown",
                "age_sec": None,
                "stale": True,
                "link_error": link_error,
                "console": console,
            }
        age = max(0.0, self._clock() - at)
        return {
            **latest,
            "age_sec": round(age, 3),
            "stale": age > self.stale_after,
            "link_error": link_error,
            "console": console,
        }

    def config(self) -> dict[str, Any]:
        """Task buttons, required visit fields and robot endpoints for the page.

        Without a task list of its own (no ``--config``), the console offers the
        robot's: ``hello`` returns the robot's ``tablet.tasks``, so one list, kept on
        the robot, serves every tablet. ``hello`` also names the visit fields the
        robot requires and does not fill itself (``required_fields``), so the start
        form asks for them
        before the first try. Asked again until the robot has answered once
        (``robot_answered`` tells the page to ask for the config again later).
        """
        if self._hello is None:
            with self._client_lock:
                try:
                    self._hello = self._client.request("hello", {}, request_id=uuid.uuid4().hex)
                except TabletError as exc:
                    log.info("console: robot config not yet known (%s)", exc.code)
        hello = self._hello or {}
        if not self.tasks and hello:
            self.tasks = [str(x) for x in hello.get("tasks", [])]
        required = hello.get("required_fields")
        return {
            "v": 1,
            "tasks": self.tasks,
            "required_fields": [str(x) for x in required] if isinstance(required, list) else [],
            "robot": self.robot,
            "robot_answered": self._hello is not None,
            "stale_after_sec": self.stale_after,
            "previews": self.previews is not None,
        }

    def preview(self, camera: str) -> dict[str, Any]:
        """The newest preview of ``camera`` (see :mod:`.previews`)."""
        if self.previews is None:
            return {
                "camera": camera,
                "available": False,
                "data_b64": "",
                "error": {"code": "PREVIEW_UNSUPPORTED", "message": "previews are off"},
            }
        return self.previews.get(camera)

    def _status_loop(self) -> None:
        sub: _Subscriber | None = None
        while not self._stop.is_set():
            try:
                if sub is None:
                    sub = self._subscriber_factory()
                msg = sub.recv(timeout=0.25)
            except Exception as exc:
                # A refused key or a socket hiccup must not end status for the visit:
                # report it to the page, then reconnect.
                error = {
                    "code": getattr(exc, "code", "STATUS_ERROR"),
                    "message": getattr(exc, "message", f"{type(exc).__name__}: {exc}"),
                }
                with self._status_lock:
                    repeated, self._link_error = self._link_error == error, error
                if not repeated:
                    log.warning("console: status link: %s: %s", error["code"], error["message"])
                if sub is not None:
                    with contextlib.suppress(Exception):
                        sub.close()
                    sub = None
                self._stop.wait(1.0)
                continue
            if isinstance(msg, dict) and msg.get("type", "status") == "status":
                self.update_status(msg)
        if sub is not None:
            with contextlib.suppress(Exception):
                sub.close()


def _host_name(host_header: str) -> str:
    """``127.0.0.1:8080`` -> ``127.0.0.1``; ``[::1]:8080`` -> ``::1``."""
    return (urlsplit("//" + host_header).hostname or "").lower()


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: ConsoleServer
    server_version = "xsq-console"
    sys_version = ""

    # -- plumbing --------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        # The page polls twice a second; access lines would drown everything else.
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self.close_connection = True
        self._send_json(status, _error(code, message))

    def _preview(self, query: str) -> None:
        camera = (parse_qs(query).get("camera") or [""])[0]
        if not CAMERA_NAME.match(camera):
            self._refuse(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", "camera: a camera stream name")
            return
        self._send_json(HTTPStatus.OK, self.server.backend.preview(camera))

    def _allowed(self) -> bool:
        """Host/Origin checks; sends the refusal itself and returns False."""
        host = self.headers.get("Host", "")
        if self.server.loopback_only and not _is_loopback(_host_name(host)):
            self._refuse(HTTPStatus.FORBIDDEN, "FORBIDDEN", f"host {host!r} not allowed")
            return False
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            self._refuse(HTTPStatus.FORBIDDEN, "FORBIDDEN", f"origin {origin!r} not allowed")
            return False
        return True

    # -- routes ----------------------------------------------------------------------
    def do_GET(self) -> None:
        if not self._allowed():
            return
        url = urlsplit(self.path)
        path = url.path
        backend = self.server.backend
        if path == "/api/status":
            self._send_json(HTTPStatus.OK, backend.status())
        elif path == "/api/config":
            self._send_json(HTTPStatus.OK, backend.config())
        elif path == "/api/preview":
            self._preview(url.query)
        else:
            name = "index.html" if path == "/" else path.lstrip("/")
            static = self.server.static.get(name)
            if static is None:
                self._refuse(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no such page: {path}")
            else:
                self._send(HTTPStatus.OK, *static)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if not self._allowed():
            return
        if urlsplit(self.path).path != "/api/command":
            self._refuse(HTTPStatus.NOT_FOUND, "NOT_FOUND", f"no such endpoint: {self.path}")
            return
        body = self._read_json_body()
        if body is None:
            return
        status, reply = self.server.backend.command(body.cmd, body.args, body.id)
        self._send_json(status, reply)

    def _read_json_body(self) -> _CommandBody | None:
        if self.headers.get_content_type() != "application/json":
            # Also what keeps other web pages out: a cross-site form cannot send this type.
            self._refuse(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", "Content-Type must be JSON")
            return None
        if self.headers.get("Transfer-Encoding"):
            self._refuse(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", "chunked bodies not accepted")
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", "Content-Length required")
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            self._refuse(
                HTTPStatus.BAD_REQUEST,
                "BODY_TOO_LARGE",
                f"body of {length} bytes; at most {MAX_BODY_BYTES} accepted",
            )
            return None
        raw = self.rfile.read(length)
        try:
            return _CommandBody.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            self._refuse(HTTPStatus.BAD_REQUEST, "BAD_REQUEST", f"{where}: {first['msg']}")
            return None


def _load_static(directory: Path) -> dict[str, tuple[bytes, str]]:
    """Read the page's files once: only these names are ever served."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(directory.iterdir()):
        ctype = _CONTENT_TYPES.get(path.suffix)
        if path.is_file() and ctype is not None:
            files[path.name] = (path.read_bytes(), ctype)
    if "index.html" not in files:
        raise FileNotFoundError(f"console page missing: {directory / 'index.html'}")
    return files


class ConsoleServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` serving the console; :meth:`start` runs it on a thread.

    ``address`` is ``(bind host, port)``; port 0 picks a free one (see :attr:`url`).
    Use as a context manager, or call :meth:`close`, which also closes the backend.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        backend: ConsoleBackend,
        static_dir: Path = STATIC_DIR,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.static = _load_static(static_dir)
        self.backend = backend
        self.loopback_only = _is_loopback(address[0])
        self._thread: threading.Thread | None = None
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if isinstance(host, bytes):  # typeshed allows bytes (AF_UNIX); ours is AF_INET*
            host = host.decode()
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in str(host):
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    def start(self) -> ConsoleServer:
        """Start the backend's status thread and serve on a daemon thread."""
        self.backend.start()
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever,
                kwargs={"poll_interval": 0.2},
                name="console-http",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self.server_close()
        self.backend.close()

    def __enter__(self) -> ConsoleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _endpoint(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def run_console(
    robot_host: str,
    command_port: int = 5555,
    status_port: int = 5556,
    *,
    server_public_key: bytes | None = None,
    client_public_key: bytes | None = None,
    client_secret_key: bytes | None = None,
    bind: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    tasks: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    stale_after: float = DEFAULT_STALE_AFTER,
) -> ConsoleServer:
    """Start a console for the robot at ``robot_host`` and return the running server.

    ``server_public_key`` is the robot's CURVE public key, ``client_*`` this tablet's
    pair (Z85, as :func:`~xsquare_logger.tablet.client.keys_from_files` returns them);
    all three ``None`` means no CURVE (the robot must run ``insecure`` too).
    ``timeout`` is seconds per attempt and ``retries`` the re-sends (same id) after
    a timeout; then the page gets ``ROBOT_UNREACHABLE``. ``port`` 0 picks a free
    port: read ``server.url``. Stop it with ``server.close()``.
    """
    keys = (server_public_key, client_public_key, client_secret_key)
    if any(k is None for k in keys) and any(k is not None for k in keys):
        raise ValueError("CURVE needs the robot public key and the tablet key pair, or none")
    command_ep = _endpoint(robot_host, command_port)
    status_ep = _endpoint(robot_host, status_port)
    key_args: dict[str, Any] = {
        "server_public_key": server_public_key,
        "client_public_key": client_public_key,
        "client_secret_key": client_secret_key,
        "insecure": server_public_key is None,
    }
    client = TabletClient(command_ep, timeout=timeout, retries=retries, **key_args)
    previews = PreviewSource(
        TabletClient(command_ep, timeout=min(timeout, PREVIEW_TIMEOUT), retries=0, **key_args)
    )

    def subscriber() -> StatusSubscriber:
        return StatusSubscriber(status_ep, **key_args)

    robot = {
        "host": robot_host,
        "command_endpoint": command_ep,
        "status_endpoint": status_ep,
        "secure": server_public_key is not None,
    }
    backend = ConsoleBackend(
        client, subscriber, tasks=tasks, robot=robot, stale_after=stale_after, previews=previews
    )
    try:
        server = ConsoleServer((bind, port), backend)
    except BaseException:
        backend.close()
        raise
    return server.start()
