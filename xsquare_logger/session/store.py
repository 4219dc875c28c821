"""One session directory: split MCAP files, metadata.yaml and session.json.

Used from the writer thread only (not thread-safe by design: one owner, no locks).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xsquare_logger import __version__
from xsquare_logger.bag.mcap_writer import McapWriter
from xsquare_logger.bag.qos import QosDict, qos_profiles_yaml
from xsquare_logger.bag.schema import ros2msg_schema, type_description_hash
from xsquare_logger.config.model import RecordingConfig
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.episodes import tasks_metadata
from xsquare_logger.session.fsutil import SessionLock
from xsquare_logger.session.manifest import FileEntry, SessionManifest, TopicEntry, write_manifest
from xsquare_logger.session.metadata import (
    BagFile,
    BagTopic,
    build_metadata,
    metadata_text,
    write_metadata_yaml,
)

__all__ = ["ACTIVE_SUFFIX", "SessionExistsError", "SessionWriter"]

ACTIVE_SUFFIX = ".active"


class SessionExistsError(Exception):
    """The output directory already exists; sessions are never overwritten."""


@dataclass
class _Topic:
    name: str
    type: str
    qos: list[QosDict]
    hash: str
    stats: TopicStats
    in_bag: bool = True  # False: a raw camera recorded only in compressed form
    compressed_to: str | None = None
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
        directory.mkdir(parents=True)
        self._lock = SessionLock(directory)
        self._lock.acquire()
        self.directory = directory
        self.manifest = manifest
        self.config = config
        self._schema_provider = schema_provider
        self._hash_provider = hash_provider
        self.topics: list[_Topic] = []
        self.files: list[FileEntry] = []
        self._file: _OpenFile | None = None
        self._file_index = 0
        self._closed_bytes = 0
        self.closed = False
        write_manifest(directory, manifest)

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
        self.topics.append(
            _Topic(
                name,
                type_name,
                qos,
                self._hash_provider(type_name) or "",
                stats,
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
        )
        for t in self.topics:
            t.file_count = 0
        self._file = _OpenFile(name, writer, time.monotonic())
        return self._file

    def _channel(self, f: _OpenFile, index: int) -> int:
        t = self.topics[index]
        schema_id = f.writer.register_schema(t.type, "ros2msg", self._schema_provider(t.type))
        metadata = {"offered_qos_profiles": qos_profiles_yaml(t.qos)}
        if t.hash:
            metadata["topic_type_hash"] = t.hash
        cid = f.writer.register_channel(t.name, "cdr", schema_id, metadata)
        f.channels[index] = cid
        return cid

    def write(self, index: int, log_time: int, publish_time: int, data: bytes, seq: int) -> None:
        """Append one serialized message (times in ns). OSError propagates (disk full)."""
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
        if cfg.max_bag_size and f.writer.bytes_written >= cfg.max_bag_size:
            return True
        return bool(
            cfg.max_bag_duration and log_time - f.first_log_ns >= cfg.max_bag_duration * 1e9
        )

    def flush(self) -> None:
        if self._file:
            self._file.writer.flush(fsync=self.config.fsync)

    # -- finalisation -----------------------------------------------------------------------
    def _close_file(self) -> None:
        f = self._file
        if f is None:
            return
        self._file = None
        w = f.writer
        # Each file carries the bag metadata so far: a lone .mcap stays self-describing.
        w.add_metadata("rosbag2", {"serialized_metadata": metadata_text(self._metadata_doc())})
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

    def _bag_files(self) -> list[BagFile]:
        return [
            BagFile(f.path, f.start_ns, max(0, f.end_ns - f.start_ns), f.message_count)
            for f in self.files
        ]

    def _metadata_doc(self) -> dict[str, object]:
        topics = [
            BagTopic(t.name, t.type, t.hash, t.qos, t.stats.written)
            for t in self.topics
            if t.in_bag
        ]
        custom = {
            "xsquare.session_id": self.manifest.session_id,
            "xsquare.robot_id": self.manifest.robot_id,
            "xsquare.software_version": self.manifest.software_version,
        }
        return build_metadata(topics, self._bag_files(), custom)

    def _write_indexes(self) -> None:
        m = self.manifest
        m.files = list(self.files)
        m.topics = {
            t.name: TopicEntry(
                type=t.type,
                received=t.stats.received,
                written=t.stats.written,
                bytes_written=t.stats.bytes_written,
                lost_transport=t.stats.lost_transport,
                dropped_queue=t.stats.dropped_queue,
                dropped_disk=t.stats.dropped_disk,
                dropped_encode=t.stats.dropped_encode,
                publishers=t.stats.publishers,
                compressed_to=t.compressed_to,
            )
            for t in self.topics
        }
        m.drops = {
            "lost_transport": sum(t.stats.lost_transport for t in self.topics),
            "dropped_queue": sum(t.stats.dropped_queue for t in self.topics),
            "dropped_disk": sum(t.stats.dropped_disk for t in self.topics),
            "dropped_encode": sum(t.stats.dropped_encode for t in self.topics),
        }
        m.drops["total"] = sum(m.drops.values())
        write_metadata_yaml(self.directory, self._metadata_doc())
        write_manifest(self.directory, m)

    def close(self, reason: str, ended_ns: int | None = None) -> None:
        """Finalize the open file, metadata.yaml and session.json."""
        if self.closed:
            return
        self._close_file()
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
