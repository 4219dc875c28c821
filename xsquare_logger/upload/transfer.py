"""Send one file: a single PUT when small, else a resumable multipart upload.

The multipart upload id and every completed part (number, size, MD5, ETag) are
committed to the queue as soon as the server confirms them. After a kill,
``list_parts`` tells what the server really holds; a part is skipped only if its
size matches and its ETag equals the one we recorded, or the MD5 of the same
bytes read again from disk. Every byte is read once in order and hashed twice:
sha256 over the file (compared with session.json at the end, skipped parts
included, so a file that changed since close never completes) and MD5 per body.

A single PUT goes with Content-MD5: a damaged body is refused, never stored (it
may be session.json, the commit marker). A part goes without it while the server
answers parts with ETags that are MD5s: the ETag is the server's MD5 of the bytes
it received, compared with ours at once; a mismatch drops the upload and the file
starts over (no part of it can complete; not every server lets a part be replaced).
That is the same check, by the same server-side MD5, without making servers that
compute the ETag separately (rclone) hash every byte twice. A server whose part
ETags are not MD5s (SSE-KMS) gets Content-MD5 on every later part.
The server's answer to the request that creates the object (PUT, or
CompleteMultipartUpload: ``md5(part md5s)-N``) is recorded for verification.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from xsquare_logger.errors import XsqError
from xsquare_logger.upload.backends import (
    Backend,
    NoSuchUpload,
    PermanentError,
    RemotePart,
    TransientError,
)
from xsquare_logger.upload.queue import FileRow, PartRow, UploadQueue
from xsquare_logger.upload.verify import is_md5_etag, multipart_etag, verify_object

__all__ = ["FileTransfer", "LocalFileChanged", "PartDamaged", "Paused", "effective_part_size"]

MAX_PARTS = 10_000  # S3 limit
MIB = 1024 * 1024


class Paused(XsqError):
    """The gate closed (or the uploader is stopping); resume from the last completed part."""


class LocalFileChanged(PermanentError):
    """The local bytes no longer hash to the sha256 in session.json: never upload them."""


class PartDamaged(TransientError):
    """The server's MD5 of a part differs from ours: the bytes were damaged on the way."""


def effective_part_size(size: int, part_size: int) -> int:
    """``part_size`` (bytes), grown to whole MiB if the file would need > 10,000 parts."""
    need = math.ceil(size / MAX_PARTS)
    if need <= part_size:
        return part_size
    return math.ceil(need / MIB) * MIB


class FileTransfer:
    """Uploads files of one destination; parts run on ``pool`` (at most ``concurrency``).

    Thread-safe: several files may be sent at once (each from its own thread).
    """

    def __init__(
        self,
        backend: Backend,
        queue: UploadQueue,
        pool: ThreadPoolExecutor,
        part_size: int,
        concurrency: int,
        pause_reason: Callable[[], str | None],
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.backend = backend
        self.queue = queue
        self.pool = pool
        self.part_size = part_size
        self.concurrency = concurrency
        self.pause_reason = pause_reason
        self.progress = progress or (lambda: None)
        # Parts go without Content-MD5 until a part answer is not an MD5 (see the module
        # docstring): then the server's own check is the only per-part one left.
        self.part_content_md5 = False
        # Shared by every file sent through this transfer: two files in progress at
        # once still have at most ``concurrency`` parts (and part buffers) in flight.
        self._slots = threading.BoundedSemaphore(concurrency)

    def send(self, session_id: str, f: FileRow, path: Path, key: str) -> None:
        """Upload ``path`` as ``key`` and record it as uploaded (not yet verified)."""
        if f.upload_id is None and f.size <= self.part_size:
            self._single(session_id, f, path, key)
        else:
            self._multipart(session_id, f, path, key)

    # -- single PUT -------------------------------------------------------------------------
    def _single(self, session_id: str, f: FileRow, path: Path, key: str) -> None:
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if len(data) != f.size or sha != f.sha256:
            raise _changed(path, f, len(data), sha)
        reason = self.pause_reason()
        if reason:
            raise Paused(reason)
        md5 = hashlib.md5(data).hexdigest()
        etag = self.backend.put(key, data, md5, sha)
        if is_md5_etag(etag) and etag.lower() != md5:
            raise TransientError(f"{key}: server stored ETag {etag}, sent MD5 {md5}")
        self.queue.file_uploaded(session_id, f.name, etag, [md5], len(data))
        self.progress()

    # -- multipart --------------------------------------------------------------------------
    def _multipart(self, session_id: str, f: FileRow, path: Path, key: str) -> None:
        part_size = f.part_size or effective_part_size(f.size, self.part_size)
        upload_id = f.upload_id
        remote: dict[int, RemotePart] = {}
        if upload_id is not None:
            try:
                remote = self.backend.list_parts(key, upload_id)
            except NoSuchUpload:
                if self._completed_before(session_id, f, key, upload_id, part_size):
                    return
                upload_id = None
        if upload_id is None:
            upload_id = self.backend.create_multipart(key, f.sha256)
            self.queue.start_multipart(session_id, f.name, upload_id, part_size)
        known = self.queue.parts(session_id, f.name, upload_id)
        n_parts = max(1, math.ceil(f.size / part_size))
        sha = hashlib.sha256()
        part_md5: dict[int, str] = {}
        errors: list[BaseException] = []
        inflight: set[Future[None]] = set()
        paused: str | None = None

        def done(fut: Future[None]) -> None:
            self._slots.release()
            exc = fut.exception()
            if exc is not None:
                errors.append(exc)

        changed: LocalFileChanged | None = None
        with open(path, "rb") as fh:
            for n in range(1, n_parts + 1):
                chunk = fh.read(part_size)
                want = min(part_size, f.size - (n - 1) * part_size)
                if len(chunk) != want:
                    changed = _changed(path, f, (n - 1) * part_size + len(chunk), None)
                    break
                sha.update(chunk)
                have = self._have_part(session_id, f, upload_id, n, chunk, remote, known)
                if have is not None:
                    # A part recorded by an older version without its own MD5 gets one now.
                    part_md5[n] = have or hashlib.md5(chunk).hexdigest()
                    continue
                if errors:
                    break
                paused = self.pause_reason()
                if paused:
                    break
                self._slots.acquire()
                fut = self.pool.submit(
                    self._send_part,
                    session_id,
                    f,
                    key,
                    upload_id,
                    n,
                    (n - 1) * part_size,
                    chunk,
                    part_md5,
                )
                inflight.add(fut)
                fut.add_done_callback(done)
            extra = fh.read(1) if not (errors or paused or changed) else b""
        wait(inflight)
        if changed is None and extra:
            changed = _changed(path, f, f.size + 1, None)
        if changed is None and not (errors or paused) and sha.hexdigest() != f.sha256:
            changed = _changed(path, f, f.size, sha.hexdigest())
        if changed is not None:
            # These bytes must never complete: drop the upload and the parts the server
            # holds (after the parts in flight have landed), and start over if it heals.
            self.backend.abort_multipart(key, upload_id)
            self.queue.file_reset(session_id, f.name)
            raise changed
        if errors:
            exc = next((e for e in errors if isinstance(e, PartDamaged)), errors[0])
            if isinstance(exc, PartDamaged):
                # The server holds a damaged part: drop the upload so it never completes.
                self.backend.abort_multipart(key, upload_id)
                self.queue.file_reset(session_id, f.name)
                raise TransientError(f"{exc}; the file will be sent again") from None
            if isinstance(exc, NoSuchUpload):
                # The server lost the upload (restart): start this file over next attempt.
                self.queue.file_reset(session_id, f.name)
                raise TransientError(f"{key}: {exc}; the file will be sent again") from None
            raise exc
        if paused:
            raise Paused(paused)
        parts = self.queue.parts(session_id, f.name, upload_id)
        try:
            etag = self.backend.complete_multipart(
                key, upload_id, [(n, parts[n].etag) for n in range(1, n_parts + 1)]
            )
        except NoSuchUpload:
            if self._completed_before(session_id, f, key, upload_id, part_size):
                return
            self.queue.file_reset(session_id, f.name)
            raise TransientError(
                f"{key}: upload vanished before completion; sending again"
            ) from None
        # The server built this ETag from its own MD5s of the parts it holds: equal to
        # ours, it proves the object is our parts, in order (see verify_on_arrival).
        expected = [multipart_etag([part_md5[n] for n in range(1, n_parts + 1)])]
        self.queue.file_uploaded(session_id, f.name, etag, expected, 0)
        self.progress()

    def _have_part(
        self,
        session_id: str,
        f: FileRow,
        upload_id: str,
        n: int,
        chunk: bytes,
        remote: dict[int, RemotePart],
        known: dict[int, PartRow],
    ) -> str | None:
        """MD5 of part ``n`` if the server already holds exactly these bytes, else None."""
        rp = remote.get(n)
        if rp is None or rp.size != len(chunk):
            return None
        etag = rp.etag
        k = known.get(n)
        if k is not None and k.etag == etag and k.size == len(chunk):
            return k.md5
        md5 = hashlib.md5(chunk).hexdigest()
        if etag.lower() == md5:
            # Confirmed by the server but killed before we recorded it.
            self.queue.add_part(
                session_id, f.name, upload_id, PartRow(n, len(chunk), md5, etag), sent=False
            )
            return md5
        return None

    def _send_part(
        self,
        session_id: str,
        f: FileRow,
        key: str,
        upload_id: str,
        n: int,
        offset: int,
        chunk: bytes,
        part_md5: dict[int, str],
    ) -> None:
        md5 = hashlib.md5(chunk).hexdigest()
        etag = self.backend.upload_part(
            key, upload_id, n, offset, chunk, md5 if self.part_content_md5 else ""
        )
        if not is_md5_etag(etag):
            self.part_content_md5 = True
        elif etag.lower() != md5:
            raise PartDamaged(
                f"{key} part {n} arrived damaged: the server's MD5 is {etag}, ours {md5}"
            )
        self.queue.add_part(session_id, f.name, upload_id, PartRow(n, len(chunk), md5, etag), True)
        part_md5[n] = md5
        self.progress()

    def _completed_before(
        self, session_id: str, f: FileRow, key: str, upload_id: str, part_size: int
    ) -> bool:
        """Killed after the server completed the object but before we recorded it?"""
        known = self.queue.parts(session_id, f.name, upload_id)
        n_parts = max(1, math.ceil(f.size / part_size))
        if sorted(known) != list(range(1, n_parts + 1)):
            return False
        if any(not known[n].md5 for n in known):
            return False  # recorded by an older version without part MD5s
        expected = [multipart_etag([known[n].md5 for n in range(1, n_parts + 1)])]
        remote = self.backend.head(key)
        if remote is None or verify_object(f.name, f.size, f.sha256, remote, expected):
            return False
        self.queue.file_uploaded(session_id, f.name, remote.etag or "", expected, 0)
        return True


def _changed(path: Path, f: FileRow, size: int, sha: str | None) -> LocalFileChanged:
    if size != f.size:
        what = f"is {size} bytes, session.json says {f.size}"
    else:
        what = f"hashes to {sha}, session.json says {f.sha256}"
    return LocalFileChanged(
        f"local file {path} changed since the session was closed ({what}); not uploading it"
    )
