"""The contract between the operator link and the recording side.

The link (protocol, state machine, ZeroMQ) only calls this interface; the robot
stack implements it over the recorder node, tests may implement it over a plain
in-process recorder. Keeping it small keeps both sides testable alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from xsquare_logger.errors import XsqError
from xsquare_logger.session.events import TaskEventData, VisitInfo

__all__ = ["ControllerError", "RecordingStatus", "SessionController"]


class ControllerError(XsqError):
    """The recording side could not do what was asked (e.g. disk full at start)."""


@dataclass
class RecordingStatus:
    recording: bool
    session_id: str = ""
    elapsed_sec: float = 0.0
    bytes_written: int = 0
    messages_written: int = 0
    messages_lost: int = 0  # LossCounters.total(...).lost of the recorded topics
    disk_free_bytes: int = 0
    upload_backlog: int = 0
    # topic -> LossCounters.to_dict() (received, written, the four loss kinds, lost)
    topics: dict[str, dict[str, int]] = field(default_factory=dict)
    last_error: str = ""


class SessionController(Protocol):
    def start_session(self, visit: VisitInfo, stamp_ns: int) -> str:
        """Start recording a new session; return its session id. Raises ControllerError."""
        ...

    def record_event(self, event: TaskEventData) -> None:
        """Publish the event (TaskEvent topic, recorded in the bag) and update session.json."""
        ...

    def stop_session(self, stamp_ns: int) -> str:
        """Finalize the current session; return its directory path."""
        ...

    def status(self) -> RecordingStatus:
        ...
