"""Image encoders: a parsed ``sensor_msgs/msg/Image`` in, a serialized output message out.

* ``JpegEncoder``: OpenCV JPEG into ``sensor_msgs/msg/CompressedImage`` (format ``jpeg``).
* ``H264Encoder``: libx264 through PyAV into ``foxglove_msgs/msg/CompressedVideo``: Annex B,
  exactly one frame per message, no B-frames, SPS/PPS repeated in every keyframe, a keyframe
  at least every ``keyframe_interval_s`` (what Foxglove needs to play and seek the topic).

Both keep the source image's ``header.stamp`` and ``header.frame_id``. OpenCV and FFmpeg do
their work with the GIL released, so encoders on worker threads run alongside the ROS
callbacks. ``cv2`` and ``av`` are imported on first use: ``av`` (libx264 is GPL) is an
optional extra, and a recorder configured for raw images needs neither.

An encoder instance is not thread-safe: H.264 is a stateful stream, so each camera gets its
own ``H264Encoder`` fed in stamp order (``CompressionStage`` does that).
"""

from __future__ import annotations

import fractions
import importlib
from collections import deque
from types import ModuleType
from typing import Any, Protocol

from xsquare_logger.bag.embedded import COMPRESSED_VIDEO
from xsquare_logger.camera.cdr import (
    ParsedImage,
    serialize_compressed_image,
    serialize_compressed_video,
)
from xsquare_logger.config.camera import CameraCompression
from xsquare_logger.errors import XsqError

__all__ = [
    "COMPRESSED_IMAGE",
    "COMPRESSED_VIDEO",
    "CodecUnavailable",
    "EncodeError",
    "Encoder",
    "H264Encoder",
    "JpegEncoder",
    "make_encoder",
    "require_codec",
]

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"

_CADENCE_WINDOW = 8  # frames whose stamp steps predict the next frame's (H.264 keyframes)
_ROUNDING_NS = 1_000
_AV_MISSING = "H.264 needs the optional 'av' package: pip install 'xsquare_logger[h264]'"
_CV2_MISSING = "JPEG needs OpenCV: pip install opencv-python-headless"


class CodecUnavailable(XsqError, RuntimeError):
    """The library a codec needs is not installed (or lacks the codec)."""


class EncodeError(RuntimeError):
    """The codec refused a frame or produced output this module cannot use."""


class Encoder(Protocol):
    """What ``CompressionStage`` needs of an encoder."""

    output_type: str

    def encode(self, image: ParsedImage) -> bytes: ...

    def close(self) -> None: ...


def _import(name: str, missing: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise CodecUnavailable(missing) from exc


class JpegEncoder:
    """JPEG with OpenCV into ``sensor_msgs/msg/CompressedImage``.

    Colour images are stored as JPEG of the BGR image (OpenCV's convention; JPEG itself is
    YCbCr), so any JPEG decoder shows the right colours. ``format`` is plain ``"jpeg"``: what
    Foxglove documents, and what ``compressed_image_transport`` decodes as bgr8/mono8.

    Args:
        quality: JPEG quality, 1-100 (OpenCV scale; 90 is visually lossless for most uses).
    """

    output_type = COMPRESSED_IMAGE
    format = "jpeg"

    def __init__(self, quality: int = 90) -> None:
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1-100, got {quality}")
        self.quality = quality
        self._cv2: Any = _import("cv2", _CV2_MISSING)
        self._params = [self._cv2.IMWRITE_JPEG_QUALITY, quality]

    def encode(self, image: ParsedImage) -> bytes:
        """Serialized ``CompressedImage`` CDR of ``image`` (same stamp and frame_id)."""
        cv2 = self._cv2
        pixels = image.pixels
        if image.encoding == "rgb8":
            pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
        elif image.encoding == "mono8":
            pixels = pixels[:, :, 0]
        # bgr8 goes in as the strided view: OpenCV takes a row step, so no copy.
        ok, buf = cv2.imencode(".jpg", pixels, self._params)
        if not ok:
            raise EncodeError(
                f"OpenCV refused to JPEG-encode a {image.width}x{image.height} "
                f"{image.encoding} image"
            )
        return serialize_compressed_image(
            image.stamp, image.frame_id, self.format, memoryview(buf).cast("B")
        )

    def close(self) -> None:
        """Nothing to release (stateless)."""


class H264Encoder:
    """H.264 (libx264 via PyAV) into ``foxglove_msgs/msg/CompressedVideo``.

    Settings and why:

    * ``tune=zerolatency``: no lookahead, no frame threads, no B-frames, so each ``encode``
      returns the packet of exactly that frame (one frame per message, stamps line up).
    * ``repeat-headers``, ``annexb``: every keyframe is a self-contained Annex B access unit
      starting with SPS and PPS, so a player can start at any keyframe (Foxglove requires it).
    * Keyframes by time, not frame count (``keyint=infinite``, ``scenecut=0``): x264 places
      none itself; :meth:`keyframe_due` forces an IDR by ``header.stamp``. The deadline is the
      last keyframe's stamp + ``keyframe_interval_s``: the first frame at or after it is
      forced, and so is the last frame before it when the next one would land past it,
      predicted from the recent frame spacing (the largest of the last
      ``_CADENCE_WINDOW`` stamp steps plus their spread, the stamp jitter). So frames skipped
      because encoding fell behind (a sparser cadence), a camera slower than ``fps`` and
      jittered stamps all still get a keyframe at most ``keyframe_interval_s`` apart. A
      stamp going backwards forces one too. (An isolated skip of the very frame at the
      deadline cannot be foreseen here: ``CompressionStage`` keeps that frame instead.)
    * Colour: OpenCV converts to I420 with BT.601 limited-range coefficients; the stream says
      so in its VUI (``colormatrix=smpte170m``, ``range=tv``), so decoders invert it exactly.

    Args:
        width: frame width in pixels (even: 4:2:0 chroma needs pairs).
        height: frame height in pixels (even).
        fps: nominal frame rate in Hz (the stream's time base).
        keyframe_interval_s: longest time between keyframes, seconds.
        preset: x264 speed preset (``ultrafast`` ~2-4 ms per 720p frame here).
        crf: constant rate factor, 0-51 (lower = better quality, bigger).
        bitrate_kbps: if set, cap the average bitrate (kbit/s) with a 1 s VBV buffer.
        threads: x264 threads per encoder. 1 keeps each camera to one core's slice; the
            stage runs cameras in parallel instead.
    """

    output_type = COMPRESSED_VIDEO
    format = "h264"

    def __init__(
        self,
        width: int,
        height: int,
        fps: float = 30.0,
        keyframe_interval_s: float = 1.0,
        preset: str = "ultrafast",
        crf: int = 23,
        bitrate_kbps: int | None = None,
        threads: int = 1,
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"H.264 (4:2:0) needs even, positive dimensions, got {width}x{height}")
        if fps <= 0 or keyframe_interval_s <= 0:
            raise ValueError("fps and keyframe_interval_s must be > 0")
        self._av: Any = _import("av", _AV_MISSING)
        self._cv2: Any = _import("cv2", _CV2_MISSING)
        self.width = width
        self.height = height
        self._interval_ns = round(keyframe_interval_s * 1e9)
        self._last_key_ns: int | None = None
        self._last_ns: int | None = None  # stamp of the previous frame
        self._steps: deque[int] = deque(maxlen=_CADENCE_WINDOW)  # recent stamp steps, ns
        self.frames = 0  # frames encoded
        self.keyframes = 0  # of which keyframes
        self.last_keyframe = False  # whether the last encode() produced a keyframe

        x264_params = [
            "keyint=infinite",  # keyframes only where keyframe_due() forces them
            "scenecut=0",
            "bframes=0",
            "repeat-headers=1",
            "annexb=1",
            "colormatrix=smpte170m",
            "range=tv",
        ]
        options = {"preset": preset, "tune": "zerolatency", "forced-idr": "1"}
        if bitrate_kbps is None:
            options["crf"] = str(crf)
        else:
            x264_params += [f"vbv-maxrate={bitrate_kbps}", f"vbv-bufsize={bitrate_kbps}"]
        options["x264-params"] = ":".join(x264_params)
        try:
            ctx = self._av.CodecContext.create("libx264", "w")
        except Exception as exc:  # an FFmpeg build without libx264
            raise CodecUnavailable(f"PyAV has no libx264 encoder: {exc}") from exc
        rate = fractions.Fraction(fps).limit_denominator(1001)
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = 1 / rate
        ctx.framerate = rate
        ctx.max_b_frames = 0
        ctx.thread_count = threads
        if bitrate_kbps is not None:
            ctx.bit_rate = bitrate_kbps * 1000
        ctx.options = options
        ctx.open()
        self._ctx: Any = ctx

    def _to_i420(self, image: ParsedImage) -> Any:
        cv2 = self._cv2
        pixels = image.pixels
        if image.encoding == "rgb8":
            return cv2.cvtColor(pixels, cv2.COLOR_RGB2YUV_I420)
        if image.encoding == "bgr8":
            return cv2.cvtColor(pixels, cv2.COLOR_BGR2YUV_I420)
        # mono8: via BGR so luma gets the same limited-range mapping as colour cameras.
        return cv2.cvtColor(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), cv2.COLOR_BGR2YUV_I420)

    @property
    def keyframe_deadline_ns(self) -> int | None:
        """Stamp (ns) from which a frame is forced to be a keyframe; None before the first."""
        last = self._last_key_ns
        return None if last is None else last + self._interval_ns

    def keyframe_due(self, stamp_ns: int) -> bool:
        """Whether the frame stamped ``stamp_ns`` (the next one to encode) is forced IDR."""
        deadline = self.keyframe_deadline_ns
        previous = self._last_ns
        if deadline is None or previous is None or stamp_ns < previous:
            return True
        if stamp_ns >= deadline:
            return True
        steps = self._steps
        if not steps:
            return False
        spread = max(steps) - min(steps)
        # Integer-ns stamps of a steady rate differ by a nanosecond of rounding: not jitter.
        if spread <= _ROUNDING_NS:
            spread = 0
        return stamp_ns + max(steps) + spread > deadline

    def encode(self, image: ParsedImage) -> bytes:
        """Serialized ``CompressedVideo`` CDR holding exactly this frame.

        Raises:
            ValueError: the image size differs from the encoder's (make a new encoder).
            EncodeError: libx264 did not return exactly one packet for the frame.
        """
        if (image.width, image.height) != (self.width, self.height):
            raise ValueError(
                f"frame is {image.width}x{image.height}, encoder is {self.width}x{self.height}"
            )
        av = self._av
        frame = av.VideoFrame.from_ndarray(self._to_i420(image), format="yuv420p")
        frame.pts = self.frames
        stamp_ns = image.stamp_ns
        if self.keyframe_due(stamp_ns):
            frame.pict_type = av.video.frame.PictureType.I
        packets = self._ctx.encode(frame)
        if len(packets) != 1:
            raise EncodeError(
                f"libx264 returned {len(packets)} packets for one frame (expected 1: is "
                "zerolatency tuning in effect?)"
            )
        packet = packets[0]
        self.frames += 1
        self._note_step(stamp_ns)
        self.last_keyframe = bool(packet.is_keyframe)
        if self.last_keyframe:
            self.keyframes += 1
            self._last_key_ns = stamp_ns
        return serialize_compressed_video(
            image.stamp, image.frame_id, memoryview(packet), self.format
        )

    def _note_step(self, stamp_ns: int) -> None:
        previous = self._last_ns
        self._last_ns = stamp_ns
        if previous is None or stamp_ns < previous:
            self._steps.clear()  # a new clock: the old cadence says nothing
            return
        step = stamp_ns - previous
        # A pause as long as the interval is no cadence (its next frame is forced anyway).
        if 0 < step < self._interval_ns:
            self._steps.append(step)

    def close(self) -> None:
        """Flush (zerolatency holds no frames back) and release the codec."""
        if self._ctx is not None:
            self._ctx.encode(None)
            self._ctx = None


def require_codec(mode: str) -> None:
    """Check that the libraries for ``mode`` (raw, jpeg, h264) are importable.

    Raises:
        CodecUnavailable: with the command that installs what is missing.
        ValueError: unknown mode.
    """
    if mode == "raw":
        return
    if mode not in ("jpeg", "h264"):
        raise ValueError(f"unknown compression mode {mode!r}")
    _import("cv2", _CV2_MISSING)
    if mode == "h264":
        _import("av", _AV_MISSING)


def make_encoder(config: CameraCompression, image: ParsedImage) -> Encoder:
    """An encoder for ``config`` (mode jpeg or h264), sized for ``image``.

    Raises:
        ValueError: ``config.mode`` is ``raw`` (nothing to encode) or the image does not suit
            the codec (odd dimensions for H.264).
        CodecUnavailable: OpenCV or PyAV is not installed.
    """
    if config.mode == "jpeg":
        return JpegEncoder(config.jpeg_quality)
    if config.mode == "h264":
        return H264Encoder(
            image.width,
            image.height,
            fps=config.fps,
            keyframe_interval_s=config.keyframe_interval_s,
            preset=config.preset,
            crf=config.crf,
            bitrate_kbps=config.bitrate_kbps,
        )
    raise ValueError(f"no encoder for mode {config.mode!r}")
