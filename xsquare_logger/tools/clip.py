"""`xsq clip`: one episode of a session as a new, valid session directory.

The clip is found through the indexes, never by scanning the session:

1. metadata.yaml ``files[]`` (start, duration) tells which MCAP files overlap the range;
2. each file's summary (read from the footer) has one ChunkIndex per chunk with the chunk's
   first and last ``log_time``; the official reader's ``iter_messages(starting_at=,
   ending_at=)`` seeks to, reads and decompresses only the chunks overlapping the range.

So the cost grows with the length of the episode, not of the session.

H.264 topics (``foxglove_msgs/msg/CompressedVideo``) are decodable only from a keyframe, and an
episode starts anywhere in a GOP. So each such topic is copied from the keyframe at or before
the clip start (found by reading back, 2 s at first, through the same indexes; a keyframe is a
frame whose Annex B NAL units hold an SPS and an IDR slice): the clip's cameras show at once.
That pre-roll start per video topic is ``clip_of.preroll_start_ns`` (topic -> log_time ns) in
session.json, in metadata.yaml's ``xsquare.clip_of`` and in the ``xsquare.tasks`` record; every
other topic starts at the clip start. The output is written
with our :class:`~xsquare_logger.bag.mcap_writer.McapWriter`: the same schemas, channel
metadata (``offered_qos_profiles``, ``topic_type_hash``), message times and sequence numbers,
plus the Metadata records ``rosbag2`` and ``xsquare.tasks`` (the one episode and ``clip_of``),
then ``metadata.yaml`` and ``session.json`` as a recording would leave them.

All times are integer nanoseconds since the Unix epoch (``log_time``, the receive time).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.summary import Summary

from xsquare_logger.bag.embedded import COMPRESSED_VIDEO
from xsquare_logger.bag.mcap_writer import McapWriter, McapWriterError
from xsquare_logger.camera.cdr import CdrError, compressed_video_data
from xsquare_logger.camera.h264 import is_keyframe
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.episodes import tasks_metadata
from xsquare_logger.session.index import IndexedTopic, SessionIndex
from xsquare_logger.session.manifest import FileEntry, SessionManifest, TaskEntry
from xsquare_logger.session.metadata import metadata_text
from xsquare_logger.tools import ToolError
from xsquare_logger.tools.tasks import (
    TASKS_RECORD,
    SessionFile,
    SessionView,
    episode_range,
    find_episode,
    load_session,
)

__all__ = ["ClipError", "ClipResult", "CountingFile", "clip_session"]

_NS = 1_000_000_000
_READ_BUFFER = 64 * 1024
_COMPRESSION_NAMES = {"": "none", "zstd": "zstd", "lz4": "lz4"}
_PREROLL_LOOKBACK_NS = 2 * _NS  # first look-back window for keyframes; grows 4x per miss

Opener = Callable[[Path], IO[bytes]]


class ClipError(ToolError):
    """The clip cannot be made; the message names the problem."""


class CountingFile(io.RawIOBase):
    """A read-only, seekable raw file that counts the bytes it hands out.

    Wrapped in an :class:`io.BufferedReader`, ``bytes_read`` is what was really pulled
    from the file (buffer read-ahead included), so it shows whether a reader seeks or scans.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        n = self._f.readinto(buffer)
        self.bytes_read += n or 0
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


@dataclass
class ClipResult:
    """What :func:`clip_session` wrote and what it had to read for it.

    Attributes:
        out_dir: The new session directory.
        mcap_path: Its one MCAP file.
        episode_index: The episode clipped.
        start_ns, end_ns: The clipped ``log_time`` range, both ends included (ns).
        preroll_start_ns: Video topic -> ``log_time`` of the keyframe it starts at (<= start).
        message_count: Messages written.
        topics: Messages written per topic.
        files_read: Source MCAP files opened (names), the others were skipped.
        chunks_read: Chunks whose time range overlaps the clip (the ones read; the look-back
            for keyframes not counted).
        chunks_total: Chunks in the files opened.
        bytes_read: Bytes read from the source files (None with a custom ``opener``).
        source_bytes: Total size of all the session's MCAP files.
    """

    out_dir: Path
    mcap_path: Path
    episode_index: int
    start_ns: int
    end_ns: int
    preroll_start_ns: dict[str, int] = field(default_factory=dict)
    message_count: int = 0
    topics: dict[str, int] = field(default_factory=dict)
    files_read: list[str] = field(default_factory=list)
    chunks_read: int = 0
    chunks_total: int = 0
    bytes_read: int | None = 0
    source_bytes: int = 0


@dataclass
class _Topic:
    name: str
    type: str
    hash: str
    qos: list[dict[str, Any]]
    count: int = 0
    bytes: int = 0


def _open_counted(path: Path) -> tuple[IO[bytes], CountingFile]:
    raw = CountingFile(path)
    return io.BufferedReader(raw, buffer_size=_READ_BUFFER), raw


def _qos_list(text: str) -> list[dict[str, Any]]:
    """Channel metadata ``offered_qos_profiles`` (a YAML list) back into profile dicts."""
    if not text:
        return []
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return []
    return list(value) if isinstance(value, list) else []


def clip_session(
    session_dir: Path,
    episode_index: int,
    pad_s: float,
    out_dir: Path,
    *,
    opener: Opener | None = None,
) -> ClipResult:
    """Write the messages of episode ``episode_index`` (± ``pad_s``) as a new session.

    Args:
        session_dir: A finished session directory (metadata.yaml present).
        episode_index: ``episode_index`` of a task in the session (see ``xsq tasks``).
        pad_s: Seconds added before the episode's start and after its end (>= 0). An episode
            still open at the session's end ends at the session's last message.
        out_dir: New session directory; must not exist. Its MCAP file is
            ``<out_dir name>_0.mcap`` (rosbag2 names files after the bag directory).
        opener: Opens a source MCAP file for reading (tests pass one that counts bytes).

    Returns:
        A :class:`ClipResult`. The range is ``[start - pad, end + pad]``, both ends included.

    Raises:
        ClipError: ``out_dir`` exists, bad ``pad_s``, no such episode (the message lists the
            valid indexes), or a source file unreadable. A partly written ``out_dir`` is removed.
    """
    if not math.isfinite(pad_s) or pad_s < 0:
        raise ClipError(f"--pad must be a non-negative number of seconds, got {pad_s}")
    if out_dir.exists():
        raise ClipError(f"output directory {out_dir} exists already; not overwriting")
    view = load_session(session_dir)
    task = find_episode(view, episode_index)
    first, last = episode_range(view, task)
    pad_ns = round(pad_s * _NS)
    start_ns, end_ns = max(0, first - pad_ns), last + pad_ns

    try:
        out_dir.mkdir(parents=True)
    except OSError as exc:
        raise ClipError(f"{out_dir}: cannot create: {exc.strerror}") from None
    try:
        return _write_clip(view, task, start_ns, end_ns, out_dir, opener, pad_s)
    except BaseException as exc:
        # We created out_dir a moment ago (it did not exist): nothing of anyone else's is in it.
        shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ClipError(f"{out_dir}: write failed: {exc}") from None
        raise


def _write_clip(
    view: SessionView,
    task: TaskEntry,
    start_ns: int,
    end_ns: int,
    out_dir: Path,
    opener: Opener | None,
    pad_s: float,
) -> ClipResult:
    clip_id = out_dir.name
    mcap_path = out_dir / f"{clip_id}_0.mcap"
    result = ClipResult(out_dir, mcap_path, task.episode_index, start_ns, end_ns)
    result.source_bytes = sum(f.path.stat().st_size for f in view.files if f.path.is_file())
    if opener is not None:
        result.bytes_read = None
    result.preroll_start_ns = _find_prerolls(view, start_ns, opener, result)
    read_from = min([start_ns, *result.preroll_start_ns.values()])
    selected = [f for f in view.files if f.overlaps(read_from, end_ns)]

    writer: McapWriter | None = None
    topics: dict[str, _Topic] = {}
    try:
        for source in selected:
            writer = _copy_range(source, start_ns, end_ns, mcap_path, writer, topics, opener,
                                 result)
        if writer is None:  # nothing overlaps (an episode in a gap): still a valid, empty bag
            writer = McapWriter(mcap_path, compression="zstd")
        _finish(view, task, writer, topics, start_ns, end_ns, out_dir, result, pad_s)
    except McapWriterError as exc:
        if writer is not None:
            writer.abort()
        raise ClipError(f"{mcap_path}: {exc}") from None
    return result


def _copy_range(
    source: SessionFile,
    start_ns: int,
    end_ns: int,
    mcap_path: Path,
    writer: McapWriter | None,
    topics: dict[str, _Topic],
    opener: Opener | None,
    result: ClipResult,
) -> McapWriter:
    counter: CountingFile | None = None
    try:
        if opener is None:
            f, counter = _open_counted(source.path)
        else:
            f = opener(source.path)
    except OSError as exc:
        raise ClipError(f"{source.path}: cannot open: {exc.strerror}") from None
    with f:
        try:
            reader = make_reader(f)
            summary = reader.get_summary()
        except (McapError, OSError, ValueError) as exc:
            raise ClipError(f"{source.path}: unreadable MCAP: {exc}") from None
        if summary is None or not summary.chunk_indexes:
            # Without chunk indexes the reader would scan the whole file; refuse loudly.
            raise ClipError(f"{source.path}: no chunk indexes (run `xsq recover` on the session)")
        if writer is None:
            # Keep the source's compression. A chunk that did not shrink is stored
            # uncompressed whatever the setting, so the first compressed chunk tells.
            used = next((c.compression for c in summary.chunk_indexes if c.compression), "")
            compression = _COMPRESSION_NAMES.get(used, "zstd")
            writer = McapWriter(mcap_path, compression=compression)
        channel_map = _register_channels(writer, summary, topics)
        result.files_read.append(source.path.name)
        result.chunks_total += len(summary.chunk_indexes)
        result.chunks_read += sum(
            1 for c in summary.chunk_indexes
            if c.message_end_time >= start_ns and c.message_start_time <= end_ns
        )
        add = writer.add_message
        preroll = result.preroll_start_ns
        read_from = min([start_ns, *preroll.values()])
        try:
            for _schema, channel, message in reader.iter_messages(
                starting_at=read_from, ending_at=end_ns, log_time_order=True
            ):
                if message.log_time < start_ns and message.log_time < preroll.get(
                    channel.topic, start_ns
                ):
                    continue  # before the clip, and not a video topic's pre-roll
                add(channel_map[channel.id], message.log_time, message.publish_time,
                    message.data, message.sequence)
                t = topics[channel.topic]
                t.count += 1
                t.bytes += len(message.data)
        except (McapError, OSError, ValueError) as exc:
            raise ClipError(f"{source.path}: unreadable chunk: {exc}") from None
    if counter is not None and result.bytes_read is not None:
        result.bytes_read += counter.bytes_read
    return writer


def _video_topics(view: SessionView) -> list[str]:
    entries = view.metadata.get("topics_with_message_count") or []
    return sorted(
        str(meta.get("name"))
        for entry in entries
        if isinstance(entry, dict) and isinstance(meta := entry.get("topic_metadata"), dict)
        and meta.get("type") == COMPRESSED_VIDEO and _int(entry.get("message_count")) != 0
    )


def _find_prerolls(
    view: SessionView, start_ns: int, opener: Opener | None, result: ClipResult
) -> dict[str, int]:
    """Video topic -> log_time of its last keyframe at or before ``start_ns``.

    Reads only the video topics, back from ``start_ns`` in growing windows (2 s, 8 s, ...)
    until each topic has a keyframe or the session's start is reached; a topic without one
    (its frames before the clip are undecodable anyway) starts at ``start_ns`` as before.
    """
    missing = set(_video_topics(view))
    found: dict[str, int] = {}
    window = _PREROLL_LOOKBACK_NS
    hi = start_ns
    while missing:
        lo = max(0, start_ns - window)
        for source in view.files:
            if source.overlaps(lo, hi):
                for topic, log_time in _keyframes(source, sorted(missing), lo, hi, opener,
                                                  result):
                    found[topic] = max(found.get(topic, log_time), log_time)
        missing -= set(found)
        if lo <= view.start_ns or lo == 0:
            break
        hi, window = lo - 1, window * 4
    return found


def _keyframes(
    source: SessionFile, topics: list[str], lo: int, hi: int, opener: Opener | None,
    result: ClipResult,
) -> list[tuple[str, int]]:
    """(topic, log_time) of every keyframe of ``topics`` in ``[lo, hi]`` of one file."""
    counter: CountingFile | None = None
    try:
        if opener is None:
            f, counter = _open_counted(source.path)
        else:
            f = opener(source.path)
    except OSError as exc:
        raise ClipError(f"{source.path}: cannot open: {exc.strerror}") from None
    out: list[tuple[str, int]] = []
    with f:
        try:
            reader = make_reader(f)
            summary = reader.get_summary()
            if summary is None or not summary.chunk_indexes:
                raise ClipError(
                    f"{source.path}: no chunk indexes (run `xsq recover` on the session)"
                )
            for _schema, channel, message in reader.iter_messages(
                topics=topics, starting_at=lo, ending_at=hi, log_time_order=False
            ):
                try:
                    keyframe = is_keyframe(compressed_video_data(message.data))
                except CdrError:
                    continue  # a malformed frame cannot start the stream
                if keyframe:
                    out.append((channel.topic, message.log_time))
        except (McapError, OSError, ValueError) as exc:
            raise ClipError(f"{source.path}: unreadable MCAP: {exc}") from None
    if counter is not None and result.bytes_read is not None:
        result.bytes_read += counter.bytes_read
    return out


def _register_channels(
    writer: McapWriter, summary: Summary, topics: dict[str, _Topic]
) -> dict[int, int]:
    """Register every channel of a source file (topics without messages in range too, so the
    clip lists the same topics); return source channel id -> clip channel id."""
    mapping: dict[int, int] = {}
    for cid, channel in sorted(summary.channels.items()):
        schema_id = 0
        type_name = ""
        schema = summary.schemas.get(channel.schema_id) if channel.schema_id else None
        if schema is not None:
            schema_id = writer.register_schema(schema.name, schema.encoding, schema.data)
            type_name = schema.name
        mapping[cid] = writer.register_channel(
            channel.topic, channel.message_encoding, schema_id, dict(channel.metadata)
        )
        if channel.topic not in topics:
            topics[channel.topic] = _Topic(
                channel.topic,
                type_name,
                channel.metadata.get("topic_type_hash", ""),
                _qos_list(channel.metadata.get("offered_qos_profiles", "")),
            )
    return mapping


def _finish(
    view: SessionView,
    task: TaskEntry,
    writer: McapWriter,
    topics: dict[str, _Topic],
    start_ns: int,
    end_ns: int,
    out_dir: Path,
    result: ClipResult,
    pad_s: float,
) -> None:
    clip_id = out_dir.name
    source_custom = dict(view.metadata.get("custom_data") or {})
    clip_of = {
        "session_id": view.session_id,
        "episode_index": task.episode_index,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "pad_s": pad_s,
        "preroll_start_ns": dict(result.preroll_start_ns),
    }
    source = view.manifest
    robot_id = str(source_custom.get("xsquare.robot_id", ""))
    software = str(source_custom.get("xsquare.software_version", ""))
    marks = [m for m in view.marks if start_ns <= _int(m.get("stamp_ns")) <= end_ns]
    manifest = SessionManifest(
        session_id=clip_id,
        robot_id=source.robot_id if source else robot_id,
        software_version=source.software_version if source else software,
        config_digest=source.config_digest if source else "",
        ros_distro=source.ros_distro if source else str(view.metadata.get("ros_distro", "")),
        state="closed",
        close_reason=f"clip of {view.session_id} episode {task.episode_index}",
        started_ns=start_ns,
        ended_ns=end_ns,
        visit=view.visit,
        tasks=[task],
        marks=marks,
        clip_of=clip_of,
    )
    # Losses are counted per session, not per time range: see the source session.
    indexed = [
        IndexedTopic(
            TopicStats(t.name, t.type, received=t.count, written=t.count, bytes_written=t.bytes),
            type_hash=t.hash,
            qos=t.qos,
        )
        for t in topics.values()
    ]
    count = writer.message_count
    first = writer.message_start_time or 0
    last = writer.message_end_time or 0
    pending = FileEntry(path=result.mcap_path.name, size=0, sha256="", message_count=count,
                        start_ns=first, end_ns=last)
    extra = {"xsquare.clip_of": json.dumps(clip_of)}
    # The file's own rosbag2 record lists it already (as a recording's last file does).
    doc = SessionIndex(manifest, indexed, [pending], extra).metadata_doc()

    # As a recording does: each file carries the bag metadata and the episode list.
    writer.add_metadata("rosbag2", {"serialized_metadata": metadata_text(doc)})
    record = tasks_metadata([task], marks, clip_id)
    record["visit"] = json.dumps(view.visit or {})
    record["clip_of"] = json.dumps(clip_of)
    writer.add_metadata(TASKS_RECORD, record)
    writer.close()

    done = pending.model_copy(
        update={"size": writer.bytes_written, "sha256": writer.sha256_hexdigest()}
    )
    SessionIndex(manifest, indexed, [done], extra).write(out_dir)
    result.message_count = count
    result.topics = {t.name: t.count for t in topics.values()}


def _int(value: object) -> int:
    with contextlib.suppress(TypeError, ValueError):
        return int(value)  # type: ignore[call-overload]  # any JSON value; the bad ones raise
    return -1
