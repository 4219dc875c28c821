"""The one configuration model of xsquare_logger.

Loaded from YAML (``config/robot.yaml`` is the default humanoid profile), or
embedded defaults when no file is given, then overridden by ROS parameters or
CLI flags given as dotted keys (``recording.max_bag_size``). Every error names
the offending field, so a bad robot config fails at start-up, not mid-visit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from xsquare_logger.config.camera import CameraCompression
from xsquare_logger.config.floor import FloorConfig
from xsquare_logger.config.live import LiveConfig
from xsquare_logger.config.upload import UploadConfig
from xsquare_logger.errors import XsqError, one_line

__all__ = [
    "ConfigError",
    "ExpectedStream",
    "HealthConfig",
    "LoggerConfig",
    "RecordingConfig",
    "TabletConfig",
    "VisitConfig",
    "apply_overrides",
    "config_digest",
    "load_config",
]

Compression = Literal["zstd", "lz4", "none"]


class ConfigError(XsqError):
    """Invalid configuration; the message names the file and field."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a robot config must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RecordingConfig(_Strict):
    """What to record and how to write it."""

    topics: list[str] = Field(
        default_factory=list, description="Topics to record (absolute names)."
    )
    all_topics: bool = Field(
        True, description="Record every topic discovered (minus exclude_regex)."
    )
    regex: str = Field("", description="Record topics matching this regular expression.")
    exclude_regex: str = Field(
        r"^/(rosout|parameter_events)$", description="Never record topics matching this."
    )
    include_hidden_topics: bool = Field(
        False, description="Also record hidden topics (a name segment starting with _)."
    )
    max_bag_size: int = Field(0, ge=0, description="Split files at this size in bytes; 0 = off.")
    max_bag_duration: float = Field(
        0.0, ge=0, description="Split files after this many seconds; 0 = off."
    )
    compression: Compression = Field(
        "zstd",
        description="MCAP chunk compression: zstd, lz4 (cheaper CPU) or none. Chunks that "
        "would save <25% (raw camera frames, JPEG, H.264) and chunks finished while the "
        "writer is behind are stored uncompressed.",
    )
    zstd_level: int = Field(1, ge=-7, le=22, description="zstd level (1 = fast).")
    chunk_size: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, description="Uncompressed MCAP chunk size in bytes."
    )
    flush_interval: float = Field(
        1.0, gt=0, le=60, description="Seconds between forced chunk flushes (crash window)."
    )
    fsync: bool = Field(
        True,
        description="fdatasync after each flush so a power cut keeps data (on a thread of "
        "its own: writing goes on meanwhile).",
    )
    queue_max_bytes: int = Field(
        512 * 1024 * 1024, ge=1024 * 1024, description="Writer queue bound in bytes."
    )
    discovery_interval: float = Field(1.0, gt=0, description="Seconds between topic scans.")
    qos_depth: int = Field(100, ge=1, description="Subscription history depth.")
    disk_reserve_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="Close the session cleanly when free disk falls below this.",
    )
    status_interval: float = Field(1.0, gt=0, description="Seconds between SessionStatus.")
    cameras: dict[str, CameraCompression] = Field(
        default_factory=dict,
        description="Per raw image topic: compression (mode raw|jpeg|h264, jpeg_quality, "
        "keyframe_interval_s, fps, crf, preset, out_topic). Compressed frames are recorded "
        "on <topic>/compressed (JPEG) or <topic>/h264 instead of the raw topic.",
    )
    compression_workers: int = Field(2, ge=1, le=16, description="Encoder threads.")

    @field_validator("regex", "exclude_regex")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        import re

        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @field_validator("topics")
    @classmethod
    def _absolute_topics(cls, value: list[str]) -> list[str]:
        # rosbag2 accepts relative names and resolves them in the node's
        # namespace; our recorder runs in "/", so normalise here once.
        return [t if t.startswith("/") else "/" + t for t in value]


class TabletConfig(_Strict):
    """The operator tablet link (ZeroMQ, CURVE)."""

    command_endpoint: str = Field(
        "tcp://*:5555", description="ROUTER endpoint the robot binds for tablet commands."
    )
    status_endpoint: str = Field(
        "tcp://*:5556", description="PUB endpoint the robot binds for status updates."
    )
    keys_dir: Path = Field(
        Path("~/.xsquare/keys"),
        description="Robot key pair and authorized tablet keys.",
        validate_default=True,
    )
    insecure: bool = Field(
        False, description="Run without CURVE (explicit opt-in; warns at every start)."
    )
    status_interval: float = Field(1.0, gt=0, description="Seconds between status updates.")
    tasks: list[str] = Field(
        default_factory=lambda: [
            "fold towel",
            "arrange shoes",
            "load dishwasher",
            "wipe table",
            "tidy toys",
        ],
        description="Task names the operator console offers.",
    )

    @field_validator("keys_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(os.path.expandvars(str(value))).expanduser()


#: Visit fields every session.start carries anyway (the protocol requires them).
ALWAYS_REQUIRED = ("visit_id", "operator", "consent")
#: session.start arguments a required field may name; any other name is a metadata key.
VISIT_ARGS = ("site", "notes")
METADATA_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class VisitConfig(_Strict):
    """What every visit must carry, and the episode margins."""

    required_fields: list[str] = Field(
        default_factory=list,
        description="Visit fields session.start must provide (non-empty), else it is "
        "refused with MISSING_FIELDS: site, notes, or a metadata key (e.g. robot_serial, "
        "calibration_version). visit_id, operator and consent are always required.",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description="Visit metadata the robot provides itself (e.g. robot_serial); "
        "a value the tablet sends in session.start metadata wins.",
    )
    pre_roll_s: float = Field(
        1.0, ge=0, le=60,
        description="Episode window starts this long before the task.start tap.",
    )
    post_roll_s: float = Field(
        1.0, ge=0, le=60,
        description="Episode window ends this long after the task.end tap.",
    )

    @field_validator("required_fields")
    @classmethod
    def _known_names(cls, value: list[str]) -> list[str]:
        import re

        for name in value:
            if name not in (*ALWAYS_REQUIRED, *VISIT_ARGS) and not re.match(
                METADATA_KEY_PATTERN, name
            ):
                raise ValueError(
                    f"{name!r} is not site, notes or a metadata key ({METADATA_KEY_PATTERN})"
                )
        return list(dict.fromkeys(value))

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for key in value:
            if not re.match(METADATA_KEY_PATTERN, key):
                raise ValueError(f"metadata key {key!r} must match {METADATA_KEY_PATTERN}")
        return value


#: What a stream carries (docs/tablet-protocol.md §7 ``kind``).
StreamKind = Literal["camera", "joints", "wrench", "other"] | None


def infer_stream_kind(topic: str) -> Literal["camera", "joints", "wrench", "other"]:
    """The kind of an expected stream whose config does not say (by its topic name)."""
    t = topic.lower()
    if "image" in t or "camera" in t or "/cam" in t:
        return "camera"
    if "joint" in t:
        return "joints"
    if "wrench" in t or "force" in t:
        return "wrench"
    return "other"


class ExpectedStream(_Strict):
    """One stream the robot must deliver, with its nominal rate."""

    name: str = Field(min_length=1, max_length=64, description="Shown on the console tile.")
    topic: str = Field(pattern=r"^/", description="Topic as subscribed (absolute).")
    nominal_hz: float = Field(gt=0, le=100_000)
    kind: StreamKind = Field(
        None,
        description="camera | joints | wrench | other (the console makes preview tiles for "
        "cameras; quality checks camera skew). Unset: from the topic name (image/camera, "
        "joint, wrench), else other.",
    )

    @model_validator(mode="after")
    def _infer_kind(self) -> ExpectedStream:
        if self.kind is None:
            object.__setattr__(self, "kind", infer_stream_kind(self.topic))
        return self


def _humanoid_streams() -> list[ExpectedStream]:
    cams = [
        ExpectedStream(name=f"{n.replace('_', ' ')} camera", topic=f"/camera/{n}/image_raw",
                       nominal_hz=30.0)
        for n in ("head", "left_wrist", "right_wrist")
    ]
    control = [ExpectedStream(name="joints", topic="/joint_states", nominal_hz=500.0)]
    wrenches = [
        ExpectedStream(name=f"{side} wrench", topic=f"/gripper/{side}/wrench", nominal_hz=500.0)
        for side in ("left", "right")
    ]
    return cams + control + wrenches


class HealthConfig(_Strict):
    """Live stream health: the expected streams and how they are classified."""

    streams: list[ExpectedStream] = Field(
        default_factory=_humanoid_streams,
        description="Expected streams (humanoid: three cameras 30 Hz, joints 500 Hz, two "
        "wrenches 500 Hz); each is one tile on the console and one entry of status streams.",
    )
    window_s: float = Field(2.0, gt=0, le=60, description="Sliding window of the rate.")
    degraded_ratio: float = Field(
        0.8, gt=0, le=1, description="Degraded below this fraction of the nominal rate."
    )
    stalled_periods: float = Field(
        10.0, gt=0,
        description="Stalled: no message for this many nominal periods (and stalled_min_s).",
    )
    stalled_min_s: float = Field(
        0.5, ge=0, description="Stalled needs at least this many silent seconds (fast "
        "streams jitter).",
    )
    enabled: bool = Field(
        True, description="Measure stream health and judge episodes (false: every stream is "
        "reported unknown and task.end carries quality null)."
    )
    history_s: float = Field(
        900.0, gt=0, le=7200,
        description="Arrival times kept per expected stream for the episode verdict (an "
        "episode longer than this is judged on its last history_s seconds).",
    )
    fail_ratio: float = Field(
        0.5, gt=0, le=1,
        description="Verdict fail when a stream's episode rate is below this fraction of "
        "nominal (warn below degraded_ratio).",
    )
    gap_warn_periods: float = Field(
        3.0, gt=0, description="Verdict warn for a gap longer than this many nominal "
        "periods (and gap_warn_min_s); a gap as long as a stall (stalled_periods, "
        "stalled_min_s) is fail.",
    )
    gap_warn_min_s: float = Field(0.1, ge=0, description="See gap_warn_periods.")
    loss_fail_fraction: float = Field(
        0.01, ge=0, le=1,
        description="Verdict fail when a stream lost more than this fraction of its "
        "messages in the episode (any loss is warn).",
    )
    camera_skew_frames: float = Field(
        0.25, gt=0, le=0.5,
        description="Verdict warn when a camera's median |header stamp difference| to the "
        "nearest frame of the first camera exceeds this many of its frame periods.",
    )
    joint_skew_s: float = Field(
        0.03, gt=0, description="Verdict warn when a camera's median latency (receive time "
        "minus header stamp) differs from the joints' by more than this (s): a camera "
        "stamping by a clock that is off.",
    )
    skew_fail_s: float = Field(
        0.1, gt=0, description="Verdict fail when that camera-to-joint skew exceeds this (s)."
    )
    previews: bool = Field(
        True, description="Answer preview.get (camera previews are made only while a "
        "console asks: see lease)."
    )
    preview_width: int = Field(320, ge=16, le=1280, description="Preview width in pixels.")
    preview_interval_s: float = Field(
        1.0, ge=0.1, le=60, description="At most one new preview per camera this often."
    )
    preview_lease_s: float = Field(
        5.0, ge=0.5, le=300,
        description="Previews of a camera stop being made this long after its last "
        "preview.get.",
    )

    @field_validator("streams")
    @classmethod
    def _unique(cls, value: list[ExpectedStream]) -> list[ExpectedStream]:
        topics = [s.topic for s in value]
        dup = sorted({t for t in topics if topics.count(t) > 1})
        if dup:
            raise ValueError(f"topic listed twice: {', '.join(dup)}")
        return value


class CalibrationConfig(_Strict):
    """The robot's calibration files, stored in every session (MCAP attachments)."""

    files: list[Path] = Field(
        default_factory=list,
        description="Calibration files (camera intrinsics/extrinsics, URDF, ...) stored at "
        "session start as MCAP attachments named calibration/<file name>, with their sha256 "
        "in session.json calibration. A missing file refuses the session start.",
    )

    @field_validator("files")
    @classmethod
    def _unique_names(cls, value: list[Path]) -> list[Path]:
        paths = [Path(os.path.expandvars(str(v))).expanduser() for v in value]
        names = [p.name for p in paths]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"file name listed twice: {', '.join(dup)}")
        return paths


class LoggerConfig(_Strict):
    """Whole-robot configuration."""

    robot_id: str = Field(
        "humanoid-sim",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="Robot name; first part of every session id.",
    )
    data_root: Path = Field(Path("data"), description="Directory holding session folders.")
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    tablet: TabletConfig = Field(default_factory=TabletConfig)
    upload: UploadConfig = Field(default_factory=UploadConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)
    floor: FloorConfig = Field(default_factory=FloorConfig)
    visit: VisitConfig = Field(default_factory=VisitConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)

    @field_validator("data_root")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return Path(os.path.expandvars(str(value))).expanduser()


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {field}: {err['msg']}")
    return "\n".join(lines)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(config: LoggerConfig, overrides: dict[str, Any], source: str) -> LoggerConfig:
    """Return a new config with dotted-key ``overrides`` applied and re-validated."""
    if not overrides:
        return config
    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        _set_dotted(data, key, value)
    try:
        return LoggerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> LoggerConfig:
    """Load and validate a YAML config; ``None`` gives the embedded defaults."""
    if path is None:
        return LoggerConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file {p}: not UTF-8 text ({exc.reason} "
                          f"at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {one_line(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"config file {p}: top level must be a mapping, got {kind}")
    try:
        return LoggerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(p), exc)) from None


def config_digest(config: LoggerConfig) -> str:
    """sha256 of the canonical JSON form: identifies the exact config a session used."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
