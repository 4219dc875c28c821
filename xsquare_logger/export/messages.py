"""The recorded CDR layouts the export reads, without a ROS install (plain ``struct``/numpy).

Every message the export reads starts with a ``builtin_interfaces/Time`` (``header.stamp``
or, for ``foxglove_msgs/msg/CompressedVideo``, ``timestamp``): :func:`stamp_ns` reads only
those 8 bytes. Layout rules (XCDR1, as rmw_fastrtps writes): 4-byte encapsulation header,
each primitive aligned to its size counted after that header, strings = uint32 length with
the NUL, sequences = uint32 count then the elements.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "JointSample",
    "MessageError",
    "compressed_image_data",
    "joint_state",
    "stamp_ns",
    "wrench",
]

_NS = 1_000_000_000


class MessageError(ValueError):
    """Bytes that are not the expected message (truncated, not plain CDR)."""


class _Cursor:
    __slots__ = ("buf", "order", "pos")

    def __init__(self, buf: bytes | memoryview) -> None:
        if len(buf) < 12:
            raise MessageError(f"{len(buf)} bytes: too short for a stamped message")
        kind = bytes(buf[:2])
        if kind == b"\x00\x01":
            self.order = "<"
        elif kind == b"\x00\x00":
            self.order = ">"
        else:
            raise MessageError(f"not plain CDR: encapsulation {bytes(buf[:4]).hex(' ')}")
        self.buf = buf
        self.pos = 4

    def align(self, n: int) -> None:
        self.pos += -(self.pos - 4) % n

    def take(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.buf):
            raise MessageError(f"truncated: need {n} bytes at offset {start}")
        self.pos += n
        return start

    def u32(self) -> int:
        self.align(4)
        value: int = struct.unpack_from(self.order + "I", self.buf, self.take(4))[0]
        return value

    def string(self) -> str:
        n = self.u32()
        start = self.take(n)
        return bytes(self.buf[start : start + max(0, n - 1)]).decode("utf-8", "replace")

    def f64s(self, count: int) -> np.ndarray:
        if count == 0:
            return np.zeros(0, dtype=np.float64)
        self.align(8)
        start = self.take(8 * count)
        return np.frombuffer(self.buf, dtype=self.order + "f8", count=count, offset=start)

    def header(self) -> int:
        sec, nsec = struct.unpack_from(self.order + "iI", self.buf, self.take(8))
        self.string()  # frame_id
        return int(sec) * _NS + int(nsec)


def stamp_ns(buf: bytes | memoryview) -> int:
    """``header.stamp`` (or CompressedVideo ``timestamp``) in ns since the epoch."""
    c = _Cursor(buf)
    sec, nsec = struct.unpack_from(c.order + "iI", buf, 4)
    return int(sec) * _NS + int(nsec)


@dataclass(frozen=True)
class JointSample:
    """One ``sensor_msgs/msg/JointState``: stamp, names and the three value arrays."""

    stamp_ns: int
    names: tuple[str, ...]
    position: np.ndarray
    velocity: np.ndarray
    effort: np.ndarray

    def field(self, name: str) -> np.ndarray:
        values: np.ndarray = getattr(self, name)
        return values


def joint_state(buf: bytes | memoryview) -> JointSample:
    """Parse a serialized ``sensor_msgs/msg/JointState``."""
    c = _Cursor(buf)
    stamp = c.header()
    names = tuple(c.string() for _ in range(c.u32()))
    arrays = [c.f64s(c.u32()) for _ in range(3)]
    return JointSample(stamp, names, *arrays)


def wrench(buf: bytes | memoryview) -> tuple[int, np.ndarray]:
    """``(stamp_ns, [fx, fy, fz, tx, ty, tz])`` of a ``geometry_msgs/msg/WrenchStamped``."""
    c = _Cursor(buf)
    stamp = c.header()
    return stamp, c.f64s(6)


def compressed_image_data(buf: bytes | memoryview) -> tuple[str, memoryview]:
    """``(format, data)`` of a ``sensor_msgs/msg/CompressedImage`` (data is a view)."""
    c = _Cursor(buf)
    c.header()
    fmt = c.string()
    n = c.u32()
    start = c.take(n)
    return fmt, memoryview(buf)[start : start + n]
