"""Micro-benchmark: our McapWriter vs the official ``mcap`` writer vs a plain file write.

The load is the humanoid recorder's: per simulated second, 90 camera frames
(1280x720 rgb8, ~2.76 MB each: a gradient plus sensor-like noise) interleaved with 1500 small
~500-byte messages (a 28-joint JointState). All three writers get the very same payload
objects; data generation is outside the timed region. MB/s counts payload bytes (1 MB = 1e6 B).

Each writer closes its chunk once per simulated second (our recorder's crash-safety flush;
the official writer's ``flush()``), and every file is fsynced at the end so the page cache
does not flatter anyone.

Run ``python -m benchmarks.writer [total_MB]`` for all three compressions.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mcap.writer import CompressionType, Writer

from xsquare_logger.bag.mcap_writer import McapWriter

__all__ = ["make_workload", "run"]

IMAGE_SIZE = 1280 * 720 * 3
SMALL_SIZE = 500
IMAGES_PER_S = 90
SMALL_PER_S = 1500
_OFFICIAL = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}

# (is_image, log_time_ns, payload)
Workload = list[tuple[bool, int, bytes]]


def _images(count: int, size: int, seed: int = 7) -> list[bytes]:
    """Camera-like frames: smooth gradients (compressible) plus per-pixel noise (not)."""
    rng = np.random.default_rng(seed)
    pixels = size // 3
    width = 1280 if pixels % 1280 == 0 else max(1, int(pixels**0.5))
    height = max(1, pixels // width)
    y, x = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        base = np.stack([(x + 3 * i) % 256, (y + 5 * i) % 256, (x + y + 7 * i) % 256], axis=-1)
        noise = rng.integers(-6, 7, size=base.shape)
        frame = np.clip(base + noise, 0, 255).astype(np.uint8).tobytes()
        frames.append(frame.ljust(size, b"\0")[:size])
    return frames


def make_workload(total_bytes: int, msg_size: int = IMAGE_SIZE) -> Workload:
    """Build the interleaved message sequence (~total_bytes of payload)."""
    images = _images(8, msg_size)
    rng = np.random.default_rng(11)
    smalls = [rng.integers(0, 256, SMALL_SIZE, dtype=np.uint8).tobytes() for _ in range(16)]
    per_image = SMALL_PER_S / IMAGES_PER_S
    out: Workload = []
    written = 0
    n_image = 0
    n_small = 0.0
    while written < total_bytes:
        t = n_image * 1_000_000_000 // IMAGES_PER_S
        out.append((True, t, images[n_image % len(images)]))
        written += msg_size
        n_image += 1
        n_small += per_image
        while n_small >= 1:
            n_small -= 1
            out.append((False, t + 1000, smalls[len(out) % len(smalls)]))
            written += SMALL_SIZE
    return out


def _per_second(workload: Workload) -> list[int]:
    """Indexes after which a once-per-second flush happens."""
    marks, next_t = [], 1_000_000_000
    for i, (_img, t, _p) in enumerate(workload):
        if t >= next_t:
            marks.append(i)
            next_t += 1_000_000_000
    return marks


def _ours(path: Path, workload: Workload, compression: str, chunk_size: int) -> None:
    flush_at = set(_per_second(workload))
    with McapWriter(path, compression=compression, chunk_size=chunk_size) as w:
        s_img = w.register_schema("sensor_msgs/msg/Image", "ros2msg", b"uint8[] data\n")
        s_js = w.register_schema("sensor_msgs/msg/JointState", "ros2msg", b"float64[] p\n")
        c_img = w.register_channel("/camera/image_raw", "cdr", s_img)
        c_js = w.register_channel("/joint_states", "cdr", s_js)
        add = w.add_message
        for i, (is_image, t, payload) in enumerate(workload):
            add(c_img if is_image else c_js, t, t, payload, i)
            if i in flush_at:
                w.flush(fsync=False)


def _official(path: Path, workload: Workload, compression: str, chunk_size: int) -> None:
    flush_at = set(_per_second(workload))
    with open(path, "xb") as f:
        w = Writer(f, chunk_size=chunk_size, compression=_OFFICIAL[compression])
        w.start(profile="ros2", library="bench")
        s_img = w.register_schema("sensor_msgs/msg/Image", "ros2msg", b"uint8[] data\n")
        s_js = w.register_schema("sensor_msgs/msg/JointState", "ros2msg", b"float64[] p\n")
        c_img = w.register_channel("/camera/image_raw", "cdr", s_img)
        c_js = w.register_channel("/joint_states", "cdr", s_js)
        add = w.add_message
        for i, (is_image, t, payload) in enumerate(workload):
            add(c_img if is_image else c_js, log_time=t, data=payload, publish_time=t, sequence=i)
            if i in flush_at:
                w.flush()
        w.finish()
        f.flush()
        os.fsync(f.fileno())


def _plain(path: Path, workload: Workload, _compression: str, _chunk_size: int) -> None:
    with open(path, "xb") as f:
        write = f.write
        for _is_image, _t, payload in workload:
            write(payload)
        f.flush()
        os.fsync(f.fileno())


def _measure(
    fn: Callable[[Path, Workload, str, int], None],
    directory: str | None,
    workload: Workload,
    compression: str,
    chunk_size: int,
) -> tuple[float, float, int]:
    """Return (wall seconds, process CPU seconds, output size in bytes)."""
    with tempfile.TemporaryDirectory(prefix="xsq-bench-", dir=directory) as tmp:
        path = Path(tmp, "out.bin")
        wall, cpu = time.perf_counter(), time.process_time()
        fn(path, workload, compression, chunk_size)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall, cpu, path.stat().st_size


def _hash_rate(workload: Workload) -> float:
    """SHA-256 + 2x CRC32 throughput (MB/s) on the payloads: our writer's integrity cost."""
    sha, crc = hashlib.sha256(), 0
    start = time.perf_counter()
    for _img, _t, payload in workload:
        sha.update(payload)
        crc = zlib.crc32(payload, zlib.crc32(payload, crc))
    return sum(len(p) for _i, _t, p in workload) / (time.perf_counter() - start) / 1e6


def run(
    total_bytes: int = 512 * 1000 * 1000,
    msg_size: int = IMAGE_SIZE,
    compression: str = "zstd",
    *,
    chunk_size: int = 4 * 1024 * 1024,
    directory: str | None = None,
    repeat: int = 3,
) -> dict[str, Any]:
    """Time the three writers on the same data; return throughputs and ratios.

    Args:
        total_bytes: Approximate payload bytes to write per writer.
        msg_size: Size of each image message in bytes (default one 1280x720 rgb8 frame).
        compression: ``"zstd"``, ``"lz4"`` or ``"none"`` (both MCAP writers use it).
        chunk_size: MCAP chunk size in bytes for both MCAP writers.
        directory: Where the temporary files go (default: the system temp dir). Use the
            recorder's real data disk for meaningful numbers.
        repeat: Runs per writer, interleaved; the fastest counts (disk write-back makes
            single runs noisy).

    Returns:
        A dict with ``*_mb_s`` (payload MB/s), ``*_cpu_s`` (process CPU seconds of the best
        run), ``*_file_bytes`` and ``ratio_*`` entries (ours vs plain, official vs plain,
        ours vs official; >1 means the first is faster), plus ``integrity_mb_s``: the rate of
        SHA-256 + two CRC32 passes alone, which our writer pays and the official one does not.
    """
    workload = make_workload(total_bytes, msg_size)
    payload = sum(len(p) for _i, _t, p in workload)
    result: dict[str, Any] = {
        "compression": compression,
        "payload_bytes": payload,
        "messages": len(workload),
        "images": sum(1 for img, _t, _p in workload if img),
        "chunk_size": chunk_size,
    }
    writers = (("plain", _plain), ("official", _official), ("ours", _ours))
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(max(1, repeat)):
        for name, fn in writers:
            measured = _measure(fn, directory, workload, compression, chunk_size)
            if name not in best or measured[0] < best[name][0]:
                best[name] = measured
    for name, (wall, cpu, size) in best.items():
        result[f"{name}_mb_s"] = round(payload / wall / 1e6, 1)
        result[f"{name}_cpu_s"] = round(cpu, 3)
        result[f"{name}_wall_s"] = round(wall, 3)
        result[f"{name}_file_bytes"] = size
    result["ratio_ours_vs_plain"] = round(result["ours_mb_s"] / result["plain_mb_s"], 3)
    result["ratio_official_vs_plain"] = round(result["official_mb_s"] / result["plain_mb_s"], 3)
    result["ratio_ours_vs_official"] = round(result["ours_mb_s"] / result["official_mb_s"], 3)
    result["integrity_mb_s"] = round(_hash_rate(workload), 1)
    return result


def main(argv: list[str] | None = None) -> int:
    """Print one JSON line per compression. Optional argument: payload MB per writer."""
    args = sys.argv[1:] if argv is None else argv
    total = int(float(args[0]) * 1e6) if args else 512 * 1000 * 1000
    for compression in ("none", "lz4", "zstd"):
        print(json.dumps(run(total_bytes=total, compression=compression)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
