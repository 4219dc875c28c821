"""Upload configuration (``LoggerConfig.upload``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["UploadConfig"]


class UploadConfig(BaseModel):
    """Where closed sessions go and when they may leave the robot."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Run the uploader in `xsq run`.")
    destination: str = Field(
        "file://data/depot", description="file://PATH or s3://BUCKET/PREFIX."
    )
