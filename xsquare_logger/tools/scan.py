"""One pass over a session's messages: the time series ``xsq report`` judges and plots.

Kept apart from the verdict (``report``) and the pictures (``report_plots``), so
both read the same scan and neither imports the other's internals.
"""

from __future__ import annotations

import contextlib
import re
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mcap.exceptions import McapError
from mcap.reader import NonSeekingReader, make_reader

from xsquare_logger.recording.quality import nearest_delta  # one pairing, live and in the report
from xsquare_logger.session.counters import COUNTER_KEYS, LossCounters
from xsquare_logger.tools import ToolError
from xsquare_logger.tools.tasks import SessionView

__all__ = [
    "APERIODIC_TOPICS",
    "JOINT_TOPIC",
    "STATUS_TOPIC",
    "LossSample",
    "ReportError",
    "SessionScan",
    "TopicSeries",
    "camera_streams",
    "nearest_delta",
    "scan_session",
    "valid_stamps",
]

_NS = 1_000_000_000


class ReportError(ToolError):
    """The session cannot be read for a report."""


STATUS_TOPIC = "/xsquare/session_status"


JOINT_TOPIC = "/joint_states"


#: Event topics: published when something happens, so no rate, jitter or gap analysis.
APERIODIC_TOPICS = frozenset({"/xsquare/task_events", "/xsquare/current_task"})


#: Camera image types, best first: a camera recorded raw and compressed is judged on raw.
IMAGE_TYPES = {
    "sensor_msgs/msg/Image": 0,
    "sensor_msgs/msg/CompressedImage": 1,
    "foxglove_msgs/msg/CompressedVideo": 2,
}


_STAMP_FIRST_FIELDS = frozenset(
    {
        "Header", "std_msgs/Header", "std_msgs/msg/Header",
        "builtin_interfaces/Time", "builtin_interfaces/msg/Time", "time",
    }
)  # fmt: skip


_STAMP_LE = struct.Struct("<iI")


_STAMP_BE = struct.Struct(">iI")


_CAMERA_RE = re.compile(r"^/camera/([^/]+)/")


@dataclass
class TopicSeries:
    """Timestamps of one topic, sorted by receive time.

    Attributes:
        log_ns: ``log_time`` (receive time) of each message, ns, ascending.
        stamp_ns: Header stamp of each message (same order), ns; None for unstamped types.
            0 where a message was too short to hold one.
    """

    name: str
    type: str
    log_ns: np.ndarray
    stamp_ns: np.ndarray | None


@dataclass
class LossSample:
    """Cumulative counters of one ``SessionStatus`` message (receive time ``log_ns``)."""

    log_ns: int
    totals: LossCounters
    per_topic: dict[str, LossCounters] = field(default_factory=dict)


@dataclass
class SessionScan:
    """Everything the report keeps from its one pass over the messages."""

    view: SessionView
    topics: dict[str, TopicSeries]
    losses: list[LossSample]
    status_decoded: bool


@dataclass
class _Acc:
    type: str
    log: array[int]
    stamps: array[int] | None


def _stamp_offset_4(schema_encoding: str, schema_text: bytes, message_encoding: str) -> bool:
    """True if the type's first field is a Header or a Time (stamp at CDR byte 4)."""
    if message_encoding != "cdr" or schema_encoding != "ros2msg":
        return False
    for raw in schema_text.decode("utf-8", "replace").splitlines():
        if raw.startswith("====="):
            break
        line = raw.split("#", 1)[0].strip()
        if not line or "=" in line:  # blank, comment or constant
            continue
        return line.split()[0] in _STAMP_FIRST_FIELDS
    return False


def _status_decoder() -> Callable[[bytes, int], LossSample] | None:
    """A SessionStatus decoder if rclpy and xsquare_logger_msgs are importable, else None."""
    try:
        from rclpy.serialization import deserialize_message

        from xsquare_logger_msgs.msg import SessionStatus
    except ImportError:
        return None

    def decode(data: bytes, log_ns: int) -> LossSample:
        msg = deserialize_message(bytes(data), SessionStatus)
        per_topic = {t.topic: LossCounters.from_mapping(t) for t in msg.topics}
        # The session totals as the message carries them (messages_<counter>).
        totals = LossCounters(**{
            k: int(getattr(msg, f"messages_{k}", 0)) for k in COUNTER_KEYS if k != "lost"
        })
        return LossSample(log_ns, totals, per_topic)

    return decode


def scan_session(view: SessionView) -> SessionScan:
    """Read every message of the session once; keep timestamps only (memory: 16 B/message).

    Raises:
        ReportError: a file is missing or not a readable MCAP.
    """
    accs: dict[str, _Acc] = {}
    losses: list[LossSample] = []
    decode = _status_decoder()
    le, be = _STAMP_LE.unpack_from, _STAMP_BE.unpack_from
    for source in view.files:
        try:
            with open(source.path, "rb") as f:
                summary = make_reader(f).get_summary()
                by_channel: dict[int, _Acc] = {}
                if summary is not None:  # topics without messages are listed too
                    for cid, ch in summary.channels.items():
                        by_channel[cid] = _acc_for(accs, ch, summary.schemas.get(ch.schema_id))
                f.seek(0)
                # The streaming reader holds one chunk at a time. (The indexed reader in file
                # order queues every chunk of the file before yielding the first message.)
                messages = NonSeekingReader(f).iter_messages(log_time_order=False)
                for schema, channel, message in messages:
                    acc = by_channel.get(channel.id)
                    if acc is None:
                        acc = by_channel[channel.id] = _acc_for(accs, channel, schema)
                    acc.log.append(message.log_time)
                    stamps = acc.stamps
                    if stamps is not None:
                        data = message.data
                        if len(data) >= 12:
                            sec, nsec = (le if data[1] & 1 else be)(data, 4)
                            stamps.append(sec * _NS + nsec)
                        else:
                            stamps.append(0)
                    if decode is not None and channel.topic == STATUS_TOPIC:
                        # A bad status message must not stop the report.
                        with contextlib.suppress(Exception):
                            losses.append(decode(message.data, message.log_time))
        except FileNotFoundError:
            raise ReportError(f"{source.path}: listed in metadata.yaml but missing") from None
        except (McapError, OSError, ValueError, struct.error) as exc:
            raise ReportError(f"{source.path}: unreadable MCAP: {exc}") from None
    topics = {}
    for name, acc in accs.items():
        log = np.frombuffer(acc.log, dtype=np.int64) if acc.log else np.zeros(0, np.int64)
        order = np.argsort(log, kind="stable")
        sorted_stamps = None
        if acc.stamps is not None:
            sorted_stamps = (np.frombuffer(acc.stamps, dtype=np.int64)[order] if acc.stamps
                             else log[:0])
        topics[name] = TopicSeries(name, acc.type, log[order], sorted_stamps)
    losses.sort(key=lambda s: s.log_ns)
    return SessionScan(view, topics, losses, decode is not None)


def _acc_for(accs: dict[str, _Acc], channel: Any, schema: Any) -> _Acc:
    acc = accs.get(channel.topic)
    if acc is None:
        stamped = schema is not None and _stamp_offset_4(
            schema.encoding, schema.data, channel.message_encoding
        )
        acc = _Acc(schema.name if schema is not None else "", array("q"),
                   array("q") if stamped else None)
        accs[channel.topic] = acc
    return acc


def valid_stamps(series: TopicSeries) -> np.ndarray:
    if series.stamp_ns is None:
        return np.zeros(0, np.int64)
    return np.sort(series.stamp_ns[series.stamp_ns > 0])


def camera_streams(topics: dict[str, TopicSeries]) -> dict[str, str]:
    """Camera name -> the image topic it is judged on (raw before compressed before video)."""
    best: dict[str, tuple[int, str]] = {}
    for name, series in topics.items():
        rank = IMAGE_TYPES.get(series.type)
        if rank is None or series.log_ns.size == 0:
            continue
        match = _CAMERA_RE.match(name)
        camera = match.group(1) if match else name
        if camera not in best or rank < best[camera][0]:
            best[camera] = (rank, name)
    return {camera: topic for camera, (_rank, topic) in sorted(best.items())}
