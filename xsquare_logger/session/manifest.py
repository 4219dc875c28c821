"""session.json: the session's own manifest, read by the uploader, `xsq info` and tools.

rosbag2's metadata.yaml describes the bag; session.json adds what a data
pipeline needs: who/where/which config, every loss per topic, and each file's
size and sha256 so a remote copy can be verified before local data is freed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from xsquare_logger.errors import XsqError
from xsquare_logger.session.calibration import CalibrationFile
from xsquare_logger.session.counters import LossCounters, TopicStats
from xsquare_logger.session.fsutil import atomic_write
from xsquare_logger.session.health import EpisodeQuality

__all__ = [
    "MANIFEST_NAME",
    "FileEntry",
    "ManifestError",
    "SessionManifest",
    "TaskEntry",
    "TopicEntry",
    "read_manifest",
    "write_manifest",
]

MANIFEST_NAME = "session.json"
FORMAT = "xsquare_session/1"


class ManifestError(XsqError):
    """session.json missing or invalid."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class FileEntry(_Model):
    path: str = Field(description="File name relative to the session directory.")
    size: int
    sha256: str
    message_count: int
    start_ns: int = 0
    end_ns: int = 0


class TopicEntry(_Model):
    type: str
    received: int = 0
    written: int = 0
    bytes_written: int = 0
    lost_transport: int = 0
    dropped_queue: int = 0
    dropped_disk: int = 0
    dropped_encode: int = 0
    lost: int = 0  # always the sum of the four loss kinds (recomputed on load)
    publishers: int = 0
    compressed_to: str | None = None  # raw camera topic recorded compressed, on this topic

    @model_validator(mode="after")
    def _derive_lost(self) -> TopicEntry:
        # "lost" is derived, never trusted from the file: one definition everywhere.
        self.lost = self.counters().lost
        return self

    def counters(self) -> LossCounters:
        return LossCounters.from_mapping(self.__dict__)

    def stats(self, name: str) -> TopicStats:
        """The live counters object of this entry (recovery continues from it)."""
        counts = self.counters().to_dict()
        del counts["lost"]
        return TopicStats(topic=name, type=self.type, bytes_written=self.bytes_written,
                          publishers=self.publishers, **counts)

    @classmethod
    def from_stats(cls, stats: TopicStats, compressed_to: str | None = None) -> TopicEntry:
        return cls(type=stats.type, bytes_written=stats.bytes_written,
                   publishers=stats.publishers, compressed_to=compressed_to,
                   **stats.to_dict())


class TaskEntry(_Model):
    episode_index: int
    task: str
    start_ns: int
    end_ns: int | None = None
    outcome: str | None = None
    operator: str = ""
    instruction: str = ""
    note: str = ""
    event_ids: list[str] = Field(default_factory=list)
    # Messages lost between this episode's task.start and task.end, per recorded topic;
    # only topics that lost any (so {} = nothing lost, or the episode is still open).
    lost: dict[str, int] = Field(default_factory=dict)
    # start_ns/end_ns are the operator's taps; the window adds the configured pre-roll
    # and post-roll (visit.pre_roll_s / post_roll_s): what an export should cut.
    window_start_ns: int | None = None
    window_end_ns: int | None = None
    # The recorder's verdict at task.end; None: no verdict was computed.
    quality: EpisodeQuality | None = None
    # task.discard (re-record): kept in the bag, never exported.
    discarded: bool = False
    # Privacy-paused ranges [start_ns, end_ns] inside the window: no camera frames there.
    privacy_paused: list[tuple[int, int]] = Field(default_factory=list)
    # Each topic's lost counter at task.start (in memory only: lost is derived from it).
    _lost_at_start: dict[str, int] = PrivateAttr(default_factory=dict)


def _pending_upload() -> dict[str, object]:
    return {"state": "pending"}


class SessionManifest(_Model):
    format: str = FORMAT
    session_id: str
    robot_id: str
    software_version: str
    config_digest: str
    ros_distro: str = "kilted"
    state: Literal["recording", "closed", "recovered"] = "recording"
    close_reason: str | None = None
    started_ns: int = 0
    ended_ns: int | None = None
    visit: dict[str, object] | None = None
    tasks: list[TaskEntry] = Field(default_factory=list)
    marks: list[dict[str, object]] = Field(default_factory=list)
    topics: dict[str, TopicEntry] = Field(default_factory=dict)
    # The four loss kinds and "lost" of LossCounters.total(topics), and "total" (= "lost").
    drops: dict[str, int] = Field(default_factory=dict)
    files: list[FileEntry] = Field(default_factory=list)
    # The calibration files stored in every MCAP file as attachments (session/calibration.py).
    calibration: list[CalibrationFile] = Field(default_factory=list)
    upload: dict[str, object] = Field(default_factory=_pending_upload)


def write_manifest(directory: Path, manifest: SessionManifest) -> Path:
    """Atomically (write + fsync + rename) store ``session.json`` in ``directory``."""
    data = json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n"
    return atomic_write(directory / MANIFEST_NAME, data)


def read_manifest(directory: Path) -> SessionManifest:
    path = directory / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no session manifest (not an xsquare session?)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable session manifest: {exc}") from None
    try:
        return SessionManifest.model_validate(raw)
    except ValidationError as exc:
        raise ManifestError(f"{path}: invalid session manifest: {exc}") from None
