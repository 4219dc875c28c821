"""Sessions in S3 read in place: only the bytes an export needs, by ranged GETs.

An export reads each MCAP file through ``mcap``'s ``SeekingReader``: the magic at the
start, the footer and summary at the end, then only the chunks whose chunk index time
range overlaps the episode (``iter_messages(starting_at=..., ending_at=...)``). Over S3
each of those reads is a ranged GET. :class:`RangedObject` is the seekable file the
reader gets: it turns the reader's many small reads (1- and 8-byte record fields) into
few requests with a read-ahead window that grows while reads run on, fetches the tail of
the object at once when a read lands near the end (footer + summary in one GET), fetches
big reads (chunk bodies) exactly, keeps a bounded cache of what it fetched (sized to the
episode's chunks, so the export's two reading passes fetch each chunk once), and counts
requests and bytes.

``open_remote_session("s3://BUCKET/PREFIX/<robot>/<day>/<session>")`` reads the
``session.json`` commit marker (the uploader writes it last, so without it the session is
not complete), checks that every file it lists is in the bucket and opens files on demand.
Its S3 client is the uploader's (:class:`~xsquare_logger.upload.backends.s3.S3Backend`):
the same credentials chain, TLS settings and one-line errors
(:class:`~xsquare_logger.upload.backends.BackendError`).
"""

from __future__ import annotations

import io
import json
from collections import deque
from typing import IO, cast

from pydantic import ValidationError

from xsquare_logger.config.upload import S3Config
from xsquare_logger.errors import one_line
from xsquare_logger.export import ExportError
from xsquare_logger.export.source import SourceFile
from xsquare_logger.session.manifest import MANIFEST_NAME, SessionManifest
from xsquare_logger.upload.backends.s3 import S3Backend

__all__ = [
    "CACHE_CAP",
    "CACHE_FLOOR",
    "BlockCache",
    "RangedObject",
    "RemoteSession",
    "RemoteSessionError",
    "open_remote_session",
    "open_session",
]

KIB = 1024
MIB = 1024 * KIB


class RemoteSessionError(ExportError):
    """The S3 location is not a complete, committed session (or a file of it changed)."""


#: What a file's block cache holds at least, and at most however much an episode reserves.
CACHE_FLOOR = 8 * MIB
CACHE_CAP = 512 * MIB


class BlockCache:
    """Byte blocks fetched from one object, oldest dropped beyond ``limit`` bytes.

    Shared by every :class:`RangedObject` a :class:`RemoteSession` opens on the same file,
    so the exporter may open and close a file per episode and still fetch its footer and
    summary (and a chunk two episodes share) once. :meth:`reserve` raises the limit to what
    an episode is about to read (up to :data:`CACHE_CAP`), so its second reading pass over
    the same chunks is served from memory instead of fetched again.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = CACHE_FLOOR if limit is None else limit
        self._blocks: deque[tuple[int, bytes]] = deque()  # (start offset, bytes), oldest first
        self._bytes = 0

    @property
    def size(self) -> int:
        """Bytes held now."""
        return self._bytes

    def reserve(self, nbytes: int) -> None:
        """Keep at least ``nbytes`` (at most :data:`CACHE_CAP`); never lowers the limit."""
        self.limit = max(self.limit, min(nbytes, CACHE_CAP))

    def find(self, pos: int) -> tuple[int, bytes] | None:
        for block in reversed(self._blocks):  # the newest block is the likeliest
            if block[0] <= pos < block[0] + len(block[1]):
                return block
        return None

    def add(self, block: tuple[int, bytes]) -> None:
        self._blocks.append(block)
        self._bytes += len(block[1])
        while len(self._blocks) > 1 and self._bytes > self.limit:
            self._bytes -= len(self._blocks.popleft()[1])


class RangedObject(io.BufferedIOBase):
    """A read-only, seekable binary file over one S3 object, read by ranged GETs.

    A buffered file (``read(n)`` returns ``n`` bytes unless the object ends), not an
    ``io.RawIOBase``: ``mcap``'s StreamReader wraps a raw file in a ``BufferedReader``
    that reads 8 KiB ahead and closes the file when it is dropped.

    A read that misses the cache fetches ``readahead`` bytes from there (doubling, up to
    ``max_readahead``, while each miss starts where the previous fetch ended); a read of
    at least the current window is fetched exactly (no waste after a chunk body); a miss
    within the last ``tail`` bytes fetches the whole tail. Fetched blocks stay in
    ``cache`` (own or shared: :class:`BlockCache`), so a second reader of the same object
    (the next episode) does not fetch the summary again.

    Counters: ``requests`` (GETs and the HEAD when ``size`` was not given),
    ``bytes_fetched`` (response bodies), ``ranges`` (``(start, end)`` of every GET).

    Not thread-safe (a file object); botocore's client underneath is.
    """

    def __init__(
        self,
        backend: S3Backend,
        key: str,
        size: int | None = None,
        *,
        readahead: int = 4 * KIB,
        max_readahead: int = 256 * KIB,
        tail: int = 64 * KIB,
        cache: BlockCache | None = None,
    ) -> None:
        super().__init__()
        self._backend = backend
        self.key = key
        self.requests = 0
        self.bytes_fetched = 0
        self.ranges: list[tuple[int, int]] = []
        if size is None:
            head = backend.head(key)
            self.requests += 1
            if head is None:
                raise RemoteSessionError(f"{self.name}: no such object")
            size = head.size
        self.size = size
        self._size_checked = False
        self._pos = 0
        self._readahead = max(1, readahead)
        self._max_readahead = max(self._readahead, max_readahead)
        self._window = self._readahead
        self._tail = tail
        self._cache = cache if cache is not None else BlockCache()
        self._last_end = -1  # end offset of the latest fetch

    @property
    def name(self) -> str:
        return f"s3://{self._backend.bucket}/{self.key}"

    # -- io.BufferedIOBase -----------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def read1(self, size: int | None = -1) -> bytes:
        return self.read(size)

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the position (all of them unless the object ends)."""
        self._checkClosed()
        start = self._pos
        end = self.size if size is None or size < 0 else min(self.size, start + size)
        if end <= start:
            return b""
        pieces: list[bytes] = []
        pos = start
        while pos < end:
            block = self._cache.find(pos) or self._fetch(pos, end)
            block_start, data = block
            piece = data[pos - block_start : end - block_start]
            if not piece:  # the object is shorter than its size said: stop, as at EOF
                break
            pieces.append(piece)
            pos += len(piece)
        self._pos = pos
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def reserve(self, chunks: list[tuple[int, int]]) -> None:
        """The reader is about to read these ``(offset, length)`` chunks, maybe more than
        once: size the cache to hold them beside what it holds now (summary, magic)."""
        need = sum(length + self._readahead for _offset, length in chunks)
        self._cache.reserve(self._cache.size + need + self._tail)

    # -- fetching ---------------------------------------------------------------------------
    def _fetch(self, pos: int, end: int) -> tuple[int, bytes]:
        self._window = (
            min(self._window * 2, self._max_readahead) if pos == self._last_end
            else self._readahead
        )
        if end - pos >= self._window:
            start, stop = pos, end  # a chunk body: exactly what the reader asked for
        elif self.size - pos <= self._tail:
            start, stop = max(0, self.size - self._tail), self.size  # footer + summary
        else:
            start, stop = pos, min(self.size, pos + self._window)
        got = self._backend.get_range(self.key, start, stop)
        self.requests += 1
        self.bytes_fetched += got.transferred
        self.ranges.append((start, start + len(got.data)))
        if not self._size_checked:
            if got.size != self.size:
                raise RemoteSessionError(
                    f"{self.name}: the object holds {got.size} bytes, expected {self.size} "
                    "(session.json's size: changed since the upload?)"
                )
            self._size_checked = True
        self._last_end = stop
        block = (start, got.data)
        self._cache.add(block)
        return block


class RemoteSession:
    """A committed session in S3, as the export reads it (an ``export.source.SessionSource``).

    ``files`` are the MCAP files that hold messages, in recording order; ``open(name)``
    gives a fresh :class:`RangedObject` (the caller closes it) over a block cache kept per
    file for the session's lifetime. Not picklable (it holds a botocore client): a worker
    process opens the session again from ``spec`` (one GET of session.json, one listing).
    """

    def __init__(
        self, spec: str, manifest: SessionManifest, backend: S3Backend, requests: int,
        bytes_fetched: int,
    ) -> None:
        self.spec = spec  # s3://BUCKET/PREFIX/.../<session>
        self.manifest = manifest
        entries = [f for f in manifest.files if f.path.endswith(".mcap") and f.message_count]
        self.files = [SourceFile(f.path, f.start_ns, f.end_ns) for f in entries]
        self.sizes = {f.path: f.size for f in entries}
        self.backend = backend
        self.requests = requests  # marker GET and listing
        self.bytes_fetched = bytes_fetched
        self.opened: list[RangedObject] = []
        self._caches: dict[str, BlockCache] = {}

    def open(self, name: str) -> IO[bytes]:
        """One of ``files`` as a seekable binary file object (``SessionSource.open``)."""
        # RangedObject is an io.BufferedIOBase, which typeshed does not count as IO[bytes].
        return cast(IO[bytes], self.open_ranged(name))

    def open_ranged(self, name: str, **options: int) -> RangedObject:
        """:meth:`open` with the counters in its type; ``options`` tune
        :class:`RangedObject` (``readahead``, ``max_readahead``, ``tail``)."""
        if name not in self.sizes:
            raise RemoteSessionError(f"{self.spec}: session.json lists no MCAP file {name!r}")
        cache = self._caches.setdefault(name, BlockCache())
        obj = RangedObject(self.backend, f"{self.backend.prefix}/{name}", self.sizes[name],
                           cache=cache, **options)
        self.opened.append(obj)
        return obj

    def topics(self) -> dict[str, str]:
        """Recorded topic -> type name (from session.json)."""
        return {name: t.type for name, t in self.manifest.topics.items()}

    @property
    def total_requests(self) -> int:
        """Every request so far: marker, listing and the opened files' GETs."""
        return self.requests + sum(o.requests for o in self.opened)

    @property
    def total_bytes_fetched(self) -> int:
        """Bytes of session.json and of every ranged GET (listings not counted)."""
        return self.bytes_fetched + sum(o.bytes_fetched for o in self.opened)


def _session_url(url: str) -> str:
    """``s3://BUCKET/PATH/<session>`` without trailing ``/`` or ``/session.json``."""
    if not url.startswith("s3://"):
        raise RemoteSessionError(f"{url}: not an s3:// session URL (s3://BUCKET/PATH/SESSION)")
    path = url[len("s3://") :].strip("/")
    if path.endswith("/" + MANIFEST_NAME):
        path = path[: -len(MANIFEST_NAME) - 1]
    bucket, _, prefix = path.partition("/")
    if not bucket or not prefix.strip("/"):
        raise RemoteSessionError(
            f"{url}: names no session folder (want s3://BUCKET/PATH/SESSION)"
        )
    return f"s3://{bucket}/{prefix.strip('/')}"


def open_remote_session(url: str, s3: S3Config | None = None) -> RemoteSession:
    """Open a committed session in S3 for reading (two requests: marker GET, listing).

    ``s3`` carries endpoint, region, credentials file and TLS settings as for the
    uploader (default: all from the environment, e.g. ``AWS_ENDPOINT_URL_S3``).

    Raises:
        RemoteSessionError: not an s3:// URL, no such session, no session.json (not
            committed: upload incomplete or in progress), an invalid or unclosed
            session.json, or files it lists missing from the bucket.
        BackendError: the server refused or failed (no such bucket, wrong credentials,
            no network), one line naming the endpoint, bucket and key.
    """
    canonical = _session_url(url)
    backend = S3Backend(canonical, s3 or S3Config())
    marker_key = f"{backend.prefix}/{MANIFEST_NAME}"
    data = backend.get(marker_key)
    requests, fetched = 1, len(data or b"")
    stored = {k[len(backend.prefix) + 1 :] for k in backend.list_keys(backend.prefix + "/")}
    requests += 1
    if data is None:
        if not stored:
            raise RemoteSessionError(f"{canonical}: no such session (nothing stored there)")
        raise RemoteSessionError(
            f"{canonical}: not committed: no {MANIFEST_NAME} (the upload is incomplete or "
            f"still running; the uploader writes it last)"
        )
    try:
        manifest = SessionManifest.model_validate(json.loads(data))
    except (ValueError, ValidationError) as exc:
        raise RemoteSessionError(
            f"{canonical}/{MANIFEST_NAME}: not a valid session manifest: {one_line(exc)[:200]}"
        ) from None
    if manifest.state not in ("closed", "recovered"):
        raise RemoteSessionError(
            f"{canonical}: session.json says state {manifest.state!r}, not a closed session"
        )
    missing = [f.path for f in manifest.files if f.path not in stored]
    if missing:
        raise RemoteSessionError(
            f"{canonical}: incomplete: {', '.join(missing)} listed in {MANIFEST_NAME} "
            "but not in the bucket"
        )
    return RemoteSession(canonical, manifest, backend, requests, fetched)


#: The name ``export.source.open_source`` calls for ``s3://`` specs.
open_session = open_remote_session
