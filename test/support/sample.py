"""Real closed sessions of a chosen size, written by the real SessionWriter (tests, benchmarks).

Messages are valid CDR ``sensor_msgs/msg/CompressedImage`` with random payloads,
so sizes and hashes are those of real MCAP files; chunks are uncompressed so a
session of N bytes takes N bytes of disk and little CPU to write.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from xsquare_logger import __version__
from xsquare_logger.bag.qos import make_qos
from xsquare_logger.config.model import RecordingConfig
from xsquare_logger.recording.recorder import make_session_id
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.manifest import SessionManifest
from xsquare_logger.session.store import SessionWriter

__all__ = ["make_session"]

TOPIC = "/camera/image/compressed"
TYPE = "sensor_msgs/msg/CompressedImage"


def _payloads(message_bytes: int, count: int, seed: int) -> list[bytes]:
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        msg = CompressedImage()
        msg.format = "jpeg"
        msg.data = rng.integers(0, 256, message_bytes, dtype=np.uint8).tobytes()
        out.append(serialize_message(msg))
    return out


def make_session(
    data_root: Path,
    robot_id: str,
    size_bytes: int,
    *,
    message_bytes: int = 256 * 1024,
    max_file_bytes: int = 0,
    seed: int = 0,
    session_id: str | None = None,
) -> Path:
    """Write a closed session of about ``size_bytes`` under ``data_root``; return its path.

    ``max_file_bytes`` splits the MCAP files (0 = one file); ``seed`` varies content.
    """
    session_id = session_id or make_session_id(robot_id)
    now = time.time_ns()
    manifest = SessionManifest(
        session_id=session_id,
        robot_id=robot_id,
        software_version=__version__,
        config_digest="sha256:sample",
        started_ns=now,
    )
    # Small sessions get small chunks: sizes land close to what was asked for.
    chunk = min(4 * 1024 * 1024, max(64 * 1024, size_bytes // 8))
    cfg = RecordingConfig(
        compression="none", max_bag_size=max_file_bytes, fsync=False, chunk_size=chunk
    )
    writer = SessionWriter(data_root / session_id, manifest, cfg)
    stats = TopicStats(topic=TOPIC, type=TYPE)
    index = writer.add_topic(TOPIC, TYPE, [make_qos()], stats)
    # Distinct payloads (a few) keep every chunk different without generating N bytes of noise.
    payloads = _payloads(min(message_bytes, max(1024, size_bytes // 16)), 8, seed)
    i = 0
    while writer.bytes_written < size_bytes:
        t = now + i * 33_000_000
        stats.received += 1
        writer.write(index, t, t, payloads[i % len(payloads)], i + 1)
        i += 1
    writer.close("stopped", ended_ns=now + i * 33_000_000)
    return data_root / session_id
