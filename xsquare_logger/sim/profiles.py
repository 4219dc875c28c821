"""Load profiles for the simulated humanoid (plain Python, no ROS imports).

A :class:`Profile` is a list of :class:`StreamSpec` objects, one per topic.
Streams that share a ``group`` are published together on one tick with one
header stamp (a camera's image and camera_info; the joint states and the two
gripper wrenches of one control cycle).  Every stream of a group has the
group's rate.

QoS kinds:

* ``"sensor"``: best effort, volatile, keep last 10 (ROS "sensor data" style).
* ``"reliable"``: reliable, volatile, keep last 10.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import ClassVar

QOS_SENSOR = "sensor"
QOS_RELIABLE = "reliable"
QOS_KINDS = (QOS_SENSOR, QOS_RELIABLE)

# How the cameras are triggered. "synced" (default): hardware-synchronised, every camera
# exposes on one shared tick, stamps within a fraction of a millisecond (see
# CAMERA_SYNC_JITTER_S); "staggered": free-running cameras, ticks spread evenly over the
# frame period (camera i of n at i/n of a period), the skew `xsq report` flags.
CAMERA_SYNCED = "synced"
CAMERA_STAGGERED = "staggered"
CAMERA_SYNC_MODES = (CAMERA_SYNCED, CAMERA_STAGGERED)
CAMERA_SYNC_JITTER_S = 0.0002  # sd of each frame's exposure time around the shared tick

# Bytes per pixel of the encodings the simulator can render.
ENCODING_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}

CAMERA_NAMES = ("head", "left_wrist", "right_wrist")
GRIPPER_SIDES = ("left", "right")

# 28 joints of a humanoid: 6 per leg, 2 waist, 7 per arm.
HUMANOID_JOINT_NAMES: tuple[str, ...] = (
    *(
        f"{side}_{joint}_joint"
        for side in ("left", "right")
        for joint in (
            "hip_pitch",
            "hip_roll",
            "hip_yaw",
            "knee",
            "ankle_pitch",
            "ankle_roll",
        )
    ),
    "waist_yaw_joint",
    "waist_pitch_joint",
    *(
        f"{side}_{joint}_joint"
        for side in ("left", "right")
        for joint in (
            "shoulder_pitch",
            "shoulder_roll",
            "shoulder_yaw",
            "elbow",
            "wrist_roll",
            "wrist_pitch",
            "wrist_yaw",
        )
    ),
)
assert len(HUMANOID_JOINT_NAMES) == 28

# The leader arms of teleoperation (what the operator moves): the 14 arm joints.
LEADER_TOPIC = "/leader/joint_states"
LEADER_JOINT_NAMES: tuple[str, ...] = tuple(
    n for n in HUMANOID_JOINT_NAMES if any(k in n for k in ("shoulder", "elbow", "wrist"))
)


CAMERA_CONTENTS = ("synthetic", "natural")

@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """One published topic."""

    kind: ClassVar[str] = "stream"

    topic: str
    type_name: str  # e.g. "sensor_msgs/msg/Image"
    rate_hz: float
    qos: str  # QOS_SENSOR or QOS_RELIABLE
    frame_id: str = ""
    # Streams with the same group publish on one tick, with one stamp.
    group: str = ""
    # Offset of the group's ticks, as a fraction of its period (0 <= phase < 1).
    phase: float = 0.0

    def __post_init__(self) -> None:
        if self.qos not in QOS_KINDS:
            raise ValueError(f"{self.topic}: QoS kind {self.qos!r} not in {QOS_KINDS}")
        if not self.rate_hz > 0:
            raise ValueError(f"{self.topic}: rate_hz must be > 0, got {self.rate_hz}")
        if not 0.0 <= self.phase < 1.0:
            raise ValueError(f"{self.topic}: phase must be in [0, 1), got {self.phase}")

    @property
    def period_s(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def group_key(self) -> str:
        return self.group or self.topic


@dataclass(frozen=True, kw_only=True)
class ImageStream(StreamSpec):
    kind: ClassVar[str] = "image"

    camera: str
    width: int
    height: int
    encoding: str = "rgb8"
    # Number of distinct pre-rendered frames cycled through.
    ring_size: int = 30
    seed: int = 0
    # What the frames show (sim/frames.py): "synthetic" (gradient + pattern, compresses
    # far better than a home does) or "natural" (photographs panned/zoomed + sensor noise).
    content: str = "synthetic"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.content not in CAMERA_CONTENTS:
            raise ValueError(f"{self.topic}: camera content {self.content!r} not in "
                             f"{', '.join(CAMERA_CONTENTS)}")  # fmt: skip
        if self.encoding not in ENCODING_CHANNELS:
            raise ValueError(f"{self.topic}: unsupported encoding {self.encoding!r}")
        if self.width <= 0 or self.height <= 0 or self.ring_size <= 0:
            raise ValueError(f"{self.topic}: width, height and ring_size must be > 0")

    @property
    def channels(self) -> int:
        return ENCODING_CHANNELS[self.encoding]

    @property
    def step(self) -> int:
        return self.width * self.channels

    @property
    def data_bytes(self) -> int:
        return self.step * self.height


@dataclass(frozen=True, kw_only=True)
class CameraInfoStream(StreamSpec):
    kind: ClassVar[str] = "camera_info"

    camera: str
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    d: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def k(self) -> tuple[float, ...]:
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)

    @property
    def r(self) -> tuple[float, ...]:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def p(self) -> tuple[float, ...]:
        return (self.fx, 0.0, self.cx, 0.0, 0.0, self.fy, self.cy, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass(frozen=True, kw_only=True)
class JointStateStream(StreamSpec):
    kind: ClassVar[str] = "joint_state"

    joint_names: tuple[str, ...] = HUMANOID_JOINT_NAMES
    # Length of the pre-computed motion cycle; the sinusoids' frequencies are
    # multiples of 1 / cycle_s so the cycle wraps without a jump.
    cycle_s: float = 2.0

    @property
    def cycle_samples(self) -> int:
        return max(1, round(self.rate_hz * self.cycle_s))


@dataclass(frozen=True, kw_only=True)
class WrenchStream(StreamSpec):
    kind: ClassVar[str] = "wrench"

    side: str
    cycle_s: float = 2.0

    @property
    def cycle_samples(self) -> int:
        return max(1, round(self.rate_hz * self.cycle_s))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    streams: tuple[StreamSpec, ...] = field(default_factory=tuple)
    camera_sync: str = CAMERA_SYNCED

    def __post_init__(self) -> None:
        if self.camera_sync not in CAMERA_SYNC_MODES:
            raise ValueError(
                f"camera sync {self.camera_sync!r} not in {', '.join(CAMERA_SYNC_MODES)}"
            )
        topics = [s.topic for s in self.streams]
        if len(set(topics)) != len(topics):
            raise ValueError(f"profile {self.name}: duplicate topics")
        for key, members in self.groups().items():
            rates = {s.rate_hz for s in members}
            phases = {s.phase for s in members}
            if len(rates) != 1 or len(phases) != 1:
                raise ValueError(f"profile {self.name}: group {key} mixes rates or phases")

    def __iter__(self) -> Iterator[StreamSpec]:
        return iter(self.streams)

    @property
    def topics(self) -> list[str]:
        return [s.topic for s in self.streams]

    @property
    def cameras(self) -> list[str]:
        return [s.camera for s in self.streams if isinstance(s, ImageStream)]

    def stream(self, topic: str) -> StreamSpec:
        for s in self.streams:
            if s.topic == topic:
                return s
        raise KeyError(topic)

    def groups(self) -> dict[str, list[StreamSpec]]:
        """Streams by group key, in profile order."""
        out: dict[str, list[StreamSpec]] = {}
        for s in self.streams:
            out.setdefault(s.group_key, []).append(s)
        return out

    def image_bytes_per_second(self) -> float:
        return sum(s.data_bytes * s.rate_hz for s in self.streams if isinstance(s, ImageStream))

    def with_cameras(self, n: int | None) -> Profile:
        """The profile restricted to its first ``n`` cameras (None: all of them).

        The remaining cameras' tick phases are spread evenly again.
        """
        cams = self.cameras
        if n is None:
            return self
        if not 0 <= n <= len(cams):
            raise ValueError(f"cameras must be between 0 and {len(cams)}, got {n}")
        keep = cams[:n]
        streams = [s for s in self.streams if getattr(s, "camera", None) in (None, *keep)]
        return replace(self, streams=tuple(streams)).with_camera_sync(self.camera_sync)

    def with_camera_content(self, content: str) -> Profile:
        """The profile with every camera showing ``content`` (see ImageStream.content)."""
        streams = [
            replace(s, content=content) if isinstance(s, ImageStream) else s
            for s in self.streams
        ]
        return replace(self, streams=tuple(streams))

    def with_camera_rate(self, camera: str, rate_hz: float) -> Profile:
        """The profile with one camera (image and camera_info) published at ``rate_hz``
        (a camera that under-delivers: the degraded stream of the health tests)."""
        if camera not in self.cameras:
            raise ValueError(f"no camera {camera!r} in {self.name}; cameras: "
                             f"{', '.join(self.cameras)}")  # fmt: skip
        if not rate_hz > 0:
            raise ValueError(f"camera rate must be > 0, got {rate_hz}")
        streams = [
            replace(s, rate_hz=rate_hz) if getattr(s, "camera", None) == camera else s
            for s in self.streams
        ]
        return replace(self, streams=tuple(streams))

    def with_camera_sync(self, mode: str) -> Profile:
        """The profile with its cameras ``synced`` (one shared tick) or ``staggered``."""
        if mode not in CAMERA_SYNC_MODES:
            raise ValueError(f"camera sync {mode!r} not in {', '.join(CAMERA_SYNC_MODES)}")
        cams = self.cameras
        streams = [
            replace(s, phase=_camera_phase(cams.index(s.camera), len(cams), mode))
            if isinstance(s, (ImageStream, CameraInfoStream))
            else s
            for s in self.streams
        ]
        return replace(self, streams=tuple(streams), camera_sync=mode)


def _camera_phase(index: int, count: int, mode: str = CAMERA_SYNCED) -> float:
    # Staggered: free-running cameras, ticks spread over the period (which also keeps
    # three 2.7 MB frames from being pushed in one burst). Synced: one shared tick.
    if mode == CAMERA_STAGGERED and count:
        return index / count
    return 0.0


def _camera_streams(
    name: str,
    index: int,
    count: int,
    width: int,
    height: int,
    rate_hz: float,
    hfov_deg: float,
) -> list[StreamSpec]:
    fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    # Slightly different intrinsics per camera, as real calibrations are.
    fx *= 1.0 + 0.004 * (index - 1)
    fy = fx * 1.0008
    cx = (width - 1) / 2.0 + 1.7 * (index - 1)
    cy = (height - 1) / 2.0 - 1.1 * (index - 1)
    d = (-0.041 + 0.003 * index, 0.012 - 0.001 * index, 0.0003, -0.0002, 0.0)
    frame_id = f"{name}_camera_optical_frame"
    group = f"camera/{name}"
    phase = _camera_phase(index, count, CAMERA_SYNCED)
    base = f"/camera/{name}"
    return [
        ImageStream(
            topic=f"{base}/image_raw",
            type_name="sensor_msgs/msg/Image",
            rate_hz=rate_hz,
            qos=QOS_SENSOR,
            frame_id=frame_id,
            group=group,
            phase=phase,
            camera=name,
            width=width,
            height=height,
            encoding="rgb8",
            seed=index,
        ),
        CameraInfoStream(
            topic=f"{base}/camera_info",
            type_name="sensor_msgs/msg/CameraInfo",
            rate_hz=rate_hz,
            qos=QOS_SENSOR,
            frame_id=frame_id,
            group=group,
            phase=phase,
            camera=name,
            width=width,
            height=height,
            fx=round(fx, 3),
            fy=round(fy, 3),
            cx=round(cx, 3),
            cy=round(cy, 3),
            d=d,
        ),
    ]


def _build(
    name: str,
    description: str,
    width: int,
    height: int,
    camera_hz: float,
    control_hz: float,
    hfov_deg: float,
) -> Profile:
    streams: list[StreamSpec] = []
    for i, cam in enumerate(CAMERA_NAMES):
        streams += _camera_streams(cam, i, len(CAMERA_NAMES), width, height, camera_hz, hfov_deg)
    streams.append(
        JointStateStream(
            topic="/joint_states",
            type_name="sensor_msgs/msg/JointState",
            rate_hz=control_hz,
            qos=QOS_RELIABLE,
            group="control",
        )
    )
    # The teleoperation command (a dataset's `action`): the leader arms' joint positions.
    streams.append(
        JointStateStream(
            topic=LEADER_TOPIC,
            type_name="sensor_msgs/msg/JointState",
            rate_hz=control_hz,
            qos=QOS_RELIABLE,
            group="control",
            joint_names=LEADER_JOINT_NAMES,
        )
    )
    for side in GRIPPER_SIDES:
        streams.append(
            WrenchStream(
                topic=f"/gripper/{side}/wrench",
                type_name="geometry_msgs/msg/WrenchStamped",
                rate_hz=control_hz,
                qos=QOS_SENSOR,
                frame_id=f"{side}_gripper_ft_sensor",
                group="control",
                side=side,
            )
        )
    return Profile(name=name, description=description, streams=tuple(streams))


PROFILES: dict[str, Profile] = {
    "humanoid": _build(
        "humanoid",
        "3x 1280x720 rgb8 cameras at 30 Hz, 28-joint states, 14-joint leader arms and 2 "
        "gripper wrenches at 500 Hz",
        width=1280,
        height=720,
        camera_hz=30.0,
        control_hz=500.0,
        hfov_deg=87.0,
    ),
    "light": _build(
        "light",
        "3x 320x240 rgb8 cameras at 15 Hz, 28-joint states, 14-joint leader arms and 2 "
        "gripper wrenches at 100 Hz",
        width=320,
        height=240,
        camera_hz=15.0,
        control_hz=100.0,
        hfov_deg=69.0,
    ),
}


def profile_names() -> list[str]:
    return sorted(PROFILES)


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown sim profile {name!r}; valid profiles: {', '.join(profile_names())}"
        ) from None
