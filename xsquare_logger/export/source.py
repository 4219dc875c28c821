"""Where an export reads a session from: session.json + one seekable binary file per MCAP.

The per-episode function sees only a :class:`SessionSource`: the parsed ``session.json``, the
MCAP files with their time ranges, and ``open(name)`` returning a seekable binary file
object (with an optional ``reserve(chunks)``, called with the ``(offset, length)`` of the
chunks about to be read: a remote file caches that much). Reading goes through each
file's summary and chunk indexes (``mcap`` reader with
``starting_at``/``ending_at``), so only the chunks overlapping an episode are read: what
makes ranged reads over S3 cheap.

:func:`open_source` is the one seam for input kinds: a local session directory here;
``s3://...`` is handed to ``xsquare_logger.export.remote.open_session`` (built separately),
which returns a :class:`SessionSource` whose ``open`` does ranged GETs. A spec is a plain
string, so jobs naming a session pickle to pool workers (and Ray tasks).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from mcap.exceptions import McapError
from mcap.reader import make_reader

from xsquare_logger.errors import one_line
from xsquare_logger.export import ExportError
from xsquare_logger.session.manifest import SessionManifest
from xsquare_logger.session.view import SessionUnreadable, SessionView

__all__ = ["LocalSession", "SessionSource", "SourceFile", "iter_messages", "open_source"]


@dataclass(frozen=True)
class SourceFile:
    """One MCAP file of a session: name (relative to the session) and log_time range (ns)."""

    name: str
    start_ns: int
    end_ns: int

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        return self.start_ns <= end_ns and self.end_ns >= start_ns


class SessionSource(Protocol):
    """What the export needs of a session, wherever it lies."""

    spec: str  # how the user named it (messages, provenance)
    manifest: SessionManifest
    files: list[SourceFile]

    def open(self, name: str) -> IO[bytes]:
        """A seekable binary file object for one of ``files`` (the caller closes it)."""
        ...

    def topics(self) -> dict[str, str]:
        """Recorded topic -> type name."""
        ...

    @property
    def total_requests(self) -> int:
        """Requests made over the network so far (0 for a local session)."""
        ...

    @property
    def total_bytes_fetched(self) -> int:
        """Bytes fetched over the network so far (0 for a local session)."""
        ...


class LocalSession:
    """A finished session directory on a local file system."""

    total_requests = 0  # nothing goes over the network
    total_bytes_fetched = 0

    def __init__(self, path: Path) -> None:
        try:
            view = SessionView.open(path, need_manifest=True)
        except SessionUnreadable as exc:
            raise ExportError(str(exc)) from None
        assert view.manifest is not None  # need_manifest
        self.spec = str(path)
        self.directory = view.directory
        self.manifest: SessionManifest = view.manifest
        self.files = [SourceFile(f.path.name, f.start_ns, f.end_ns)
                      for f in view.files if f.message_count > 0]
        self._topics = {name: t.type for name, t in self.manifest.topics.items()}

    def open(self, name: str) -> IO[bytes]:
        try:
            return open(self.directory / name, "rb")
        except OSError as exc:
            raise ExportError(f"{self.directory / name}: cannot open: {exc.strerror}") from None

    def topics(self) -> dict[str, str]:
        return dict(self._topics)


def open_source(spec: str) -> SessionSource:
    """The session named by ``spec``: a local directory, or ``s3://bucket/prefix/session``."""
    if spec.startswith("s3://"):
        try:
            remote = importlib.import_module("xsquare_logger.export.remote")
        except ImportError:
            raise ExportError(f"{spec}: reading sessions from S3 is not available in this "
                              "install") from None
        source: SessionSource = remote.open_session(spec)
        return source
    return LocalSession(Path(spec))


def iter_messages(
    source: SessionSource, topics: list[str], start_ns: int, end_ns: int
) -> Iterator[tuple[str, int, bytes]]:
    """``(topic, log_time, data)`` of ``topics`` with ``start_ns <= log_time <= end_ns``, in
    log_time order per file, files in recording order; only overlapping chunks are read."""
    for f in source.files:
        if not f.overlaps(start_ns, end_ns):
            continue
        handle = source.open(f.name)
        try:
            reader = make_reader(handle)
            summary = reader.get_summary()
            if summary is None or not summary.chunk_indexes:
                raise ExportError(f"{source.spec}/{f.name}: no chunk indexes (run `xsq recover`)")
            reserve = getattr(handle, "reserve", None)
            if reserve is not None:  # a remote file: keep the episode's chunks for pass two
                reserve([(c.chunk_start_offset, c.chunk_length) for c in summary.chunk_indexes
                         if c.message_start_time <= end_ns and c.message_end_time >= start_ns])
            for _schema, channel, message in reader.iter_messages(
                topics=topics, starting_at=start_ns, ending_at=end_ns, log_time_order=True
            ):
                yield channel.topic, message.log_time, message.data
        except (McapError, OSError, ValueError) as exc:
            raise ExportError(f"{source.spec}/{f.name}: unreadable MCAP: {one_line(exc)}") from None
        finally:
            handle.close()
