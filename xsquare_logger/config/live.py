"""``live``: settings of the optional Foxglove WebSocket live view."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LiveConfig"]


class LiveConfig(BaseModel):
    """``live``: the optional Foxglove WebSocket server (off by default)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(False, description="Serve a live Foxglove WebSocket while recording.")
    host: str = Field(
        "127.0.0.1", description="Bind address (loopback unless you mean to expose it)."
    )
    port: int = Field(8765, ge=0, le=65535, description="WebSocket port (0 = any free port).")
    camera_rate_hz: float = Field(5.0, gt=0, description="Max frames/s per camera topic.")
    max_rate_hz: float = Field(50.0, gt=0, description="Max messages/s per other topic.")
