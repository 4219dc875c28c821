"""`xsq tasks`, `xsq clip`, `xsq report`: finding things in a session and judging its sync.

``xsq`` hooks these in with :func:`add_parsers` and :func:`run`.

Exit status:

* ``tasks``: 0, or 1 if the session cannot be read.
* ``clip``: 0 with the new session's path on stdout, 1 on any error (no such episode: the
  message lists the valid indexes; output exists: nothing is overwritten).
* ``report``: 0 when the session PASSes every threshold, 4 when it FAILs (the reasons are
  printed), 1 if the session cannot be read. 4, not 1, so scripts can tell "bad data" from
  "tool failed".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xsquare_logger.tools import ToolError

__all__ = ["EXIT_ERROR", "EXIT_FAIL", "EXIT_OK", "add_parsers", "run"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FAIL = 4

_SubParsers = argparse._SubParsersAction
COMMANDS = ("tasks", "clip", "report")


def add_parsers(sub: _SubParsers) -> None:
    """Add the ``tasks``, ``clip`` and ``report`` commands to the ``xsq`` subparsers."""
    p = sub.add_parser(
        "tasks",
        help="list the episodes (tasks) of a session",
        description="Episodes from session.json (or the xsquare.tasks record of the last "
        "MCAP file). 'start' is seconds since the epoch: type it into Foxglove's playback "
        "time display to jump there.",
    )
    p.add_argument("session", type=Path, help="session directory")
    p.add_argument("--json", action="store_true", help="machine-readable output (times in ns)")

    p = sub.add_parser(
        "clip",
        help="write one episode as a new session (seeks with the MCAP indexes)",
        description="Copy the messages of episode N (± --pad seconds) into a new rosbag2/MCAP "
        "session directory, reading only the chunks that overlap it. Prints the new path.",
    )
    p.add_argument("session", type=Path, help="session directory")
    p.add_argument("--task", type=int, required=True, metavar="N",
                   help="episode index (see `xsq tasks`)")
    p.add_argument("--pad", type=float, default=0.0, metavar="SECONDS",
                   help="seconds kept before and after the episode (default 0)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="new session directory (must not exist)")

    p = sub.add_parser(
        "report",
        help="session quality report: rates, gaps, latency, skew, losses; PASS/FAIL",
        description="Scan the session once and write report.json, report.html and PNG plots. "
        "Exit 0 on PASS, 4 on FAIL, 1 on error.",
    )
    p.add_argument("session", type=Path, help="session directory")
    p.add_argument("-o", "--output", type=Path,
                   help="report directory (default: ./<session name>_report)")
    p.add_argument("--json", action="store_true",
                   help="print report.json on stdout instead of the summary")
    p.add_argument("--camera-min-hz", type=float, help="camera mean rate floor (default 28)")
    p.add_argument("--max-skew-ms", type=float,
                   help="camera vs /joint_states p99 skew limit in ms (default 20)")
    p.add_argument("--max-skew-frames", type=float,
                   help="camera vs reference camera p99 skew limit in frame periods "
                   "(default 0.25)")
    p.add_argument("--max-latency-ms", type=float, help="p99 latency limit in ms (default 50)")
    p.add_argument("--max-gap-s", type=float, help="longest allowed gap in s (default 0.5)")
    p.add_argument("--max-loss-fraction", type=float,
                   help="allowed lost fraction per topic (default 0.001)")


def run(args: argparse.Namespace) -> int:
    """Run the command in ``args.command``; return the exit status."""
    name = args.command
    try:
        if name == "tasks":
            return _tasks(args)
        if name == "clip":
            return _clip(args)
        if name == "report":
            return _report(args)
    except ToolError as exc:
        print(f"xsq {name}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    raise ValueError(f"not a tools command: {name!r}")


def _tasks(args: argparse.Namespace) -> int:
    from xsquare_logger.tools.tasks import format_tasks, list_tasks, load_session

    view = load_session(args.session)
    rows = list_tasks(view)
    if args.json:
        print(json.dumps({"session_id": view.session_id, "source": view.tasks_source,
                          "start_ns": view.start_ns, "end_ns": view.end_ns, "tasks": rows},
                         indent=2))
    else:
        print(format_tasks(rows, view.session_id))
    return EXIT_OK


def _clip(args: argparse.Namespace) -> int:
    from xsquare_logger.tools.clip import clip_session

    result = clip_session(args.session, args.task, args.pad, args.output)
    print(
        f"episode {result.episode_index}: {result.message_count} messages, "
        f"{(result.end_ns - result.start_ns) / 1e9:.3f} s; read {len(result.files_read)} "
        f"file(s), {result.chunks_read}/{result.chunks_total} chunks, "
        f"{(result.bytes_read or 0) / 1e6:.1f} of {result.source_bytes / 1e6:.1f} MB",
        file=sys.stderr,
    )
    print(result.out_dir)
    return EXIT_OK


def _thresholds(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from xsquare_logger.tools.report import ReportError, Thresholds

    overrides = {
        key: getattr(args, key)
        for key in ("camera_min_hz", "max_skew_ms", "max_skew_frames", "max_latency_ms",
                    "max_gap_s",
                    "max_loss_fraction")
        if getattr(args, key) is not None
    }
    try:
        return Thresholds(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
            for e in exc.errors()
        )
        raise ReportError(f"bad threshold: {problems}") from None


def _report(args: argparse.Namespace) -> int:
    from xsquare_logger.tools.report import make_report

    thresholds = _thresholds(args)
    session = args.session.resolve()
    out_dir = args.output or Path.cwd() / f"{session.name}_report"
    report = make_report(args.session, out_dir, thresholds)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_summary(report, out_dir))
    return EXIT_OK if report["verdict"] == "PASS" else EXIT_FAIL


def _summary(report: dict[str, Any], out_dir: Path) -> str:
    s = report["session"]
    lines = [f"session {s['session_id']}: {s['duration_s']} s, {len(report['topics'])} topics"]
    for name, t in report["topics"].items():
        rate = t.get("rate_hz")
        lat = (t.get("latency_ms") or {}).get("p99")
        extra = f", latency p99 {lat} ms" if lat is not None else ""
        gaps = f", {t['gap_count']} gap(s)" if t.get("gap_count") else ""
        rate_text = f"{rate} Hz" if rate is not None else "-"
        lines.append(f"  {name}: {t['count']} msgs, {rate_text}{gaps}{extra}")
    skew = report["skew_ms"]
    for camera, st in skew["cameras"].items():
        if st:
            lines.append(f"  skew {camera} vs {skew['reference_camera']}: "
                         f"p50 {st['p50']} ms, p99 {st['p99']} ms")
    lines.append(f"{report['verdict']}" + (":" if report["reasons"] else ""))
    lines += [f"  - {r}" for r in report["reasons"]]
    lines.append(f"report: {out_dir / 'report.html'}")
    return "\n".join(lines)
