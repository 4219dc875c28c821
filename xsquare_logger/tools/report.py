"""`xsq report`: how well a session's streams kept time, and whether it is good enough.

One pass over every message of the session (the report, unlike ``xsq clip``, may scan)
keeps only timestamps, per topic, as int64 arrays:

* ``log_time`` (the receive time) -> message count, mean rate, period jitter, gaps, rate
  over time;
* the header stamp, read straight out of the CDR bytes without deserializing: for a message
  whose first field is ``std_msgs/Header`` (or a bare ``builtin_interfaces/Time``),
  ``stamp.sec`` (int32) sits at byte 4 and ``stamp.nanosec`` (uint32) at byte 8, right after
  the 4-byte encapsulation header whose second byte says the byte order -> latency
  (receive − stamp) and skew between cameras and between cameras and ``/joint_states``;
* ``/xsquare/session_status`` messages (deserialized; about 1 Hz) -> losses over time.

Thresholds (:class:`Thresholds`) turn the numbers into PASS or FAIL with reasons.
All times inside are integer nanoseconds; the report shows ms, s and Hz as named.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from xsquare_logger.session.counters import LOSS_KINDS, LossCounters
from xsquare_logger.tools.scan import (
    APERIODIC_TOPICS,
    JOINT_TOPIC,
    ReportError,
    SessionScan,
    TopicSeries,
    camera_streams,
    nearest_delta,
    scan_session,
    valid_stamps,
)
from xsquare_logger.tools.tasks import episode_range, load_session

__all__ = [
    "APERIODIC_TOPICS",
    "JOINT_TOPIC",
    "REPORT_HTML",
    "REPORT_JSON",
    "ReportError",
    "SessionScan",
    "Thresholds",
    "TopicSeries",
    "analyze",
    "camera_streams",
    "evaluate",
    "make_report",
    "nearest_delta",
    "scan_session",
    "stream_stats",
    "write_report",
]

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
_NS = 1_000_000_000
_MS = 1_000_000


class Thresholds(BaseModel):
    """What a session must meet to PASS. Every check compares one number to one limit."""

    model_config = ConfigDict(extra="forbid")

    camera_min_hz: float = Field(
        28.0, ge=0, description="Mean rate each camera image stream must reach (Hz)."
    )
    max_skew_frames: float = Field(
        0.25,
        gt=0,
        le=0.5,
        description="p99 of |header stamp difference| to the nearest frame of the reference "
        "camera, per camera, in frame periods of the reference camera (its median stamp "
        "interval): 0.25 = a quarter frame, 8.3 ms at 30 Hz. Relative because the nearest "
        "frame is never more than half a period away: synced cameras sit near 0, "
        "free-running ones anywhere up to 0.5.",
    )
    max_skew_ms: float = Field(
        20.0,
        gt=0,
        description="p99 of |header stamp difference| to the nearest /joint_states, per "
        "camera (ms; absolute: how far a frame's stamp is from the robot state it is "
        "paired with).",
    )
    max_latency_ms: float = Field(
        50.0, gt=0, description="p99 of receive time − header stamp, per stamped topic (ms)."
    )
    max_gap_s: float = Field(
        0.5, gt=0, description="Longest interval without a message in a periodic stream (s)."
    )
    max_loss_fraction: float = Field(
        0.001,
        ge=0,
        le=1,
        description="(lost in transport + dropped) / (written + lost + dropped), per topic.",
    )
    gap_factor: float = Field(
        2.5, gt=1, description="An interval longer than this × the nominal period is a gap."
    )


# --------------------------------------------------------------------------- scanning


















# --------------------------------------------------------------------------- analysis


def _pct(values_ms: np.ndarray) -> dict[str, float] | None:
    if values_ms.size == 0:
        return None
    p50, p99 = np.percentile(values_ms, [50, 99])
    return {
        "p50": round(float(p50), 3),
        "p99": round(float(p99), 3),
        "max": round(float(values_ms.max()), 3),
        "mean": round(float(values_ms.mean()), 3),
    }


def stream_stats(log_ns: np.ndarray, t0_ns: int, gap_factor: float = 2.5) -> dict[str, Any]:
    """Rate, jitter and gaps of one stream from its sorted receive times (ns).

    ``rate_hz`` is (n − 1) / (last − first); ``nominal_hz`` is 1 / median interval;
    ``jitter_ms`` is the standard deviation of the intervals that are not gaps (a gap is
    reported by itself, not smeared into the jitter). A gap is an interval longer than
    ``gap_factor`` × the median interval; ``offset_s`` is its start relative to ``t0_ns``
    and ``missing`` the number of periods that fit in it, minus one.
    """
    n = int(log_ns.size)
    out: dict[str, Any] = {"count": n, "rate_hz": None, "nominal_hz": None,
                           "jitter_ms": None, "gaps": [], "gap_count": 0, "max_gap_s": 0.0}
    if n < 2:
        return out
    dt = np.diff(log_ns)
    span = int(log_ns[-1] - log_ns[0])
    period = float(np.median(dt))
    if span > 0:
        out["rate_hz"] = round((n - 1) * _NS / span, 3)
    if period > 0:
        out["nominal_hz"] = round(_NS / period, 3)
    is_gap = dt > gap_factor * period if period > 0 else np.zeros(dt.shape, bool)
    regular = dt[~is_gap]
    if regular.size:
        out["jitter_ms"] = round(float(np.std(regular)) / _MS, 4)
    gaps = []
    for i in np.flatnonzero(is_gap):
        gaps.append(
            {
                "start_ns": int(log_ns[i]),
                "offset_s": round((int(log_ns[i]) - t0_ns) / _NS, 3),
                "duration_s": round(int(dt[i]) / _NS, 4),
                "missing": max(0, round(int(dt[i]) / period) - 1),
            }
        )
    out["gaps"] = gaps
    out["gap_count"] = len(gaps)
    out["max_gap_s"] = max((g["duration_s"] for g in gaps), default=0.0)
    return out




def _skew(ref: np.ndarray, other: np.ndarray) -> dict[str, Any] | None:
    delta = nearest_delta(ref, other)
    stats = _pct(np.abs(delta) / _MS)
    if stats is None:
        return None
    stats["median_signed"] = round(float(np.median(delta)) / _MS, 3)
    stats["n"] = int(delta.size)
    return stats






def _losses(scan: SessionScan) -> dict[str, Any]:
    """Per-topic losses (session.json, else the last SessionStatus) and the status timeline.

    Per topic: the :class:`LossCounters` of the session (``received``, ``written``, the
    four loss kinds, ``lost``; ``lost_total`` is the same as ``lost``) and ``fraction`` =
    :attr:`LossCounters.loss_fraction` = lost / (received + lost in transport):
    ``received`` counts every message the middleware delivered, so a raw camera recorded
    only compressed (``compressed_to``) is judged on the frames its encoder skipped.
    """
    counters: dict[str, LossCounters] = {}
    if scan.view.manifest is not None and scan.view.manifest.topics:
        source = "session.json"
        counters = scan.view.counters()
    elif scan.losses:
        source = "session_status"
        counters = dict(scan.losses[-1].per_topic)
    else:
        source = "none"
    per_topic: dict[str, dict[str, Any]] = {}
    for name, c in counters.items():
        counts: dict[str, Any] = c.to_dict()
        counts["lost_total"] = c.lost
        counts["fraction"] = round(c.loss_fraction, 6)
        per_topic[name] = counts
    t0 = scan.view.start_ns
    timeline = [
        [round((s.log_ns - t0) / _NS, 3), *(getattr(s.totals, k) for k in LOSS_KINDS),
         s.totals.lost]
        for s in scan.losses
    ]
    return {
        "source": source,
        "total": LossCounters.total(counters.values()).lost,
        "per_topic": per_topic,
        "status_messages": len(scan.losses),
        "status_decoded": scan.status_decoded,
        # [offset_s, lost_transport, dropped_queue, dropped_disk, dropped_encode, lost]
        "timeline": timeline,
    }


def analyze(scan: SessionScan, thresholds: Thresholds | None = None) -> dict[str, Any]:
    """The report's numbers (no verdict): per topic, camera skews, losses, tasks."""
    th = thresholds or Thresholds()
    view = scan.view
    t0 = view.start_ns
    topics: dict[str, Any] = {}
    for name, series in sorted(scan.topics.items()):
        entry: dict[str, Any] = {"type": series.type, "periodic": name not in APERIODIC_TOPICS}
        stats = stream_stats(series.log_ns, t0, th.gap_factor)
        if not entry["periodic"]:
            stats = {"count": stats["count"]}
        entry.update(stats)
        entry["latency_ms"] = None
        if series.stamp_ns is not None:
            ok = series.stamp_ns > 0
            lat = (series.log_ns[ok] - series.stamp_ns[ok]) / _MS
            entry["latency_ms"] = _pct(lat)
            if entry["latency_ms"] is not None:
                entry["latency_ms"]["negative"] = int(np.count_nonzero(lat < 0))
        topics[name] = entry

    cameras = camera_streams(scan.topics)
    reference = "head" if "head" in cameras else next(iter(cameras), None)
    skew: dict[str, Any] = {"reference_camera": reference, "frame_period_ms": None,
                            "cameras": {}, "camera_joint": {}}
    if reference is not None:
        ref = valid_stamps(scan.topics[cameras[reference]])
        if ref.size >= 2:
            # The reference camera's frame period: what camera skew is judged against.
            skew["frame_period_ms"] = round(float(np.median(np.diff(ref))) / _MS, 3)
        for camera, topic in cameras.items():
            if camera != reference:
                skew["cameras"][camera] = _skew(ref, valid_stamps(scan.topics[topic]))
    if JOINT_TOPIC in scan.topics:
        joints = valid_stamps(scan.topics[JOINT_TOPIC])
        for camera, topic in cameras.items():
            skew["camera_joint"][camera] = _skew(valid_stamps(scan.topics[topic]), joints)

    tasks = []
    for t in view.tasks:
        start, end = episode_range(view, t)
        tasks.append({"episode_index": t.episode_index, "task": t.task, "start_ns": start,
                      "end_ns": t.end_ns, "offset_s": round((start - t0) / _NS, 3),
                      "end_offset_s": round((end - t0) / _NS, 3), "outcome": t.outcome})
    return {
        "session": {
            "path": str(view.directory),
            "session_id": view.session_id,
            "start_ns": view.start_ns,
            "end_ns": view.end_ns,
            "duration_s": round((view.end_ns - view.start_ns) / _NS, 3),
            "files": [f.path.name for f in view.files],
        },
        "cameras": cameras,
        "topics": topics,
        "skew_ms": skew,
        "losses": _losses(scan),
        "tasks": tasks,
    }


# --------------------------------------------------------------------------- verdict


def _check(checks: list[dict[str, Any]], kind: str, subject: str, value: float | None,
           limit: float, ok: bool, message: str) -> None:
    checks.append({"check": kind, "subject": subject, "value": value, "limit": limit,
                   "ok": ok, "message": message})


def evaluate(numbers: dict[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """PASS/FAIL of :func:`analyze` output against ``thresholds``.

    Returns ``{"verdict", "reasons", "checks", "thresholds"}``; ``reasons`` are the failed
    checks' messages. Skew and latency are judged on their p99 (a systematic offset shows
    there; a single late frame does not fail a session).
    """
    th = thresholds
    checks: list[dict[str, Any]] = []
    topics = numbers["topics"]
    for camera, topic in numbers["cameras"].items():
        rate = topics[topic].get("rate_hz")
        ok = rate is not None and rate >= th.camera_min_hz
        _check(checks, "camera_rate", topic, rate, th.camera_min_hz, ok,
               f"{topic} ({camera}): mean rate {rate} Hz < {th.camera_min_hz} Hz")
    skew = numbers["skew_ms"]
    ref = skew["reference_camera"]
    period = skew.get("frame_period_ms")
    # Camera vs camera: a fraction of the reference camera's frame period (in ms here).
    cam_limit = round(th.max_skew_frames * period, 3) if period else 0.0
    for camera, stats in skew["cameras"].items():
        value = stats["p99"] if stats else None
        ok = value is not None and bool(period) and value <= cam_limit
        _check(checks, "camera_skew", camera, value, cam_limit, ok,
               f"camera {camera} vs {ref}: header stamp skew p99 {value} ms "
               f"({value / period:.2f} frames) > {th.max_skew_frames} frames "
               f"({cam_limit} ms at {period} ms per frame)" if value is not None and period
               else f"camera {camera} vs {ref}: no stamps to compare")
    for camera, stats in skew["camera_joint"].items():
        value = stats["p99"] if stats else None
        ok = value is not None and value <= th.max_skew_ms
        _check(checks, "camera_joint_skew", camera, value, th.max_skew_ms, ok,
               f"camera {camera} vs {JOINT_TOPIC}: skew p99 {value} ms > {th.max_skew_ms} ms"
               if value is not None else f"camera {camera} vs {JOINT_TOPIC}: no stamps")
    for name, t in topics.items():
        lat = t.get("latency_ms")
        if lat is not None:
            ok = lat["p99"] <= th.max_latency_ms
            _check(checks, "latency", name, lat["p99"], th.max_latency_ms, ok,
                   f"{name}: latency (receive − stamp) p99 {lat['p99']} ms "
                   f"> {th.max_latency_ms} ms")
        if t.get("periodic") and t.get("count", 0) >= 3:
            worst = t["max_gap_s"]
            ok = worst <= th.max_gap_s
            first = next((g for g in t["gaps"] if g["duration_s"] == worst), None)
            where = f" at +{first['offset_s']} s" if first else ""
            _check(checks, "gap", name, worst, th.max_gap_s, ok,
                   f"{name}: gap of {worst} s{where} > {th.max_gap_s} s "
                   f"({t['gap_count']} gap(s) in all)")
    for name, counts in numbers["losses"]["per_topic"].items():
        frac = counts["fraction"]
        ok = frac <= th.max_loss_fraction
        _check(checks, "loss", name, frac, th.max_loss_fraction, ok,
               f"{name}: lost {counts['lost']} messages ({frac:.4%}) "
               f"> {th.max_loss_fraction:.4%}")
    total = sum(t.get("count", 0) for t in topics.values())
    _check(checks, "messages", "session", total, 1, total > 0, "the session holds no messages")
    reasons = [c["message"] for c in checks if not c["ok"]]
    return {
        "verdict": "FAIL" if reasons else "PASS",
        "reasons": reasons,
        "checks": checks,
        "thresholds": th.model_dump(),
    }


# --------------------------------------------------------------------------- output


def make_report(
    session: Path, out_dir: Path | None = None, thresholds: Thresholds | None = None
) -> dict[str, Any]:
    """Scan, analyze and judge ``session``; write report.json/.html + PNGs if ``out_dir``.

    Returns the report (what report.json holds).
    """
    th = thresholds or Thresholds()
    scan = scan_session(load_session(session))
    report = analyze(scan, th)
    report.update(evaluate(report, th))
    report["generated_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
    if out_dir is not None:
        try:
            write_report(report, scan, out_dir)
        except OSError as exc:
            raise ReportError(f"{out_dir}: cannot write the report: {exc}") from None
    return report


def write_report(report: dict[str, Any], scan: SessionScan, out_dir: Path) -> list[Path]:
    """Write the PNG plots, ``report.json`` and ``report.html`` into ``out_dir``."""
    from xsquare_logger.tools.report_plots import (  # matplotlib only when files are wanted
        render_html,
        render_plots,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    plots = render_plots(scan, report, out_dir)
    report["plots"] = [p.name for p in plots]
    json_path = out_dir / REPORT_JSON
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    html_path = out_dir / REPORT_HTML
    html_path.write_text(render_html(report), encoding="utf-8")
    return [json_path, html_path, *plots]
