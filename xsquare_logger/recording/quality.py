"""The verdict on one episode: pass | warn | fail with the reasons, from arrival data alone.

Pure: the recorder hands over, per expected stream, the receive times and header stamps
it kept (recording/health.py) and the losses counted in the episode's range; nothing
here reads a bag or a clock. Checks (thresholds: config ``health``):

* missing: no message of the stream in the episode -> fail;
* longest gap (from the range start, between arrivals, to the range end): as long as a
  stall (``stalled_periods`` periods and ``stalled_min_s``) -> fail, longer than
  ``gap_warn_periods`` periods and ``gap_warn_min_s`` -> warn;
* rate (messages / seconds): below ``fail_ratio`` x nominal -> fail, below
  ``degraded_ratio`` x nominal -> warn (only for ranges of 10 periods or more: a
  shorter range cannot tell one message from a rate);
* losses in the range: more than ``loss_fail_fraction`` -> fail, any -> warn;
* camera-to-camera skew, paired as ``xsq report`` pairs frames (tools/report.py), the
  median rather than the p99: median |header stamp difference to the nearest frame of
  the reference camera (the first camera)| above ``camera_skew_frames`` of its frame
  period -> warn (cameras not triggered together). Pairs further apart than 1.5
  reference periods face a gap, which has its own reason, and are left out;
* camera-to-joint skew: the difference of the median latencies (receive time - header
  stamp) of a camera and the joints, above ``joint_skew_s`` -> warn, above
  ``skew_fail_s`` -> fail. Nearest-stamp pairing cannot see this one (a 500 Hz stream
  always has a stamp within 1 ms); a camera stamping by a clock that is off shows here;
* header stamps going backwards within a stream -> warn.

Camera time under the privacy pause is cut out of the range first (``paused``): the
silence was asked for, and the bag has no frames there by design.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from xsquare_logger.session.health import EpisodeQuality, StreamKind

__all__ = ["QualityThresholds", "StreamSeries", "judge", "nearest_delta", "stall_s"]

Range = tuple[int, int]
Level = Literal["warn", "fail"]


class _ThresholdSource(Protocol):
    degraded_ratio: float
    fail_ratio: float
    gap_warn_periods: float
    gap_warn_min_s: float
    stalled_periods: float
    stalled_min_s: float
    loss_fail_fraction: float
    camera_skew_frames: float
    joint_skew_s: float
    skew_fail_s: float


@dataclass(frozen=True)
class QualityThresholds:
    """The thresholds of config ``health`` (see docs/configuration.md)."""

    degraded_ratio: float = 0.8
    fail_ratio: float = 0.5
    gap_warn_periods: float = 3.0
    gap_warn_min_s: float = 0.1
    stalled_periods: float = 10.0
    stalled_min_s: float = 0.5
    loss_fail_fraction: float = 0.01
    camera_skew_frames: float = 0.25
    joint_skew_s: float = 0.03
    skew_fail_s: float = 0.1

    @classmethod
    def of(cls, cfg: _ThresholdSource) -> QualityThresholds:
        return cls(**{k: float(getattr(cfg, k)) for k in cls.__dataclass_fields__})


def stall_s(nominal_hz: float, stalled_periods: float, stalled_min_s: float) -> float:
    """Silence (s) after which a stream counts as stalled: the one rule, live and per episode."""
    return max(stalled_periods / nominal_hz, stalled_min_s)


@dataclass(frozen=True)
class StreamSeries:
    """One expected stream over an episode's range, as the recorder kept it.

    ``recv_ns``/``stamp_ns``: arrivals (receive time, header stamp; stamp 0 = none) in
    arrival order, already limited to ``[start_ns, end_ns]``. ``start_ns`` is the range
    start, or when the recorder subscribed to the topic if that was later (nothing
    before could be recorded). ``subscribed`` False: the topic never appeared.
    """

    name: str
    topic: str
    kind: StreamKind
    nominal_hz: float
    start_ns: int
    end_ns: int
    recv_ns: npt.NDArray[np.int64]
    stamp_ns: npt.NDArray[np.int64]
    lost: int = 0
    subscribed: bool = True
    seen: bool = True  # delivered anything in the session (before the range, too)


@dataclass
class _Findings:
    items: list[tuple[Level, str]] = field(default_factory=list)

    def add(self, level: Level, text: str) -> None:
        self.items.append((level, text))

    def quality(self) -> EpisodeQuality:
        fails = [t for lvl, t in self.items if lvl == "fail"]
        warns = [t for lvl, t in self.items if lvl == "warn"]
        verdict: Literal["pass", "warn", "fail"] = (
            "fail" if fails else "warn" if warns else "pass"
        )
        return EpisodeQuality(verdict=verdict, reasons=fails + warns)


def _overlap(a: int, b: int, ranges: Sequence[Range]) -> int:
    return sum(max(0, min(b, e) - max(a, s)) for s, e in ranges)


def _outside(recv: npt.NDArray[np.int64], ranges: Sequence[Range]) -> npt.NDArray[np.bool_]:
    keep = np.ones(recv.shape, dtype=bool)
    for s, e in ranges:
        keep &= ~((recv >= s) & (recv < e))
    return keep


def _longest_gap_ns(times: npt.NDArray[np.int64], start: int, end: int,
                    paused: Sequence[Range]) -> int:
    edges = np.concatenate(([start], np.sort(times), [end])).astype(np.int64)
    gaps = np.diff(edges)
    if paused:
        # A gap's paused part is not silence: cut it out (few gaps are long; check those).
        worst = 0
        for i in np.flatnonzero(gaps > 0):
            g = int(gaps[i]) - _overlap(int(edges[i]), int(edges[i + 1]), paused)
            worst = max(worst, g)
        return worst
    return int(gaps.max()) if gaps.size else 0


def nearest_delta(ref_ns: npt.NDArray[np.int64], other_ns: npt.NDArray[np.int64]
                  ) -> npt.NDArray[np.int64]:
    """For each time in ``ref_ns``, the nearest time in sorted ``other_ns`` minus it (ns)."""
    if ref_ns.size == 0 or other_ns.size == 0:
        return np.zeros(0, np.int64)
    idx = np.searchsorted(other_ns, ref_ns)
    lo = other_ns[np.clip(idx - 1, 0, other_ns.size - 1)] - ref_ns
    hi = other_ns[np.clip(idx, 0, other_ns.size - 1)] - ref_ns
    return np.where(np.abs(lo) <= np.abs(hi), lo, hi)


def _median_latency_ns(s: StreamSeries, keep: npt.NDArray[np.bool_]) -> float | None:
    stamped = keep & (s.stamp_ns != 0)
    if not stamped.any():
        return None
    return float(np.median(s.recv_ns[stamped] - s.stamp_ns[stamped]))


def _median_abs_s(ref: npt.NDArray[np.int64], other: npt.NDArray[np.int64],
                  other_hz: float) -> float | None:
    """Median |stamp difference to the nearest ``other``|, leaving out pairs further apart
    than 1.5 of ``other``'s periods: in a regular stream the nearest one is at most half a
    period away, so those are frames facing a gap of ``other`` (which has its own reason)."""
    delta = np.abs(nearest_delta(ref, other))
    delta = delta[delta <= 1.5e9 / other_hz]
    return float(np.median(delta)) / 1e9 if delta.size else None


def judge(
    series: Sequence[StreamSeries],
    thresholds: QualityThresholds,
    paused: Sequence[Range] = (),
) -> EpisodeQuality:
    """The verdict on one episode range: fail reasons first, then warnings."""
    t = thresholds
    found = _Findings()
    stamps_of: dict[str, tuple[StreamKind, float, npt.NDArray[np.int64]]] = {}
    latency: dict[str, tuple[StreamKind, float]] = {}
    for s in series:
        cut = list(paused) if s.kind == "camera" else []
        if not s.subscribed:
            found.add("fail", f"{s.name} missing: {s.topic} never appeared")
            continue
        keep = _outside(s.recv_ns, cut) if cut else np.ones(s.recv_ns.shape, dtype=bool)
        times = s.recv_ns[keep]
        span_ns = max(0, s.end_ns - s.start_ns) - _overlap(s.start_ns, s.end_ns, cut)
        period_s = 1.0 / s.nominal_hz
        if times.size == 0 and not s.seen:
            if span_ns > 0:
                found.add("fail", f"{s.name} missing: no message in the episode")
            continue
        # Silent through the whole range after delivering before it: one long gap.
        gap_s = (_longest_gap_ns(times, s.start_ns, s.end_ns, cut) if times.size
                 else span_ns) / 1e9
        if gap_s >= stall_s(s.nominal_hz, t.stalled_periods, t.stalled_min_s):
            found.add("fail", f"{s.name} stalled {gap_s:.1f} s")
        elif gap_s > max(t.gap_warn_periods * period_s, t.gap_warn_min_s):
            found.add("warn", f"{s.name} gap {gap_s:.2f} s")
        if times.size == 0:
            continue  # the stall says it all
        span_s = span_ns / 1e9
        if span_s >= 10 * period_s:
            rate = times.size / span_s
            if rate < t.fail_ratio * s.nominal_hz:
                found.add("fail", f"{s.name} rate {rate:.1f} Hz, nominal {s.nominal_hz:g} Hz")
            elif rate < t.degraded_ratio * s.nominal_hz:
                found.add("warn", f"{s.name} rate {rate:.1f} Hz, nominal {s.nominal_hz:g} Hz")
        if s.lost > 0:
            fraction = s.lost / (times.size + s.lost)
            level: Level = "fail" if fraction > t.loss_fail_fraction else "warn"
            found.add(level, f"{s.name} lost {s.lost} messages ({100 * fraction:.1f}%)")
        stamps = s.stamp_ns[keep & (s.stamp_ns != 0)]
        backwards = int(np.count_nonzero(np.diff(stamps) < 0)) if stamps.size > 1 else 0
        if backwards:
            found.add("warn", f"{s.name} header stamps went backwards {backwards} times")
        if stamps.size:
            stamps_of[s.name] = (s.kind, s.nominal_hz, np.sort(stamps))
        lat = _median_latency_ns(s, keep)
        if lat is not None:
            latency[s.name] = (s.kind, lat)
    _camera_skews(stamps_of, t, found)
    _joint_skews(latency, t, found)
    return found.quality()


def _camera_skews(
    stamps_of: dict[str, tuple[StreamKind, float, npt.NDArray[np.int64]]],
    t: QualityThresholds,
    found: _Findings,
) -> None:
    cams = [(n, hz, st) for n, (k, hz, st) in stamps_of.items() if k == "camera"]
    if not cams:
        return
    ref_name, ref_hz, ref = cams[0]
    period_s = float(np.median(np.diff(ref))) / 1e9 if ref.size > 1 else 0.0
    for name, _hz, stamps in cams[1:]:
        skew_s = _median_abs_s(stamps, ref, ref_hz)
        if skew_s is not None and period_s and skew_s > t.camera_skew_frames * period_s:
            found.add("warn", f"{name} vs {ref_name} skew {1000 * skew_s:.0f} ms")


def _joint_skews(
    latency: dict[str, tuple[StreamKind, float]], t: QualityThresholds, found: _Findings
) -> None:
    joints = next(((n, lat) for n, (k, lat) in latency.items() if k == "joints"), None)
    if joints is None:
        return
    joint_name, joint_lat = joints
    for name, (kind, lat) in latency.items():
        if kind != "camera":
            continue
        skew_s = abs(lat - joint_lat) / 1e9
        if skew_s > t.skew_fail_s:
            found.add("fail", f"{name} vs {joint_name} skew {1000 * skew_s:.0f} ms")
        elif skew_s > t.joint_skew_s:
            found.add("warn", f"{name} vs {joint_name} skew {1000 * skew_s:.0f} ms")
