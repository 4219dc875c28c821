"""`xsq export lerobot` at floor scale: throughput, bytes read from S3, pool scaling.

A humanoid session (the sim's profile: 3 cameras 1280x720 at 30 Hz, 28 joints + 14 leader
joints + 2 wrenches at 500 Hz) is written with the real SessionWriter, once with H.264
cameras (the recorder's encoder: exported by remux) and once with JPEG cameras (exported
by re-encoding, the mapping's ``video_codec: auto``). Episodes tagged ``success`` cover
most of it. Measured per run:

- throughput: recorded seconds exported per wall second, with the process pool at 1 and at
  2 workers, and the CPU seconds (this process + its workers) per recorded second;
- from S3 (``rclone serve s3`` on 127.0.0.1, the session put by boto3): bytes fetched per
  exported episode against the session's size, and the throughput from there.

Core-hours for one floor-day = 400 robot-hours x CPU seconds per recorded second. The
machine's load average is printed with every run (other work on it skews the figures).

Usage: python -m benchmarks.export [--seconds 30] [--episode 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from xsquare_logger.bag.qos import make_qos
from xsquare_logger.camera.cdr import parse_image
from xsquare_logger.camera.encoders import H264Encoder, JpegEncoder
from xsquare_logger.config.model import RecordingConfig
from xsquare_logger.export.episode import EpisodeResult
from xsquare_logger.export.mapping import load_mapping
from xsquare_logger.export.run import EpisodeFilter, run_export
from xsquare_logger.export.video import codec_for
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.manifest import SessionManifest, TaskEntry
from xsquare_logger.session.store import SessionWriter
from xsquare_logger.sim.frames import PayloadBank
from xsquare_logger.sim.profiles import PROFILES, ImageStream

__all__ = ["main", "print_table", "run"]

NS = 1_000_000_000
T0 = 1_760_000_000 * NS
FLOOR_DAY_ROBOT_HOURS = 400
BUCKET = "sessions"


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_session(directory: Path, cameras: str, seconds: float, episode_s: float) -> Path:
    """``seconds`` of the humanoid profile, cameras ``h264`` or ``jpeg``; episodes of
    ``episode_s`` with 1 s between them."""
    profile = PROFILES["humanoid"]
    bank = PayloadBank(profile, verify=False)
    tasks, start, i = [], 0.5, 0
    while start + episode_s <= seconds:
        tasks.append(TaskEntry(episode_index=i, task="fold towel", outcome="success",
                               operator="bench", start_ns=T0 + round(start * NS),
                               end_ns=T0 + round((start + episode_s) * NS)))
        start, i = start + episode_s + 1.0, i + 1
    manifest = SessionManifest(session_id=directory.name, robot_id="x2-bench",
                               software_version="bench", config_digest="0" * 8,
                               started_ns=T0, tasks=tasks)
    writer = SessionWriter(directory, manifest, RecordingConfig(fsync=False))
    streams: list[tuple[int, int, bytes]] = []  # log time, channel, data
    for spec in profile.streams:
        n = int(seconds * spec.rate_hz)
        if isinstance(spec, ImageStream):
            if cameras == "h264":
                enc: Any = H264Encoder(spec.width, spec.height, spec.rate_hz)
                topic, type_name = f"{spec.topic}/h264", "foxglove_msgs/msg/CompressedVideo"
            else:
                enc = JpegEncoder(90)
                topic, type_name = f"{spec.topic}/compressed", "sensor_msgs/msg/CompressedImage"
        else:
            enc, topic, type_name = None, spec.topic, spec.type_name
        channel = writer.add_topic(topic, type_name, [make_qos("reliable")],
                                   TopicStats(topic, type_name, received=n))
        ring = bank[spec.topic]
        for k in range(n):
            stamp = T0 + round(k * NS / spec.rate_hz)
            data = ring.payload(k, stamp)
            if enc is not None:
                data = enc.encode(parse_image(data))
            streams.append((stamp + 2_000_000, channel, data))
        if enc is not None:
            enc.close()
    streams.sort(key=lambda s: (s[0], s[1]))
    for seq, (log, channel, data) in enumerate(streams):
        writer.write(channel, log, log, data, seq + 1)
    writer.close("stopped", ended_ns=streams[-1][0])
    return directory


def _export(out: Path, spec: str, workers: int, mapping: Any) -> dict[str, Any]:
    results: list[EpisodeResult] = []
    cpu0, wall0 = _cpu(), time.monotonic()
    summary = run_export(out, [spec], mapping, EpisodeFilter(), workers,
                         progress=results.append)
    wall, cpu = time.monotonic() - wall0, _cpu() - cpu0
    shutil.rmtree(out, ignore_errors=True)
    return {
        "episodes": summary.written, "recorded_s": summary.seconds, "wall_s": wall,
        "cpu_s": cpu, "x_realtime": summary.seconds / wall,
        "cpu_per_recorded_s": cpu / summary.seconds if summary.seconds else 0.0,
        "bytes_fetched": [r.bytes_fetched for r in results],
        "requests": [r.requests for r in results],
    }


def _s3_server(work: Path) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))
    from support.localserver import LocalS3Server

    return LocalS3Server(work / "s3", buckets=(BUCKET,)).start()


def run(seconds: float = 30.0, episode_s: float = 8.0, runs: int = 3) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="xsq-bench-export-"))
    out: dict[str, Any] = {"seconds": seconds, "episode_s": episode_s, "runs": runs,
                           "encoder": codec_for("auto"), "cases": {}}
    server = _s3_server(work)
    saved = dict(os.environ)
    try:
        os.environ.update({**server.env(), "AWS_ENDPOINT_URL_S3": server.endpoint,
                           "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
        mapping = load_mapping()
        client = server.client()
        for cameras in ("h264", "jpeg"):
            t = time.monotonic()
            session = make_session(work / f"x2-bench_20251009T090000Z_{cameras}00", cameras,
                                   seconds, episode_s)
            size = sum(f.stat().st_size for f in session.glob("*.mcap"))
            print(f"[bench] export: {cameras} session, {seconds:.0f} s, {size / 1e6:.0f} MB "
                  f"(written in {time.monotonic() - t:.0f} s)", flush=True)
            key = f"fleet/x2-bench/2025-10-09/{session.name}"
            for f in sorted(session.iterdir()):  # session.json last, as the uploader does
                if f.name != "session.json":
                    client.upload_file(str(f), BUCKET, f"{key}/{f.name}")
            client.upload_file(str(session / "session.json"), BUCKET, f"{key}/session.json")
            case: dict[str, Any] = {"session_bytes": size, "local_1": [], "local_2": [],
                                    "s3_2": [], "load": []}
            for n in range(runs):
                case["load"].append(os.getloadavg()[0])
                for name, spec, workers in (("local_1", str(session), 1),
                                            ("local_2", str(session), 2),
                                            ("s3_2", f"s3://{BUCKET}/{key}", 2)):
                    r = _export(work / "ds", spec, workers, mapping)
                    case[name].append(r)
                    print(f"  run {n + 1} {name}: {r['recorded_s']:.1f} s recorded in "
                          f"{r['wall_s']:.1f} s = {r['x_realtime']:.2f}x, "
                          f"{r['cpu_per_recorded_s']:.2f} CPU s per recorded s"
                          f" (load {case['load'][-1]:.1f})", flush=True)
            out["cases"][cameras] = case
            shutil.rmtree(session)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def _spread(values: list[float], fmt: str = "{:.2f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return (f"{fmt.format(min(values))}-{fmt.format(max(values))} "
            f"(median {fmt.format(statistics.median(values))})")


def print_table(r: dict[str, Any]) -> None:
    print(f"\n== export to LeRobot v3: humanoid profile, {r['seconds']:.0f} s sessions, "
          f"{r['episode_s']:.0f} s episodes, {r['runs']} runs (min-max) ==")
    print(f"re-encode codec for JPEG cameras: {r['encoder']}")
    for cameras, c in r["cases"].items():
        how = "remux" if cameras == "h264" else "re-encode"
        print(f"-- {cameras} cameras ({how}); load average at run start "
              f"{_spread(c['load'], '{:.1f}')}")
        for name in ("local_1", "local_2", "s3_2"):
            xs = [x["x_realtime"] for x in c[name]]
            cpu = [x["cpu_per_recorded_s"] for x in c[name]]
            print(f"   {name:8} recorded s per wall s {_spread(xs)}   CPU s per recorded s "
                  f"{_spread(cpu)}")
        one = statistics.median(x["x_realtime"] for x in c["local_1"])
        two = statistics.median(x["x_realtime"] for x in c["local_2"])
        print(f"   pool scaling 1 -> 2 workers: {two / one:.2f}x")
        fetched = [b for x in c["s3_2"] for b in x["bytes_fetched"]]
        reqs = [q for x in c["s3_2"] for q in x["requests"]]
        eps = len(c["s3_2"][0]["bytes_fetched"])
        print(f"   from S3: per {r['episode_s']:.0f} s episode {min(fetched) / 1e6:.1f}-"
              f"{max(fetched) / 1e6:.1f} MB in {min(reqs)}-{max(reqs)} requests, of a "
              f"{c['session_bytes'] / 1e6:.0f} MB session ({eps} episodes: "
              f"{100 * max(fetched) / c['session_bytes']:.0f}% at most each)")
        cpu = statistics.median(x["cpu_per_recorded_s"] for x in c["local_2"])
        print(f"   one floor-day ({FLOOR_DAY_ROBOT_HOURS} robot-hours): "
              f"{FLOOR_DAY_ROBOT_HOURS * cpu:.0f} core-hours")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.export")
    p.add_argument("--seconds", type=float, default=30.0, help="session length (default 30)")
    p.add_argument("--episode", type=float, default=8.0, help="episode length (default 8)")
    p.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    r = run(args.seconds, args.episode, args.runs)
    print_table(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
