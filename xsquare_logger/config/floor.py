"""Floor reporting configuration (``LoggerConfig.floor``): where `xsq run` reports to.

The robot token is deliberately not part of this model: it comes from the
environment (``XSQ_FLOOR_TOKEN``) or the file named here, so a robot config can be
committed and shared, and the config digest never depends on a secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["TOKEN_ENV", "FloorConfig"]

#: Environment variable holding the robot token (wins over ``floor.token_file``).
TOKEN_ENV = "XSQ_FLOOR_TOKEN"


class _Strict(BaseModel):
    # Same rules as config/model.py (not imported from there: model.py imports this module).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FloorConfig(_Strict):
    """Heartbeats and session reports to the training-center floor service."""

    url: str = Field(
        "",
        description="Floor service base URL (http://host:port); empty = no floor "
        "(nothing is sent, the robot behaves as without one).",
    )
    token_file: Path | None = Field(
        None,
        description="File holding this robot's token (from `xsq floor robots add`); "
        "$XSQ_FLOOR_TOKEN wins when set. The token is never logged.",
    )
    heartbeat_interval: float = Field(
        2.0, gt=0, le=300, description="Seconds between heartbeats."
    )
    timeout: float = Field(2.0, gt=0, le=60, description="Seconds per HTTP request.")
    max_queued_reports: int = Field(
        500,
        ge=1,
        description="Session reports kept while the floor is unreachable; when full the "
        "oldest is dropped with a warning (`xsq floor sync` recovers it from the bucket).",
    )
    outbox_dir: Path | None = Field(
        None,
        description="Spool of session reports not yet accepted (survives restarts); "
        "default <data_root>/.floor-outbox.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"floor url {value!r} must start with http:// or https://")
        return value

    @field_validator("token_file", "outbox_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expandvars(str(value))).expanduser()
