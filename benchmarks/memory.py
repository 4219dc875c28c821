"""Recorder memory over a long run: resident set size sampled while the sim publishes.

``python -m benchmarks.memory --minutes 30 --cameras jpeg`` runs ``xsq record -a`` beside
``sim_node --profile humanoid`` for that long, samples the recorder's RSS every
``--interval`` seconds, and prints per-minute min/max, the overall spread and the session's
loss counters. The process must stay flat (what it holds is bounded by
``recording.queue_max_bytes`` plus the overhead docs/architecture.md states); a leak shows as
a rising per-minute minimum. Not part of ``make bench`` (it takes as long as you ask).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil
from support.procs import ros_env, start, stop

from benchmarks.__main__ import CAMERAS, _wait_stderr
from xsquare_logger.session.counters import LOSS_KINDS

__all__ = ["main"]

_MB = 1e6


def run(minutes: float, cameras: str, interval: float, workdir: Path) -> dict:
    env = ros_env()
    session = workdir / "session"
    rec = start(
        ["-m", "xsquare_logger.cli.main", "record", "-a", "-o", str(session), "--no-recover",
         "--set", "recording.cameras=" + json.dumps({c: {"mode": cameras} for c in CAMERAS}),
         # Split as a field recorder would, so closing files is part of what is measured.
         "-b", str(2 * 1024**3)],
        env, workdir / "rec.out", workdir / "rec.err",
    )  # fmt: skip
    _wait_stderr(workdir / "rec.err", "recording session", rec)
    sim = start(
        ["-m", "xsquare_logger.ros.sim_node", "--profile", "humanoid", "--duration",
         str(minutes * 60), "--stats", "--wait-subscribers", "30"],
        env, workdir / "sim.out", workdir / "sim.err",
    )  # fmt: skip
    ps = psutil.Process(rec.pid)
    t0 = time.monotonic()
    samples: list[tuple[float, int]] = []
    while sim.poll() is None:
        samples.append((time.monotonic() - t0, ps.memory_info().rss))
        time.sleep(interval)
    time.sleep(2.0)
    samples.append((time.monotonic() - t0, ps.memory_info().rss))
    stop(rec, timeout=300)
    manifest = json.loads((session / "session.json").read_text())
    topics = manifest["topics"].values()
    lost = {
        name: sum(int(t.get(k, 0)) for k in LOSS_KINDS) for name, t in manifest["topics"].items()
    }
    by_kind = {k: sum(int(t.get(k, 0)) for t in topics) for k in LOSS_KINDS}
    per_minute: dict[int, list[int]] = {}
    for t, rss in samples:
        per_minute.setdefault(int(t // 60), []).append(rss)
    return {
        "minutes": minutes,
        "cameras": cameras,
        "samples": len(samples),
        "rss_MB_min": min(r for _t, r in samples) / _MB,
        "rss_MB_max": max(r for _t, r in samples) / _MB,
        "per_minute_MB": {m: (min(v) / _MB, max(v) / _MB) for m, v in per_minute.items()},
        "lost": sum(lost.values()),
        "lost_by_topic": {k: v for k, v in lost.items() if v},
        "lost_by_kind": {k: v for k, v in by_kind.items() if v},
        "files": len(manifest["files"]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--cameras", default="jpeg", help="raw, jpeg or h264 (default jpeg)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xsq-memory-") as tmp:
        r = run(args.minutes, args.cameras, args.interval, Path(tmp))
    print(f"== recorder RSS, humanoid, cameras {r['cameras']}, {r['minutes']:.0f} min, "
          f"{r['samples']} samples ==")
    for minute, (lo, hi) in sorted(r["per_minute_MB"].items()):
        print(f"minute {minute:>3}: {lo:7.1f} .. {hi:7.1f} MB")
    print(f"overall: {r['rss_MB_min']:.1f} .. {r['rss_MB_max']:.1f} MB; files {r['files']}; "
          f"lost {r['lost']} {r['lost_by_topic'] or ''} {r['lost_by_kind'] or ''}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
