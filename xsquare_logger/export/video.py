"""Camera frames into MP4 files with PyAV: H.264 remuxed as recorded, other cameras encoded.

Every MP4 here has frames exactly on the dataset's fps grid (pts = frame number / fps in a
1/15360 s time base, as LeRobot's own files), no B-frames (pts = dts) and starts on a
keyframe, which is what LeRobot's decoder needs: it seeks to ``from_timestamp +
frame_index / fps`` and takes the frame within 1e-4 s of it.

* :class:`RemuxWriter`: recorded ``foxglove_msgs/msg/CompressedVideo`` H.264 (Annex B, one
  frame per message) into an MP4 without re-encoding: the same NAL units, length-prefixed as
  MP4 stores them (FFmpeg's mp4 muxer converts the framing, nothing else).
* :class:`EncodeWriter`: RGB frames (from raw or JPEG cameras) encoded with AV1
  (``libsvtav1``) when the installed PyAV has it, else H.264 (``libx264``).
* :func:`concat`: per-episode MP4s appended into one file by copying packets, re-timed
  onto one continuous grid (no re-encode).
"""

from __future__ import annotations

import fractions
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from xsquare_logger.export import ExportError

__all__ = [
    "TIME_BASE",
    "EncodeWriter",
    "RemuxWriter",
    "codec_for",
    "concat",
    "decode_h264",
    "video_info",
]

#: MP4 time base (LeRobot's own files use it): 512 ticks per frame at 30 fps.
TIME_BASE = fractions.Fraction(1, 15360)
_AV_MISSING = "video export needs PyAV: pip install 'xsquare_logger[export]'"


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise ExportError(_AV_MISSING) from None
    # SVT-AV1 prints its banner to stderr unless told otherwise (1 = errors only).
    os.environ.setdefault("SVT_LOG", "1")
    return av


def _pts(frame: int, fps: int) -> int:
    return round(frame * TIME_BASE.denominator / (fps * TIME_BASE.numerator))


def codec_for(choice: str) -> str:
    """The encoder for ``video_codec`` (``auto``: ``libsvtav1`` if present, else ``libx264``)."""
    av = _av()
    wanted = {"av1": ["libsvtav1"], "h264": ["libx264"], "auto": ["libsvtav1", "libx264"]}
    for name in wanted[choice]:
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    raise ExportError(f"no {choice} video encoder in the installed PyAV (tried "
                      f"{', '.join(wanted[choice])})")


class RemuxWriter:
    """Recorded H.264 frames (Annex B bytes) into an MP4, without re-encoding.

    The frames are handed to FFmpeg's raw H.264 demuxer and copied from there into the MP4,
    so the container gets its parameters (avcC, size) from the stream itself.
    """

    def __init__(self, path: Path, fps: int) -> None:
        self.path = path
        self.fps = fps
        self.frames: list[bytes] = []

    def add(self, annexb: bytes) -> None:
        self.frames.append(annexb)

    def close(self) -> int:
        """Write the file; return the number of frames in it."""
        av = _av()
        if not self.frames:
            raise ExportError(f"{self.path}: no frames to write")
        with av.open(io.BytesIO(b"".join(self.frames)), format="h264") as source:
            stream = source.streams.video[0]
            with av.open(str(self.path), "w", format="mp4") as out:
                target = out.add_stream_from_template(stream)
                target.time_base = TIME_BASE
                n = 0
                for packet in source.demux(stream):
                    if packet.size == 0:
                        continue
                    _retime(packet, target, n, self.fps)
                    out.mux(packet)
                    n += 1
        if n != len(self.frames):
            raise ExportError(f"{self.path}: {len(self.frames)} recorded H.264 frames came "
                              f"out as {n} packets (not one frame per message?)")
        return n


def _retime(packet: Any, stream: Any, n: int, fps: int) -> None:
    packet.stream = stream
    packet.time_base = TIME_BASE
    packet.pts = packet.dts = _pts(n, fps)
    packet.duration = _pts(n + 1, fps) - _pts(n, fps)


class EncodeWriter:
    """RGB frames (H x W x 3 uint8) encoded into an MP4 on the fps grid."""

    def __init__(self, path: Path, fps: int, codec: str, width: int, height: int) -> None:
        av = _av()
        self._av = av
        self.path = path
        self.fps = fps
        self.codec = codec
        self._out = av.open(str(path), "w", format="mp4")
        stream = self._out.add_stream(codec, rate=fps)
        # 4:2:0 needs even sizes; odd ones lose their last row/column.
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = TIME_BASE
        # A keyframe every 2 s bounds a random read's decoding; no B-frames (pts = dts).
        gop = str(2 * fps)
        if codec == "libsvtav1":
            stream.options = {"preset": "10", "crf": "30", "g": gop}
        else:
            stream.options = {"preset": "veryfast", "crf": "23", "g": gop,
                              "x264-params": "bframes=0"}
        self._stream = stream
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        s = self._stream
        frame = self._av.VideoFrame.from_ndarray(
            np.ascontiguousarray(rgb[: s.height, : s.width]), format="rgb24")
        frame.pts = _pts(self.frames, self.fps)
        frame.time_base = TIME_BASE
        for packet in s.encode(frame):
            self._out.mux(packet)
        self.frames += 1

    def close(self) -> int:
        for packet in self._stream.encode():
            self._out.mux(packet)
        self._out.close()
        return self.frames

    def abort(self) -> None:
        self._out.close()


def decode_h264(frames: list[bytes]) -> Iterator[np.ndarray]:
    """RGB arrays of recorded H.264 frames (Annex B), decoded in order from the first."""
    av = _av()
    ctx = av.CodecContext.create("h264", "r")
    for data in frames:
        for frame in ctx.decode(av.Packet(data)):
            yield frame.to_ndarray(format="rgb24")
    for frame in ctx.decode(None):
        yield frame.to_ndarray(format="rgb24")


def _extradata(path: Path) -> bytes:
    av = _av()
    with av.open(str(path)) as c:
        return bytes(c.streams.video[0].codec_context.extradata or b"")


def concat(parts: list[Path], out: Path, fps: int) -> list[int]:
    """Copy the packets of ``parts`` (each on the grid, from a keyframe) into ``out``,
    re-timed onto one grid; return each part's frame count."""
    av = _av()
    sources = parts
    counts: list[int] = []
    with av.open(str(out), "w", format="mp4") as dst:
        target = None
        n = 0
        for src in sources:
            with av.open(str(src)) as c:
                stream = c.streams.video[0]
                if target is None:
                    # opaque: the decoder (libdav1d for AV1) is no encoder name to look up.
                    target = dst.add_stream_from_template(stream, opaque=True)
                    target.time_base = TIME_BASE
                before = n
                for packet in c.demux(stream):
                    if packet.size == 0:
                        continue
                    _retime(packet, target, n, fps)
                    dst.mux(packet)
                    n += 1
                counts.append(n - before)
    return counts


def same_codec(a: Path, b: Path) -> bool:
    """Whether two MP4s can share a file: the same codec parameters (size, SPS/PPS...)."""
    av = _av()
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        sa, sb = ca.streams.video[0], cb.streams.video[0]
        key_a = (sa.codec_context.name, sa.width, sa.height, sa.format.name)
        key_b = (sb.codec_context.name, sb.width, sb.height, sb.format.name)
    return key_a == key_b and _extradata(a) == _extradata(b)


def video_info(path: Path, fps: int) -> dict[str, object]:
    """The ``info`` of a video feature in meta/info.json, read from the file."""
    av = _av()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {
            "video.height": s.height,
            "video.width": s.width,
            "video.codec": s.codec_context.codec.canonical_name,
            "video.pix_fmt": s.format.name if s.format else "yuv420p",
            "video.is_depth_map": False,
            "video.fps": fps,
            "video.channels": 3,
            "has_audio": False,
        }
