"""Streaming MCAP writer with time-based chunk flushing, a running SHA-256 and crash safety.

Why not ``mcap.writer.Writer``: the recorder must be able to close the open chunk on a timer
(so at most ~1 s of data is lost in a crash), fsync, know the SHA-256 of the finished file
without reading it back, and leave a file that :func:`xsquare_logger.bag.recover.recover_mcap`
can repair when the disk fills up. This writer never seeks: every byte goes out once, in order,
which is what lets it hash and CRC incrementally.

File layout written (MCAP spec, https://mcap.dev/spec)::

    Magic Header
    [Schema | Channel | Metadata | Attachment | Chunk MessageIndex*]*   (data section)
    DataEnd(data_section_crc=0)
    Schema* Channel* Statistics ChunkIndex* AttachmentIndex* MetadataIndex*   (summary)
    SummaryOffset*   (one per non-empty group)
    Footer Magic

Schema and Channel records are written into the data section as soon as they are registered,
outside any chunk, so a file cut short by a crash still describes every channel it holds.
Chunks hold only Message records.

The cold records (Header, Schema, Channel, Metadata, Attachment, DataEnd and the whole summary)
are encoded by ``mcap.records``, the official library's own encoders. Only the per-message hot
path (Message records packed into the chunk buffer, the Chunk header, MessageIndex records) is
packed here with precompiled ``struct`` formats: at 1,500+ messages per second that is where
the CPU goes (see "MCAP writer: decided by data" in docs/architecture.md).

All times are integer nanoseconds (the ROS 2 convention; rosbag2 uses the receive time as
``log_time`` and the publisher's source timestamp as ``publish_time``).

The writer is not thread-safe: use it from one thread (the recorder's writer thread).
zstd, lz4, zlib and hashlib release the GIL on large buffers, so the heavy work of a
camera-rate stream does not block the ROS callbacks.

No data-section CRC (DataEnd carries 0, which the spec defines as "not computed"; rosbag2's
C++ writer leaves it off by default too): it was a second CRC32 pass over every byte, ~12% of
a core at 3x720p30 raw, and adds nothing a reader checks that the per-chunk CRCs and the
file's SHA-256 (in session.json, verified on upload) do not already cover.

With ``background=True`` (what the recorder uses) that heavy work (chunk CRC, compression,
the file write and SHA-256) runs on one I/O thread of the writer's own, in order,
while the caller packs the next chunk: at 3x720p30 raw that work is most of a core, and
on the caller's thread it capped the recorder below the camera rate (issue 12). Every byte
still goes to the file in the order the caller produced it (cold records are queued
behind the chunks before them). At most ``_CHUNK_BUFFERS`` chunk buffers exist: when the
I/O thread is that far behind, :meth:`add_message` blocks (the recorder's bounded queue
then fills and counts drops). :meth:`flush` and :meth:`close` wait for the I/O thread, so
the crash window is unchanged. ``flush(wait=False)`` hands the fsync to a third thread
(:class:`~xsquare_logger.bag.syncer.BackgroundSync`) so writing goes on while the disk
catches up. An I/O error on either thread is raised (as :class:`McapWriterError`) by the
next call.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import struct
import threading
import time
import zlib
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, Final

import lz4.frame
import zstandard
from mcap.data_stream import RecordBuilder
from mcap.records import (
    Attachment,
    AttachmentIndex,
    Channel,
    ChunkIndex,
    DataEnd,
    Footer,
    Header,
    McapRecord,
    Metadata,
    MetadataIndex,
    Schema,
    Statistics,
    SummaryOffset,
)
from zlib_ng.zlib_ng import crc32

from xsquare_logger.bag.hasher import BackgroundHasher
from xsquare_logger.bag.syncer import BackgroundSync
from xsquare_logger.errors import XsqError

__all__ = [
    "MCAP_MAGIC",
    "McapWriter",
    "McapWriterError",
    "Opcode",
]

#: Leading and trailing magic bytes of an MCAP (major version 0) file.
MCAP_MAGIC: Final = b"\x89MCAP0\r\n"


class Opcode:
    """MCAP record opcodes (spec section "Records")."""

    HEADER: Final = 0x01
    FOOTER: Final = 0x02
    SCHEMA: Final = 0x03
    CHANNEL: Final = 0x04
    MESSAGE: Final = 0x05
    CHUNK: Final = 0x06
    MESSAGE_INDEX: Final = 0x07
    CHUNK_INDEX: Final = 0x08
    ATTACHMENT: Final = 0x09
    ATTACHMENT_INDEX: Final = 0x0A
    STATISTICS: Final = 0x0B
    METADATA: Final = 0x0C
    METADATA_INDEX: Final = 0x0D
    SUMMARY_OFFSET: Final = 0x0E
    DATA_END: Final = 0x0F


class McapWriterError(XsqError):
    """Raised for misuse of :class:`McapWriter` and for I/O failures while writing.

    ``errno`` carries the OS error number when the cause was an ``OSError`` (e.g. ``ENOSPC``
    when the disk is full), else ``None``.
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


# Message record: opcode u8, length u64, channel_id u16, sequence u32, log_time u64,
# publish_time u64, then the payload.
_MESSAGE_HEADER: Final = struct.Struct("<BQHIQQ")
_MESSAGE_HEADER_SIZE: Final = _MESSAGE_HEADER.size  # 31
_MESSAGE_FIXED: Final = _MESSAGE_HEADER_SIZE - 9  # content bytes before the payload (22)
_RECORD_HEADER: Final = struct.Struct("<BQ")
_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
# Footer record up to its CRC: opcode, length (20), summary_start, summary_offset_start.
_FOOTER_HEAD: Final = struct.Struct("<BQQQ")
# Chunk record up to and including the compression string's length prefix:
# opcode, length, message_start_time, message_end_time, uncompressed_size, uncompressed_crc,
# len(compression).
_CHUNK_HEAD: Final = struct.Struct("<BQQQQII")

_COMPRESSIONS: Final = {"zstd": "zstd", "lz4": "lz4", "none": "", "": ""}
_NO_COMPRESSION: Final = b"\x00\x00\x00\x00"  # empty compression String
_MAX_ID: Final = 0xFFFF  # schema and channel ids are uint16
# Background mode: chunk buffers in existence (one being packed, the rest queued/in I/O).
_CHUNK_BUFFERS: Final = 3
# Why compress only chunks that pay: at 3x720p30 raw (~250 MB/s) zstd-1 needs ~0.25 core
# and lz4 ~0.15, and on two cores beside the cameras that cost frames (issue 12), while raw
# camera chunks save only 10-16% (the sim's frames and photographs alike) and JPEG/H.264
# chunks ~0%. Chunks of joint states and other small messages save 60-90% and stay cheap.
# A sample of each chunk decides; it costs ~5% of compressing the whole.
_MIN_SAVING: Final = 0.25
_SAMPLE_BYTES: Final = 3 * 64 * 1024


# Background mode: (work, cleanup); cleanup runs even when work is skipped after an error.
_Job = tuple[Callable[[], None], Callable[[], None] | None]


def _string(value: str) -> bytes:
    """Encode an MCAP ``String`` (u32 byte length + UTF-8)."""
    raw = value.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def _encode(*records: McapRecord) -> bytes:
    """Encode whole records (opcode, length, content) with ``mcap.records``."""
    builder = RecordBuilder()
    for record in records:
        record.write(builder)
    return bytes(builder.end())


class McapWriter:
    """Write an indexed, chunked MCAP file in one pass.

    Args:
        path: File to create. It must not exist (opened with mode ``"xb"``).
        compression: Chunk compression: ``"zstd"``, ``"lz4"`` or ``"none"``. A chunk is
            stored uncompressed (its compression field empty, which every reader handles)
            when a sample of it (three slices, ``_SAMPLE_BYTES`` in all) compresses by less
            than ``_MIN_SAVING``, when the whole would not get smaller, and in background
            mode when the I/O thread is behind (no spare chunk buffer): compression then
            never costs recorded data. :attr:`uncompressed_chunks` counts those chunks.
        chunk_size: A chunk is closed as soon as its uncompressed size reaches this many bytes.
            :meth:`flush` closes it earlier.
        profile: MCAP profile written in the Header record (``"ros2"`` for ROS 2 CDR data).
        library: Free-form writer identification written in the Header record.
        zstd_level: zstd compression level (1 is the fastest of the normal levels).
        background: Finish chunks (CRC, compression, write, hashing) on an I/O thread of
            this writer's own; see the module docstring.

    Raises:
        McapWriterError: if ``path`` exists, cannot be created, or an argument is invalid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compression: str = "zstd",
        chunk_size: int = 4 * 1024 * 1024,
        profile: str = "ros2",
        library: str = "xsquare_logger",
        zstd_level: int = 1,
        background: bool = False,
    ) -> None:
        self._path = os.fspath(path)
        if compression not in _COMPRESSIONS:
            raise McapWriterError(
                f"{self._path}: unknown compression {compression!r} "
                "(expected 'zstd', 'lz4' or 'none')"
            )
        if chunk_size <= 0:
            raise McapWriterError(f"{self._path}: chunk_size must be positive, got {chunk_size}")
        self._compression = _COMPRESSIONS[compression]
        self._compression_field = _string(self._compression)
        self._chunk_size = chunk_size
        self._zstd = (
            zstandard.ZstdCompressor(level=zstd_level) if self._compression == "zstd" else None
        )

        # Running state over every byte handed to the file object.
        self._sha = hashlib.sha256()
        self._offset = 0

        # Registries. Ids start at 1: schema id 0 means "no schema" in the spec.
        self._schema_ids: dict[tuple[str, str, bytes], int] = {}
        self._schema_records: list[bytes] = []
        self._channel_ids: dict[tuple[str, int, str], int] = {}
        self._channel_records: list[bytes] = []
        # channel id -> message count; pre-seeded on registration so that add_message's
        # increment doubles as the "is this channel registered?" check at no extra cost.
        self._counts: dict[int, int] = {}

        # The open chunk: Message records packed into a reusable bytearray.
        self._buf = bytearray(chunk_size + 64 * 1024)
        self._buf_len = 0
        self._chunk_messages = 0
        self._chunk_start = 0
        self._chunk_end = 0
        self._chunk_unsorted = False
        # channel id -> flat [log_time, offset, log_time, offset, ...] for the open chunk
        self._chunk_index: dict[int, list[int]] = {}

        # Summary material.
        self._chunk_indexes: list[ChunkIndex] = []
        self._metadata_indexes: list[MetadataIndex] = []
        self._attachment_indexes: list[AttachmentIndex] = []
        self._message_count = 0
        self._start_time: int | None = None
        self._end_time: int | None = None

        # Background mode (None otherwise): jobs run in order on the I/O thread, spare
        # chunk buffers come back through the pool; the first error there stops the jobs.
        self._jobs: queue.Queue[_Job | None] | None = None
        self._pool: queue.Queue[bytearray | None] = queue.Queue()
        self._io_thread: threading.Thread | None = None
        self._bg_error: BaseException | None = None
        self._pending = 0  # see bytes_pending
        self._abandon = False
        self._syncer: BackgroundSync | None = None
        self._hasher: BackgroundHasher | None = None
        self._uncompressed_chunks = 0

        self._closed = False
        try:
            self._file: IO[bytes] = open(self._path, "xb")  # noqa: SIM115 - closed in close()
        except FileExistsError as exc:
            raise McapWriterError(
                f"{self._path} exists already, not overwriting", errno=exc.errno
            ) from exc
        except OSError as exc:
            raise McapWriterError(
                f"{self._path}: cannot create: {exc.strerror}", errno=exc.errno
            ) from exc
        try:
            self._write(MCAP_MAGIC)
            self._write(_encode(Header(profile=profile, library=library)))
        except McapWriterError:
            self.abort()  # don't leak the descriptor; the empty file stays (never ours to delete)
            raise
        if background:
            self._jobs = queue.Queue()
            for _ in range(_CHUNK_BUFFERS - 1):
                self._pool.put(None)  # allocated on first use
            self._io_thread = threading.Thread(
                target=self._io_loop, name="xsq-mcap-io", daemon=True
            )
            self._io_thread.start()
            self._syncer = BackgroundSync(self._file.fileno(), name="xsq-mcap-fsync")
            # The same hashlib object (magic and header are in it already): the hasher
            # thread feeds it until close() stops it.
            self._hasher = BackgroundHasher(self._sha, name="xsq-mcap-sha256")

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> str:
        """The path this writer writes to."""
        return self._path

    @property
    def compression(self) -> str:
        """Chunk compression as named in the constructor (``"none"`` for uncompressed)."""
        return self._compression or "none"

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or :meth:`abort`."""
        return self._closed

    @property
    def bytes_written(self) -> int:
        """Bytes handed to the file object so far (not the open chunk, nor chunks still
        queued for the I/O thread in background mode)."""
        return self._offset

    @property
    def uncompressed_chunks(self) -> int:
        """Chunks written so far without compression although compression was asked for."""
        return self._uncompressed_chunks

    @property
    def chunk_count(self) -> int:
        """Chunks written to the file so far."""
        return len(self._chunk_indexes)

    @property
    def bytes_pending(self) -> int:
        """Uncompressed bytes of chunks handed to the I/O thread and not written yet (an
        upper bound of what they add to :attr:`bytes_written`; 0 when not in background)."""
        return self._pending

    @property
    def message_count(self) -> int:
        """Messages added so far, including those still in the open chunk."""
        return self._message_count

    @property
    def message_start_time(self) -> int | None:
        """Smallest ``log_time`` added so far (ns), or None before the first message."""
        return self._start_time

    @property
    def message_end_time(self) -> int | None:
        """Largest ``log_time`` added so far (ns), or None before the first message."""
        return self._end_time

    @property
    def channel_message_counts(self) -> dict[int, int]:
        """Channel id -> messages added, for channels with at least one message (a copy)."""
        return {cid: n for cid, n in self._counts.items() if n}

    def sha256_hexdigest(self) -> str:
        """SHA-256 (hex) of every byte written so far; that of the whole file after close()."""
        if self._hasher is not None:
            return self._hasher.hexdigest()
        return self._sha.hexdigest()

    # ------------------------------------------------------------------ registration

    def register_schema(self, name: str, encoding: str, data: bytes) -> int:
        """Register a schema and write its Schema record; return its id (>= 1).

        Args:
            name: Schema name; for ROS 2 the type name, e.g. ``"sensor_msgs/msg/Image"``.
            encoding: Schema encoding, e.g. ``"ros2msg"``.
            data: Schema text (see :func:`xsquare_logger.bag.schema.ros2msg_schema`).

        Registering the same (name, encoding, data) again returns the same id.
        """
        self._check_open()
        data = bytes(data)
        key = (name, encoding, data)
        schema_id = self._schema_ids.get(key)
        if schema_id is not None:
            return schema_id
        schema_id = len(self._schema_records) + 1
        if schema_id > _MAX_ID:
            raise McapWriterError(f"{self._path}: more than {_MAX_ID} schemas")
        record = _encode(Schema(id=schema_id, data=data, encoding=encoding, name=name))
        self._submit(lambda: self._write(record))
        self._schema_ids[key] = schema_id
        self._schema_records.append(record)
        return schema_id

    def register_channel(
        self,
        topic: str,
        message_encoding: str,
        schema_id: int,
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Register a channel and write its Channel record; return its id (>= 1).

        Args:
            topic: Topic name, e.g. ``"/camera/head/image_raw"``.
            message_encoding: Message encoding, ``"cdr"`` for ROS 2.
            schema_id: Id from :meth:`register_schema`, or 0 for schemaless channels.
            metadata: Channel metadata. rosbag2 writes ``offered_qos_profiles`` (YAML list)
                and ``topic_type_hash`` (the ``RIHS01_...`` string).

        The same (topic, schema_id, message_encoding) returns the existing id; the metadata
        of the first registration is kept.
        """
        self._check_open()
        key = (topic, schema_id, message_encoding)
        channel_id = self._channel_ids.get(key)
        if channel_id is not None:
            return channel_id
        if schema_id != 0 and not 1 <= schema_id <= len(self._schema_records):
            raise McapWriterError(
                f"{self._path}: channel {topic!r} references unknown schema id {schema_id}"
            )
        channel_id = len(self._channel_records) + 1
        if channel_id > _MAX_ID:
            raise McapWriterError(f"{self._path}: more than {_MAX_ID} channels")
        record = _encode(
            Channel(
                id=channel_id,
                topic=topic,
                message_encoding=message_encoding,
                metadata=dict(metadata or {}),
                schema_id=schema_id,
            )
        )
        self._submit(lambda: self._write(record))
        self._channel_ids[key] = channel_id
        self._channel_records.append(record)
        self._counts[channel_id] = 0
        return channel_id

    # ------------------------------------------------------------------ data

    def add_message(
        self,
        channel_id: int,
        log_time: int,
        publish_time: int,
        data: bytes | bytearray | memoryview,
        sequence: int = 0,
    ) -> None:
        """Append one message to the open chunk.

        Args:
            channel_id: Id from :meth:`register_channel`.
            log_time: Receive time in nanoseconds.
            publish_time: Publish (source) time in nanoseconds.
            data: Serialized message (CDR for ROS 2). Copied; the caller may reuse it.
            sequence: Publisher sequence number (stored modulo 2**32; 0 when unknown).

        The chunk is compressed and written once its uncompressed size reaches ``chunk_size``.
        """
        try:
            self._counts[channel_id] += 1
        except KeyError:
            self._check_open()
            raise McapWriterError(
                f"{self._path}: message for unregistered channel id {channel_id}"
            ) from None
        if self._closed:  # counted above; undo so the statistics stay truthful
            self._counts[channel_id] -= 1
            self._check_open()
        if type(data) is memoryview and data.itemsize != 1:
            data = data.cast("B")  # len() must count bytes
        size = len(data)
        pos = self._buf_len
        end = pos + _MESSAGE_HEADER_SIZE + size
        buf = self._buf
        if end > len(buf):
            # Rare: only while the buffer grows to chunk_size + the largest message.
            buf.extend(bytes(max(end - len(buf), len(buf) // 2)))
        try:
            _MESSAGE_HEADER.pack_into(
                buf, pos, Opcode.MESSAGE, _MESSAGE_FIXED + size, channel_id,
                sequence & 0xFFFFFFFF, log_time, publish_time,
            )  # fmt: skip
        except struct.error:
            self._counts[channel_id] -= 1
            raise McapWriterError(
                f"{self._path}: log_time {log_time} / publish_time {publish_time} "
                "must be integers in [0, 2**64) nanoseconds"
            ) from None
        buf[pos + _MESSAGE_HEADER_SIZE : end] = data
        self._buf_len = end

        index = self._chunk_index.get(channel_id)
        if index is None:
            self._chunk_index[channel_id] = [log_time, pos]
        else:
            index.append(log_time)
            index.append(pos)

        if self._chunk_messages:
            if log_time < self._chunk_end:
                self._chunk_unsorted = True
                if log_time < self._chunk_start:
                    self._chunk_start = log_time
            else:
                self._chunk_end = log_time
        else:
            self._chunk_start = self._chunk_end = log_time
        self._chunk_messages += 1

        if self._message_count:
            # _start_time/_end_time are ints once _message_count > 0 (set by the first message).
            if log_time < self._start_time:  # type: ignore[operator]  # int here, see above
                self._start_time = log_time
            elif log_time > self._end_time:  # type: ignore[operator]  # int here, see above
                self._end_time = log_time
        else:
            self._start_time = self._end_time = log_time
        self._message_count += 1

        if end >= self._chunk_size:
            self._close_chunk()

    def add_metadata(self, name: str, metadata: dict[str, str]) -> None:
        """Write a Metadata record (indexed in the summary).

        Args:
            name: Record name; rosbag2 uses ``"rosbag2"`` with key ``serialized_metadata``.
            metadata: String key/value pairs.
        """
        self._check_open()
        record = _encode(Metadata(name=name, metadata=dict(metadata)))

        def job() -> None:
            offset = self._offset
            self._write(record)
            self._metadata_indexes.append(
                MetadataIndex(offset=offset, length=len(record), name=name)
            )

        self._submit(job)

    def add_attachment(
        self,
        name: str,
        data: bytes,
        *,
        media_type: str = "application/octet-stream",
        log_time: int | None = None,
        create_time: int = 0,
    ) -> None:
        """Write an Attachment record (indexed in the summary).

        Args:
            name: Attachment name, e.g. ``"calibration.yaml"``.
            data: Attachment content.
            media_type: MIME type of ``data``.
            log_time: Time the attachment was recorded (ns); defaults to now (Unix epoch).
            create_time: Time the attachment was created (ns); 0 when unknown.
        """
        self._check_open()
        if log_time is None:
            log_time = time.time_ns()
        data = bytes(data)
        # mcap.records fills in the attachment CRC (over every field before it, per the spec).
        record = _encode(
            Attachment(
                create_time=create_time,
                log_time=log_time,
                name=name,
                media_type=media_type,
                data=data,
            )
        )
        index = AttachmentIndex(
            offset=0,
            length=len(record),
            log_time=log_time,
            create_time=create_time,
            data_size=len(data),
            name=name,
            media_type=media_type,
        )

        def job() -> None:
            index.offset = self._offset
            self._write(record)
            self._attachment_indexes.append(index)

        self._submit(job)

    def flush(self, fsync: bool = True, wait: bool = True) -> None:
        """Close the open chunk (if it holds messages) and push everything to the OS.

        Args:
            fsync: Also sync the file to disk so the data survives a power loss.
            wait: In background mode, wait until that is done (and raise its error). With
                ``wait=False`` the flush is queued behind the chunks before it and this
                returns at once; the I/O thread pushes the bytes to the OS and asks the
                sync thread for an fdatasync, which runs while later chunks are written
                (an error is raised by the next call). The recorder does that: the I/O
                thread is at most ``_CHUNK_BUFFERS`` chunks behind and the sync at most one
                sync's duration, so the data is on disk moments later, and neither packing
                nor writing stalls on the disk.

        Everything added before this call is then readable from the file even if the process
        dies before :meth:`close` (see :func:`~xsquare_logger.bag.recover.recover_mcap`).
        """
        self._check_open()
        if self._chunk_messages:
            self._close_chunk()

        syncer = None if wait else self._syncer

        def job() -> None:
            try:
                self._file.flush()
                if fsync and syncer is None:
                    os.fsync(self._file.fileno())
            except OSError as exc:
                raise self._io_error("flush", exc) from exc
            if fsync and syncer is not None:
                syncer.request()  # after the bytes reached the OS: the sync covers them

        if wait:
            self._drain()
            job()
        else:
            self._submit(job)

    # ------------------------------------------------------------------ finishing

    def close(self) -> None:
        """Finish the file: last chunk, DataEnd, summary, footer, magic; fsync and close.

        Idempotent. If writing fails (e.g. disk full) the file descriptor is still closed and
        :class:`McapWriterError` is raised; the file can then be repaired by
        :func:`~xsquare_logger.bag.recover.recover_mcap`.
        """
        if self._closed:
            return
        try:
            if self._chunk_messages:
                self._close_chunk()
            try:
                self._drain()
            finally:
                self._stop_io()
                self._stop_sync()
                self._stop_hash()  # then the summary below is hashed inline
            self._raise_bg_error()  # a failed background fsync fails the close
            # data_section_crc=0: not computed (see the module docstring).
            self._write(_encode(DataEnd(data_section_crc=0)))
            self._write_summary()
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            raise self._io_error("close", exc) from exc
        finally:
            self._closed = True
            self._stop_io()  # no-ops unless a call above raised before stopping them
            self._stop_sync()
            self._stop_hash()
            # Already reported above, or nothing more we can do.
            with contextlib.suppress(OSError):
                self._file.close()

    def abort(self) -> None:
        """Close the file descriptor without a summary (e.g. when the disk is full).

        Messages in the open chunk are discarded. Bytes already written stay; the file is left
        truncated but repairable by :func:`~xsquare_logger.bag.recover.recover_mcap`.
        Idempotent; never raises for I/O errors.
        """
        if self._closed:
            return
        self._closed = True
        self._abandon = True  # queued chunks are discarded, like the open one
        self._stop_io()
        self._stop_sync()  # before the descriptor closes (it could be reused)
        self._stop_hash()
        self._buf_len = 0
        self._chunk_messages = 0
        self._chunk_index = {}
        # BufferedWriter.close() closes the descriptor even when its final flush fails.
        with contextlib.suppress(OSError):
            self._file.close()

    def __enter__(self) -> McapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # Finish the file even on error, but never mask the original exception.
        try:
            self.close()
        except McapWriterError:
            self.abort()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"McapWriter({self._path!r}, compression={self.compression!r}, {state}, "
            f"messages={self._message_count}, bytes_written={self._offset})"
        )

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise McapWriterError(f"{self._path}: writer is closed")

    # -- background I/O ------------------------------------------------------------------

    def _submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` now, or (background mode) queue it behind everything before it."""
        if self._jobs is None:
            job()
            return
        self._raise_bg_error()
        self._jobs.put((job, None))

    def _raise_bg_error(self) -> None:
        exc = self._bg_error
        if exc is None and self._syncer is not None and self._syncer.error is not None:
            exc = self._bg_error = self._io_error("fsync", self._syncer.error)
        if exc is None:
            return
        if isinstance(exc, McapWriterError):
            raise exc
        raise McapWriterError(f"{self._path}: background write failed: {exc!r}") from exc

    def _drain(self) -> None:
        """Wait until the I/O thread has written everything queued; raise its error."""
        if self._jobs is not None:
            self._jobs.join()
            self._raise_bg_error()

    def _stop_io(self) -> None:
        jobs, thread = self._jobs, self._io_thread
        if jobs is None or thread is None:
            return
        jobs.put(None)
        thread.join()
        self._jobs = self._io_thread = None

    def _stop_sync(self) -> None:
        if self._syncer is not None:
            self._syncer.stop()

    def _stop_hash(self) -> None:
        if self._hasher is not None:
            self._hasher.stop()
            self._hasher = None

    def _io_loop(self) -> None:
        jobs = self._jobs
        assert jobs is not None
        while True:
            item = jobs.get()
            if item is None:
                jobs.task_done()
                return
            work, cleanup = item
            try:
                if self._bg_error is None and not self._abandon:
                    work()
            except BaseException as exc:  # raised again on the caller's thread
                self._bg_error = exc
            finally:
                if cleanup is not None:
                    hasher = self._hasher
                    if hasher is not None:
                        hasher.after(cleanup)  # the buffer is free once hashed too
                    else:
                        cleanup()
                jobs.task_done()

    def _io_error(self, what: str, exc: OSError) -> McapWriterError:
        return McapWriterError(f"{self._path}: {what} failed: {exc.strerror}", errno=exc.errno)

    def _write(self, data: Any, owner: bytearray | None = None) -> None:
        """Write bytes (immutable, or a buffer nobody changes) into the file and SHA-256.

        ``owner``: the buffer ``data`` is a view of (an uncompressed chunk body); the hasher
        thread is given it instead, because the view is released when the caller's
        ``with`` ends, before the hasher gets to it."""
        try:
            self._file.write(data)
        except OSError as exc:
            raise self._io_error("write", exc) from exc
        if self._hasher is None:
            self._sha.update(data)
        elif owner is None:
            self._hasher.update(data)
        else:
            self._hasher.update(owner, len(data))
        self._offset += len(data)

    def _close_chunk(self) -> None:
        """Hand the open chunk to :meth:`_finish_chunk` (now, or on the I/O thread)."""
        buf, n = self._buf, self._buf_len
        start, end = self._chunk_start, self._chunk_end
        index, unsorted = self._chunk_index, self._chunk_unsorted
        if self._jobs is not None:
            self._raise_bg_error()
            spare = self._pool.get()  # blocks while every buffer is queued or being written
            self._buf = spare if spare is not None else bytearray(len(buf))
            self._pending += n

            def done() -> None:
                self._pending -= n  # after _offset grew: the sum never dips below the truth
                self._pool.put(buf)

            self._jobs.put(
                (
                    lambda: self._finish_chunk(buf, n, start, end, index, unsorted),
                    done,
                )
            )
        else:
            self._finish_chunk(buf, n, start, end, index, unsorted)
        self._buf_len = 0
        self._chunk_messages = 0
        self._chunk_unsorted = False
        self._chunk_index = {}

    def _compress(self, body: memoryview) -> Any:
        """The chunk's compressed payload, or ``body`` itself to store it uncompressed."""
        if not self._compression:
            return body
        if (self._jobs is not None and self._pool.qsize() == 0) or not self._pays(body):
            # No spare buffer: the packer is waiting for this thread, so write now rather
            # than let the recorder's queue fill while we compress.
            self._uncompressed_chunks += 1
            return body
        payload = self._zstd.compress(body) if self._zstd else lz4.frame.compress(body)
        if len(payload) >= len(body):
            # Noisy frames can grow under lz4; store such a chunk uncompressed (as the C++
            # writer rosbag2 uses does unless forceCompression is set).
            self._uncompressed_chunks += 1
            return body
        return payload

    def _pays(self, body: memoryview) -> bool:
        """Would compressing ``body`` save at least ``_MIN_SAVING``? Judged on a sample."""
        n = len(body)
        if n <= _SAMPLE_BYTES:
            return True  # small chunks (flushed each second) are cheap to compress anyway
        part = _SAMPLE_BYTES // 3
        # Begin, middle and end: a chunk interleaves images and small messages in
        # arrival order, so one slice could see only one kind.
        cuts = (0, (n - part) // 2, n - part)
        packed = sum(
            len(self._zstd.compress(body[c : c + part]))
            if self._zstd
            else len(lz4.frame.compress(body[c : c + part]))
            for c in cuts
        )
        return packed <= (1 - _MIN_SAVING) * 3 * part

    def _finish_chunk(
        self,
        buf: bytearray,
        n: int,
        chunk_start: int,
        chunk_end: int,
        chunk_index: dict[int, list[int]],
        unsorted: bool,
    ) -> None:
        """Compress a packed chunk and write it, followed by one MessageIndex per channel."""
        with memoryview(buf) as whole, whole[:n] as body:
            crc = crc32(body)  # zlib-ng's: ~5x zlib's, and it releases the GIL too
            payload = self._compress(body)
            field = self._compression_field if payload is not body else _NO_COMPRESSION
            compressed_size = len(payload)
            head = (
                _CHUNK_HEAD.pack(
                    Opcode.CHUNK,
                    8 + 8 + 8 + 4 + len(field) + 8 + compressed_size,
                    chunk_start,
                    chunk_end,
                    n,
                    crc,
                    len(field) - 4,
                )
                + field[4:]
                + _U64.pack(compressed_size)
            )
            chunk_offset = self._offset
            self._write(head)
            self._write(payload, owner=buf if payload is body else None)
            del payload  # drop any export of the buffer before it is reused
        chunk_length = self._offset - chunk_offset

        # MessageIndex records are packed here, not by mcap.records.MessageIndex (two struct
        # calls per entry): one chunk indexes up to ~1,000 joint-state messages.
        index_start = self._offset
        offsets: dict[int, int] = {}
        index_records: list[bytes] = []
        position = index_start
        for channel_id, flat in chunk_index.items():
            entries = len(flat) // 2
            if unsorted:
                pairs = sorted(zip(flat[0::2], flat[1::2], strict=True))
                flat = [v for pair in pairs for v in pair]
            record = (
                _RECORD_HEADER.pack(Opcode.MESSAGE_INDEX, 2 + 4 + 16 * entries)
                + _U16.pack(channel_id)
                + _U32.pack(16 * entries)
                + struct.pack(f"<{2 * entries}Q", *flat)
            )
            offsets[channel_id] = position
            index_records.append(record)
            position += len(record)
        self._write(b"".join(index_records))
        index_length = self._offset - index_start

        self._chunk_indexes.append(
            ChunkIndex(
                message_start_time=chunk_start,
                message_end_time=chunk_end,
                chunk_start_offset=chunk_offset,
                chunk_length=chunk_length,
                message_index_offsets=offsets,
                message_index_length=index_length,
                compression=str(field[4:], "utf-8"),
                compressed_size=compressed_size,
                uncompressed_size=n,
            )
        )

    def _write_summary(self) -> None:
        """Write summary, summary offsets, footer and trailing magic."""
        summary_start = self._offset
        statistics = Statistics(
            message_count=self._message_count,
            schema_count=len(self._schema_records),
            channel_count=len(self._channel_records),
            attachment_count=len(self._attachment_indexes),
            metadata_count=len(self._metadata_indexes),
            chunk_count=len(self._chunk_indexes),
            message_start_time=self._start_time or 0,
            message_end_time=self._end_time or 0,
            channel_message_counts=self.channel_message_counts,
        )
        groups: list[tuple[int, bytes]] = [
            # Schema and Channel records were encoded once, when registered.
            (Opcode.SCHEMA, b"".join(self._schema_records)),
            (Opcode.CHANNEL, b"".join(self._channel_records)),
            (Opcode.STATISTICS, _encode(statistics)),
            (Opcode.CHUNK_INDEX, _encode(*self._chunk_indexes)),
            (Opcode.ATTACHMENT_INDEX, _encode(*self._attachment_indexes)),
            (Opcode.METADATA_INDEX, _encode(*self._metadata_indexes)),
        ]
        summary: list[bytes] = []
        summary_offsets: list[SummaryOffset] = []
        position = summary_start
        for opcode, blob in groups:
            if not blob:
                # An offset pointing at an empty group is flagged by validators
                # (pymcap-cli doctor: SUMMARY_OFFSET_WITHOUT_GROUP); the spec allows omitting it.
                continue
            summary.append(blob)
            summary_offsets.append(
                SummaryOffset(group_opcode=opcode, group_start=position, group_length=len(blob))
            )
            position += len(blob)
        summary_offset_start = position
        summary_bytes = b"".join(summary) + _encode(*summary_offsets)
        self._write(summary_bytes)
        # Footer CRC covers the summary and summary-offset sections plus the footer's own
        # fields up to summary_offset_start.
        footer_head = _FOOTER_HEAD.pack(Opcode.FOOTER, 20, summary_start, summary_offset_start)
        summary_crc = zlib.crc32(footer_head, zlib.crc32(summary_bytes))
        footer = Footer(
            summary_start=summary_start,
            summary_offset_start=summary_offset_start,
            summary_crc=summary_crc,
        )
        self._write(_encode(footer) + MCAP_MAGIC)
