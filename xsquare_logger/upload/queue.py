"""The persistent upload queue: sessions, their files and completed multipart parts (SQLite).

Everything the uploader knows survives a kill or a reboot here, never in the
session directory (session.json is uploaded byte for byte as the commit marker).
WAL mode lets ``xsq upload status`` read while the uploader writes; every write
is one short transaction, so a kill loses at most the part in flight.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xsquare_logger.errors import XsqError
from xsquare_logger.upload.scan import LocalSession

__all__ = ["FileRow", "PartRow", "SessionRow", "UploadQueue", "UploadQueueError"]

# Session states. "failed" holds both permanent errors and failed verification;
# such a session is retried only after a config/credentials change or `xsq upload retry`.
QUEUED, UPLOADING, VERIFIED = "queued", "uploading", "verified"
FAILED, DELETED = "failed", "deleted"
# A try failed with a transient error; the next one is due at next_attempt_ns.
BACKOFF = "backoff"
# File states.
PENDING, UPLOADED, FILE_VERIFIED = "pending", "uploaded", "verified"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    dir TEXT NOT NULL,
    robot_id TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    destination TEXT NOT NULL,       -- where remote_prefix lives
    remote_prefix TEXT NOT NULL,
    state TEXT NOT NULL,
    total_bytes INTEGER NOT NULL,
    enqueued_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    error_kind TEXT,                 -- transient | permanent | verify | paused
    failed_fingerprint TEXT,         -- config+credentials identity when it failed
    verified_ns INTEGER,
    deleted_ns INTEGER
);
CREATE TABLE IF NOT EXISTS files (
    session_id TEXT NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ord INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    upload_id TEXT,                  -- multipart upload in progress
    part_size INTEGER,
    etag TEXT,                       -- as returned by PUT / CompleteMultipartUpload
    expected_etags TEXT,             -- space-separated ETags our own hashes predict
    bytes_done INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,  -- every attempt, completed parts only
    PRIMARY KEY (session_id, name)
);
CREATE TABLE IF NOT EXISTS parts (
    session_id TEXT NOT NULL,
    name TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    etag TEXT NOT NULL,
    PRIMARY KEY (session_id, name, upload_id, part_number)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    dir: Path
    robot_id: str
    started_ns: int
    destination: str
    remote_prefix: str
    state: str
    total_bytes: int
    enqueued_ns: int
    updated_ns: int
    attempts: int
    next_attempt_ns: int
    last_error: str | None
    error_kind: str | None
    failed_fingerprint: str | None
    verified_ns: int | None
    deleted_ns: int | None
    bytes_done: int = 0

    @property
    def bytes_left(self) -> int:
        return max(0, self.total_bytes - self.bytes_done)


@dataclass(frozen=True)
class FileRow:
    session_id: str
    name: str
    ord: int
    size: int
    sha256: str
    state: str
    upload_id: str | None
    part_size: int | None
    etag: str | None
    expected_etags: str | None
    bytes_done: int
    bytes_sent: int


@dataclass(frozen=True)
class PartRow:
    part_number: int
    size: int
    md5: str  # hex of the part's bytes
    etag: str  # as the server returned it (quotes stripped)


class UploadQueueError(XsqError):
    """The queue database cannot be created or opened (the message names the file)."""


class UploadQueue:
    """Thread-safe access to the queue database (one connection, serialized by a lock)."""

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise UploadQueueError(f"cannot open the upload queue {path}: {exc}") from exc
        self.path = path
        self._lock = threading.RLock()
        self._db = db
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt;
        # a lost part record only means that part is sent again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(_SCHEMA)  # its own transaction (IF NOT EXISTS: idempotent)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- sessions ---------------------------------------------------------------------------
    def enqueue(self, session: LocalSession, destination: str, remote_prefix: str) -> bool:
        """Add a closed session (idempotent). Returns True if it was new."""
        now = time.time_ns()
        with self._tx() as db:
            if db.execute(
                "SELECT 1 FROM sessions WHERE session_id=?", (session.session_id,)
            ).fetchone():
                return False
            db.execute(
                "INSERT INTO sessions (session_id, dir, robot_id, started_ns, destination,"
                " remote_prefix, state, total_bytes, enqueued_ns, updated_ns)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    session.session_id,
                    str(session.directory),
                    session.robot_id,
                    session.started_ns,
                    destination,
                    remote_prefix,
                    QUEUED,
                    session.total_bytes,
                    now,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO files (session_id, name, ord, size, sha256, state)"
                " VALUES (?,?,?,?,?,?)",
                [
                    (session.session_id, f.name, i, f.size, f.sha256, PENDING)
                    for i, f in enumerate(session.files)
                ],
            )
        return True

    def known_dirs(self) -> set[str]:
        return {r["dir"] for r in self._query("SELECT dir FROM sessions")}

    _SESSION_SQL = (
        "SELECT s.*, COALESCE((SELECT SUM(f.bytes_done) FROM files f"
        " WHERE f.session_id=s.session_id), 0) AS bytes_done FROM sessions s"
    )

    @staticmethod
    def _session(row: sqlite3.Row) -> SessionRow:
        d = dict(row)
        d["dir"] = Path(d["dir"])
        return SessionRow(**d)

    def session(self, session_id: str) -> SessionRow | None:
        rows = self._query(self._SESSION_SQL + " WHERE s.session_id=?", (session_id,))
        return self._session(rows[0]) if rows else None

    def sessions(self, states: tuple[str, ...] | None = None) -> list[SessionRow]:
        sql = self._SESSION_SQL
        args: tuple[object, ...] = ()
        if states:
            sql += f" WHERE s.state IN ({','.join('?' * len(states))})"
            args = states
        return [self._session(r) for r in self._query(sql + " ORDER BY s.started_ns", args)]

    def next_due(self, now_ns: int) -> SessionRow | None:
        """Oldest queued/uploading/backoff session whose backoff has expired."""
        rows = self._query(
            self._SESSION_SQL + " WHERE s.state IN (?,?,?) AND s.next_attempt_ns<=?"
            " ORDER BY s.started_ns, s.session_id LIMIT 1",
            (QUEUED, UPLOADING, BACKOFF, now_ns),
        )
        return self._session(rows[0]) if rows else None

    def _update(self, session_id: str, **fields: object) -> None:
        fields["updated_ns"] = time.time_ns()
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE sessions SET {cols} WHERE session_id=?", (*fields.values(), session_id)
            )

    def mark_uploading(self, session_id: str) -> None:
        self._update(session_id, state=UPLOADING)

    def mark_paused(self, session_id: str, reason: str) -> None:
        self._update(session_id, last_error=reason, error_kind="paused")

    def mark_transient(self, session_id: str, error: str, next_attempt_ns: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET state=?, attempts=attempts+1, next_attempt_ns=?,"
                " last_error=?, error_kind='transient', updated_ns=? WHERE session_id=?",
                (BACKOFF, next_attempt_ns, error, time.time_ns(), session_id),
            )

    def mark_failed(self, session_id: str, error: str, kind: str, fingerprint: str) -> None:
        self._update(
            session_id,
            state=FAILED,
            last_error=error,
            error_kind=kind,
            failed_fingerprint=fingerprint,
        )

    def mark_verified(self, session_id: str) -> None:
        self._update(
            session_id,
            state=VERIFIED,
            verified_ns=time.time_ns(),
            last_error=None,
            error_kind=None,
            attempts=0,
            next_attempt_ns=0,
        )

    def mark_deleted(self, session_id: str) -> None:
        self._update(session_id, state=DELETED, deleted_ns=time.time_ns())

    def requeue(self, session_id: str) -> None:
        """Back to the queue (operator retry, config change): redo what is not verified."""
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET state=?, attempts=0, next_attempt_ns=0, last_error=NULL,"
                " error_kind=NULL, failed_fingerprint=NULL, updated_ns=? WHERE session_id=?",
                (QUEUED, time.time_ns(), session_id),
            )

    def restart_destination(self, session_id: str, destination: str, remote_prefix: str) -> None:
        """The destination changed: forget everything sent to the old one."""
        with self._tx() as db:
            db.execute(
                "UPDATE sessions SET destination=?, remote_prefix=?, state=?, attempts=0,"
                " next_attempt_ns=0, updated_ns=? WHERE session_id=?",
                (destination, remote_prefix, QUEUED, time.time_ns(), session_id),
            )
            db.execute(
                "UPDATE files SET state=?, upload_id=NULL, part_size=NULL, etag=NULL,"
                " expected_etags=NULL, bytes_done=0 WHERE session_id=?",
                (PENDING, session_id),
            )
            db.execute("DELETE FROM parts WHERE session_id=?", (session_id,))

    def refresh(self, session: LocalSession) -> None:
        """Take size and sha256 of files not yet verified from a fresh look at the session."""
        with self._tx() as db:
            for f in session.files:
                cur = db.execute(
                    "UPDATE files SET size=?, sha256=?, state=?, upload_id=NULL, part_size=NULL,"
                    " etag=NULL, expected_etags=NULL, bytes_done=0"
                    " WHERE session_id=? AND name=? AND state!=? AND (size!=? OR sha256!=?)",
                    (
                        f.size,
                        f.sha256,
                        PENDING,
                        session.session_id,
                        f.name,
                        FILE_VERIFIED,
                        f.size,
                        f.sha256,
                    ),
                )
                if cur.rowcount:
                    db.execute(
                        "DELETE FROM parts WHERE session_id=? AND name=?",
                        (session.session_id, f.name),
                    )
            db.execute(
                "UPDATE sessions SET total_bytes=(SELECT SUM(size) FROM files WHERE"
                " session_id=?) WHERE session_id=?",
                (session.session_id, session.session_id),
            )

    # -- files ------------------------------------------------------------------------------
    def files(self, session_id: str) -> list[FileRow]:
        rows = self._query("SELECT * FROM files WHERE session_id=? ORDER BY ord", (session_id,))
        return [FileRow(**dict(r)) for r in rows]

    def file(self, session_id: str, name: str) -> FileRow:
        rows = self._query("SELECT * FROM files WHERE session_id=? AND name=?", (session_id, name))
        return FileRow(**dict(rows[0]))

    def start_multipart(self, session_id: str, name: str, upload_id: str, part_size: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE files SET upload_id=?, part_size=?, bytes_done=0"
                " WHERE session_id=? AND name=?",
                (upload_id, part_size, session_id, name),
            )
            db.execute("DELETE FROM parts WHERE session_id=? AND name=?", (session_id, name))

    def add_part(
        self, session_id: str, name: str, upload_id: str, part: PartRow, sent: bool
    ) -> None:
        """Record a part the server has; ``sent`` counts it as bytes put on the wire now."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR REPLACE INTO parts VALUES (?,?,?,?,?,?,?)",
                (session_id, name, upload_id, part.part_number, part.size, part.md5, part.etag),
            )
            if cur.rowcount:
                db.execute(
                    "UPDATE files SET bytes_done=(SELECT COALESCE(SUM(size),0) FROM parts"
                    " WHERE session_id=? AND name=? AND upload_id=?),"
                    " bytes_sent=bytes_sent+? WHERE session_id=? AND name=?",
                    (session_id, name, upload_id, part.size if sent else 0, session_id, name),
                )

    def parts(self, session_id: str, name: str, upload_id: str) -> dict[int, PartRow]:
        rows = self._query(
            "SELECT part_number, size, md5, etag FROM parts"
            " WHERE session_id=? AND name=? AND upload_id=? ORDER BY part_number",
            (session_id, name, upload_id),
        )
        return {r["part_number"]: PartRow(**dict(r)) for r in rows}

    def file_uploaded(
        self, session_id: str, name: str, etag: str, expected_etags: list[str], sent: int
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state=?, etag=?, expected_etags=?, upload_id=NULL,"
                " bytes_done=size, bytes_sent=bytes_sent+? WHERE session_id=? AND name=?",
                (UPLOADED, etag, " ".join(expected_etags), sent, session_id, name),
            )
            db.execute("DELETE FROM parts WHERE session_id=? AND name=?", (session_id, name))

    def set_expected_etags(self, session_id: str, name: str, expected_etags: list[str]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE files SET expected_etags=? WHERE session_id=? AND name=?",
                (" ".join(expected_etags), session_id, name),
            )

    def file_verified(self, session_id: str, name: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state=? WHERE session_id=? AND name=?",
                (FILE_VERIFIED, session_id, name),
            )

    def file_reset(self, session_id: str, name: str) -> None:
        """Send this file again from scratch (remote copy missing or not matching)."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET state=?, upload_id=NULL, part_size=NULL, etag=NULL,"
                " expected_etags=NULL, bytes_done=0 WHERE session_id=? AND name=?",
                (PENDING, session_id, name),
            )
            db.execute("DELETE FROM parts WHERE session_id=? AND name=?", (session_id, name))

    # -- meta -------------------------------------------------------------------------------
    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else None
