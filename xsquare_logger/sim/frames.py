"""Pre-rendered, pre-serialized payloads for the simulated humanoid.

Everything expensive happens once, at start-up: camera frames are rendered
with numpy (gradient + moving pattern + light noise, distinct per camera),
joint-state and wrench samples are computed for one motion cycle, and each
message is serialized to CDR once with ``rclpy.serialization``.  Publishing
then costs one stamp patch and one copy per message:

* In CDR (XCDR1) the 4-byte encapsulation header comes first, then the
  message.  For messages whose first field is ``std_msgs/Header`` (Image,
  CameraInfo, JointState, WrenchStamped) ``header.stamp.sec`` (int32) is at
  byte offset 4 and ``header.stamp.nanosec`` (uint32) at offset 8.  This is
  checked for every buffer at build time (a sentinel stamp is serialized and
  looked for at those offsets) and by deserializing a patched buffer.
* ``Publisher.publish`` accepts ``bytes`` for raw CDR but not ``bytearray``
  or ``memoryview`` (TypeError), and ``deserialize_message`` only takes
  ``bytes`` too; so the stamp is patched into a ``bytearray`` kept per
  message and ``bytes(buf)`` is handed out (one memcpy, ~0.1 ms for a
  2.7 MB frame).
"""

from __future__ import annotations

import array
import importlib
import math
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from xsquare_logger.errors import XsqError
from xsquare_logger.sim.profiles import (
    CameraInfoStream,
    ImageStream,
    JointStateStream,
    Profile,
    StreamSpec,
    WrenchStream,
)

STAMP_OFFSET = 4  # header.stamp.sec; nanosec follows at 8
_NS = 1_000_000_000
# A stamp unlikely to occur by chance in a buffer: checked at STAMP_OFFSET.
_SENTINEL_SEC = 0x5A17C0DE
_SENTINEL_NSEC = 0x2BADCAFE % _NS
_STAMP_LE = struct.Struct("<iI")
_STAMP_BE = struct.Struct(">iI")


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """(sec, nanosec) of a time in nanoseconds."""
    return stamp_ns // _NS, stamp_ns % _NS


def message_class(type_name: str) -> type[Any]:
    """The Python class of a ROS type name such as ``sensor_msgs/msg/Image``."""
    parts = type_name.split("/")
    if len(parts) != 3:
        raise ValueError(f"bad ROS type name {type_name!r} (want pkg/msg/Type)")
    pkg, sub, cls = parts
    return getattr(importlib.import_module(f"{pkg}.{sub}"), cls)


def _stamp_struct(buf: bytes | bytearray) -> struct.Struct:
    """The struct for the stamp, from the CDR encapsulation header."""
    if len(buf) < STAMP_OFFSET + 8 or buf[0] != 0 or buf[1] not in (0, 1):
        raise ValueError(f"not a plain CDR buffer: header {bytes(buf[:4]).hex()}")
    return _STAMP_LE if buf[1] == 1 else _STAMP_BE


def patch_stamp(buf: bytearray, stamp_ns: int) -> None:
    """Write header.stamp into a serialized Header-first message, in place."""
    sec, nsec = split_stamp(stamp_ns)
    _stamp_struct(buf).pack_into(buf, STAMP_OFFSET, sec, nsec)


def read_stamp_ns(buf: bytes | bytearray) -> int:
    """header.stamp (ns) of a serialized Header-first message."""
    sec, nsec = _stamp_struct(buf).unpack_from(buf, STAMP_OFFSET)
    return sec * _NS + nsec


class StampedRing:
    """The pre-serialized messages of one stream, handed out with a fresh stamp."""

    __slots__ = ("_bufs", "_n", "_pack", "topic", "type_name")

    def __init__(self, topic: str, type_name: str, buffers: Iterable[bytes | bytearray]):
        self.topic = topic
        self.type_name = type_name
        self._bufs = [bytearray(b) for b in buffers]
        if not self._bufs:
            raise ValueError(f"{topic}: empty ring")
        packs = {id(_stamp_struct(b)) for b in self._bufs}
        if len(packs) != 1:
            raise ValueError(f"{topic}: buffers of mixed endianness")
        self._n = len(self._bufs)
        self._pack = _stamp_struct(self._bufs[0]).pack_into

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self._bufs)

    @property
    def max_message_bytes(self) -> int:
        return max(len(b) for b in self._bufs)

    def payload(self, index: int, stamp_ns: int) -> bytes:
        """CDR bytes of message ``index % len(self)`` stamped ``stamp_ns``."""
        buf = self._bufs[index % self._n]
        self._pack(buf, STAMP_OFFSET, stamp_ns // _NS, stamp_ns % _NS)
        return bytes(buf)

    def verify(self, index: int = 0, stamp_ns: int = 1_234_567_890_123_456_789) -> Any:
        """Deserialize a patched buffer; check the stamp survived. Returns the message."""
        from rclpy.serialization import deserialize_message

        msg = deserialize_message(self.payload(index, stamp_ns), message_class(self.type_name))
        sec, nsec = split_stamp(stamp_ns)
        got = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if got != (sec, nsec):
            raise AssertionError(f"{self.topic}: patched stamp {got} != {(sec, nsec)}")
        return msg


def serialize_stamped(msg: Any) -> bytes:
    """Serialize a Header-first message; check its stamp sits at STAMP_OFFSET."""
    from rclpy.serialization import serialize_message

    msg.header.stamp.sec = _SENTINEL_SEC
    msg.header.stamp.nanosec = _SENTINEL_NSEC
    data = serialize_message(msg)
    st = _stamp_struct(data)
    if st.unpack_from(data, STAMP_OFFSET) != (_SENTINEL_SEC, _SENTINEL_NSEC):
        raise AssertionError(f"{type(msg).__name__}: header.stamp not at CDR offset 4")
    return data


# --------------------------------------------------------------------------- images


def render_frames(spec: ImageStream) -> list[np.ndarray]:
    """``spec.ring_size`` frames (H x W x C uint8) for one camera, of ``spec.content``."""
    if spec.content == "natural":
        return natural_frames(spec)
    return synthetic_frames(spec)


# Public-domain / CC0 photographs that scikit-image ships in its wheel (licences in
# skimage/data/_fetchers.py): NASA's astronaut, Pikolo's coffee cup (CC0), the cat Chelsea
# (CC0), SpaceX's rocket launch.
NATURAL_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")


class ContentUnavailable(XsqError, ValueError):
    """The natural camera content needs scikit-image's sample photographs."""


def _photo_canvas(height: int) -> np.ndarray:
    """The photographs side by side, each scaled to ``height`` rows (RGB uint8)."""
    import importlib.resources

    import cv2

    try:
        data = importlib.resources.files("skimage") / "data"
    except ModuleNotFoundError:
        raise ContentUnavailable(
            "natural camera content needs scikit-image's sample photos: "
            "pip install scikit-image"
        ) from None
    tiles = []
    for name in NATURAL_PHOTOS:
        bgr = cv2.imread(str(data / name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ContentUnavailable(f"cannot read {data / name} (scikit-image install broken?)")
        scale = height / bgr.shape[0]
        size = (round(bgr.shape[1] * scale), height)
        tile = cv2.resize(bgr, size, interpolation=cv2.INTER_CUBIC)
        tiles.append(cv2.cvtColor(tile, cv2.COLOR_BGR2RGB))
    return np.ascontiguousarray(np.concatenate(tiles, axis=1))


def natural_frames(spec: ImageStream) -> list[np.ndarray]:
    """Frames of a camera moving over photographs, with sensor noise.

    A window of the camera's size pans across the photo strip and zooms in and out
    (each camera starts elsewhere); the motion is periodic over the ring, so the ring
    loops without a jump. Gaussian read noise (sigma 2.5 DN, fresh per frame) is added
    on top, as a real sensor has: it is what keeps raw frames from compressing well.
    """
    import cv2

    h, w, c, n = spec.height, spec.width, spec.channels, spec.ring_size
    canvas = _photo_canvas(round(h * 1.3))  # room to zoom out by 1/1.3 without borders
    ch, cw = canvas.shape[:2]
    rng = np.random.default_rng(2000 + spec.seed)
    frames = []
    for i in range(n):
        phase = 2 * np.pi * i / n
        zoom = 1.12 + 0.1 * np.sin(phase)  # canvas pixels per frame pixel: 1.02 .. 1.22
        span_x = max(0.0, cw - w * zoom)
        x0 = span_x * (0.5 + 0.45 * np.sin(phase + 2.1 * spec.seed))
        y0 = max(0.0, ch - h * zoom) * (0.5 + 0.4 * np.cos(phase + spec.seed))
        # frame pixel (u, v) shows canvas pixel (x0 + zoom u, y0 + zoom v)
        m = np.array([[zoom, 0.0, x0], [0.0, zoom, y0]], dtype=np.float64)
        view = np.asarray(
            cv2.warpAffine(canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT)
        )  # fmt: skip
        noise = np.asarray(rng.normal(0.0, 2.5, view.shape)).astype(np.int16)
        f = np.clip(view.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        frames.append(f if c == 3 else f.mean(axis=2, keepdims=True).astype(np.uint8)[..., :c])
    return frames


def synthetic_frames(spec: ImageStream) -> list[np.ndarray]:
    """``spec.ring_size`` synthetic frames (H x W x C uint8) for one camera.

    A smooth colour gradient (different per camera), a checkerboard band and a
    disc moving through the ring (the ring loops seamlessly), plus +-3 of noise.
    Pixel values stay within [3, 252] so the noise is added without overflow.
    """
    h, w, c, n = spec.height, spec.width, spec.channels, spec.ring_size
    rng = np.random.default_rng(1000 + spec.seed)
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    angle = 0.6 + 1.9 * spec.seed
    ramp = np.cos(angle) * xs + np.sin(angle) * ys
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    tints = ((0.9, 0.6, 0.3), (0.35, 0.8, 0.55), (0.5, 0.45, 0.95))
    tint = tints[spec.seed % len(tints)]
    planes = []
    for ch in range(c):
        lo = 30.0 + 20.0 * ((spec.seed + ch) % 3)
        span = 180.0 * tint[ch % 3]
        wave = 12.0 * np.sin(2 * np.pi * (xs * (2 + ch) + ys * (1 + spec.seed)))
        planes.append(lo + span * ramp + wave)
    base = np.clip(np.stack(planes, axis=-1), 3, 252).astype(np.uint8)
    if c == 1:
        base = base[..., :1]

    # Checkerboard band, scrolling horizontally by one full tile period per ring.
    tile = max(4, w // 16)
    band_y0, band_y1 = int(h * 0.62), int(h * 0.8)
    yy = np.arange(band_y1 - band_y0)[:, None] // tile
    xx = np.arange(w + 2 * tile)[None, :] // tile
    checker = np.where((yy + xx) % 2 == 0, 235, 25).astype(np.uint8)[..., None]

    # Noise pool: a frame's worth plus slack; each frame takes its own window.
    size = h * w * c
    pool = rng.integers(0, 7, size=size + 7919 * n, dtype=np.uint8)

    radius = max(3, min(h, w) // 10)
    frames = []
    for i in range(n):
        f = base.copy()
        shift = (i * 2 * tile) // n
        band = checker[:, shift : shift + w]
        region = f[band_y0:band_y1]
        region >>= 1
        region += band >> 1
        theta = 2 * np.pi * i / n
        cy = int(h * (0.35 + 0.2 * np.sin(theta + spec.seed)))
        cx = int(w * (0.5 + 0.35 * np.cos(theta)))
        y0, y1 = max(0, cy - radius), min(h, cy + radius)
        x0, x1 = max(0, cx - radius), min(w, cx + radius)
        dy = np.arange(y0, y1)[:, None] - cy
        dx = np.arange(x0, x1)[None, :] - cx
        disc = dy * dy + dx * dx <= radius * radius
        colour = np.array([240, 200, 40][:c], dtype=np.uint8)
        f[y0:y1, x0:x1][disc] = colour
        np.clip(f, 3, 249, out=f)
        off = 7919 * i
        f += pool[off : off + size].reshape(h, w, c)
        f -= 3
        frames.append(f)
    return frames


def image_messages(spec: ImageStream) -> Iterator[Any]:
    """The ring's Image messages, one at a time (each holds a full frame)."""
    from sensor_msgs.msg import Image

    for frame in render_frames(spec):
        m = Image()
        m.header.frame_id = spec.frame_id
        m.height = spec.height
        m.width = spec.width
        m.encoding = spec.encoding
        m.is_bigendian = 0
        m.step = spec.step
        m.data = array.array("B", frame.tobytes())
        yield m


def camera_info_message(spec: CameraInfoStream) -> Any:
    from sensor_msgs.msg import CameraInfo

    m = CameraInfo()
    m.header.frame_id = spec.frame_id
    m.height = spec.height
    m.width = spec.width
    m.distortion_model = spec.distortion_model
    m.d = list(spec.d)
    m.k = list(spec.k)
    m.r = list(spec.r)
    m.p = list(spec.p)
    return m


# ---------------------------------------------------------------------- joint states

# (offset rad, amplitude rad, harmonic, gravity torque Nm, inertia kg m^2) by joint.
_JOINT_MOTION = {
    "hip_pitch": (-0.35, 0.30, 1, 25.0, 1.2),
    "hip_roll": (0.02, 0.06, 1, 30.0, 1.0),
    "hip_yaw": (0.0, 0.04, 2, 4.0, 0.4),
    "knee": (0.75, 0.45, 1, 55.0, 0.9),
    "ankle_pitch": (-0.4, 0.22, 1, 35.0, 0.2),
    "ankle_roll": (0.0, 0.05, 1, 12.0, 0.1),
    "waist_yaw": (0.0, 0.15, 1, 3.0, 2.0),
    "waist_pitch": (0.05, 0.04, 2, 40.0, 2.5),
    "shoulder_pitch": (0.2, 0.4, 1, 9.0, 0.25),
    "shoulder_roll": (0.18, 0.1, 1, 6.0, 0.2),
    "shoulder_yaw": (0.0, 0.15, 2, 1.5, 0.08),
    "elbow": (0.9, 0.35, 1, 4.0, 0.06),
    "wrist_roll": (0.0, 0.5, 2, 0.4, 0.005),
    "wrist_pitch": (0.0, 0.3, 1, 0.8, 0.005),
    "wrist_yaw": (0.0, 0.2, 2, 0.3, 0.004),
}


def joint_trajectory(spec: JointStateStream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, velocity, effort), each (samples x joints), for one motion cycle."""
    n = spec.cycle_samples
    t = np.arange(n, dtype=np.float64) / spec.rate_hz
    f0 = 1.0 / (n / spec.rate_hz)  # frequencies are multiples: the cycle wraps cleanly
    cols_p, cols_v, cols_e = [], [], []
    for j, name in enumerate(spec.joint_names):
        key = name.removesuffix("_joint")
        side = 0
        for prefix in ("left_", "right_"):
            if key.startswith(prefix):
                key = key[len(prefix) :]
                side = 1 if prefix == "left_" else -1
        off, amp, harm, grav, inertia = _JOINT_MOTION.get(key, (0.0, 0.1, 1, 1.0, 0.05))
        if key.endswith("roll") or key.endswith("yaw"):
            off *= side or 1  # mirrored between sides
        # Legs in anti-phase (a gait), arms swinging against the legs.
        phase = (math.pi if side < 0 else 0.0) + 0.15 * j
        w = 2 * math.pi * harm * f0
        pos = off + amp * np.sin(w * t + phase)
        vel = amp * w * np.cos(w * t + phase)
        acc = -amp * w * w * np.sin(w * t + phase)
        eff = grav * np.cos(pos) + inertia * acc
        cols_p.append(pos)
        cols_v.append(vel)
        cols_e.append(eff)
    return np.stack(cols_p, 1), np.stack(cols_v, 1), np.stack(cols_e, 1)


def joint_state_messages(spec: JointStateStream) -> list[Any]:
    from sensor_msgs.msg import JointState

    pos, vel, eff = joint_trajectory(spec)
    names = list(spec.joint_names)
    msgs = []
    for k in range(pos.shape[0]):
        m = JointState()
        m.header.frame_id = spec.frame_id
        m.name = names
        m.position = array.array("d", pos[k].tobytes())
        m.velocity = array.array("d", vel[k].tobytes())
        m.effort = array.array("d", eff[k].tobytes())
        msgs.append(m)
    return msgs


def wrench_samples(spec: WrenchStream) -> np.ndarray:
    """(samples x 6): force xyz (N), torque xyz (Nm) of a gripper F/T sensor."""
    n = spec.cycle_samples
    t = np.arange(n, dtype=np.float64) / spec.rate_hz
    f0 = 1.0 / (n / spec.rate_hz)
    ph = 0.0 if spec.side == "left" else math.pi / 2
    rng = np.random.default_rng(7 if spec.side == "left" else 8)
    grasp = 0.5 - 0.5 * np.cos(2 * np.pi * f0 * t + ph)  # 0..1 squeeze cycle
    out = np.empty((n, 6))
    out[:, 0] = 1.5 * np.sin(2 * np.pi * 2 * f0 * t + ph)
    out[:, 1] = -0.8 * np.cos(2 * np.pi * f0 * t + ph)
    out[:, 2] = -4.9 - 12.0 * grasp  # gripper weight plus grip load
    out[:, 3] = 0.08 * np.sin(2 * np.pi * f0 * t + ph)
    out[:, 4] = -0.12 * grasp
    out[:, 5] = 0.02 * np.sin(2 * np.pi * 3 * f0 * t)
    out += rng.normal(0.0, [0.05, 0.05, 0.08, 0.002, 0.002, 0.001], size=out.shape)
    return out


def wrench_messages(spec: WrenchStream) -> list[Any]:
    from geometry_msgs.msg import WrenchStamped

    msgs = []
    for row in wrench_samples(spec).tolist():
        m = WrenchStamped()
        m.header.frame_id = spec.frame_id
        m.wrench.force.x, m.wrench.force.y, m.wrench.force.z = row[0:3]
        m.wrench.torque.x, m.wrench.torque.y, m.wrench.torque.z = row[3:6]
        msgs.append(m)
    return msgs


# ------------------------------------------------------------------------- building


def stream_messages(spec: StreamSpec) -> Iterable[Any]:
    """The messages of one stream's ring, unstamped."""
    if isinstance(spec, ImageStream):
        return image_messages(spec)
    if isinstance(spec, CameraInfoStream):
        return [camera_info_message(spec)]
    if isinstance(spec, JointStateStream):
        return joint_state_messages(spec)
    if isinstance(spec, WrenchStream):
        return wrench_messages(spec)
    raise TypeError(f"no payload generator for {type(spec).__name__} ({spec.topic})")


def build_ring(spec: StreamSpec, verify: bool = True) -> StampedRing:
    """Render and serialize one stream's ring (slow: call once at start-up)."""
    # A generator for images: one Image message (a frame copy) alive at a time.
    ring = StampedRing(
        spec.topic, spec.type_name, (serialize_stamped(m) for m in stream_messages(spec))
    )
    if verify:
        ring.verify(len(ring) - 1)
    return ring


class PayloadBank:
    """Every stream's ring for a profile; ``payload(topic, index, stamp_ns)``."""

    def __init__(self, profile: Profile, verify: bool = True):
        self.profile = profile
        self.rings: dict[str, StampedRing] = {
            s.topic: build_ring(s, verify=verify) for s in profile.streams
        }

    def __getitem__(self, topic: str) -> StampedRing:
        return self.rings[topic]

    def payload(self, topic: str, index: int, stamp_ns: int) -> bytes:
        return self.rings[topic].payload(index, stamp_ns)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.rings.values())


__all__ = [
    "STAMP_OFFSET",
    "PayloadBank",
    "StampedRing",
    "build_ring",
    "camera_info_message",
    "image_messages",
    "joint_state_messages",
    "joint_trajectory",
    "message_class",
    "patch_stamp",
    "read_stamp_ns",
    "render_frames",
    "serialize_stamped",
    "split_stamp",
    "stream_messages",
    "wrench_messages",
    "wrench_samples",
]
