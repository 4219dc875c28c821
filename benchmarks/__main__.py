"""`make bench`: the recorder against a bare-subscriber ceiling, plus the writer micro-benchmark,
upload, clip, tablet link, floor service and export phases (each ``--skip-...`` able).

Both phases run in this process group, one after the other, on the same sim
load, so the ratio recorded ÷ ceiling is measured on the same machine state.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from support.procs import ros_env, start, stop

from xsquare_logger.session.counters import LOSS_KINDS

__all__ = ["main"]


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _wait_stderr(path: Path, needle: str, proc: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{needle!r} not seen in {path}")


CAMERAS = [f"/camera/{c}/image_raw" for c in ("head", "left_wrist", "right_wrist")]


def run_phase(
    kind: str, duration: float, profile: str, workdir: Path, compression: str, cameras: str
) -> dict:
    """Run the sim for ``duration`` s against the ceiling subscriber or the recorder."""
    env = ros_env()
    logs = workdir / kind
    logs.mkdir(parents=True)
    if kind == "ceiling":
        sub = start(["-m", "benchmarks.ceiling"], env, logs / "sub.out", logs / "sub.err")
        ready = None
    elif kind == "naive":  # rclpy + official mcap Writer (zstd) from the callback
        sub = start(["-m", "benchmarks.naive", str(logs / "naive.mcap")], env,
                    logs / "sub.out", logs / "sub.err")  # fmt: skip
        ready = None
    else:
        session = workdir / "session"
        sub = start(
            ["-m", "xsquare_logger.cli.main", "record", "-a", "-o", str(session), "--no-recover",
             "--compression", compression, "--set",
             "recording.cameras=" + json.dumps({c: {"mode": cameras} for c in CAMERAS})],
            env,
            logs / "sub.out",
            logs / "sub.err",
        )
        ready = "recording session"
    if ready:
        _wait_stderr(logs / "sub.err", ready, sub)
    else:
        time.sleep(1.0)
    ps = psutil.Process(sub.pid)
    sim = start(
        ["-m", "xsquare_logger.ros.sim_node", "--profile", profile, "--duration",
         str(duration), "--stats", "--wait-subscribers", "30", "--rt-priority", "10"],
        env,
        logs / "sim.out",
        logs / "sim.err",
    )
    sim_ps = psutil.Process(sim.pid)
    cpu0, wall0 = _cpu_seconds(ps), time.monotonic()
    sim_cpu = 0.0
    while sim.poll() is None:
        try:
            sim_cpu = _cpu_seconds(sim_ps)
        except psutil.Error:
            break
        time.sleep(0.5)
    cpu1, wall1 = _cpu_seconds(ps), time.monotonic()
    time.sleep(2.0)  # let the last messages arrive and queue
    stop(sub, timeout=300)
    sim_stats = json.loads((logs / "sim.out").read_text().strip().splitlines()[-1])
    out: dict[str, Any] = {
        "published": sim_stats["published"],
        "skipped": sim_stats.get("skipped", {}),  # ticks the sim was a whole period late for
        "cpu_percent": 100.0 * (cpu1 - cpu0) / max(1e-9, wall1 - wall0),
        "sim_cpu_percent": 100.0 * sim_cpu / max(1e-9, wall1 - wall0),
        "wall_s": wall1 - wall0,
    }
    if kind in ("ceiling", "naive"):
        sub_stats = json.loads((logs / "sub.out").read_text().strip().splitlines()[-1])
        out["received"] = sub_stats["received"]
        out["bytes"] = sub_stats.get("bytes", {})
        out["gaps"] = sub_stats.get("gaps", {})
    else:
        manifest = json.loads((workdir / "session" / "session.json").read_text())
        out["topics"] = manifest["topics"]
        out["files"] = manifest["files"]
        out["bytes_on_disk"] = sum(f["size"] for f in manifest["files"])
    return out


def humanoid_bench(
    duration: float, profile: str, compression: str, keep: bool, cameras: str = "raw"
) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="xsq-bench-", dir="bench_out" if keep else None))
    try:
        print(f"[bench] ceiling: bare raw subscriber, {profile}, {duration:.0f} s", flush=True)
        ceiling = run_phase("ceiling", duration, profile, workdir, compression, cameras)
        print(f"[bench] recorder: xsq record (cameras {cameras}, chunks {compression}), "
              f"{profile} profile, {duration:.0f} s", flush=True)
        rec = run_phase("recorder", duration, profile, workdir, compression, cameras)
        naive = None
        if cameras == "raw":
            print(f"[bench] naive: rclpy + mcap.writer.Writer (zstd) in the callback, "
                  f"{profile} profile, {duration:.0f} s", flush=True)
            naive = run_phase("naive", duration, profile, workdir, compression, cameras)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for topic in sorted(set(ceiling["published"]) | set(rec["published"])):
        t = rec["topics"].get(topic, {})
        recorded = int(t.get("written", 0))
        if t.get("compressed_to"):  # a camera recorded compressed: count its output frames
            recorded = int(rec["topics"].get(t["compressed_to"], {}).get("written", 0))
            t = {**t, "dropped_encode": t.get("dropped_encode", 0)}
        received = int(ceiling["received"].get(topic, 0))
        kinds = {k: int(t.get(k, 0)) for k in LOSS_KINDS}
        lost = sum(kinds.values())
        # Both phases publish for the same time, but the two sims' counts differ
        # slightly; normalise each side by what its own sim published.
        pub_c, pub_r = ceiling["published"].get(topic, 0), rec["published"].get(topic, 0)
        ratio = (recorded / pub_r) / (received / pub_c) if pub_c and pub_r and received else 0.0
        rows.append(
            {
                "topic": topic,
                "published_ceiling_run": pub_c,
                "ceiling_received": received,
                "ceiling_gaps": int(ceiling["gaps"].get(topic, 0)),
                "published_recorder_run": pub_r,
                "recorded": recorded,
                "lost": lost,
                "lost_by_kind": kinds,  # transport gap / full queue / disk / encoder
                "ratio": ratio,
                "naive_ratio": _ratio(naive, topic, received / pub_c)
                if naive and pub_c and received else None,
            }
        )
    total_pub_r = sum(rec["published"].values())
    total_rec = sum(r["recorded"] for r in rows)
    total_pub_c = sum(ceiling["published"].values())
    total_recv = sum(r["ceiling_received"] for r in rows)
    written = sum(int(t.get("bytes_written", 0)) for t in rec["topics"].values())
    raw_bytes = sum(int(ceiling["bytes"].get(t, 0)) for t in ceiling["bytes"])
    return {
        "profile": profile,
        "cameras": cameras,
        "raw_MBps_published": raw_bytes / 1e6 / ceiling["wall_s"],
        "compression": compression,
        "duration_s": duration,
        "rows": rows,
        "ratio_total": (total_rec / total_pub_r) / (total_recv / total_pub_c)
        if total_pub_r and total_recv else 0.0,
        "lost_total": sum(r["lost"] for r in rows),
        "recorded_MBps": written / 1e6 / rec["wall_s"],
        "disk_MBps": rec["bytes_on_disk"] / 1e6 / rec["wall_s"],
        "recorder_cpu_percent": rec["cpu_percent"],
        "ceiling_cpu_percent": ceiling["cpu_percent"],
        "sim_skipped_percent": {
            "ceiling": _skipped_percent(ceiling),
            "recorder": _skipped_percent(rec),
            **({"naive": _skipped_percent(naive)} if naive else {}),
        },
        "sim_cpu_percent": rec["sim_cpu_percent"],
    }


def _skipped_percent(phase: dict) -> float:
    """Share of its due ticks the sim skipped in a phase, in percent (the worst topic:
    the 500 Hz ones, a camera is never a whole period late)."""
    shares = [
        n / (n + phase["published"].get(topic, 0))
        for topic, n in phase["skipped"].items()
        if n + phase["published"].get(topic, 0)
    ]
    return 100.0 * max(shares, default=0.0)


def _ratio(phase: dict, topic: str, ceiling_fraction: float) -> float:
    """A phase's received ÷ its own published, over the ceiling's same fraction."""
    pub = phase["published"].get(topic, 0)
    return phase["received"].get(topic, 0) / pub / ceiling_fraction if pub else 0.0


def print_humanoid(r: dict) -> None:
    print(f"\n== recorder vs ceiling: {r['profile']} profile, {r['duration_s']:.0f} s, "
          f"cameras {r['cameras']}, chunks {r['compression']} ==")
    print(f"{'topic':36} {'pub(ceil)':>9} {'ceiling':>8} {'pub(rec)':>9} {'recorded':>9} "
          f"{'lost':>5} {'ratio':>6}")
    for row in r["rows"]:
        print(f"{row['topic']:36} {row['published_ceiling_run']:>9} {row['ceiling_received']:>8} "
              f"{row['published_recorder_run']:>9} {row['recorded']:>9} {row['lost']:>5} "
              f"{row['ratio']:>6.3f}")
    print(f"recorded ÷ ceiling (all topics): {r['ratio_total']:.4f}   lost: {r['lost_total']}")
    if r["lost_total"]:
        kinds = r["rows"][0]["lost_by_kind"]
        by_kind = {k: sum(row["lost_by_kind"][k] for row in r["rows"]) for k in kinds}
        print("lost by kind: " + ", ".join(f"{k} {v}" for k, v in by_kind.items()))
    naive = [row["naive_ratio"] for row in r["rows"] if row["naive_ratio"] is not None]
    if naive:
        print("naive rclpy + mcap Writer (zstd) in the callback ÷ ceiling, per topic: "
              f"min {min(naive):.3f}  " + " ".join(f"{v:.3f}" for v in naive))
    print(f"raw data received by the ceiling: {r['raw_MBps_published']:.1f} MB/s   recorded "
          f"payload: {r['recorded_MBps']:.1f} MB/s   on disk: {r['disk_MBps']:.1f} MB/s")
    skipped = "  ".join(f"{k} {v:.1f}%" for k, v in r["sim_skipped_percent"].items())
    print(f"sim ticks skipped (late by a whole period; worst topic), per phase: {skipped}")
    print(f"CPU: recorder {r['recorder_cpu_percent']:.0f}%  ceiling subscriber "
          f"{r['ceiling_cpu_percent']:.0f}%  sim {r['sim_cpu_percent']:.0f}% (100% = one core)")


def writer_bench() -> dict:
    from benchmarks.writer import run_all

    return run_all(directory=".")


def print_writer(results: dict) -> None:
    from benchmarks.writer import print_table

    print_table(results)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--profile", default="humanoid")
    ap.add_argument("--compression", default="zstd", choices=["zstd", "lz4", "none"])
    ap.add_argument(
        "--cameras",
        default="raw,jpeg,h264",
        help="comma list of camera modes to run the humanoid benchmark with",
    )
    ap.add_argument("--skip-humanoid", action="store_true")
    ap.add_argument("--skip-writer", action="store_true")
    ap.add_argument("--skip-tablet", action="store_true")
    ap.add_argument("--skip-clip", action="store_true")
    ap.add_argument("--skip-upload", action="store_true")
    ap.add_argument("--skip-floor", action="store_true")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--skip-health", action="store_true")
    ap.add_argument("--floor-duration", type=float, default=60.0,
                    help="seconds the floor benchmark's 100 robots heartbeat (default 60)")
    ap.add_argument("--keep", action="store_true", help="keep the session under bench_out/")
    ap.add_argument("--json", type=Path, help="also write all results to this file")
    args = ap.parse_args(argv)
    results: dict[str, Any] = {}
    if not args.skip_writer:
        print("[bench] writer micro-benchmark", flush=True)
        results["writer"] = writer_bench()
        print_writer(results["writer"])
    if not args.skip_upload:
        from benchmarks.upload import run as upload_run

        print("[bench] upload: 1 GiB session to a local S3 server vs boto3 upload_file; "
              "kill at 50%; 100 robots", flush=True)
        results["upload"] = upload_run()
        print(json.dumps(results["upload"], indent=2))
    if not args.skip_clip:
        from benchmarks.clip import run as clip_run

        print("[bench] xsq clip vs full-scan copy on a 30 s and a 300 s session", flush=True)
        results["clip"] = clip_run()
        print(json.dumps(results["clip"], indent=2))
    if not args.skip_tablet:
        from benchmarks.tag_latency import run as tag_run

        print("[bench] tablet link: 1,000 commands over CURVE on loopback", flush=True)
        results["tablet"] = r = tag_run(1000)
        print("\n== tablet command round trip and tag-to-bag latency (ms, 1,000 marks) ==")
        for name in ("round_trip", "tag_to_bag"):
            v = r[name]
            print(f"{name:12} p50 {v['p50_ms']:.3f}  p99 {v['p99_ms']:.3f}  "
                  f"mean {v['mean_ms']:.3f}  max {v['max_ms']:.3f}")
    if not args.skip_floor:
        from benchmarks import floor

        print("[bench] floor service: 100 robots + 12,000 episodes on SQLite and PostgreSQL, "
              "queries over 360,000 episodes, dashboard first render", flush=True)
        floor_args = floor.parser().parse_args(["--duration", str(args.floor_duration)])
        results["floor"] = floor.run(floor_args)
        floor.print_table(results["floor"])
        if not args.json:
            floor.write_json(results["floor"], floor_args.json)
    if not args.skip_export:
        from benchmarks import export

        print("[bench] export: LeRobot v3 from H.264 (remux) and JPEG (re-encode) humanoid "
              "sessions, local 1/2 workers and from S3, 3 runs", flush=True)
        results["export"] = export.run()
        export.print_table(results["export"])
    if not args.skip_health:
        from benchmarks import health

        print("[bench] stream health + previews: recorder CPU on vs off, halt -> stalled, "
              "3 runs each", flush=True)
        results["health"] = health.run(profile=args.profile)
        health.print_table(results["health"])
    if not args.skip_humanoid:
        if args.keep:
            Path("bench_out").mkdir(exist_ok=True)
        results["humanoid"] = {}
        for mode in args.cameras.split(","):
            r = humanoid_bench(args.duration, args.profile, args.compression, args.keep, mode)
            results["humanoid"][mode] = r
            print_humanoid(r)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
