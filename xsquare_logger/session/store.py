"""One session directory: split MCAP files, metadata.yaml and session.json.

Used from the writer thread only (not thread-safe by design: one owner, no locks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xsquare_logger import __version__
from xsquare_logger.bag.mcap_writer import McapWriter
from xsquare_logger.bag.qos import QosDict, qos_profiles_yaml
from xsquare_logger.bag.schema import ros2msg_schema, type_description_hash
from xsquare_logger.config.model import RecordingConfig
from xsquare_logger.errors import XsqError
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.episodes import tasks_metadata
from xsquare_logger.session.fsutil import ACTIVE_SUFFIX, SessionLock
from xsquare_logger.session.index import IndexedTopic, SessionIndex
from xsquare_logger.session.manifest import FileEntry, SessionManifest, write_manifest
from xsquare_logger.session.metadata import BagFile, BagTopic, build_metadata, metadata_text

__all__ = ["ACTIVE_SUFFIX", "SessionExistsError", "SessionWriter", "SessionWriterError"]

log = logging.getLogger(__name__)


class SessionWriterError(XsqError):
    """The session writer was used wrongly (written to after close) or cannot start."""


class SessionExistsError(SessionWriterError):
    """The output directory already exists; sessions are never overwritten."""


@dataclass
class _Topic(IndexedTopic):
    file_count: int = 0  # messages in the current file


@dataclass
class _OpenFile:
    name: str
    writer: McapWriter
    opened_mono: float
    channels: dict[int, int] = field(default_factory=dict)  # topic index -> channel id
    first_log_ns: int | None = None


class SessionWriter:
    """Writes one session directory in rosbag2 layout.

    Files are named ``<session_id>_<n>.mcap`` and carry ``.active`` while being
    written, so a crash leaves a file that recovery recognises.

    A context manager: ``with SessionWriter(...) as w:`` closes the session on a
    normal exit and abandons it (open file left for ``xsq recover``) on an
    exception. Writing after close raises :class:`SessionWriterError`.
    """

    def __init__(
        self,
        directory: Path,
        manifest: SessionManifest,
        config: RecordingConfig,
        schema_provider: Callable[[str], bytes] = ros2msg_schema,
        hash_provider: Callable[[str], str | None] = type_description_hash,
    ) -> None:
        if directory.exists():
            raise SessionExistsError(
                f"output directory {directory} exists already; not overwriting a session"
            )
        try:
            directory.mkdir(parents=True)
        except FileExistsError:  # created since the check above
            raise SessionExistsError(
                f"output directory {directory} exists already; not overwriting a session"
            ) from None
        except OSError as exc:
            raise SessionWriterError(f"cannot create session directory {directory}: {exc}") from exc
        self._lock = SessionLock(directory)
        if not self._lock.acquire():  # someone created and locked it since mkdir
            raise SessionWriterError(f"{directory}: locked by another recorder")
        self.directory = directory
        self.manifest = manifest
        self.config = config
        self._schema_provider = schema_provider
        self._hash_provider = hash_provider
        self.topics: list[_Topic] = []
        self.files: list[FileEntry] = []
        # (name, data, media type): written into every file as it opens (calibration).
        self.attachments: list[tuple[str, bytes, str]] = []
        self._file: _OpenFile | None = None
        self._file_index = 0
        self._closed_bytes = 0
        self.closed = False
        # Told of every finished file (writer thread): its entry and messages per topic
        # (the ROS ~/events/write_split); a failing listener never costs the recording.
        self.on_file_closed: Callable[[FileEntry, dict[str, int], bool], None] | None = None
        write_manifest(directory, manifest)

    def __enter__(self) -> SessionWriter:
        if self.closed:
            raise SessionWriterError(f"{self.directory}: session writer already closed")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        if exc_type is None:
            self.close("stopped")
        else:
            self.abandon(f"error: {exc_type.__name__}")

    # -- topics -----------------------------------------------------------------------------
    def add_topic(
        self,
        name: str,
        type_name: str,
        qos: list[QosDict],
        stats: TopicStats,
        compressed_to: str | None = None,
    ) -> int:
        """Register a topic; return its index for :meth:`write`. Schema errors raise here.

        ``compressed_to`` marks a raw camera topic whose frames are recorded only
        compressed, on that topic: it is counted in session.json but not in the bag.
        """
        if compressed_to is None:
            self._schema_provider(type_name)  # fail at subscription time, not mid-write
        if self.closed:
            raise SessionWriterError(f"{self.directory}: add_topic after close")
        self.topics.append(
            _Topic(
                stats,
                type_hash=self._hash_provider(type_name) or "",
                qos=qos,
                in_bag=compressed_to is None,
                compressed_to=compressed_to,
            )
        )
        return len(self.topics) - 1

    def update_qos(self, index: int, qos: list[QosDict]) -> None:
        self.topics[index].qos = qos

    # -- writing ----------------------------------------------------------------------------
    @property
    def bytes_written(self) -> int:
        current = self._file.writer.bytes_written if self._file else 0
        return self._closed_bytes + current

    def _open_file(self) -> _OpenFile:
        name = f"{self.manifest.session_id}_{self._file_index}.mcap"
        self._file_index += 1
        writer = McapWriter(
            self.directory / (name + ACTIVE_SUFFIX),
            compression=self.config.compression,
            chunk_size=self.config.chunk_size,
            zstd_level=self.config.zstd_level,
            library=f"xsquare_logger {__version__}",
            # Compression, hashing and the file write on the writer's own I/O thread, so
            # the recorder's writer thread keeps packing (3x720p30 raw: issue 12).
            background=True,
        )
        for t in self.topics:
            t.file_count = 0
        for att_name, data, media_type in self.attachments:
            writer.add_attachment(att_name, data, media_type=media_type)
        self._file = _OpenFile(name, writer, time.monotonic())
        return self._file

    def _channel(self, f: _OpenFile, index: int) -> int:
        t = self.topics[index]
        type_name = t.stats.type
        schema_id = f.writer.register_schema(type_name, "ros2msg", self._schema_provider(type_name))
        metadata = {"offered_qos_profiles": qos_profiles_yaml(t.qos)}
        if t.type_hash:
            metadata["topic_type_hash"] = t.type_hash
        cid = f.writer.register_channel(t.name, "cdr", schema_id, metadata)
        f.channels[index] = cid
        return cid

    def write(self, index: int, log_time: int, publish_time: int, data: bytes, seq: int) -> None:
        """Append one serialized message (times in ns). OSError propagates (disk full)."""
        if self.closed:
            raise SessionWriterError(f"{self.directory}: write after close")
        f = self._file or self._open_file()
        if self._should_split(f, log_time):
            self._close_file()
            f = self._open_file()
        cid = f.channels.get(index)
        if cid is None:
            cid = self._channel(f, index)
        f.writer.add_message(cid, log_time, publish_time, data, seq)
        if f.first_log_ns is None:
            f.first_log_ns = log_time
        t = self.topics[index]
        t.file_count += 1
        t.stats.written += 1
        t.stats.bytes_written += len(data)

    def _should_split(self, f: _OpenFile, log_time: int) -> bool:
        if f.first_log_ns is None:
            return False
        cfg = self.config
        # Chunks still queued on the writer's I/O thread count too (uncompressed: the
        # split comes at most that much early, never late).
        written = f.writer.bytes_written + f.writer.bytes_pending
        if cfg.max_bag_size and written >= cfg.max_bag_size:
            return True
        return bool(
            cfg.max_bag_duration and log_time - f.first_log_ns >= cfg.max_bag_duration * 1e9
        )

    def split(self) -> bool:
        """Finish the open file now; the next message opens a new one. False: no file open."""
        if self.closed or self._file is None:
            return False
        self._close_file()
        return True

    def flush(self) -> None:
        if self._file:
            # Queued on the writer's I/O thread behind the chunks before it: the
            # recorder's thread goes on packing (close() waits for everything).
            self._file.writer.flush(fsync=self.config.fsync, wait=False)

    # -- finalisation -----------------------------------------------------------------------
    def _close_file(self, last: bool = False) -> None:
        f = self._file
        if f is None:
            return
        self._file = None
        w = f.writer
        counts = {t.name: t.file_count for t in self.topics if t.in_bag and t.file_count}
        # As rosbag2 does, written at close with the final values, and those of this file
        # alone: a lone .mcap (a clip, one uploaded file) describes itself correctly.
        w.add_metadata("rosbag2", {"serialized_metadata": metadata_text(self._file_doc(f))})
        m = self.manifest
        if m.tasks or m.marks or m.visit:
            # Episodes so far, so a tool finds task N in any file without scanning messages.
            record = tasks_metadata(m.tasks, m.marks, m.session_id)
            record["visit"] = json.dumps(m.visit or {})
            w.add_metadata("xsquare.tasks", record)
        w.close()
        active = self.directory / (f.name + ACTIVE_SUFFIX)
        active.rename(self.directory / f.name)
        self._closed_bytes += w.bytes_written
        self.files.append(
            FileEntry(
                path=f.name,
                size=w.bytes_written,
                sha256=w.sha256_hexdigest(),
                message_count=w.message_count,
                start_ns=w.message_start_time or 0,
                end_ns=w.message_end_time or 0,
            )
        )
        self._write_indexes()
        if self.on_file_closed is not None:
            try:
                self.on_file_closed(self.files[-1], counts, last)
            except Exception:
                log.exception("file-closed listener failed")

    def _index(self) -> SessionIndex:
        return SessionIndex(self.manifest, self.topics, self.files)

    def _metadata_doc(self) -> dict[str, object]:
        return self._index().metadata_doc()

    def _file_doc(self, f: _OpenFile) -> dict[str, object]:
        """The metadata document of the open file alone: its times, counts, topics."""
        w = f.writer
        start, end = w.message_start_time or 0, w.message_end_time or 0
        topics = [
            BagTopic(t.name, t.stats.type, t.type_hash, t.qos, t.file_count)
            for t in self.topics
            if t.in_bag
        ]
        files = [BagFile(f.name, start, max(0, end - start), w.message_count)]
        return build_metadata(topics, files, self._index().custom_data())

    def _write_indexes(self) -> None:
        self._index().write(self.directory)

    def close(self, reason: str, ended_ns: int | None = None) -> None:
        """Finalize the open file, metadata.yaml and session.json."""
        if self.closed:
            return
        self._close_file(last=True)
        self.closed = True
        self.manifest.state = "closed"
        self.manifest.close_reason = reason
        self.manifest.ended_ns = ended_ns if ended_ns is not None else time.time_ns()
        self._write_indexes()
        self._lock.release()

    def abandon(self, reason: str) -> None:
        """Stop without finalizing the open file (the disk is full): leave it for recovery."""
        if self.closed:
            return
        if self._file:
            self._file.writer.abort()
            self._file = None
        self.closed = True
        self.manifest.close_reason = reason
        self.manifest.ended_ns = time.time_ns()
        # The disk may be full; `xsq recover` rebuilds both indexes from the MCAP files.
        with contextlib.suppress(OSError):
            self._write_indexes()
        self._lock.release()
