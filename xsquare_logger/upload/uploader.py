"""The uploader: scan -> queue -> gate -> transfer -> verify -> retention, on one thread.

``xsq run`` creates ``Uploader(config, is_recording)`` and calls ``start()`` /
``stop()``; ``backlog()`` feeds the tablet status. ``xsq upload run`` runs the
same loop alone; ``xsq upload now`` calls :meth:`Uploader.upload` with
``force=True`` (no gate). Sessions go one at a time, oldest first; the parts of
a large file go ``max_concurrency`` at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from xsquare_logger.config.model import LoggerConfig
from xsquare_logger.config.upload import UploadConfig
from xsquare_logger.session.manifest import MANIFEST_NAME
from xsquare_logger.upload.backends import (
    Backend,
    BackendError,
    PermanentError,
    TransientError,
    destination_prefix,
    open_backend,
    remote_url,
)
from xsquare_logger.upload.gate import Gate, read_ssid
from xsquare_logger.upload.queue import (
    BACKOFF,
    DELETED,
    FAILED,
    FILE_VERIFIED,
    PENDING,
    QUEUED,
    UPLOADED,
    UPLOADING,
    VERIFIED,
    FileRow,
    SessionRow,
    UploadQueue,
)
from xsquare_logger.upload.retention import Retention
from xsquare_logger.upload.scan import (
    SessionNotReady,
    describe_session,
    find_sessions,
    recording_in_progress,
    remote_prefix,
)
from xsquare_logger.upload.throttle import TokenBucket
from xsquare_logger.upload.transfer import FileTransfer, Paused
from xsquare_logger.upload.verify import (
    VerificationFailed,
    hash_file,
    is_md5_etag,
    verified_on_arrival,
    verify_object,
)

__all__ = ["Uploader", "credentials_fingerprint", "default_queue_path"]

log = logging.getLogger(__name__)

_CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
_FILES_AT_ONCE = 2
_VERIFY_ATTEMPTS = 3  # a freshly sent file that does not verify is sent again this often


def _severity(exc: BaseException) -> int:
    """Which of several files' errors describes the session (lowest first)."""
    order = (PermanentError, VerificationFailed, OSError, TransientError, BackendError, Paused)
    for rank, kind in enumerate(order):
        if isinstance(exc, kind):
            return rank
    return -1  # anything unexpected (a bug) wins, so it is not hidden


def default_queue_path(config: LoggerConfig) -> Path:
    return config.upload.queue_path or config.data_root / ".upload" / "queue.db"


def _stat_id(path: Path | None) -> str:
    if path is None:
        return "-"
    try:
        st = path.stat()
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_mtime_ns}:{st.st_size}"


def credentials_fingerprint(config: UploadConfig) -> str:
    """A one-way digest of everything that decides whether a refused upload could succeed.

    The upload config, the credentials file's identity (path, mtime, size) and the
    AWS environment. Stored with a failed session: when it changes, the session is
    retried. Only a truncated sha256 is kept, never a credential.
    """
    h = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    h.update(_stat_id(config.s3.credentials_file).encode())
    default_file = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    h.update(_stat_id(default_file.expanduser()).encode())
    for name in _CREDENTIAL_ENV:
        h.update(b"\0" + name.encode() + b"=" + os.environ.get(name, "").encode())
    return h.hexdigest()[:16]


class _Claim:
    """An flock per session in the queue folder: one uploader process per session at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Uploader:
    """Moves closed sessions under ``config.data_root`` to ``config.upload.destination``.

    ``is_recording()`` tells whether a session is being recorded right now (the
    gate waits for it unless ``upload.gate.while_recording``); without it, any
    session directory whose recording lock is held counts. ``ssid_reader`` maps an
    interface name to its Wi-Fi SSID (default: ``iw``/``iwgetid``).
    """

    def __init__(
        self,
        config: LoggerConfig,
        is_recording: Callable[[], bool] | None = None,
        *,
        ssid_reader: Callable[[str], str | None] = read_ssid,
    ) -> None:
        self.config = config
        self.ucfg = config.upload
        self.data_root = config.data_root
        self.queue_path = default_queue_path(config)
        self.queue = UploadQueue(self.queue_path)
        self._locks = self.queue_path.parent / "locks"
        self._stop = threading.Event()
        # Set only when stop() runs out of patience: cuts throttled bodies mid-part.
        # A plain stop lets the parts in flight finish and pauses at the next boundary.
        self._abort = threading.Event()
        self._wake = threading.Event()
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_scan = -1e18
        self._backend: Backend | None = None
        self._backend_fingerprint = ""
        limit = self.ucfg.bandwidth_limit
        self._throttle = TokenBucket(limit) if limit else None
        self._prefix = destination_prefix(self.ucfg.destination)
        recording = is_recording or (lambda: recording_in_progress(self.data_root))
        self.gate = Gate(self.ucfg.gate, self._get_backend, recording, ssid_reader=ssid_reader)
        self._pool = ThreadPoolExecutor(
            max_workers=self.ucfg.max_concurrency, thread_name_prefix="xsq-upload"
        )
        self.retention = Retention(
            self.ucfg.retention, self.queue, self.data_root, reverify=self._reverify_for_retention
        )
        # Called (session_id, session_dir, remote_location) after a session is verified,
        # on the uploader thread: the floor reporter queues its report here. A callback
        # must not block or raise into the upload loop.
        self.on_verified: list[Callable[[str, Path, str], None]] = []

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Run the loop on a background thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._abort.clear()
        self._thread = threading.Thread(target=self._run, name="xsq-uploader", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the parts in flight: the transfer pauses at the next part boundary
        and completed parts are kept for the next start. Parts still in flight after
        ``timeout`` seconds (a slow bandwidth cap) are cut, and sent again next time."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._abort.set()
                self._thread.join(10.0)
            self._thread = None
        self._pool.shutdown(wait=True)
        self.queue.close()

    def close(self) -> None:
        """Same as :meth:`stop`: threads joined, part pool shut down, queue closed."""
        self.stop()

    def __enter__(self) -> Uploader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Scan and try again now (e.g. right after a session was closed)."""
        self._last_scan = -1e18
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                outcome = self.run_once()
            except Exception:  # the loop must survive anything; the next pass may succeed
                log.exception("uploader pass failed")
                outcome = "error"
            if outcome == "verified":
                continue  # there may be more waiting
            self._wake.wait(self._idle_wait())
            self._wake.clear()

    def _idle_wait(self) -> float:
        wait = self.ucfg.scan_interval
        due = self.queue.sessions((QUEUED, UPLOADING, BACKOFF))
        if due:
            soonest = min(r.next_attempt_ns for r in due) / 1e9 - time.time()
            wait = min(wait, max(0.05, soonest))
        return wait

    def connect(self) -> None:
        """Open the destination client now (otherwise it opens on first use); only reads.

        Raises PermanentError for unusable settings (e.g. a missing credentials file).
        """
        self._get_backend()

    # -- queries ----------------------------------------------------------------------------
    def backlog(self) -> dict[str, int]:
        """Sessions not yet verified (queued, uploading, backoff, failed) and their bytes left."""
        rows = self.queue.sessions((QUEUED, UPLOADING, BACKOFF, FAILED))
        return {"sessions": len(rows), "bytes": sum(r.bytes_left for r in rows)}

    def last_error(self) -> str:
        """The newest error of a session not yet verified ("" when none has one)."""
        rows = [
            r for r in self.queue.sessions((QUEUED, UPLOADING, BACKOFF, FAILED)) if r.last_error
        ]
        if not rows:
            return ""
        return str(max(rows, key=lambda r: r.updated_ns).last_error)

    # -- one pass ---------------------------------------------------------------------------
    def run_once(self) -> str:
        """One pass of the loop; returns what happened (``idle``, ``waiting: <reason>``,
        ``verified``, ``paused``, ``retry``, ``failed``, ``busy``)."""
        if time.monotonic() - self._last_scan >= self.ucfg.scan_interval:
            self._last_scan = time.monotonic()
            self.scan()
            self._requeue_on_change()
            self.retention.run()
        row = self.queue.next_due(time.time_ns())
        if row is None:
            # Nothing due, but status still reports what the gate would say (the probe
            # is cached while the destination answers, so this costs little).
            self._note_gate(self.gate.check(), idle=True)
            return "idle"
        try:
            self._get_backend()
        except PermanentError as exc:
            self.queue.mark_failed(row.session_id, str(exc), "permanent", self._fingerprint())
            log.error("upload of %s failed: %s", row.session_id, exc)
            return "failed"
        reason = self.gate.check()
        self._note_gate(reason)
        if reason is not None:
            return f"waiting: {reason}"
        return self.upload(row.session_id)

    def _note_gate(self, reason: str | None, idle: bool = False) -> None:
        state = {"open": reason is None, "reason": reason, "idle": idle, "at_ns": time.time_ns()}
        self.queue.set_meta("gate", json.dumps(state))

    def scan(self) -> list[str]:
        """Enqueue closed sessions not seen before; returns their ids."""
        known = self.queue.known_dirs()
        new = []
        for d in find_sessions(self.data_root):
            if str(d) in known:
                continue
            try:
                session = describe_session(d)
            except SessionNotReady as exc:
                log.debug("not uploadable yet: %s", exc)
                continue
            prefix = remote_prefix(self._prefix, session)
            if self.queue.enqueue(session, self.ucfg.destination, prefix):
                log.info("queued session %s (%d bytes)", session.session_id, session.total_bytes)
                new.append(session.session_id)
        return new

    def _fingerprint(self) -> str:
        return credentials_fingerprint(self.ucfg)

    def _requeue_on_change(self) -> None:
        fp = self._fingerprint()
        for row in self.queue.sessions((FAILED,)):
            if row.failed_fingerprint != fp:
                log.info("config or credentials changed: retrying %s", row.session_id)
                self.queue.requeue(row.session_id)

    def _get_backend(self) -> Backend:
        fp = self._fingerprint()
        if self._backend is None or fp != self._backend_fingerprint:
            self._backend = open_backend(self.ucfg, self._throttle, self._abort.is_set)
            self._backend_fingerprint = fp
        return self._backend

    def retry(self, session_id: str) -> SessionRow:
        """Operator retry: a failed (or waiting) session goes back to the queue at once."""
        row = self.queue.session(session_id)
        if row is None:
            self.scan()
            row = self.queue.session(session_id)
        if row is None:
            raise KeyError(
                f"no session {session_id!r} in the upload queue or under "
                f"{self.data_root} (is it closed?)"
            )
        if row.state in (FAILED, QUEUED, UPLOADING, BACKOFF):
            if row.dir.is_dir():
                # The operator may have repaired the session (e.g. `xsq recover`):
                # hashes we took ourselves (metadata.yaml, session.json) are taken again.
                try:
                    self.queue.refresh(describe_session(row.dir))
                except SessionNotReady as exc:
                    log.warning("retry of %s: %s", session_id, exc)
            self.queue.requeue(session_id)
        return self.queue.session(session_id)  # type: ignore[return-value]  # requeued: exists

    # -- one session ------------------------------------------------------------------------
    def _key(self, row: SessionRow, name: str) -> str:
        return f"{row.remote_prefix}/{name}"

    def upload(
        self,
        session_id: str,
        force: bool = False,
        progress: Callable[[], None] | None = None,
    ) -> str:
        """Upload and verify one session now. ``force`` ignores the gate (``xsq upload now``).

        Returns ``verified``, ``paused``, ``retry`` (transient error, backoff set),
        ``failed`` (permanent or verification error), ``busy`` (another process has
        it), or the state it was already in (``deleted``).
        """
        claim = _Claim(self._locks / f"{session_id}.lock")
        if not claim.acquire():
            log.info("%s is being uploaded by process %s", session_id, claim.holder())
            return "busy"
        try:
            with self._busy:
                return self._upload_claimed(session_id, force, progress)
        finally:
            claim.release()

    def _upload_claimed(
        self, session_id: str, force: bool, progress: Callable[[], None] | None
    ) -> str:
        row = self.queue.session(session_id)
        if row is None:
            raise KeyError(f"no session {session_id!r} in the upload queue")
        moved = row.destination != self.ucfg.destination
        if row.state == DELETED or (row.state == VERIFIED and not (moved and force)):
            # A session verified at an earlier destination is safe there; it goes to the
            # new one only when asked for by name (`xsq upload now SESSION`).
            return row.state
        try:
            backend = self._get_backend()
            if moved:
                # The operator pointed the robot elsewhere: start over at the new place.
                prefix = remote_prefix(self._prefix, describe_session(row.dir))
                self.queue.restart_destination(session_id, self.ucfg.destination, prefix)
                row = self.queue.session(session_id)
                assert row is not None
            if not row.dir.is_dir():
                raise PermanentError(f"session directory {row.dir} is gone")
            self.queue.mark_uploading(session_id)

            def pause_reason() -> str | None:
                if self._stop.is_set():
                    return "uploader stopping"
                return None if force else self.gate.local_reason()

            transfer = FileTransfer(
                backend,
                self.queue,
                self._pool,
                self.ucfg.part_size,
                self.ucfg.max_concurrency,
                pause_reason,
                progress,
            )
            self._send_session(row, backend, transfer)
        except Paused as exc:
            self.queue.mark_paused(session_id, f"paused: {exc}")
            log.info("upload of %s paused: %s", session_id, exc)
            return "paused"
        except (PermanentError, SessionNotReady) as exc:
            self.queue.mark_failed(session_id, str(exc), "permanent", self._fingerprint())
            log.error("upload of %s failed: %s", session_id, exc)
            return "failed"
        except VerificationFailed as exc:
            self.queue.mark_failed(session_id, str(exc), "verify", self._fingerprint())
            log.error("upload of %s not verified: %s", session_id, exc)
            return "failed"
        except (TransientError, BackendError) as exc:
            self.gate.forget_probe()
            delay = self._backoff(row.attempts if row is not None else 0)
            self.queue.mark_transient(session_id, str(exc), time.time_ns() + int(delay * 1e9))
            log.warning("upload of %s: %s (retry in %.1f s)", session_id, exc, delay)
            return "retry"
        except OSError as exc:
            msg = f"cannot read local session: {exc}"
            self.queue.mark_failed(session_id, msg, "permanent", self._fingerprint())
            log.error("upload of %s failed: %s", session_id, msg)
            return "failed"
        self.queue.mark_verified(session_id)
        log.info("session %s uploaded and verified at %s", session_id, self.ucfg.destination)
        location = remote_url(row.destination, row.remote_prefix)
        for callback in self.on_verified:
            try:
                callback(session_id, row.dir, location)
            except Exception:  # a report hook must never fail a verified upload
                log.exception("on_verified callback failed for %s", session_id)
        return "verified"

    def _backoff(self, attempts: int) -> float:
        """Seconds before the next try: exponential, with jitter so 100 robots spread out."""
        cfg = self.ucfg.retry
        ceiling = float(min(cfg.maximum, cfg.initial * 2 ** min(attempts, 30)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _send_session(self, row: SessionRow, backend: Backend, transfer: FileTransfer) -> None:
        sid = row.session_id
        files = self.queue.files(sid)
        marker, data = files[-1], files[:-1]
        assert marker.name == MANIFEST_NAME
        if marker.state != PENDING and any(f.state != FILE_VERIFIED for f in data):
            # A data file is being sent again: withdraw the commit marker first, so no
            # consumer takes the remote session for complete in the meantime.
            backend.delete(self._key(row, marker.name))
            self.queue.file_reset(sid, marker.name)
        # Data files first, each verified; session.json only once all of them are.
        # Two files go at once so one file's completion and verification overlap the
        # next file's parts (the part slots are shared: still max_concurrency parts).
        todo = [f.name for f in data if f.state != FILE_VERIFIED]
        abort = threading.Event()
        pause = transfer.pause_reason

        def pause_or_abort() -> str | None:
            return "another file of the session failed" if abort.is_set() else pause()

        transfer.pause_reason = pause_or_abort
        errors: list[BaseException] = []
        pending = list(reversed(todo))
        lock = threading.Lock()

        def worker() -> None:
            while not abort.is_set():
                with lock:
                    if not pending:
                        return
                    name = pending.pop()
                try:
                    self._send_file(row, name, backend, transfer)
                except BaseException as exc:
                    abort.set()
                    errors.append(exc)

        threads = [
            threading.Thread(target=worker, name=f"xsq-upload-file{i}", daemon=True)
            for i in range(min(_FILES_AT_ONCE, len(todo)))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        transfer.pause_reason = pause
        if errors:
            raise min(errors, key=_severity)
        self._send_file(row, marker.name, backend, transfer)

    def _send_file(
        self, row: SessionRow, name: str, backend: Backend, transfer: FileTransfer
    ) -> None:
        sid = row.session_id
        f = self.queue.file(sid, name)
        if f.state == PENDING:
            transfer.send(sid, f, row.dir / name, self._key(row, name))
            f = self.queue.file(sid, name)
        if f.state == UPLOADED:
            # The server's answer to the PUT / completion usually proves the object
            # already; otherwise (file://, non-MD5 ETags, a mismatch) a HEAD decides.
            expected = (f.expected_etags or "").split()
            problem = (
                None
                if verified_on_arrival(f.etag, expected)
                else self._verify_file(row, f, backend)
            )
            if problem is not None:
                self.queue.file_reset(sid, name)
                if row.attempts + 1 < _VERIFY_ATTEMPTS:
                    # Just sent and not matching: damaged on the way or by the server
                    # after the parts were checked. Send it again, later.
                    raise TransientError(f"{problem}; sending the file again")
                raise VerificationFailed(problem)
            self.queue.file_verified(sid, name)

    def _verify_file(self, row: SessionRow, f: FileRow, backend: Backend) -> str | None:
        """None if the remote object is proven to hold ``f``, else the reason."""
        remote = backend.head(self._key(row, f.name))
        expected = (f.expected_etags or "").split()
        problem = verify_object(f.name, f.size, f.sha256, remote, expected)
        multipart = any("-" in e for e in expected)
        if (
            problem is not None
            and remote is not None
            and remote.size == f.size
            and multipart
            and is_md5_etag(remote.etag)
            and "-" not in (remote.etag or "")
        ):
            # Some servers (rclone) report the MD5 of the whole file for a multipart
            # object, which no part MD5 predicts: hash the local file once more (it is
            # still here: this runs before deletion) and remember that ETag too.
            md5, sha = hash_file(row.dir / f.name)
            if sha == f.sha256 and md5 not in expected:
                expected.append(md5)
                self.queue.set_expected_etags(row.session_id, f.name, expected)
                problem = verify_object(f.name, f.size, f.sha256, remote, expected)
        return problem

    def verify_remote(self, session_id: str) -> str | None:
        """Re-check every remote object of a verified session (None = all match).

        Raises TransientError if the destination cannot be asked. A mismatch marks
        the session failed (kind ``verify``) so it is neither deleted nor forgotten.
        """
        row = self.queue.session(session_id)
        if row is None:
            raise KeyError(session_id)
        backend = self._get_backend()
        for f in self.queue.files(session_id):
            problem = self._verify_file(row, f, backend)
            if problem is not None:
                self.queue.file_reset(session_id, f.name)
                self.queue.mark_failed(session_id, problem, "verify", self._fingerprint())
                log.error("remote copy of %s no longer verified: %s", session_id, problem)
                return problem
        return None

    def _reverify_for_retention(self, row: SessionRow) -> str | None:
        if self.gate.local_reason() is not None:
            return None  # not on an allowed network: the earlier verification stands
        try:
            return self.verify_remote(row.session_id)
        except (TransientError, PermanentError) as exc:
            log.info(
                "could not re-verify %s before deleting (%s); earlier check stands",
                row.session_id,
                exc,
            )
            return None
