"""Benchmark: `xsq clip` (index seek) against a full-scan copy, on two session lengths.

For each length a synthetic humanoid-like session is written with the real SessionWriter
(3 cameras at 30 Hz, /joint_states and 2 gripper wrenches at 500 Hz) into ONE MCAP file, so
the file skip via metadata.yaml cannot help and only the chunk indexes can. Frames are small
(64 KiB by default) and chunks uncompressed to keep disk and CPU modest: the point is how
much of the file each method touches, not zstd. A 5 s episode in the middle is then cut out:

* ``clip``: :func:`~xsquare_logger.tools.clip.clip_session` (summary + overlapping chunks);
* ``scan``: read every message with the official reader, keep those in range, write them
  with the same McapWriter (what a tool without indexes has to do).

The clip time should stay flat as the session grows; the scan time grows with it. Both run
in this process on a warm page cache (the session was just written), so the ratio compares
work done, not disk speed. Run: ``python -m benchmarks.clip``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mcap.reader import NonSeekingReader

from xsquare_logger.bag.mcap_writer import McapWriter
from xsquare_logger.bag.qos import make_qos
from xsquare_logger.config.model import RecordingConfig
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.manifest import SessionManifest, TaskEntry
from xsquare_logger.session.store import SessionWriter
from xsquare_logger.tools.clip import clip_session

__all__ = ["build_session", "main", "run", "scan_copy"]

_NS = 1_000_000_000
_T0 = 1_750_000_000 * _NS
EPISODE_S = 5.0
CAMERAS = ("head", "left_wrist", "right_wrist")


def _template(msg: Any) -> bytearray:
    from rclpy.serialization import serialize_message

    return bytearray(serialize_message(msg))


def _ticks(topic_index: int, rate_hz: float, duration_s: float, phase: float) -> Iterator[
    tuple[int, int]
]:
    period = _NS / rate_hz
    for i in range(int(duration_s * rate_hz)):
        yield _T0 + round((i + phase) * period), topic_index


def build_session(directory: Path, duration_s: float, frame_bytes: int = 64 * 1024) -> int:
    """Write a synthetic session of ``duration_s`` seconds with one episode of 5 s in the
    middle (episode index 0); return its size in bytes."""
    from geometry_msgs.msg import WrenchStamped
    from sensor_msgs.msg import Image, JointState

    side = max(1, int((frame_bytes / 3) ** 0.5))
    image = Image(height=side, width=side, encoding="rgb8", step=3 * side)
    image.data = bytes(range(256)) * (3 * side * side // 256) + bytes(3 * side * side % 256)
    joints = JointState(name=[f"joint_{i}" for i in range(28)], position=[0.0] * 28,
                        velocity=[0.0] * 28, effort=[0.0] * 28)
    streams: list[tuple[str, str, bytearray, float]] = [
        (f"/camera/{c}/image_raw", "sensor_msgs/msg/Image", _template(image), 30.0)
        for c in CAMERAS
    ]
    streams.append(("/joint_states", "sensor_msgs/msg/JointState", _template(joints), 500.0))
    streams += [
        (f"/gripper/{s}/wrench", "geometry_msgs/msg/WrenchStamped", _template(WrenchStamped()),
         500.0)
        for s in ("left", "right")
    ]
    middle = _T0 + round(duration_s / 2 * _NS)
    half = round(EPISODE_S / 2 * _NS)
    manifest = SessionManifest(session_id=directory.name, robot_id="bench",
                               software_version="bench", config_digest="bench")
    manifest.tasks = [TaskEntry(episode_index=0, task="fold towel", start_ns=middle - half,
                                end_ns=middle + half, outcome="success")]
    config = RecordingConfig(compression="none", fsync=False)
    writer = SessionWriter(directory, manifest, config)
    for topic, type_name, _data, _rate in streams:
        writer.add_topic(topic, type_name, [make_qos("best_effort")], TopicStats(topic, type_name))
    pack = struct.Struct("<iI").pack_into
    ticks = heapq.merge(*(
        _ticks(i, rate, duration_s, phase=i / len(streams))
        for i, (_t, _n, _d, rate) in enumerate(streams)
    ))
    for seq, (stamp, index) in enumerate(ticks):
        data = streams[index][2]
        pack(data, 4, *divmod(stamp, _NS))
        writer.write(index, stamp + 2_000_000, stamp, bytes(data), seq)
    writer.close("stopped")
    return sum(f.size for f in writer.files)


def scan_copy(session_dir: Path, start_ns: int, end_ns: int, out_path: Path) -> int:
    """The baseline: read every message, keep ``start_ns <= log_time <= end_ns``, write
    them to ``out_path``. Returns the number of messages kept."""
    kept = 0
    with McapWriter(out_path, compression="none") as writer:
        for path in sorted(session_dir.glob("*.mcap")):
            with open(path, "rb") as f:
                channels: dict[int, int] = {}
                # Streaming: one chunk in memory at a time, the cheapest full scan there is.
                for schema, channel, message in NonSeekingReader(f).iter_messages(
                    log_time_order=False
                ):
                    if not start_ns <= message.log_time <= end_ns:
                        continue
                    cid = channels.get(channel.id)
                    if cid is None:
                        assert schema is not None  # every channel the recorder writes has one
                        sid = writer.register_schema(schema.name, schema.encoding, schema.data)
                        cid = channels[channel.id] = writer.register_channel(
                            channel.topic, channel.message_encoding, sid, dict(channel.metadata)
                        )
                    writer.add_message(cid, message.log_time, message.publish_time,
                                       message.data, message.sequence)
                    kept += 1
    return kept


def run(
    lengths_s: tuple[float, ...] = (30.0, 300.0),
    frame_bytes: int = 64 * 1024,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Build, clip and scan-copy one session per length; return the timings (s) and ratios."""
    root = Path(tempfile.mkdtemp(prefix="xsq-bench-clip-", dir=workdir))
    rows: list[dict[str, Any]] = []
    try:
        for length in lengths_s:
            session = root / f"bench_{int(length)}s"
            t = time.perf_counter()
            size = build_session(session, length, frame_bytes)
            build_s = time.perf_counter() - t

            t = time.perf_counter()
            clip = clip_session(session, 0, 0.0, root / f"clip_{int(length)}s")
            clip_s = time.perf_counter() - t

            t = time.perf_counter()
            scan_out = root / f"scan_{int(length)}s.mcap"
            kept = scan_copy(session, clip.start_ns, clip.end_ns, scan_out)
            scan_s = time.perf_counter() - t
            if kept != clip.message_count:
                raise RuntimeError(f"scan kept {kept} messages, clip {clip.message_count}")
            rows.append(
                {
                    "session_s": length,
                    "session_mb": round(size / 1e6, 1),
                    "build_s": round(build_s, 2),
                    "clip_messages": clip.message_count,
                    "clip_s": round(clip_s, 3),
                    "clip_read_mb": round((clip.bytes_read or 0) / 1e6, 1),
                    "clip_chunks": f"{clip.chunks_read}/{clip.chunks_total}",
                    "scan_copy_s": round(scan_s, 3),
                    "scan_over_clip": round(scan_s / clip_s, 1) if clip_s else None,
                }
            )
            # Free the disk before the next (longer) session.
            shutil.rmtree(session)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first, last = rows[0], rows[-1]
    return {
        "frame_bytes": frame_bytes,
        "episode_s": EPISODE_S,
        "sessions": rows,
        "length_growth": round(last["session_s"] / first["session_s"], 1),
        "clip_growth": round(last["clip_s"] / first["clip_s"], 2),
        "scan_growth": round(last["scan_copy_s"] / first["scan_copy_s"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=float, nargs="+", default=[30.0, 300.0],
                        metavar="SECONDS", help="session lengths (default 30 300)")
    parser.add_argument("--frame-kb", type=int, default=64, help="camera frame size in KiB")
    parser.add_argument("--workdir", type=Path, help="where to write the sessions (temp dir)")
    args = parser.parse_args(argv)
    result = run(tuple(args.lengths), args.frame_kb * 1024, args.workdir)
    print(json.dumps(result, indent=2))
    for row in result["sessions"]:
        print(f"{row['session_s']:>6.0f} s session ({row['session_mb']} MB): clip "
              f"{row['clip_s']:.3f} s ({row['clip_read_mb']} MB, chunks {row['clip_chunks']}), "
              f"full-scan copy {row['scan_copy_s']:.3f} s, ratio {row['scan_over_clip']}x",
              file=sys.stderr)
    print(f"session {result['length_growth']}x longer: clip time x{result['clip_growth']}, "
          f"scan time x{result['scan_growth']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
