"""The files of `xsq report`: PNG plots (matplotlib, Agg backend: no display needed) and
the HTML page that shows them with the numbers.

Every plot shares one x axis, seconds since the session's first message, with the tasks
shaded, so a dip in a rate or a jump in skew can be tied to what the robot was doing.
Long sessions are thinned before plotting (at most ``_MAX_POINTS`` points per line):
the plots are for seeing, the numbers are in report.json.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless robots and CI have no display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from xsquare_logger.tools.scan import (
    APERIODIC_TOPICS,
    JOINT_TOPIC,
    SessionScan,
    camera_streams,
    nearest_delta,
)

__all__ = ["rate_bins", "render_html", "render_plots"]

#: Upper bound on the rate plot's bins (a 4 h session still gets 1 s bins).
_MAX_BINS = 20_000

_NS = 1e9
_MS = 1e6
_MAX_POINTS = 4000
_DPI = 100


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= _MAX_POINTS:
        return x, y
    step = int(np.ceil(x.size / _MAX_POINTS))
    return x[::step], y[::step]


def _shade_tasks(ax: Axes, report: dict[str, Any]) -> None:
    for i, t in enumerate(report["tasks"]):
        ax.axvspan(t["offset_s"], t["end_offset_s"], color=f"C{i % 10}", alpha=0.12, lw=0)
        ax.text(t["offset_s"], 1.0, f" #{t['episode_index']} {t['task']}",
                transform=ax.get_xaxis_transform(), fontsize=7, va="top", clip_on=True)


def _finish(fig: Any, ax: Axes, report: dict[str, Any], path: Path, ylabel: str) -> Path:
    _shade_tasks(ax, report)
    ax.set_xlabel("time since session start (s)")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, max(report["session"]["duration_s"], 1e-3))
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def rate_bins(duration_s: float) -> tuple[float, np.ndarray]:
    """Bin width (s) and edges of the rate plot over ``duration_s`` seconds.

    1 s bins, but never more than ``_MAX_BINS``: a session whose stamps span years
    (a clock jump) must cost a plot, not a 1e9-element histogram.
    """
    duration = max(duration_s, 1e-3)
    bin_s = max(1.0, float(np.ceil(duration / _MAX_BINS)))
    return bin_s, np.append(np.arange(0.0, duration, bin_s), duration)


def _rate_plot(scan: SessionScan, report: dict[str, Any], path: Path) -> Path:
    t0 = scan.view.start_ns
    duration = max(report["session"]["duration_s"], 1e-3)
    bin_s, edges = rate_bins(duration)
    widths = np.diff(edges)
    # A last bin shorter than half a bin would draw a false drop (or spike): leave it out.
    keep = widths >= min(0.5 * bin_s, duration)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for name, series in sorted(scan.topics.items()):
        if name in APERIODIC_TOPICS or series.log_ns.size < 3:
            continue
        counts, _ = np.histogram((series.log_ns - t0) / _NS, bins=edges)
        rate = np.where(keep, counts / widths, np.nan)
        ax.stairs(rate, edges, label=name, lw=1)
    ax.set_yscale("log")
    ax.set_title(f"messages per second ({bin_s:g} s bins)")
    return _finish(fig, ax, report, path, "rate (Hz)")


def _latency_plot(scan: SessionScan, report: dict[str, Any], path: Path) -> Path:
    t0 = scan.view.start_ns
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for name, series in sorted(scan.topics.items()):
        if series.stamp_ns is None or name in APERIODIC_TOPICS:
            continue
        ok = series.stamp_ns > 0
        x = (series.log_ns[ok] - t0) / _NS
        y = (series.log_ns[ok] - series.stamp_ns[ok]) / _MS
        x, y = _thin(x, y)
        ax.plot(x, y, ".", ms=1.5, label=name)
    limit = report["thresholds"]["max_latency_ms"]
    ax.axhline(limit, color="red", ls="--", lw=0.8, label=f"limit {limit} ms (p99)")
    ax.set_title("latency: receive time − header stamp")
    return _finish(fig, ax, report, path, "latency (ms)")


def _skew_plot(scan: SessionScan, report: dict[str, Any], path: Path) -> Path | None:
    cameras = camera_streams(scan.topics)
    ref_name = report["skew_ms"]["reference_camera"]
    if ref_name is None:
        return None
    t0 = scan.view.start_ns

    def stamps(topic: str) -> np.ndarray:
        s = scan.topics[topic].stamp_ns
        return np.zeros(0, np.int64) if s is None else np.sort(s[s > 0])

    fig, ax = plt.subplots(figsize=(11, 4.5))
    ref = stamps(cameras[ref_name])
    for camera, topic in cameras.items():
        if camera == ref_name:
            continue
        d = nearest_delta(ref, stamps(topic))
        x, y = _thin((ref[: d.size] - t0) / _NS, d / _MS)
        ax.plot(x, y, ".", ms=2, label=f"{camera} − {ref_name}")
    if JOINT_TOPIC in scan.topics:
        joints = stamps(JOINT_TOPIC)
        for camera, topic in cameras.items():
            cam = stamps(topic)
            d = nearest_delta(cam, joints)
            x, y = _thin((cam[: d.size] - t0) / _NS, d / _MS)
            ax.plot(x, y, ".", ms=1, alpha=0.5, label=f"{JOINT_TOPIC} − {camera}")
    # Two limits: camera vs camera is judged in frames of the reference camera,
    # camera vs joints in absolute ms (tools/report.py, Thresholds).
    th = report["thresholds"]
    joint_limit = th["max_skew_ms"]
    period = report["skew_ms"].get("frame_period_ms")
    cam_limit = round(th["max_skew_frames"] * period, 3) if period else None
    for sign in (1, -1):
        ax.axhline(sign * joint_limit, color="red", ls="--", lw=0.8)
        if cam_limit is not None:
            ax.axhline(sign * cam_limit, color="purple", ls=":", lw=0.8)
    cams = (f"cameras ±{cam_limit} ms = {th['max_skew_frames']} frame, dotted; "
            if cam_limit is not None else "")
    ax.set_title(f"skew: nearest header stamp, signed (limits on p99 of |Δ|: {cams}"
                 f"joints ±{joint_limit} ms, dashed)")
    return _finish(fig, ax, report, path, "skew (ms)")


def _loss_plot(report: dict[str, Any], path: Path) -> Path | None:
    timeline = report["losses"]["timeline"]
    if not timeline:
        return None
    data = np.asarray(timeline, dtype=float)
    fig, ax = plt.subplots(figsize=(11, 3.5))
    for col, label in ((1, "lost in transport"), (2, "dropped (queue full)"),
                       (3, "dropped (disk)"), (4, "dropped (encoder)")):
        ax.step(data[:, 0], data[:, col], where="post", label=label)
    ax.set_title("cumulative losses (from /xsquare/session_status)")
    return _finish(fig, ax, report, path, "messages")


def render_plots(scan: SessionScan, report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the report's PNG files into ``out_dir``; return their paths."""
    made = [
        _rate_plot(scan, report, out_dir / "rate.png"),
        _latency_plot(scan, report, out_dir / "latency.png"),
        _skew_plot(scan, report, out_dir / "skew.png"),
        _loss_plot(report, out_dir / "losses.png"),
    ]
    return [p for p in made if p is not None]


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: dict[str, Any]) -> str:
    """A self-explanatory HTML page of the report (PNG plots referenced by file name)."""
    s = report["session"]
    verdict = report["verdict"]
    esc = html.escape
    reasons = "".join(f"<li>{esc(r)}</li>" for r in report["reasons"]) or "<li>none</li>"
    topic_rows = []
    for name, t in report["topics"].items():
        lat = t.get("latency_ms") or {}
        topic_rows.append([name, t["type"], t["count"], t.get("rate_hz"), t.get("nominal_hz"),
                           t.get("jitter_ms"), t.get("gap_count"), t.get("max_gap_s"),
                           lat.get("p50"), lat.get("p99"), lat.get("max")])
    skew = report["skew_ms"]
    skew_rows = []
    for kind, entries in (("vs " + str(skew["reference_camera"]), skew["cameras"]),
                          ("vs /joint_states", skew["camera_joint"])):
        for camera, st in entries.items():
            st = st or {}
            skew_rows.append([camera, kind, st.get("median_signed"), st.get("p50"),
                              st.get("p99"), st.get("max")])
    gap_rows = [[name, g["offset_s"], g["duration_s"], g["missing"]]
                for name, t in report["topics"].items() for g in t.get("gaps", [])]
    loss = report["losses"]
    loss_rows = [[name, c["written"], c["lost_total"], c["fraction"]]
                 for name, c in loss["per_topic"].items() if c["lost_total"]]
    task_rows = [[t["episode_index"], t["task"], t["offset_s"], t["end_offset_s"],
                  t["outcome"] or "open"] for t in report["tasks"]]
    th_rows = [[k, v] for k, v in report["thresholds"].items()]
    images = "".join(f'<figure><img src="{esc(p)}" alt="{esc(p)}"></figure>'
                     for p in report.get("plots", []))
    color = "#1a7f37" if verdict == "PASS" else "#cf222e"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{esc(s["session_id"])}: session report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.verdict {{ font-size: 1.6em; font-weight: bold; color: {color}; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Session report: {esc(s["session_id"])}</h1>
<p>{esc(s["path"])}: {s["duration_s"]} s, files {esc(", ".join(s["files"]))};
generated {esc(report.get("generated_utc", ""))}</p>
<p class="verdict">{verdict}</p>
<h2>Reasons</h2><ul>{reasons}</ul>
<h2>Topics</h2>
<p>rate = (n − 1) / span; nominal = 1 / median interval; jitter = std of non-gap intervals;
latency = receive time − header stamp.</p>
{_table(["topic", "type", "count", "rate Hz", "nominal Hz", "jitter ms", "gaps", "max gap s",
         "latency p50 ms", "p99 ms", "max ms"], topic_rows)}
<h2>Skew (header stamps, nearest frame)</h2>
{_table(["camera", "against", "median signed ms", "|Δ| p50 ms", "p99 ms", "max ms"], skew_rows)}
<h2>Gaps</h2>
{_table(["topic", "at +s", "duration s", "missing"], gap_rows)}
<h2>Losses ({esc(loss["source"])}, total {loss["total"]})</h2>
{_table(["topic", "written", "lost", "fraction"], loss_rows)}
<h2>Tasks</h2>
{_table(["#", "task", "start +s", "end +s", "outcome"], task_rows)}
<h2>Plots</h2>{images}
<h2>Thresholds</h2>
{_table(["threshold", "value"], th_rows)}
</body></html>
"""
