"""Live stream health: what each expected stream (config ``health.streams``) does right now.

Per message, on the receiving thread, :meth:`StreamMonitor.arrive` appends the receive
time and the header stamp to the current one-second bucket (two ``array`` appends and a
compare: O(1), well under a microsecond). Everything else runs on the writer thread
about once a second: the sliding-window rate, the classification, the loss samples, and
at ``task.end`` the arrays of an episode's range for the verdict (recording/quality.py).

Classification (docs/tablet-protocol.md §7 ``streams``):

* ``missing``: no message since the session started;
* ``stalled``: silent for ``stalled_periods`` nominal periods (and ``stalled_min_s``);
* ``degraded``: the rate over the last ``window_s`` is below ``degraded_ratio`` x nominal,
  or messages of the stream were lost in that window;
* ``ok`` otherwise. A camera under the privacy pause is never stalled or degraded by its
  silence (``paused`` true): it was asked to be silent in the bag.

Only one thread (the stream's subscription callback) appends; readers copy the bucket
list first (``list(deque)`` runs without releasing the GIL), so no lock is taken.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from xsquare_logger.recording.quality import QualityThresholds, StreamSeries, judge, stall_s
from xsquare_logger.session.health import (
    EpisodeQuality,
    EpisodeSpan,
    ExpectedStreamLike,
    StreamHealth,
    StreamKind,
    StreamState,
)

__all__ = ["HEADER_FIRST_TYPES", "HealthTracker", "StreamMonitor", "header_first"]

_BUCKET_NS = 1_000_000_000
# std_msgs/Header stamp right after the 4-byte CDR encapsulation header (little endian).
_STAMP = struct.Struct("<iI")
#: Message types whose first field is a std_msgs/Header (their stamp is read per message).
HEADER_FIRST_TYPES = frozenset({
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/JointState",
    "sensor_msgs/msg/Imu",
    "sensor_msgs/msg/CameraInfo",
    "sensor_msgs/msg/PointCloud2",
    "sensor_msgs/msg/LaserScan",
    "foxglove_msgs/msg/CompressedVideo",
})


def header_first(type_name: str) -> bool:
    """True for types that start with a std_msgs/Header (``*Stamped`` by convention too)."""
    return type_name in HEADER_FIRST_TYPES or type_name.endswith("Stamped")


class _HealthConfig(Protocol):
    window_s: float
    degraded_ratio: float
    stalled_periods: float
    stalled_min_s: float
    history_s: float
    fail_ratio: float
    gap_warn_periods: float
    gap_warn_min_s: float
    loss_fail_fraction: float
    camera_skew_frames: float
    joint_skew_s: float
    skew_fail_s: float


class StreamMonitor:
    """Arrivals of one expected stream, in one-second buckets kept for ``history_ns``."""

    __slots__ = (
        "_buckets", "_history_ns", "_recv", "_roll_ns", "_stamp", "count", "first_ns",
        "kind", "last_ns", "name", "nominal_hz", "stamped", "subscribed_ns", "topic",
    )

    def __init__(self, name: str, topic: str, kind: StreamKind, nominal_hz: float,
                 history_s: float) -> None:
        self.name = name
        self.topic = topic
        self.kind: StreamKind = kind
        self.nominal_hz = nominal_hz
        self.subscribed_ns = 0  # when the recorder subscribed (0: the topic never appeared)
        self.stamped = False  # the type carries a header stamp (set at subscription)
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        self._history_ns = int(history_s * 1e9)
        self._recv = array("q")
        self._stamp = array("q")
        self._roll_ns = 0  # the current bucket ends here (0: no bucket yet)
        self._buckets: deque[tuple[int, array[int], array[int]]] = deque()

    def subscribed(self, now_ns: int, type_name: str) -> None:
        if not self.subscribed_ns:
            self.subscribed_ns = now_ns
        self.stamped = header_first(type_name)

    def arrive(self, recv_ns: int, msg: bytes) -> None:
        """One message arrived (the subscription thread; O(1))."""
        if recv_ns >= self._roll_ns:
            self._roll(recv_ns)
        stamp = 0
        if self.stamped:
            try:
                sec, nsec = _STAMP.unpack_from(msg, 4)
                stamp = sec * 1_000_000_000 + nsec
            except struct.error:
                pass
        self._recv.append(recv_ns)
        self._stamp.append(stamp)
        self.last_ns = recv_ns
        if not self.count:
            self.first_ns = recv_ns
        self.count += 1

    def _roll(self, recv_ns: int) -> None:
        start = recv_ns - recv_ns % _BUCKET_NS
        self._recv = array("q")
        self._stamp = array("q")
        self._buckets.append((start, self._recv, self._stamp))
        self._roll_ns = start + _BUCKET_NS
        oldest = recv_ns - self._history_ns - _BUCKET_NS
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def arrivals(self, start_ns: int, end_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Receive times and header stamps with ``start_ns <= recv < end_ns`` (copies)."""
        recv_parts: list[np.ndarray] = []
        stamp_parts: list[np.ndarray] = []
        for b_start, recv, stamp in list(self._buckets):
            if b_start + _BUCKET_NS <= start_ns or b_start >= end_ns:
                continue
            n = len(recv)  # the live bucket may grow meanwhile: read a fixed length
            r = np.frombuffer(recv, dtype=np.int64, count=n).copy() if n else None
            if r is None:
                continue
            s = np.frombuffer(stamp, dtype=np.int64, count=min(n, len(stamp))).copy()
            if s.size < n:
                r = r[: s.size]
            sel = (r >= start_ns) & (r < end_ns)
            recv_parts.append(r[sel])
            stamp_parts.append(s[sel])
        if not recv_parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty.copy()
        return np.concatenate(recv_parts), np.concatenate(stamp_parts)

    def count_since(self, since_ns: int) -> int:
        """Arrivals with ``recv >= since_ns`` (cheap: whole buckets by length, one bisect)."""
        total = 0
        for b_start, recv, _stamp in reversed(list(self._buckets)):
            if b_start + _BUCKET_NS <= since_ns:
                break
            if b_start >= since_ns:
                total += len(recv)
            else:
                total += len(recv) - bisect.bisect_left(recv, since_ns)
        return total


class HealthTracker:
    """The expected streams of one session: monitors, loss samples, classification, verdicts."""

    def __init__(self, streams: Sequence[ExpectedStreamLike], cfg: _HealthConfig,
                 started_ns: int) -> None:
        self.cfg = cfg
        self.started_ns = started_ns
        self.thresholds = QualityThresholds.of(cfg)
        self.monitors: dict[str, StreamMonitor] = {
            s.topic: StreamMonitor(s.name, s.topic, s.kind or "other", s.nominal_hz,
                                   cfg.history_s)
            for s in streams
        }
        # (time, lost) per topic, sampled about once a second by the writer thread.
        keep = int(cfg.history_s) + 4
        self._loss: dict[str, deque[tuple[int, int]]] = {
            t: deque(maxlen=keep) for t in self.monitors
        }

    def sample_losses(self, now_ns: int, lost_by_topic: Mapping[str, int]) -> None:
        for topic, samples in self._loss.items():
            samples.append((now_ns, int(lost_by_topic.get(topic, 0))))

    def _lost_since(self, topic: str, since_ns: int, lost_now: int) -> int:
        """Losses counted after ``since_ns`` (from the last sample at or before it)."""
        base = 0
        for t, lost in list(self._loss[topic]):  # a copy: the writer thread appends
            if t > since_ns:
                break
            base = lost
        return max(0, lost_now - base)

    def health(self, now_ns: int, lost_by_topic: Mapping[str, int],
               cameras_paused: bool = False) -> list[StreamHealth]:
        cfg = self.cfg
        window_ns = int(cfg.window_s * 1e9)
        out = []
        for topic, m in self.monitors.items():
            lost_now = int(lost_by_topic.get(topic, 0))
            paused = cameras_paused and m.kind == "camera"
            state: StreamState
            rate: float | None = None
            last_seen: float | None = None
            if not m.count:
                state = "missing"
            else:
                last_seen = round(max(0, now_ns - m.last_ns) / 1e9, 3)
                silent = last_seen >= stall_s(m.nominal_hz, cfg.stalled_periods,
                                              cfg.stalled_min_s)
                if now_ns - m.first_ns >= window_ns:
                    rate = m.count_since(now_ns - window_ns) / cfg.window_s
                elif m.last_ns > m.first_ns:  # young stream: its own span, not the window
                    rate = (m.count - 1) / ((m.last_ns - m.first_ns) / 1e9)
                lost_recently = self._lost_since(topic, now_ns - window_ns, lost_now) > 0
                slow = rate is not None and rate < cfg.degraded_ratio * m.nominal_hz
                if paused:
                    state = "ok"
                elif silent:
                    state = "stalled"
                elif slow or lost_recently:
                    state = "degraded"
                else:
                    state = "ok"
            out.append(StreamHealth(
                name=m.name,
                topic=topic,
                kind=m.kind,
                state=state,
                rate_hz=None if rate is None else round(rate, 1),
                nominal_hz=m.nominal_hz,
                lost=max(0, lost_now),
                last_seen_s=last_seen,
                paused=paused,
            ))
        return out

    def evaluate(self, span: EpisodeSpan, now_ns: int, lost_by_topic: Mapping[str, int],
                 paused: Sequence[tuple[int, int]] = ()) -> EpisodeQuality:
        """The verdict on ``span``'s window, up to now (the post-roll has not happened yet)."""
        end = min(span.window_end_ns, now_ns)
        series = []
        for topic, m in self.monitors.items():
            start = max(span.window_start_ns, m.subscribed_ns or span.window_start_ns)
            recv, stamp = m.arrivals(start, end)
            series.append(StreamSeries(
                name=m.name, topic=topic, kind=m.kind, nominal_hz=m.nominal_hz,
                start_ns=start, end_ns=max(start, end), recv_ns=recv, stamp_ns=stamp,
                lost=self._lost_since(topic, start, int(lost_by_topic.get(topic, 0))),
                subscribed=bool(m.subscribed_ns) or bool(m.count),
                seen=bool(m.count),
            ))
        open_pause = [(s, e if e else end) for s, e in paused]
        return judge(series, self.thresholds, open_pause)
