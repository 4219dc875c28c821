"""What a destination must do, the errors it may raise, and how one is opened from config.

Both destinations speak the S3 multipart vocabulary (create, upload part, list
parts, complete), so resume logic is written once, in ``transfer.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from xsquare_logger.config.upload import UploadConfig
from xsquare_logger.errors import XsqError
from xsquare_logger.upload.throttle import TokenBucket

__all__ = [
    "Backend",
    "BackendError",
    "NoSuchUpload",
    "PermanentError",
    "RemoteObject",
    "RemotePart",
    "TransientError",
    "destination_prefix",
    "open_backend",
    "remote_url",
]


class BackendError(XsqError):
    """A destination error; the message is for the operator and never holds a secret."""


class TransientError(BackendError):
    """Worth retrying later: network down, server busy or restarting, timeouts."""


class PermanentError(BackendError):
    """Retrying will not help until the config or credentials change (or an operator asks)."""


class NoSuchUpload(BackendError):
    """The multipart upload is gone (completed, aborted, expired, or the server restarted)."""


@dataclass(frozen=True)
class RemotePart:
    size: int  # bytes
    etag: str  # without quotes


@dataclass(frozen=True)
class RemoteObject:
    """What the destination reports about a stored object.

    ``content_sha256`` is set only when the backend hashed the stored bytes itself
    (file://); ``checksum_sha256`` is a server-reported full-object checksum
    (hex); ``meta_sha256`` is our ``x-amz-meta-sha256`` as stored.
    """

    size: int
    etag: str | None = None
    meta_sha256: str | None = None
    checksum_sha256: str | None = None
    content_sha256: str | None = None


class Backend(Protocol):
    """A destination. ``key`` is a ``/``-separated object name below the destination root."""

    url: str  # the destination as configured (never contains credentials)
    prefix: str  # key prefix below the bucket / depot folder

    def probe(self) -> None:
        """Return if the destination answers; raise :class:`TransientError` if not."""

    def put(self, key: str, data: bytes, md5_hex: str, sha256_hex: str) -> str:
        """Store a whole object; returns its ETag (or ``""`` where there is none)."""

    def create_multipart(self, key: str, sha256_hex: str) -> str:
        """Start a multipart upload; returns its upload id."""

    def upload_part(
        self, key: str, upload_id: str, number: int, offset: int, data: bytes, md5_hex: str
    ) -> str:
        """Send part ``number`` (1-based; bytes ``offset``.. of the file); returns its ETag.

        ``md5_hex`` is the part's MD5 for the server to check, or ``""`` for none.
        """

    def list_parts(self, key: str, upload_id: str) -> dict[int, RemotePart]:
        """Parts the destination holds for an upload; :class:`NoSuchUpload` if it is gone."""

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        """Assemble ``(number, etag)`` parts into the object; returns its ETag."""

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an upload and its parts (best effort)."""

    def head(self, key: str) -> RemoteObject | None:
        """Describe a stored object, or ``None`` if there is none."""

    def delete(self, key: str) -> None:
        """Remove an object (no error if absent)."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys of the stored objects below ``prefix`` (``""`` = all), in no set order.

        For readers of the destination (``xsq floor sync``); the uploader never lists.
        """

    def get(self, key: str) -> bytes | None:
        """The bytes of a (small) object, or ``None`` if there is none."""


def destination_prefix(destination: str) -> str:
    """Key prefix of ``s3://BUCKET/PREFIX`` (``""`` for file:// and for a bare bucket)."""
    if destination.startswith("s3://"):
        return destination[len("s3://") :].partition("/")[2].strip("/")
    return ""


def remote_url(destination: str, remote_prefix: str) -> str:
    """Where a session's objects are: ``remote_prefix`` already holds the destination's
    key prefix (``s3://BUCKET/PREFIX`` -> ``PREFIX/robot/day/id``), so only the bucket
    (or the depot folder) goes in front of it."""
    if destination.startswith("s3://"):
        bucket = destination[len("s3://") :].partition("/")[0]
        return f"s3://{bucket}/{remote_prefix}"
    return f"{destination.rstrip('/')}/{remote_prefix}"


def open_backend(
    config: UploadConfig,
    throttle: TokenBucket | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Backend:
    """Open the configured destination; ``cancelled()`` aborts throttled sends on stop.

    Raises :class:`PermanentError` for unusable settings (credentials file missing, ...).
    """
    dest = config.destination
    if dest.startswith("file://"):
        from xsquare_logger.upload.backends.file import FileBackend

        return FileBackend(dest, throttle=throttle, cancelled=cancelled)
    from xsquare_logger.upload.backends.s3 import S3Backend

    return S3Backend(
        dest, config.s3, config.max_concurrency, throttle=throttle, cancelled=cancelled
    )
