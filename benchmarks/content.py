"""What camera content does to compression: synthetic vs natural sim frames.

For one 1280x720 rgb8 camera of the humanoid profile, rendered with each content mode
(sim/frames.py), the same encoders the recorder uses: JPEG (OpenCV, quality 90), H.264
(PyAV/libx264 with the recorder's defaults) and zstd-1 over the raw frames (what raw
chunks cost). Each figure is the spread (min..max) of ``--runs`` passes over the ring;
CPU is process time per frame on this thread.

    python -m benchmarks.content [--runs 3] [--frames 90]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import zstandard

from xsquare_logger.camera.cdr import parse_image
from xsquare_logger.camera.encoders import make_encoder
from xsquare_logger.config.camera import CameraCompression
from xsquare_logger.sim.frames import build_ring
from xsquare_logger.sim.profiles import CAMERA_CONTENTS, get_profile

__all__ = ["main", "measure"]

CAMERA = "/camera/head/image_raw"


def _pass(frames: list[bytes], encode: Callable[[bytes], bytes]) -> tuple[float, float]:
    """(mean output bytes, CPU ms per frame) of one pass."""
    size, c0 = 0, time.process_time()
    for buf in frames:
        size += len(encode(buf))
    return size / len(frames), 1000 * (time.process_time() - c0) / len(frames)


def _encoder(
    name: str, first: bytes, zstd: zstandard.ZstdCompressor
) -> Callable[[bytes], bytes]:
    """A fresh encoder per pass (H.264 starts on a keyframe each time)."""
    if name == "zstd-1 raw":
        return zstd.compress
    enc = make_encoder(CameraCompression.model_validate({"mode": name}), parse_image(first))
    return lambda buf: enc.encode(parse_image(buf))


def measure(content: str, runs: int, count: int) -> dict[str, dict[str, list[float]]]:
    spec = get_profile("humanoid").with_camera_content(content).stream(CAMERA)
    ring = build_ring(spec, verify=False)
    frames = [ring.payload(i % len(ring), 1_700_000_000_000_000_000 + i * 33_333_333)
              for i in range(count)]  # fmt: skip
    raw = len(parse_image(frames[0]).pixels.tobytes())
    out: dict[str, dict[str, list[float]]] = {}
    zstd = zstandard.ZstdCompressor(level=1)
    for name in ("jpeg", "h264", "zstd-1 raw"):
        sizes, cpus = [], []
        for _ in range(runs):
            encode = _encoder(name, frames[0], zstd)
            size, cpu = _pass(frames, encode)
            sizes.append(size)
            cpus.append(cpu)
        out[name] = {"kB_per_frame": [s / 1e3 for s in sizes], "ratio": [raw / s for s in sizes],
                     "cpu_ms_per_frame": cpus}  # fmt: skip
    return out


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(min(values), fmt)}..{format(max(values), fmt)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.content")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=90, help="frames per pass (30 fps)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = {c: measure(c, args.runs, args.frames) for c in CAMERA_CONTENTS}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"== camera content vs encoders: 1280x720 rgb8, {args.frames} frames, "
          f"{args.runs} runs (min..max) ==")  # fmt: skip
    print(f"{'content':10} {'codec':11} {'kB/frame':>15} {'ratio':>13} {'CPU ms/frame':>13}")
    for content, rows in results.items():
        for codec, r in rows.items():
            print(f"{content:10} {codec:11} {_spread(r['kB_per_frame'], '.1f'):>15} "
                  f"{_spread(r['ratio'], '.1f'):>13} {_spread(r['cpu_ms_per_frame'], '.2f'):>13}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
