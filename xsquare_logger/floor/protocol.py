"""The floor wire format: what a robot sends to the floor service, and what it reads back.

One definition for both sides. The robot's reporter (``floor/reporter.py``) builds
these documents; the service (``floor/api.py``) validates them with the same models
and the catalog stores them. ``xsq floor sync`` builds the same :class:`SessionReport`
from a ``session.json`` found in the bucket, so a session reported by the robot and
one found by sync are catalogued identically. docs/floor-api.md documents them.

This module imports only pydantic and ``session.manifest`` (the session.json model):
a robot install without the floor extra (FastAPI, SQLAlchemy) can import it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from xsquare_logger.session.health import EpisodeQuality
from xsquare_logger.session.manifest import SessionManifest

__all__ = [
    "API_PREFIX",
    "EpisodePage",
    "EpisodeRow",
    "ErrorBody",
    "FileRow",
    "FloorSummary",
    "Health",
    "Heartbeat",
    "RobotState",
    "RobotTile",
    "SessionDetail",
    "SessionPage",
    "SessionReport",
    "SessionRow",
    "StreamCounts",
    "UploadState",
    "session_bytes",
    "session_id_prefix",
]

#: Every resource lives below this path (the version is in the path, not a header).
API_PREFIX = "/api/v1"

RobotState = Literal["idle", "recording", "error"]
UploadState = Literal["pending", "uploading", "verified", "failed", "deleted"]


class _Wire(BaseModel):
    # Unknown fields are refused: a client typo must be a 422, not silently dropped data.
    model_config = ConfigDict(extra="forbid")


class StreamCounts(_Wire):
    received: int = Field(0, ge=0, description="Messages received on this topic this session.")
    lost: int = Field(0, ge=0, description="Messages lost on this topic this session (all kinds).")


class Heartbeat(_Wire):
    """The robot's state, sent every ``floor.heartbeat_interval`` seconds."""

    robot_id: str = Field(min_length=1, max_length=128)
    sent_ns: int = Field(ge=0, description="Robot clock (ns since the epoch) when sent.")
    state: RobotState
    session_id: str = Field("", description="Session being recorded; empty when idle.")
    task: str = Field("", description="Task of the open episode; empty between episodes.")
    episode_index: int = Field(-1, ge=-1, description="Open episode; -1 when none is open.")
    elapsed_sec: float = Field(0.0, ge=0, description="Seconds since the session started.")
    episode_elapsed_sec: float = Field(0.0, ge=0, description="Seconds since task.start.")
    streams: dict[str, StreamCounts] = Field(default_factory=dict)
    messages_lost: int = Field(0, ge=0, description="Sum of every stream's lost count.")
    disk_free_bytes: int = Field(0, ge=0)
    disk_reserve_bytes: int = Field(0, ge=0, description="The recorder's configured reserve.")
    upload_backlog_sessions: int = Field(0, ge=0)
    upload_backlog_bytes: int = Field(0, ge=0)
    last_upload_error: str = Field("", max_length=2000)
    last_error: str = Field("", max_length=2000, description="Recorder's last error, if any.")
    software_version: str = ""
    config_digest: str = ""


def session_bytes(manifest: SessionManifest) -> int:
    """A session's size as the floor catalogues it: its data files, as session.json lists them.

    The one definition for the robot's report and for sync, which sees only the bucket's
    session.json: a session gets the same number whichever way it reached the catalog.
    """
    return sum(f.size for f in manifest.files)


def session_id_prefix(robot_id: str) -> str:
    """What every session id of ``robot_id`` starts with: ids are
    ``<robot_id>_<UTC stamp>_<hex>`` (recording/recorder.py ``make_session_id``, the one
    generator). The floor keeps each robot to its own namespace, so no robot can take
    (squat) an id another robot will report."""
    return f"{robot_id}_"


class SessionReport(_Wire):
    """A session and its episodes: sent when it closes, and again once uploaded.

    ``manifest`` is the session's ``session.json`` as written by the robot (its
    tasks are the episodes). ``upload_state`` and ``remote`` say where it is;
    sending the same session again updates it (idempotent by ``session_id``).
    """

    manifest: SessionManifest
    upload_state: UploadState = "pending"
    remote: str = Field(
        "", description="Location at the destination, e.g. s3://bucket/prefix/robot/day/id."
    )
    bytes: int = Field(
        0, ge=0, description="Sum of manifest.files[].size (session_bytes); 0: the floor sums them."
    )


# -- what readers (dashboard, engineers, training jobs) get back ---------------------------


class ErrorBody(BaseModel):
    """Every error answer (4xx, 5xx) of the service."""

    detail: str = Field(description="One line naming the problem; validation errors start "
                                    "with the location of the first bad field.")


class Health(BaseModel):
    """``GET /healthz``."""

    status: Literal["ok", "unavailable"]
    detail: str | None = Field(None, description="Why the database does not answer (503).")


class RobotTile(BaseModel):
    """One robot as the dashboard shows it: its last heartbeat plus what the floor derives."""

    robot_id: str
    revoked: bool = False
    last_heartbeat: Heartbeat | None = None
    last_seen_ns: int | None = Field(None, description="Service clock at the last heartbeat.")
    seconds_since_heartbeat: float | None = None
    # Flags the floor lead must see from across the room (each true = marked on the tile).
    stale: bool = Field(False, description="No heartbeat for longer than the stale limit.")
    losing: bool = Field(False, description="The current session has lost messages.")
    disk_low: bool = Field(False, description="Free disk under the recorder's reserve (x1.5).")
    upload_failed: bool = Field(False, description="The last heartbeat carries an upload error.")


class EpisodeRow(BaseModel):
    """One catalogued episode, with what a training job needs to fetch it."""

    robot_id: str
    session_id: str
    episode_index: int
    task: str
    instruction: str = ""
    outcome: str | None = None
    operator: str = ""
    site: str = ""
    visit_id: str = ""
    start_ns: int
    end_ns: int | None = None
    duration_sec: float | None = None
    lost: dict[str, int] = Field(
        default_factory=dict, description="Messages lost inside the episode, per stream."
    )
    remote: str = Field("", description="Session location at the destination ('' = not uploaded).")
    upload_state: UploadState = "pending"
    discarded: bool = Field(False, description="Discarded on the tablet (re-recorded): kept in "
                                               "the bag, never exported.")
    quality: EpisodeQuality | None = Field(
        None, description="The recorder's verdict at task.end; null = none computed.")
    window_start_ns: int | None = Field(
        None, description="start_ns minus the pre-roll: where an export cuts; null = none.")
    window_end_ns: int | None = Field(
        None, description="end_ns plus the post-roll; null = none.")


class EpisodePage(BaseModel):
    items: list[EpisodeRow]
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next page; null on the last page."
    )


class FloorSummary(BaseModel):
    """Floor totals for one day (the service's local day unless ?day= is given)."""

    day: str = Field(description="YYYY-MM-DD")
    robots: int
    robots_recording: int
    robots_stale: int
    hours_recorded: float
    episodes_by_outcome: dict[str, int]
    episodes_by_task: dict[str, int]
    episodes_by_operator: dict[str, int]
    episodes_discarded: int = Field(description="Episodes discarded that day (not in the "
                                                "episodes_by_* counts).")
    upload_backlog_bytes: int


class SessionRow(BaseModel):
    """One catalogued session (``GET /sessions``)."""

    session_id: str
    robot_id: str
    visit_id: str = ""
    operator: str = ""
    site: str = ""
    state: str = Field("closed", description="session.json state: recording|closed|recovered.")
    start_ns: int
    end_ns: int | None = None
    bytes: int = 0
    remote: str = ""
    upload_state: UploadState = "pending"
    manifest_sha256: str = Field(description="sha256 of the catalogued session.json document.")
    episodes: int = Field(0, description="Number of episodes (tasks) in the session.")
    updated_ns: int = Field(description="Service clock when the catalog last changed it.")


class SessionPage(BaseModel):
    items: list[SessionRow]
    next_cursor: str | None = None


class FileRow(BaseModel):
    key: str = Field(description="Relative to the session's remote location (or directory).")
    size: int
    sha256: str


class SessionDetail(SessionRow):
    """``GET /sessions/{id}``: the row, its files and episodes, and its session.json."""

    files: list[FileRow] = Field(default_factory=list)
    episode_rows: list[EpisodeRow] = Field(default_factory=list)
    manifest: SessionManifest
