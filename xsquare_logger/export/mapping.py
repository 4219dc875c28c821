"""The export mapping: which recorded topic becomes which LeRobot feature.

A YAML file (``config/export/humanoid.yaml`` is the default, the sim humanoid's) validated
by :class:`ExportMapping`. Unknown keys are errors (a typo must not silently drop a
feature). Joint features are taken by joint *name* in the order of ``joints`` (or the
feature's own ``joints``), whatever order the recorded JointState lists them in.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from xsquare_logger.errors import one_line
from xsquare_logger.export import ExportError

__all__ = [
    "DEFAULT_MAPPING",
    "WRENCH_NAMES",
    "CameraFeature",
    "ExportMapping",
    "JointFeature",
    "default_mapping_path",
    "load_mapping",
]

#: Names of the six values of a ``geometry_msgs/msg/WrenchStamped`` feature, in order.
WRENCH_NAMES = ("force.x", "force.y", "force.z", "torque.x", "torque.y", "torque.z")
DEFAULT_MAPPING = "humanoid.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JointFeature(_Strict):
    """One field of a ``sensor_msgs/msg/JointState`` topic, for a list of joints."""

    topic: str
    field: Literal["position", "velocity", "effort"] = "position"
    joints: list[str] | None = Field(
        None, description="Joint order of this feature; default: the mapping's `joints`."
    )


class CameraFeature(_Strict):
    """A camera: its raw image topic; ``<topic>/compressed`` or ``<topic>/h264`` is found."""

    topic: str


class ExportMapping(_Strict):
    """What `xsq export lerobot` writes, and how it aligns it in time (docs/export.md)."""

    robot_type: str
    fps: int = Field(30, gt=0, description="Frame rate of the dataset = of the grid camera.")
    joints: list[str] = Field(min_length=1)
    state: JointFeature
    action: JointFeature | None = None
    effort: JointFeature | None = None
    wrenches: dict[str, str] = Field(
        default_factory=dict, description="name -> WrenchStamped topic: observation.wrench.<name>"
    )
    cameras: dict[str, CameraFeature] = Field(min_length=1)
    grid_camera: str | None = Field(None, description="Camera whose frames are the grid; "
                                    "default: the first camera.")
    interpolation: Literal["nearest", "linear"] = "nearest"
    tolerance_ms: float = Field(20.0, gt=0, description="Max distance from a frame's time to "
                                "the samples used for it (joints, wrenches, other cameras).")
    missing: Literal["drop", "split", "hold"] = "drop"
    min_frames: int = Field(2, ge=2, description="Shorter episodes (or split parts) are skipped.")
    privacy: Literal["split", "drop"] = Field(
        "split", description="An episode with privacy-paused ranges: split there (the runs "
        "between pauses become parts), or drop it. Camera frames of a paused range are never "
        "exported either way.")
    video_codec: Literal["auto", "av1", "h264"] = Field(
        "auto", description="Codec for cameras that must be encoded (raw, JPEG); auto: AV1 if "
        "the installed PyAV can encode it, else H.264. H.264 cameras are remuxed.")

    @model_validator(mode="after")
    def _check(self) -> ExportMapping:
        if len(set(self.joints)) != len(self.joints):
            raise ValueError("joints: names must be unique")
        if self.grid_camera is not None and self.grid_camera not in self.cameras:
            raise ValueError(f"grid_camera {self.grid_camera!r} is not one of the cameras "
                             f"({', '.join(self.cameras)})")
        return self

    @property
    def grid(self) -> str:
        return self.grid_camera or next(iter(self.cameras))

    def joint_features(self) -> dict[str, JointFeature]:
        """Feature key -> joint feature, in dataset column order."""
        out = {"observation.state": self.state}
        if self.effort is not None:
            out["observation.effort"] = self.effort
        if self.action is not None:
            out["action"] = self.action
        return out

    def joint_names(self, feature: JointFeature) -> list[str]:
        return list(feature.joints or self.joints)

    def wrench_features(self) -> dict[str, str]:
        """Feature key -> WrenchStamped topic."""
        return {f"observation.wrench.{name}": topic for name, topic in self.wrenches.items()}

    def camera_features(self) -> dict[str, str]:
        """Feature key -> raw camera topic (grid camera first)."""
        order = [self.grid, *(c for c in self.cameras if c != self.grid)]
        return {f"observation.images.{c}": self.cameras[c].topic for c in order}


def default_mapping_path() -> Path:
    """config/export/humanoid.yaml of the source tree, else of the installed share dir."""
    here = Path(__file__).resolve().parents[2] / "config" / "export" / DEFAULT_MAPPING
    if here.is_file():
        return here
    return Path(sys.prefix) / "share" / "xsquare_logger" / "config" / "export" / DEFAULT_MAPPING


def load_mapping(path: Path | None = None) -> ExportMapping:
    """Read and validate a mapping file (None: the default humanoid mapping).

    Raises:
        ExportError: unreadable, not YAML, or invalid (one line naming the fields).
    """
    p = path or default_mapping_path()
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExportError(f"mapping file {p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ExportError(f"mapping file {p} is not valid YAML: {one_line(exc)}") from None
    try:
        return ExportMapping.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ExportError(f"mapping file {p}: {problems}") from None
