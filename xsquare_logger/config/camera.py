"""Per-camera compression settings (the ``CameraCompression`` model).

A robot config maps each raw image topic to one of these. Unknown keys are errors, like the
rest of the configuration: a typo must not silently record 2.7 MB frames uncompressed.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["X264_PRESETS", "CameraCompression", "CompressionMode"]

CompressionMode = Literal["raw", "jpeg", "h264"]
X264Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow",
]  # fmt: skip
X264_PRESETS: tuple[str, ...] = get_args(X264Preset)


class CameraCompression(BaseModel):
    """How one camera's ``sensor_msgs/msg/Image`` topic is stored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: CompressionMode = Field(
        "raw",
        description="raw: record the Image as received; jpeg: sensor_msgs/CompressedImage; "
        "h264: foxglove_msgs/CompressedVideo (needs the optional 'av' package).",
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality (OpenCV scale).")
    keyframe_interval_s: float = Field(
        1.0,
        gt=0,
        le=10,
        description="H.264: longest time between keyframes in seconds (a seek in Foxglove "
        "decodes from the previous keyframe, so this bounds scrubbing latency).",
    )
    fps: float = Field(
        30.0,
        gt=0,
        le=240,
        description="H.264: nominal camera rate in Hz; sets the stream's time base. "
        "Keyframes are placed by header stamp, not frame count, so a slower camera or "
        "skipped frames still get one per keyframe_interval_s.",
    )
    crf: int = Field(
        23, ge=0, le=51, description="H.264 constant rate factor: lower is better quality."
    )
    bitrate_kbps: int | None = Field(
        None,
        gt=0,
        description="H.264: average bitrate cap in kbit/s (VBV, 1 s buffer); None = CRF only.",
    )
    preset: X264Preset = Field(
        "ultrafast", description="x264 speed preset; slower presets cost CPU per frame."
    )
    out_topic: str | None = Field(
        None,
        description="Output topic; default '<topic>/compressed' (jpeg, the image_transport "
        "name) or '<topic>/h264'.",
    )

    @model_validator(mode="after")
    def _check_out_topic(self) -> CameraCompression:
        if self.out_topic is not None and not self.out_topic.startswith("/"):
            raise ValueError(f"out_topic must be an absolute topic name, got {self.out_topic!r}")
        return self

    def output_topic(self, topic: str) -> str:
        """The topic compressed frames of ``topic`` are recorded on (``topic`` if raw)."""
        if self.out_topic is not None:
            return self.out_topic
        if self.mode == "jpeg":
            return f"{topic.rstrip('/')}/compressed"
        if self.mode == "h264":
            return f"{topic.rstrip('/')}/h264"
        return topic
