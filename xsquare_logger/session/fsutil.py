"""File-system primitives of a session: the directory lock and atomic file replacement.

A session directory has exactly one writer (the recorder, or recovery), and
recovery or upload never touches a live session: both hold or probe
:class:`SessionLock`. Every index file (metadata.yaml, session.json) is replaced
with :func:`atomic_write`, so a crash leaves the old or the new file, never half.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType

from xsquare_logger.errors import XsqError

__all__ = ["ACTIVE_SUFFIX", "LOCK_NAME", "LockError", "SessionLock", "atomic_write", "sha256_file"]

LOCK_NAME = ".recording.lock"
#: Suffix of an MCAP file still being written (or left by a crash for recovery).
ACTIVE_SUFFIX = ".active"


class LockError(XsqError):
    """A session lock was used wrongly, or is held by someone else where it must not be."""


class SessionLock:
    """Exclusive, non-blocking flock on ``<directory>/.recording.lock`` (freed on close or crash).

    ``acquire()`` returns False when another process holds it. As a context manager
    it must get the lock (else :class:`LockError`) and releases it on exit.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            raise LockError(f"{self.path}: already held by this process")
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self, remove: bool = True) -> None:
        """Release (idempotent); ``remove`` deletes the lock file first (a clean session)."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @staticmethod
    def is_held(directory: Path) -> bool:
        """True if some process (this one included) holds the lock of ``directory``.

        Opens read-only and never creates or deletes the lock file: a reader (the
        uploader) must not leave traces in a session whose bytes it uploads.
        """
        try:
            fd = os.open(directory / LOCK_NAME, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing also releases a lock we just took
        return False

    def __enter__(self) -> SessionLock:
        if not self.acquire():
            raise LockError(f"{self.directory}: locked by another recorder or recovery")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def atomic_write(path: Path, data: str | bytes, *, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically: write ``<name>.tmp``, fsync, rename.

    Readers see the old or the new content, never a torn file; ``.tmp`` names are
    skipped by the uploader. On failure the temporary file is removed.
    """
    tmp = path.with_name(path.name + ".tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: Path, block: int = 4 * 1024 * 1024) -> str:
    """Hex sha256 of a file's bytes, read in blocks (hashlib releases the GIL on large
    blocks). The one file hash of session files, uploads and exported datasets."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()
