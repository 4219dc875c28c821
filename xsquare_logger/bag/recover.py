"""Repair an MCAP file left behind by a crash, a power loss or a full disk.

The recorder writes ``X.mcap.active`` and renames it to ``X.mcap`` after a clean close. When
the process dies first, the ``.active`` file has no summary and usually ends inside a record.
Because :class:`~xsquare_logger.bag.mcap_writer.McapWriter` writes Schema and Channel records
into the data section and closes a chunk at least once a second, everything up to the last
complete chunk can be read back record by record.

:func:`recover_mcap` keeps every Schema, Channel, Metadata and Attachment record and every
message of every complete chunk whose CRC verifies, drops the chunk cut by the crash (and any
corrupt one), writes a new valid, indexed MCAP next to it with the same compression and
profile, fsyncs it, and only then removes the ``.active`` file. A file that is in fact complete
(closed cleanly, but not renamed) is verified and renamed without rewriting.

All times are integer nanoseconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import zstandard
from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Attachment, Channel, Chunk, Header, McapRecord, Message, Metadata, Schema
from mcap.stream_reader import StreamReader, breakup_chunk

from xsquare_logger.bag.mcap_writer import MCAP_MAGIC, McapWriter, McapWriterError, Opcode
from xsquare_logger.errors import XsqError

__all__ = ["RecoveryError", "RecoveryResult", "recover_mcap"]

_RECORD_HEADER = struct.Struct("<BQ")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CHUNK_FIXED = struct.Struct("<QQQII")  # start, end, uncompressed size, crc, len(compression)
_MESSAGE_FIXED_SIZE = 2 + 4 + 8 + 8  # channel id, sequence, log_time, publish_time
_FOOTER_TAIL = 1 + 8 + 20 + len(MCAP_MAGIC)  # footer record + trailing magic
_DATA_END_SIZE = 1 + 8 + 4
_SUFFIX = ".active"


class RecoveryError(XsqError):
    """The file cannot be recovered (not an MCAP file, no valid header, target exists, ...)."""


@dataclass
class RecoveryResult:
    """What :func:`recover_mcap` produced.

    Attributes:
        out_path: The recovered (or renamed) MCAP file.
        messages_recovered: Messages in ``out_path``.
        chunks_recovered: Complete, CRC-valid chunks read from the source.
        chunks_dropped: Chunks lost because they were truncated, corrupt or undecodable.
        bytes_discarded: Source bytes dropped: damaged chunks plus the truncated/corrupt tail.
        message_counts: Topic -> messages recovered.
        message_start_time: Smallest log_time recovered (ns), None without messages.
        message_end_time: Largest log_time recovered (ns), None without messages.
        topics: Topic -> (type/schema name, message encoding, channel metadata).
        metadata: Metadata record name -> key/value pairs (last record of a name wins).
        sha256: SHA-256 (hex) of ``out_path``.
        size: Size of ``out_path`` in bytes.
        was_complete: The source already had a valid summary and footer; it was renamed or
            copied unchanged.
        messages_skipped: Messages in good chunks dropped because their channel was unknown.
    """

    out_path: Path
    messages_recovered: int = 0
    chunks_recovered: int = 0
    chunks_dropped: int = 0
    bytes_discarded: int = 0
    message_counts: dict[str, int] = field(default_factory=dict)
    message_start_time: int | None = None
    message_end_time: int | None = None
    topics: dict[str, tuple[str, str, dict[str, str]]] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    sha256: str = ""
    size: int = 0
    was_complete: bool = False
    messages_skipped: int = 0


# ---------------------------------------------------------------------------- record parsing
#
# The file is walked record by record here (opcode + length framing: that is what finds the
# crash point), but every record *body* is decoded by the official ``mcap.records`` readers
# and chunks by ``mcap.stream_reader.breakup_chunk``.


class _Corrupt(Exception):
    """A record body does not parse (internal)."""


# What the mcap readers raise on a short or malformed body: EndOfFile at the end of the data,
# struct.error for a short fixed field, UnicodeDecodeError for a bad string, ValueError
# (CRCValidationError) for a chunk CRC mismatch, ZstdError / RuntimeError (lz4) from the
# decompressors.
_PARSE_ERRORS = (
    McapError,
    struct.error,
    UnicodeDecodeError,
    ValueError,
    RuntimeError,
    zstandard.ZstdError,
)
_COMPRESSIONS = frozenset({"", "zstd", "lz4"})

_Parsed = TypeVar("_Parsed")


def _parse(read: Callable[[ReadDataStream], _Parsed], body: bytes) -> _Parsed:
    """Decode one whole record body with an ``mcap.records`` reader; it must use every byte."""
    stream = ReadDataStream(io.BytesIO(body))
    try:
        record = read(stream)
    except _PARSE_ERRORS as exc:
        raise _Corrupt from exc
    if stream.count != len(body):
        raise _Corrupt
    return record


def _parse_chunk(body: bytes) -> list[McapRecord]:
    """Decode a complete Chunk record body into its records; _Corrupt if anything is off."""
    chunk = _parse(Chunk.read, body)
    if chunk.compression not in _COMPRESSIONS:
        raise _Corrupt  # breakup_chunk would take unknown compressions for raw bytes
    try:
        # validate_crc: a chunk whose content does not match its CRC is dropped whole.
        records = breakup_chunk(chunk, validate_crc=True)
    except _PARSE_ERRORS as exc:
        raise _Corrupt from exc
    # Anything but Schema/Channel/Message inside a chunk is not allowed by the spec;
    # breakup_chunk skips it.
    return records


def _parse_attachment(body: bytes) -> Attachment:
    attachment = _parse(Attachment.read, body)  # reads, but does not check, the CRC
    crc = _U32.unpack_from(body, len(body) - 4)[0]
    if crc != 0 and zlib.crc32(memoryview(body)[:-4]) != crc:
        raise _Corrupt
    return attachment


def _parse_message(body: bytes) -> Message:
    if len(body) < _MESSAGE_FIXED_SIZE:
        raise _Corrupt
    return _parse(lambda stream: Message.read(stream, len(body)), body)


# ---------------------------------------------------------------------------- rebuilding


class _Rebuilder:
    """Feeds parsed records into a new McapWriter, mapping old ids to new ones."""

    def __init__(self, writer: McapWriter) -> None:
        self.writer = writer
        self.schemas: dict[int, Schema] = {}
        self.schema_map: dict[int, int] = {}
        self.channel_map: dict[int, int] = {}
        self.channels: dict[int, Channel] = {}
        self.topics: dict[str, tuple[str, str, dict[str, str]]] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.topic_of: dict[int, str] = {}  # new channel id -> topic
        self.skipped = 0

    def schema(self, s: Schema) -> None:
        if s.id == 0 or s.id in self.schemas:
            return
        self.schemas[s.id] = s
        self.schema_map[s.id] = self.writer.register_schema(s.name, s.encoding, s.data)

    def channel(self, ch: Channel) -> None:
        if ch.id in self.channels:
            return
        self.channels[ch.id] = ch
        schema = self.schemas.get(ch.schema_id)
        self.topics[ch.topic] = (schema.name if schema else "", ch.message_encoding, ch.metadata)
        # A channel whose schema record was lost keeps its data, just without a schema.
        new_schema = self.schema_map.get(ch.schema_id, 0)
        new_id = self.writer.register_channel(
            ch.topic, ch.message_encoding, new_schema, ch.metadata
        )
        self.channel_map[ch.id] = new_id
        self.topic_of[new_id] = ch.topic

    def metadata_record(self, record: Metadata) -> None:
        self.metadata[record.name] = record.metadata
        self.writer.add_metadata(record.name, record.metadata)

    def attachment(self, a: Attachment) -> None:
        self.writer.add_attachment(
            a.name, a.data, media_type=a.media_type, log_time=a.log_time, create_time=a.create_time
        )

    def records(self, records: list[McapRecord]) -> None:
        """Messages, schemas and channels, in file order (the contents of a chunk)."""
        add = self.writer.add_message
        channel_map = self.channel_map
        for record in records:
            if type(record) is Message:
                new_id = channel_map.get(record.channel_id)
                if new_id is None:
                    self.skipped += 1
                    continue
                add(new_id, record.log_time, record.publish_time, record.data, record.sequence)
            elif type(record) is Schema:
                self.schema(record)
            elif type(record) is Channel:
                self.channel(record)


def _guess_compression(f: IO[bytes], offset: int, size: int) -> str:
    """Compression of the first compressed chunk ("" if none is), from record headers only.

    Looking past the first chunk matters: a chunk that would not shrink is stored
    uncompressed even in a zstd/lz4 recording.
    """
    f.seek(offset)
    seen_chunk = False
    for _ in range(100_000):  # bounded: files without chunks could hold millions of records
        head = f.read(9)
        if len(head) < 9:
            break
        opcode, length = _RECORD_HEADER.unpack(head)
        if opcode == 0 or length > size - offset - 9 or opcode == Opcode.DATA_END:
            break
        if opcode == Opcode.CHUNK:
            seen_chunk = True
            fixed = f.read(_CHUNK_FIXED.size)
            if len(fixed) < _CHUNK_FIXED.size:
                break
            name_len = _CHUNK_FIXED.unpack(fixed)[4]
            name = f.read(min(name_len, 64))
            if name:
                return name.decode("utf-8", "replace")
        offset += 9 + length
        f.seek(offset)
    return "" if seen_chunk else "zstd"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # not supported here (e.g. some network file systems); best effort
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _place(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` without ever replacing an existing ``dst``."""
    try:
        os.link(src, dst)  # atomic, and fails if dst exists
    except FileExistsError as exc:
        raise RecoveryError(f"{dst} exists already, not overwriting") from exc
    except OSError:
        # No hard links on this file system (FAT/exFAT USB disks): check, then rename.
        if dst.exists():
            raise RecoveryError(f"{dst} exists already, not overwriting") from None
        os.rename(src, dst)
    else:
        src.unlink()
    _fsync_dir(dst.parent)


def _default_out_path(active: Path) -> Path:
    if active.name.endswith(_SUFFIX) and len(active.name) > len(_SUFFIX):
        return active.with_name(active.name[: -len(_SUFFIX)])
    return active.with_name(f"{active.stem}.recovered{active.suffix or '.mcap'}")


# ---------------------------------------------------------------------------- complete files


def _chunks_intact(src: Path) -> bool:
    """Every chunk's content matches its CRC (files without a data-section CRC: ours).

    The writer leaves the data-section CRC out (0, "not computed"), so a complete file is
    trusted only after every chunk was decompressed and checked; a rare path (a recorder
    killed between closing a file and renaming it), so the extra pass costs nothing live.
    """
    try:
        with open(src, "rb") as f:
            for _ in StreamReader(f, skip_magic=False, validate_crcs=True).records:
                pass
    except Exception:  # any mismatch or parse failure: rebuild instead
        return False
    return True


def _try_complete(
    src: Path, size: int, out_path: Path, remove_source: bool
) -> RecoveryResult | None:
    """If ``src`` is a complete, consistent MCAP, move/copy it to ``out_path``; else None."""
    if size < len(MCAP_MAGIC) * 2 + _FOOTER_TAIL:
        return None
    with open(src, "rb") as f:
        f.seek(size - _FOOTER_TAIL)
        tail = f.read(_FOOTER_TAIL)
        opcode, length = _RECORD_HEADER.unpack_from(tail, 0)
        if opcode != Opcode.FOOTER or length != 20 or tail[-8:] != MCAP_MAGIC:
            return None
        summary_start = _U64.unpack_from(tail, 9)[0]
        data_end_at = summary_start - _DATA_END_SIZE
        if summary_start == 0 or data_end_at < 0 or summary_start > size - _FOOTER_TAIL:
            return None  # no summary: rebuild to get an indexed file
        try:
            f.seek(0)
            reader = make_reader(f)
            summary = reader.get_summary()
            metadata = {m.name: dict(m.metadata) for m in reader.iter_metadata()}
        except Exception:  # any parse failure means "not complete": rebuild instead
            return None
        if summary is None or summary.statistics is None:
            return None
        # One pass: SHA-256 of the file and CRC of the data section, checked against DataEnd.
        f.seek(0)
        sha = hashlib.sha256()
        crc = 0
        position = 0
        data_end = b""
        while block := f.read(1 << 20):
            sha.update(block)
            if position < data_end_at:
                crc = zlib.crc32(block[: data_end_at - position], crc)
            if position < summary_start and position + len(block) > data_end_at:
                data_end += block[max(0, data_end_at - position) : summary_start - position]
            position += len(block)
    if len(data_end) != _DATA_END_SIZE:
        return None
    opcode, length = _RECORD_HEADER.unpack_from(data_end, 0)
    stored_crc = _U32.unpack_from(data_end, 9)[0]
    if opcode != Opcode.DATA_END or length != 4 or (stored_crc not in (0, crc)):
        return None
    if stored_crc == 0 and not _chunks_intact(src):
        return None

    if remove_source:
        _place(src, out_path)
    else:
        tmp = out_path.with_name(out_path.name + ".recovering")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _place(tmp, out_path)

    stats = summary.statistics
    result = RecoveryResult(
        out_path=out_path,
        messages_recovered=stats.message_count,
        chunks_recovered=stats.chunk_count,
        sha256=sha.hexdigest(),
        size=size,
        was_complete=True,
        metadata=metadata,
    )
    if stats.message_count:
        result.message_start_time = stats.message_start_time
        result.message_end_time = stats.message_end_time
    for channel_id, channel in summary.channels.items():
        schema = summary.schemas.get(channel.schema_id)
        result.topics[channel.topic] = (
            schema.name if schema else "",
            channel.message_encoding,
            dict(channel.metadata),
        )
        count = stats.channel_message_counts.get(channel_id, 0)
        result.message_counts[channel.topic] = result.message_counts.get(channel.topic, 0) + count
    return result


# ---------------------------------------------------------------------------- entry point


def _read_header(f: IO[bytes], src: Path, size: int) -> tuple[str, str, int]:
    """Check magic + Header record; return (profile, library, offset after the header)."""
    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise RecoveryError(f"{src}: not an MCAP file (bad magic)")
    head = f.read(9)
    if len(head) < 9:
        raise RecoveryError(f"{src}: truncated inside the MCAP Header record")
    opcode, length = _RECORD_HEADER.unpack(head)
    if opcode != Opcode.HEADER:
        raise RecoveryError(f"{src}: first record is opcode 0x{opcode:02x}, not a Header")
    if length > size - len(MCAP_MAGIC) - 9:
        raise RecoveryError(f"{src}: truncated inside the MCAP Header record")
    try:
        header = _parse(Header.read, f.read(length))
    except _Corrupt as exc:
        raise RecoveryError(f"{src}: corrupt MCAP Header record") from exc
    return header.profile, header.library, len(MCAP_MAGIC) + 9 + length


def recover_mcap(
    active_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    *,
    remove_source: bool | None = None,
) -> RecoveryResult:
    """Rebuild a valid, indexed MCAP file from a crashed or unfinished one.

    Args:
        active_path: The damaged file, typically ``X.mcap.active``.
        out_path: Where to write the result. Defaults to ``active_path`` without ``.active``
            (or ``<stem>.recovered.mcap`` for other names). Never overwritten.
        remove_source: Delete ``active_path`` once the result is complete and fsynced.
            Default: only when its name ends in ``.active`` (the recorder's own leftovers).

    Returns:
        What was recovered and lost; see :class:`RecoveryResult`.

    Raises:
        RecoveryError: if ``active_path`` is missing, not an MCAP file or has no valid Header
            record, or if ``out_path`` exists.
    """
    src = Path(active_path)
    dst = Path(out_path) if out_path is not None else _default_out_path(src)
    if remove_source is None:
        remove_source = src.name.endswith(_SUFFIX)
    if dst.exists():
        raise RecoveryError(f"{dst} exists already, not overwriting (recovering {src})")
    try:
        size = src.stat().st_size
    except OSError as exc:
        raise RecoveryError(f"{src}: cannot read: {exc.strerror}") from exc

    with open(src, "rb") as f:
        profile, library, offset = _read_header(f, src, size)

    complete = _try_complete(src, size, dst, remove_source)
    if complete is not None:
        return complete

    result = RecoveryResult(out_path=dst)
    tmp_path = dst.with_name(dst.name + ".recovering")
    with contextlib.suppress(FileNotFoundError):
        tmp_path.unlink()  # a leftover of an earlier, interrupted recovery (ours by name)
    with open(src, "rb") as f:
        compression = _guess_compression(f, offset, size)
        if compression not in ("zstd", "lz4", ""):
            compression = "zstd"  # chunks we cannot decode are dropped; write our default
        try:
            writer = McapWriter(
                tmp_path,
                compression=compression or "none",
                profile=profile,
                library=library or "xsquare_logger",
            )
        except McapWriterError as exc:
            raise RecoveryError(f"cannot write {tmp_path}: {exc}") from exc
        rebuild = _Rebuilder(writer)
        try:
            f.seek(offset)
            _scan(f, size, offset, rebuild, result)
            writer.close()
        except BaseException as exc:
            writer.abort()
            with contextlib.suppress(OSError):
                tmp_path.unlink()
            if isinstance(exc, McapWriterError):  # e.g. the disk is full
                raise RecoveryError(f"recovering {src}: {exc}") from exc
            raise

    result.messages_recovered = writer.message_count
    result.message_start_time = writer.message_start_time
    result.message_end_time = writer.message_end_time
    result.sha256 = writer.sha256_hexdigest()
    result.size = writer.bytes_written
    result.topics = rebuild.topics
    result.metadata = rebuild.metadata
    result.messages_skipped = rebuild.skipped
    for topic in rebuild.topics:
        result.message_counts.setdefault(topic, 0)
    for channel_id, count in writer.channel_message_counts.items():
        topic = rebuild.topic_of[channel_id]
        result.message_counts[topic] = result.message_counts.get(topic, 0) + count

    try:
        _place(tmp_path, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    if remove_source:
        src.unlink()
        _fsync_dir(src.parent)
    return result


def _scan(
    f: IO[bytes], size: int, offset: int, rebuild: _Rebuilder, result: RecoveryResult
) -> None:
    """Walk the data section record by record, feeding good records to ``rebuild``."""
    while offset < size:
        head = f.read(9)
        if len(head) < 9:
            if head[:1] == bytes((Opcode.CHUNK,)):
                result.chunks_dropped += 1
            result.bytes_discarded += size - offset
            return
        opcode, length = _RECORD_HEADER.unpack(head)
        if opcode == 0 or length > size - offset - 9:
            # Truncated record (the crash point), or garbage such as the zero-filled tail some
            # file systems leave after a power loss. Nothing after it can be trusted.
            if opcode == Opcode.CHUNK:
                result.chunks_dropped += 1
            result.bytes_discarded += size - offset
            return
        record_size = 9 + length
        if opcode == Opcode.DATA_END or opcode in _SUMMARY_OPCODES:
            return  # end of the data section: the rest is summary we rebuild anyway
        if opcode not in _DATA_OPCODES:
            f.seek(length, os.SEEK_CUR)  # unknown or index records: skip (spec: ignore)
            offset += record_size
            continue
        body = f.read(length)
        offset += record_size
        try:
            if opcode == Opcode.CHUNK:
                rebuild.records(_parse_chunk(body))
                result.chunks_recovered += 1
            elif opcode == Opcode.MESSAGE:
                rebuild.records([_parse_message(body)])
            elif opcode == Opcode.SCHEMA:
                rebuild.schema(_parse(Schema.read, body))
            elif opcode == Opcode.CHANNEL:
                rebuild.channel(_parse(Channel.read, body))
            elif opcode == Opcode.METADATA:
                rebuild.metadata_record(_parse(Metadata.read, body))
            elif opcode == Opcode.ATTACHMENT:
                rebuild.attachment(_parse_attachment(body))
        except _Corrupt:
            # A complete record whose content is damaged: drop it, keep going (its length
            # field was plausible, so the next record is probably intact).
            if opcode == Opcode.CHUNK:
                result.chunks_dropped += 1
            result.bytes_discarded += record_size


_DATA_OPCODES = frozenset(
    {
        Opcode.SCHEMA,
        Opcode.CHANNEL,
        Opcode.MESSAGE,
        Opcode.CHUNK,
        Opcode.METADATA,
        Opcode.ATTACHMENT,
    }
)
_SUMMARY_OPCODES = frozenset(
    {
        Opcode.FOOTER,
        Opcode.CHUNK_INDEX,
        Opcode.ATTACHMENT_INDEX,
        Opcode.STATISTICS,
        Opcode.METADATA_INDEX,
        Opcode.SUMMARY_OFFSET,
    }
)
