"""The robot's side of the floor: heartbeats and session reports, never in the way.

One background thread. Every ``heartbeat_interval`` it asks the composition root
for a fresh :class:`Heartbeat` and POSTs it: only the latest heartbeat matters, so
a heartbeat that cannot be sent is simply replaced by the next one, never queued.
Session reports (closed, verified) must arrive: :meth:`FloorReporter.report` writes
each one to the outbox (one file per session and state, atomically) and returns;
the thread sends them oldest first and deletes each file on a 2xx. The recorder,
the uploader and the tablet only ever call :meth:`report`, which touches the local
disk and nothing else, so nothing they do waits on the floor.

Standard library only (``urllib.request``): a robot install needs neither FastAPI
nor SQLAlchemy nor an HTTP client package. The robot token goes into the
``Authorization`` header and nowhere else: never into a log line, an exception or
the outbox.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote

from xsquare_logger import __version__
from xsquare_logger.config.floor import TOKEN_ENV, FloorConfig
from xsquare_logger.errors import XsqError
from xsquare_logger.floor.protocol import (
    API_PREFIX,
    Heartbeat,
    RobotState,
    SessionReport,
    StreamCounts,
    UploadState,
    session_bytes,
)
from xsquare_logger.recording.control import RecordingStatus
from xsquare_logger.session.fsutil import atomic_write
from xsquare_logger.session.manifest import SessionManifest, read_manifest

__all__ = [
    "FloorConfigError",
    "FloorReporter",
    "build_session_report",
    "heartbeat_from_status",
    "load_token",
    "outbox_dir",
]

log = logging.getLogger("xsquare_logger.floor")

_SUFFIX = ".json"
# What a status code means for the request that got it.
Verdict = Literal["ok", "retry", "auth", "config", "refused"]


class FloorConfigError(XsqError):
    """floor.url is set but the robot cannot report (no usable token)."""


def load_token(config: FloorConfig) -> str:
    """The robot token: ``$XSQ_FLOOR_TOKEN``, else the content of ``floor.token_file``.

    Errors name the source, never the token (it must not reach a log or a terminal).
    """
    raw = os.environ.get(TOKEN_ENV, "")
    source = f"${TOKEN_ENV}"
    if not raw.strip():
        if config.token_file is None:
            raise FloorConfigError(
                f"floor.url is set but no robot token: set floor.token_file or ${TOKEN_ENV}"
            )
        source = f"floor.token_file {config.token_file}"
        try:
            raw = config.token_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise FloorConfigError(f"cannot read {source}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise FloorConfigError(f"{source} is not UTF-8 text") from None
    token = raw.strip()
    if not token:
        raise FloorConfigError(f"{source} is empty")
    # A header value with spaces or control characters would be refused by http.client
    # with the value in the message: check here, with a message that does not quote it.
    if any(not (0x21 <= ord(c) <= 0x7E) for c in token):
        raise FloorConfigError(f"{source}: the token must be one line of printable ASCII")
    return token


def outbox_dir(config: FloorConfig, data_root: Path) -> Path:
    """Where unsent session reports wait (a dot folder: never taken for a session)."""
    return config.outbox_dir if config.outbox_dir is not None else data_root / ".floor-outbox"


def build_session_report(
    session_dir: Path,
    upload_state: UploadState = "pending",
    remote: str = "",
    manifest: SessionManifest | None = None,
) -> SessionReport:
    """The report of one session from its directory (``session.json`` as written).

    ``manifest`` is used only if session.json cannot be read. ``bytes`` is
    :func:`session_bytes` (what sync computes from the bucket's copy too).
    """
    try:
        manifest = read_manifest(session_dir)
    except XsqError:
        if manifest is None:
            raise
    return SessionReport(
        manifest=manifest,
        upload_state=upload_state,
        remote=remote,
        bytes=session_bytes(manifest),
    )


def heartbeat_from_status(
    robot_id: str,
    status: RecordingStatus,
    episode: tuple[str, int, int] | None,
    *,
    disk_reserve_bytes: int,
    config_digest: str,
    backlog: dict[str, int] | None = None,
    last_upload_error: str = "",
    now_ns: int | None = None,
) -> Heartbeat:
    """The heartbeat of a robot from what its stack knows right now.

    ``status`` is the recorder's (``RosSessionController.status()``), ``episode`` the
    tablet's open task (``VisitStateMachine.open_episode()``), ``backlog`` the
    uploader's ``{"sessions", "bytes"}``. State ``error``: not recording and the
    recorder's last error is set (a refused start, a session the recorder ended).
    """
    now = time.time_ns() if now_ns is None else now_ns
    state: RobotState = "recording" if status.recording else (
        "error" if status.last_error else "idle"
    )
    task, index, started = episode if episode is not None else ("", -1, now)
    backlog = backlog or {}
    return Heartbeat(
        robot_id=robot_id,
        sent_ns=now,
        state=state,
        session_id=status.session_id,
        task=task,
        episode_index=index,
        elapsed_sec=max(0.0, status.elapsed_sec),
        episode_elapsed_sec=max(0.0, (now - started) / 1e9),
        streams={
            topic: StreamCounts(received=c.get("received", 0), lost=c.get("lost", 0))
            for topic, c in status.topics.items()
        },
        messages_lost=status.messages_lost,
        disk_free_bytes=max(0, status.disk_free_bytes),
        disk_reserve_bytes=disk_reserve_bytes,
        upload_backlog_sessions=backlog.get("sessions", 0),
        upload_backlog_bytes=max(0, backlog.get("bytes", 0)),
        last_upload_error=last_upload_error[:2000],
        last_error=status.last_error[:2000],
        software_version=__version__,
        config_digest=config_digest,
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the token to another address: a 3xx is an error instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class _Answer:
    status: int  # 0 = no answer (connection refused, timeout, DNS)
    detail: str


def _verdict(status: int) -> Verdict:
    if 200 <= status < 300:
        return "ok"
    if status in (0, 408, 429) or status >= 500:
        return "retry"
    if status in (401, 403):
        return "auth"  # the token may be fixed: keep what was not accepted
    if status < 400 or status in (404, 405):
        return "config"  # floor.url points at something that is not the floor API
    return "refused"  # the document itself is refused (422...): sending it again cannot help


class FloorReporter:
    """Sends heartbeats and spooled session reports to the floor service.

    ``heartbeat`` builds the current heartbeat (called on the reporter's thread).
    ``token`` defaults to :func:`load_token`; with ``reload_token`` (or no ``token``)
    a refused token is read again from its source before the next attempt, so a
    token file fixed on a running robot is picked up. ``backoff_initial``/``backoff_max``
    bound the jittered exponential backoff while the floor does not answer.
    """

    def __init__(
        self,
        config: FloorConfig,
        robot_id: str,
        outbox: Path,
        heartbeat: Callable[[], Heartbeat] | None = None,
        *,
        token: str | None = None,
        reload_token: bool = False,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
    ) -> None:
        if not config.url:
            raise FloorConfigError("floor.url is empty: no floor to report to")
        self.config = config
        self.robot_id = robot_id
        self.outbox = outbox
        self._heartbeat = heartbeat
        self._token = token if token is not None else load_token(config)
        self._reload_token = reload_token or token is None
        self._old_tokens: list[str] = []
        self._base = f"{config.url}{API_PREFIX}/robots/{quote(robot_id, safe='')}"
        self._opener = urllib.request.build_opener(
            # The floor is on the site network: proxy variables meant for the internet
            # (pip, apt) must not route robot reports.
            urllib.request.ProxyHandler({}),
            _NoRedirect(),
        )
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._failures = 0
        self._retry_at = 0.0
        self._problem = ""  # the problem last logged (each is logged once, not per retry)
        self._lock = threading.Lock()  # the outbox: report() and the sender thread
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeats_sent = 0
        self.reports_sent = 0
        try:
            outbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FloorConfigError(f"cannot create the floor outbox {outbox}: {exc.strerror}") \
                from None

    # -- the composition root's side ------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="xsq-floor", daemon=True)
        self._thread.start()
        queued = len(self.pending())
        log.info("reporting to floor %s%s", self.config.url,
                 f" ({queued} session reports queued)" if queued else "")

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread; unsent reports stay in the outbox for the next start.

        Returns within ``timeout``: a request still in flight is abandoned (the thread
        is a daemon and the outbox only loses a file after a 2xx for it).
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def report(self, report: SessionReport) -> Path:
        """Queue ``report`` (atomic write into the outbox) and wake the sender; never blocks
        on the network. A newer report of a session replaces its older queued ones (the
        floor upserts by session id, the newest carries everything)."""
        session_id = report.manifest.session_id
        data = report.model_dump_json()
        with self._lock:
            older = [p for p in self.pending() if self._session_of(p) == session_id]
            # The time prefix orders the outbox across restarts; a clash only reorders
            # two reports written in the same nanosecond.
            name = f"{time.time_ns():020d}-{session_id}-{report.upload_state}{_SUFFIX}"
            path = atomic_write(self.outbox / name, data)
            for old in older:
                old.unlink(missing_ok=True)
            self._bound()
        self._wake.set()
        return path

    def report_session(
        self,
        session_dir: Path,
        upload_state: UploadState = "pending",
        remote: str = "",
        manifest: SessionManifest | None = None,
    ) -> None:
        """:func:`build_session_report` + :meth:`report`; errors are logged, never raised
        (a report must not fail the recorder's or the uploader's callback)."""
        try:
            self.report(build_session_report(session_dir, upload_state, remote, manifest))
        except Exception as exc:
            log.error("floor report of %s not queued: %s", session_dir.name, exc)

    def pending(self) -> list[Path]:
        """Queued report files, oldest first."""
        try:
            return sorted(p for p in self.outbox.iterdir()
                          if p.suffix == _SUFFIX and not p.name.startswith("."))
        except FileNotFoundError:
            return []

    # -- outbox -----------------------------------------------------------------------------
    @staticmethod
    def _session_of(path: Path) -> str:
        # <20-digit time>-<session id>-<state>.json; states contain no "-".
        return path.stem.split("-", 1)[-1].rsplit("-", 1)[0]

    def _bound(self) -> None:
        files = self.pending()
        excess = len(files) - self.config.max_queued_reports
        for path in files[:max(excess, 0)]:
            path.unlink(missing_ok=True)
            log.warning(
                "floor outbox full (%d reports): dropped the oldest, %s; "
                "`xsq floor sync` adds it to the catalog from the bucket",
                self.config.max_queued_reports, path.stem.split("-", 1)[-1],
            )

    # -- sender thread ----------------------------------------------------------------------
    def _run(self) -> None:
        next_heartbeat = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= self._retry_at:
                reachable = True
                if self._heartbeat is not None and now >= next_heartbeat:
                    next_heartbeat = now + self.config.heartbeat_interval
                    reachable = self._send_heartbeat()
                if reachable:
                    self._drain()
            # In backoff: nothing until it ends (a due heartbeat is then the probe).
            # Otherwise the next heartbeat, or (no heartbeats) the next report().
            now = time.monotonic()
            wake_at: float | None = self._retry_at if self._retry_at > now else None
            if wake_at is None and self._heartbeat is not None:
                wake_at = next_heartbeat
            self._wake.wait(None if wake_at is None else max(0.0, wake_at - now))
            self._wake.clear()

    def _send_heartbeat(self) -> bool:
        assert self._heartbeat is not None
        try:
            beat = self._heartbeat()
            body = beat.model_dump_json().encode()
        except Exception:  # a broken builder costs heartbeats, not the reporter
            self._note("heartbeat", "floor heartbeat not built (see traceback)", exc_info=True)
            return True
        answer = self._send("POST", "/heartbeats", body)
        verdict = self._judge(answer, "heartbeat")
        if verdict == "ok":
            self.heartbeats_sent += 1
        # A refused heartbeat (a bug, logged) must not hold back the session reports.
        return verdict in ("ok", "refused")

    def _drain(self) -> None:
        while not self._stop.is_set():
            files = self.pending()
            if not files:
                return
            path = files[0]
            try:
                body = path.read_bytes()
                session_id = json.loads(body)["manifest"]["session_id"]
            except FileNotFoundError:
                continue  # replaced by a newer report meanwhile
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("floor outbox: %s unreadable (%s); dropped", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            answer = self._send("PUT", f"/sessions/{quote(str(session_id), safe='')}", body)
            verdict = self._judge(answer, f"report of {session_id}")
            if verdict == "ok":
                self.reports_sent += 1
            if verdict in ("ok", "refused"):
                with self._lock:
                    path.unlink(missing_ok=True)
                continue
            return  # retry/auth/config: keep it (and the ones after it) for later

    def _send(self, method: str, path: str, body: bytes) -> _Answer:
        request = urllib.request.Request(
            self._base + path,
            data=body,
            method=method,
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self._token}",
                "User-Agent": f"xsquare_logger/{__version__}",
            },
        )
        try:
            with self._opener.open(request, timeout=self.config.timeout) as response:
                response.read()
                return _Answer(response.status, "")
        except urllib.error.HTTPError as exc:
            return _Answer(exc.code, self._detail(exc.fp, exc.reason))
        except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return _Answer(0, self._scrub(str(reason)) or type(exc).__name__)

    def _detail(self, body: IO[bytes] | None, reason: object) -> str:
        text = ""
        try:
            raw = body.read(4096) if body is not None else b""
            doc = json.loads(raw) if raw else {}
            detail = doc.get("detail", "") if isinstance(doc, dict) else ""
            text = detail if isinstance(detail, str) else json.dumps(detail)[:300]
        except (OSError, ValueError):
            pass
        return self._scrub(text or str(reason))

    def _scrub(self, text: str) -> str:
        # Whatever a server or a proxy echoes back, the token does not reach the log.
        for token in (self._token, *self._old_tokens):
            text = text.replace(token, "<token>")
        return text[:500]

    def _judge(self, answer: _Answer, what: str) -> Verdict:
        verdict = _verdict(answer.status)
        code = f" ({answer.status})" if answer.status else ""
        if verdict == "ok":
            if self._problem:
                log.info("floor %s answers again", self.config.url)
            self._problem = ""
            self._failures = 0
            self._retry_at = 0.0
        elif verdict == "refused" and what == "heartbeat":
            self._note("heartbeat", f"floor refused the heartbeat{code}: {answer.detail}")
        elif verdict == "refused":
            # Logged every time: each refused report is a different document dropped.
            log.error("floor refused the %s%s, dropped it: %s", what, code, answer.detail)
        elif verdict == "auth":
            hint = "revoked or wrong token?" if answer.status == 401 else "not this robot's token?"
            self._note("auth", f"floor refused the robot token{code}: {hint} ({answer.detail}); "
                       "session reports are kept until it is fixed")
            self._back_off(slow=not self._token_changed())
        elif verdict == "config":
            self._note("config", f"floor.url {self.config.url} is not a floor API{code}: "
                       f"{answer.detail}; session reports are kept")
            self._back_off(slow=True)
        else:
            self._note("down", f"floor {self.config.url} does not answer{code}: {answer.detail}; "
                       "retrying with backoff, session reports are kept")
            self._back_off(slow=False)
        return verdict

    def _token_changed(self) -> bool:
        """After a refusal: read the token again (it may have been fixed meanwhile)."""
        if not self._reload_token:
            return False
        try:
            token = load_token(self.config)
        except FloorConfigError as exc:
            self._note("token", f"floor token not reread: {exc}")
            return False
        if token == self._token:
            return False
        self._old_tokens.append(self._token)
        self._token = token
        self._problem = ""  # a refusal of the new token is news: say it again
        self._failures = 0
        log.info("floor: the robot token changed; retrying with the new one")
        return True

    def _note(self, key: str, message: str, exc_info: bool = False) -> None:
        if self._problem != key:
            self._problem = key
            log.warning(message, exc_info=exc_info)

    def _back_off(self, slow: bool) -> None:
        # Jittered (half to full delay) so 100 robots do not return at the same instant
        # after a floor restart.
        self._failures += 1
        delay = self._backoff_max if slow else min(
            self._backoff_max, self._backoff_initial * 2 ** (self._failures - 1)
        )
        self._retry_at = time.monotonic() + delay * random.uniform(0.5, 1.0)
