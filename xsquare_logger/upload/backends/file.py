"""``file://PATH``: a depot folder (local disk, NAS mount) with the same resumable protocol.

A multipart upload is a folder ``<depot>/.uploads/<id>/`` holding one ``data``
file written at part offsets and one marker per completed part (written only
after the data is fsynced), so a kill resumes exactly like S3. Completion
renames ``data`` into place: no second copy of a large file. Objects appear
atomically (temp file + fsync + rename), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from xsquare_logger.upload.backends import NoSuchUpload, RemoteObject, RemotePart, TransientError
from xsquare_logger.upload.throttle import SLICE, TokenBucket

__all__ = ["FileBackend"]

_UPLOADS = ".uploads"
_BLOCK = 4 * 1024 * 1024


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBackend:
    """Objects are files below ``root``; keys map to relative paths."""

    def __init__(
        self,
        url: str,
        throttle: TokenBucket | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.url = url
        self.prefix = ""
        self.root = Path(url[len("file://") :]).expanduser().absolute()
        self._throttle = throttle
        self._cancelled = cancelled

    # -- helpers ----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def _upload_dir(self, upload_id: str) -> Path:
        return self.root / _UPLOADS / upload_id

    def _write_at(self, fd: int, offset: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        step = SLICE if self._throttle else _BLOCK
        for start in range(0, len(view), step):
            chunk = view[start : start + step]
            if self._throttle is not None:
                self._throttle.take(len(chunk), self._cancelled)
            os.pwrite(fd, chunk, offset + start)

    def _io(self, what: str, exc: OSError) -> TransientError:
        # A full or unmounted depot is expected to come back: retry with backoff.
        return TransientError(f"depot {self.root}: {what}: {exc.strerror or exc}")

    # -- Backend ----------------------------------------------------------------------------
    def probe(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise TransientError(f"depot {self.root} is not writable")
        except OSError as exc:
            raise self._io("not available", exc) from None

    def put(self, key: str, data: bytes, md5_hex: str, sha256_hex: str) -> str:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                self._write_at(fd, 0, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._io(f"writing {key}", exc) from None
        return ""

    def create_multipart(self, key: str, sha256_hex: str) -> str:
        upload_id = uuid.uuid4().hex
        d = self._upload_dir(upload_id)
        try:
            d.mkdir(parents=True)
            (d / "key").write_text(key, encoding="utf-8")
            (d / "data").touch()
        except OSError as exc:
            raise self._io("starting an upload", exc) from None
        return upload_id

    def upload_part(
        self, key: str, upload_id: str, number: int, offset: int, data: bytes, md5_hex: str
    ) -> str:
        d = self._upload_dir(upload_id)
        if not (d / "data").exists():
            raise NoSuchUpload(f"upload {upload_id} of {key} is gone from {self.root}")
        try:
            fd = os.open(d / "data", os.O_WRONLY)
            try:
                self._write_at(fd, offset, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            # The marker appears only once the bytes are durable: list_parts never lies.
            marker = d / f"part-{number:05d}"
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(f"{len(data)} {md5_hex or '-'}\n", encoding="ascii")
            os.replace(tmp, marker)
        except OSError as exc:
            raise self._io(f"writing part {number} of {key}", exc) from None
        return md5_hex

    def list_parts(self, key: str, upload_id: str) -> dict[int, RemotePart]:
        d = self._upload_dir(upload_id)
        if not d.is_dir():
            raise NoSuchUpload(f"upload {upload_id} of {key} is gone from {self.root}")
        parts: dict[int, RemotePart] = {}
        for marker in d.glob("part-[0-9]*"):
            if marker.suffix == ".tmp":
                continue
            size, etag = marker.read_text(encoding="ascii").split()
            parts[int(marker.name[len("part-") :])] = RemotePart(int(size), etag.strip("-"))
        return parts

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        have = self.list_parts(key, upload_id)
        numbers = [n for n, _ in parts]
        if numbers != list(range(1, len(parts) + 1)) or any(
            n not in have or have[n].etag != etag for n, etag in parts
        ):
            raise TransientError(f"upload {upload_id} of {key}: parts do not match the list")
        d = self._upload_dir(upload_id)
        path = self._path(key)
        if not (d / "data").exists() and path.exists():
            # Killed between the rename and the clean-up: the object is already in place
            # (verification, which hashes it, decides whether it is right).
            shutil.rmtree(d, ignore_errors=True)
            return ""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            total = sum(have[n].size for n in numbers)
            with open(d / "data", "r+b") as fh:
                fh.truncate(total)
                os.fsync(fh.fileno())
            os.replace(d / "data", path)
            _fsync_dir(path.parent)
        except OSError as exc:
            raise self._io(f"completing {key}", exc) from None
        shutil.rmtree(d, ignore_errors=True)
        return ""

    def abort_multipart(self, key: str, upload_id: str) -> None:
        shutil.rmtree(self._upload_dir(upload_id), ignore_errors=True)

    def head(self, key: str) -> RemoteObject | None:
        path = self._path(key)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                while block := fh.read(_BLOCK):
                    h.update(block)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._io(f"reading {key}", exc) from None
        # We read the stored bytes ourselves: the strongest proof there is.
        return RemoteObject(size=size, content_sha256=h.hexdigest())

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._io(f"deleting {key}", exc) from None

    def list_keys(self, prefix: str) -> Iterator[str]:
        base = self.root.joinpath(*[p for p in prefix.split("/") if p])
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            rel = path.relative_to(self.root)
            # In-progress uploads and temp files are not objects (yet).
            if rel.parts[0] == _UPLOADS or path.name.startswith(".") or not path.is_file():
                continue
            yield "/".join(rel.parts)

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._io(f"reading {key}", exc) from None
