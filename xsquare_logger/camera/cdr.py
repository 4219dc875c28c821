"""Read ``sensor_msgs/msg/Image`` and write compressed-image messages as raw CDR.

The recorder receives images as serialized CDR (``raw=True`` subscriptions). Deserializing a
2.7 MB 720p frame into a Python message costs a copy and an object per field; here the few
header fields are read with ``struct`` and the pixels become a numpy *view* over the received
buffer, so the only copy on the way to the codec is the one the codec itself makes.

Wire format (XCDR1, what rmw_fastrtps produces): a 4-byte encapsulation header
(``00 01 00 00`` little-endian, ``00 00 00 00`` big-endian), then the fields in declaration
order. Each primitive is aligned to its own size, counted from the end of the encapsulation
header. Strings are a uint32 length that includes the terminating NUL, then the bytes and the
NUL; ``uint8[]`` is a uint32 count, then the bytes. Messages end without trailing padding.

rmw_fastrtps leaves alignment padding uninitialized (it carries whatever was in memory); the
writers here put zeros there. Readers skip padding, so both are the same message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ENCODING_CHANNELS",
    "CdrError",
    "ParsedImage",
    "UnsupportedImage",
    "compressed_video_data",
    "parse_image",
    "serialize_compressed_image",
    "serialize_compressed_video",
]

# Encodings we can hand to a codec without conversion tables: 8 bits per channel.
ENCODING_CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "mono8": 1}

_HEADER_LE = b"\x00\x01"
_HEADER_BE = b"\x00\x00"
_ENCAPSULATION_LE = b"\x00\x01\x00\x00"
_LE_STAMP_LEN = struct.Struct("<iII")  # stamp.sec, stamp.nanosec, length of the next string
_LE_U32 = struct.Struct("<I")


class CdrError(ValueError):
    """The bytes are not a well-formed serialized message of the expected type."""


class UnsupportedImage(ValueError):
    """A well-formed image in a pixel encoding the compression stage cannot encode."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        supported = ", ".join(ENCODING_CHANNELS)
        super().__init__(f"unsupported image encoding {encoding!r} (supported: {supported})")


@dataclass(frozen=True, slots=True)
class ParsedImage:
    """The fields of a ``sensor_msgs/msg/Image``, pixels as a read-only view.

    Attributes:
        stamp: ``header.stamp`` as (sec, nanosec).
        frame_id: ``header.frame_id``.
        height: rows (pixels).
        width: columns (pixels).
        encoding: ``rgb8``, ``bgr8`` or ``mono8``.
        step: bytes per row in the message, >= width * channels (rows may be padded).
        pixels: uint8 array of shape (height, width, channels) sharing memory with the
            buffer that was parsed; strides are (step, channels, 1), so with padded rows it
            is not C-contiguous. Keep the buffer alive as long as the view is used (numpy
            does, through ``pixels.base``).
    """

    stamp: tuple[int, int]
    frame_id: str
    height: int
    width: int
    encoding: str
    step: int
    pixels: np.ndarray

    @property
    def stamp_ns(self) -> int:
        """``header.stamp`` in nanoseconds."""
        return self.stamp[0] * 1_000_000_000 + self.stamp[1]

    @property
    def channels(self) -> int:
        """Bytes per pixel (1 or 3)."""
        return ENCODING_CHANNELS[self.encoding]


class _Reader:
    """Sequential CDR field reader over a buffer; positions exclude the 4-byte header."""

    __slots__ = ("buf", "end", "order", "pos")

    def __init__(self, buf: bytes | bytearray | memoryview) -> None:
        if len(buf) < 4:
            raise CdrError(f"{len(buf)} bytes: too short for a CDR encapsulation header")
        kind = bytes(buf[:2])
        if kind == _HEADER_LE:
            self.order = "<"
        elif kind == _HEADER_BE:
            self.order = ">"
        else:
            raise CdrError(f"not plain CDR: encapsulation header {bytes(buf[:4]).hex(' ')}")
        self.buf = buf
        self.pos = 4
        self.end = len(buf)

    def _take(self, size: int, what: str) -> int:
        start = self.pos
        if start + size > self.end:
            raise CdrError(f"truncated at {what}: need {size} bytes at offset {start}")
        self.pos = start + size
        return start

    def align(self, n: int) -> None:
        self.pos += -(self.pos - 4) % n

    def u8(self, what: str) -> int:
        return self.buf[self._take(1, what)]

    def u32(self, what: str) -> int:
        self.align(4)
        return struct.unpack_from(self.order + "I", self.buf, self._take(4, what))[0]

    def i32(self, what: str) -> int:
        self.align(4)
        return struct.unpack_from(self.order + "i", self.buf, self._take(4, what))[0]

    def string(self, what: str) -> str:
        n = self.u32(what)
        start = self._take(n, what)
        if n == 0:  # not what rclpy writes (it always counts the NUL), but harmless
            return ""
        raw = bytes(self.buf[start : start + n - 1])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CdrError(f"{what} is not UTF-8: {raw[:40]!r}") from exc


def parse_image(buf: bytes | bytearray | memoryview) -> ParsedImage:
    """Parse a serialized ``sensor_msgs/msg/Image`` without copying its pixels.

    Args:
        buf: the CDR bytes as received (``raw=True`` subscription) or as written to a bag.

    Returns:
        The header fields and a (height, width, channels) uint8 view of the pixel data.

    Raises:
        CdrError: the bytes are truncated or inconsistent (step smaller than a row, data
            shorter than step * height).
        UnsupportedImage: the encoding is not one of ``ENCODING_CHANNELS``.
    """
    r = _Reader(buf)
    sec = r.i32("header.stamp.sec")
    nanosec = r.u32("header.stamp.nanosec")
    frame_id = r.string("header.frame_id")
    height = r.u32("height")
    width = r.u32("width")
    encoding = r.string("encoding")
    r.u8("is_bigendian")  # irrelevant for 8-bit channels
    step = r.u32("step")
    size = r.u32("data length")
    offset = r._take(size, "data")

    channels = ENCODING_CHANNELS.get(encoding)
    if channels is None:
        raise UnsupportedImage(encoding)
    if step < width * channels:
        raise CdrError(f"step {step} < width {width} x {channels} channels ({encoding})")
    if size < step * height:
        raise CdrError(f"data has {size} bytes, step {step} x height {height} needs more")
    # A strided view: rows step bytes apart, padding at the row ends simply not covered.
    pixels = np.ndarray(
        shape=(height, width, channels),
        dtype=np.uint8,
        buffer=buf,
        offset=offset,
        strides=(step, channels, 1),
    )
    if pixels.flags.writeable:
        # bytearray input would give a writable view; codecs must never touch the source.
        pixels.flags.writeable = False
    return ParsedImage((sec, nanosec), frame_id, height, width, encoding, step, pixels)


def compressed_video_data(buf: bytes | bytearray | memoryview) -> memoryview:
    """The ``data`` field (the bitstream) of a serialized ``foxglove_msgs/msg/CompressedVideo``,
    as a view into ``buf`` (no copy).

    Raises:
        CdrError: the bytes are truncated or not plain CDR.
    """
    r = _Reader(buf)
    r.i32("timestamp.sec")
    r.u32("timestamp.nanosec")
    r.string("frame_id")
    size = r.u32("data length")
    offset = r._take(size, "data")
    return memoryview(buf)[offset : offset + size]


def _pad(n: int) -> bytes:
    """Zero padding that brings a body position ``n`` (after the header) to a 4-byte boundary."""
    return b"\x00" * (-n % 4)


def _cdr_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _LE_U32.pack(len(raw) + 1) + raw + b"\x00"


def _stamp_and_string(sec: int, nanosec: int, text: str) -> bytes:
    raw = text.encode("utf-8")
    return _LE_STAMP_LEN.pack(sec, nanosec, len(raw) + 1) + raw + b"\x00"


def _join(parts: list[bytes], data: bytes | bytearray | memoryview, tail: list[str]) -> bytes:
    """Concatenate pre-serialized fields, a ``uint8[]`` ``data`` and trailing strings.

    One ``b"".join`` so ``data`` (the bulk of the message) is copied exactly once.
    """
    out: list[bytes | bytearray | memoryview] = [_ENCAPSULATION_LE]
    pos = 0  # body position, after the encapsulation header

    def add(piece: bytes | bytearray | memoryview) -> None:
        nonlocal pos
        pad = _pad(pos)
        out.append(pad)
        out.append(piece)
        pos += len(pad) + len(piece)

    for part in parts:
        add(part)
    add(_LE_U32.pack(len(data)))
    out.append(data)
    pos += len(data)
    for text in tail:
        add(_cdr_string(text))
    return b"".join(out)


def serialize_compressed_image(
    stamp: tuple[int, int], frame_id: str, fmt: str, data: bytes | bytearray | memoryview
) -> bytes:
    """CDR of a ``sensor_msgs/msg/CompressedImage`` (little-endian, as rclpy writes it).

    Args:
        stamp: ``header.stamp`` as (sec, nanosec).
        frame_id: ``header.frame_id``.
        fmt: the ``format`` field, e.g. ``"jpeg"``.
        data: the compressed image bytes (copied once into the result).
    """
    head = [_stamp_and_string(stamp[0], stamp[1], frame_id), _cdr_string(fmt)]
    return _join(head, data, [])


def serialize_compressed_video(
    stamp: tuple[int, int], frame_id: str, data: bytes | bytearray | memoryview, fmt: str = "h264"
) -> bytes:
    """CDR of a ``foxglove_msgs/msg/CompressedVideo`` (little-endian).

    Field order: ``builtin_interfaces/Time timestamp``, ``string frame_id``, ``uint8[] data``,
    ``string format`` (see ``xsquare_logger.bag.embedded``).

    Args:
        stamp: ``timestamp`` as (sec, nanosec): the source image's ``header.stamp``.
        frame_id: the source image's ``header.frame_id``.
        data: one frame of the bitstream (for ``h264``: Annex B NAL units of one picture).
        fmt: the ``format`` field: ``h264``, ``h265``, ``vp9`` or ``av1``.
    """
    return _join([_stamp_and_string(stamp[0], stamp[1], frame_id)], data, [fmt])
