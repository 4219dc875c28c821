"""`xsq tasks`: the episodes of a session, and the session facts the other tools share.

Episodes come from ``session.json`` (rewritten at every tablet event, so it survives a
crash). Without a readable ``session.json`` they come from the ``xsquare.tasks`` MCAP
Metadata record of the session's last file, found through the file's summary (metadata
index): one seek, no message scan.

All times are integer nanoseconds since the Unix epoch (the bag's ``log_time`` clock).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcap.reader import make_reader
from mcap.records import Metadata
from mcap.stream_reader import StreamReader
from pydantic import ValidationError

from xsquare_logger.session.manifest import (
    MANIFEST_NAME,
    ManifestError,
    SessionManifest,
    TaskEntry,
    read_manifest,
)
from xsquare_logger.session.metadata import METADATA_NAME, read_metadata_yaml
from xsquare_logger.tools import ToolError

__all__ = [
    "TASKS_RECORD",
    "SessionFile",
    "SessionView",
    "TasksError",
    "episode_range",
    "find_episode",
    "format_tasks",
    "list_tasks",
    "load_session",
    "read_tasks_record",
]

#: Name of the MCAP Metadata record holding the episode list (written by SessionWriter).
TASKS_RECORD = "xsquare.tasks"
_NS = 1_000_000_000


class TasksError(ToolError):
    """The session, or the episode asked for, cannot be found or read."""


@dataclass(frozen=True)
class SessionFile:
    """One MCAP file of a session, as metadata.yaml lists it.

    ``start_ns``/``end_ns`` are its first and last message ``log_time`` (ns).
    """

    path: Path
    start_ns: int
    end_ns: int
    message_count: int

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        """True if the file may hold a message with ``start_ns <= log_time <= end_ns``."""
        return self.message_count > 0 and self.start_ns <= end_ns and self.end_ns >= start_ns


@dataclass
class SessionView:
    """What the tools need to know about a finished session directory.

    Attributes:
        directory: The session directory.
        metadata: The ``rosbag2_bagfile_information`` mapping of metadata.yaml.
        manifest: session.json, or None when missing or invalid.
        files: The MCAP files in recording order.
        start_ns: First message ``log_time`` of the session (ns).
        end_ns: Last message ``log_time`` of the session (ns).
        tasks: The episodes, in the order they were started.
        tasks_source: ``"session.json"``, ``"mcap:<file>"`` or ``"none"``.
    """

    directory: Path
    metadata: dict[str, Any]
    manifest: SessionManifest | None
    files: list[SessionFile]
    start_ns: int
    end_ns: int
    tasks: list[TaskEntry]
    tasks_source: str
    marks: list[dict[str, object]]
    visit: dict[str, object] | None

    @property
    def session_id(self) -> str:
        if self.manifest is not None:
            return self.manifest.session_id
        custom = self.metadata.get("custom_data") or {}
        return str(custom.get("xsquare.session_id") or self.directory.name)


def _session_dir(path: Path) -> Path:
    if path.is_file() and path.name in (METADATA_NAME, MANIFEST_NAME):
        return path.parent
    if not path.is_dir():
        raise TasksError(f"{path}: no such session directory")
    return path


def _file_number(path: Path) -> int:
    match = re.search(r"_(\d+)\.mcap$", path.name)
    return int(match.group(1)) if match else -1


def load_session(path: Path) -> SessionView:
    """Read metadata.yaml and session.json (falling back to the MCAP tasks record).

    Raises:
        TasksError: not a session directory, or metadata.yaml missing (an unfinished
            session: ``xsq recover`` rebuilds it) or unreadable.
    """
    directory = _session_dir(path)
    try:
        meta = read_metadata_yaml(directory)
    except FileNotFoundError:
        active = sorted(p.name for p in directory.glob("*.active"))
        hint = f"; unfinished files {active}: run `xsq recover {directory}`" if active else ""
        raise TasksError(
            f"{directory}: no {METADATA_NAME} (not a finished session?){hint}"
        ) from None
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise TasksError(f"{directory / METADATA_NAME}: unreadable: {exc}") from None

    files: list[SessionFile] = []
    for entry in meta.get("files") or []:
        start = int(entry["starting_time"]["nanoseconds_since_epoch"])
        duration = int(entry["duration"]["nanoseconds"])
        files.append(
            SessionFile(directory / entry["path"], start, start + duration,
                        int(entry.get("message_count", 0)))
        )
    start_ns = int(meta["starting_time"]["nanoseconds_since_epoch"])
    end_ns = start_ns + int(meta["duration"]["nanoseconds"])

    try:
        manifest: SessionManifest | None = read_manifest(directory)
    except ManifestError:
        manifest = None
    if manifest is not None:
        tasks, source = list(manifest.tasks), MANIFEST_NAME
        marks, visit = list(manifest.marks), manifest.visit
    else:
        tasks, marks, visit, source = [], [], None, "none"
        last = _last_mcap(directory, files)
        if last is not None:
            record = read_tasks_record(last)
            if record is not None:
                tasks, marks, visit = record
                source = f"mcap:{last.name}"
    return SessionView(directory, meta, manifest, files, start_ns, end_ns, tasks, source,
                       marks, visit)


def _last_mcap(directory: Path, files: list[SessionFile]) -> Path | None:
    existing = [f.path for f in files if f.path.is_file()]
    if existing:
        return existing[-1]
    found = sorted(directory.glob("*.mcap"), key=_file_number)
    return found[-1] if found else None


def read_tasks_record(
    mcap_path: Path,
) -> tuple[list[TaskEntry], list[dict[str, object]], dict[str, object] | None] | None:
    """Episodes, marks and visit from the ``xsquare.tasks`` record of one MCAP file.

    Only the footer, the summary and the record itself are read (via the metadata index).
    Returns None when the file has no such record (no task had started when it closed).

    Raises:
        TasksError: the file has no summary or the record is malformed.
    """
    try:
        with open(mcap_path, "rb") as f:
            summary = make_reader(f).get_summary()
            if summary is None:
                raise TasksError(f"{mcap_path}: no summary section (run `xsq recover`)")
            indexes = [m for m in summary.metadata_indexes if m.name == TASKS_RECORD]
            if not indexes:
                return None
            f.seek(indexes[-1].offset)
            record = next(StreamReader(f, skip_magic=True).records)
    except OSError as exc:
        raise TasksError(f"{mcap_path}: cannot read: {exc.strerror}") from None
    if not isinstance(record, Metadata):
        raise TasksError(f"{mcap_path}: metadata index of {TASKS_RECORD!r} points elsewhere")
    try:
        tasks = [TaskEntry.model_validate(t) for t in json.loads(record.metadata["tasks"])]
        marks = list(json.loads(record.metadata.get("marks", "[]")))
        visit = json.loads(record.metadata.get("visit", "null")) or None
    except (KeyError, ValueError, ValidationError) as exc:
        raise TasksError(f"{mcap_path}: malformed {TASKS_RECORD!r} record: {exc}") from None
    return tasks, marks, visit


def find_episode(view: SessionView, episode_index: int) -> TaskEntry:
    """The episode with ``episode_index``; the error lists the valid indexes."""
    matches = [t for t in view.tasks if t.episode_index == episode_index]
    if len(matches) == 1:
        return matches[0]
    valid = sorted({t.episode_index for t in view.tasks})
    if not matches:
        listing = ", ".join(map(str, valid)) if valid else "none: the session has no tasks"
        raise TasksError(
            f"{view.directory}: no episode {episode_index} (valid episode indexes: {listing})"
        )
    raise TasksError(
        f"{view.directory}: episode index {episode_index} occurs {len(matches)} times in "
        f"{view.tasks_source}; cannot tell which one is meant"
    )


def episode_range(view: SessionView, task: TaskEntry) -> tuple[int, int]:
    """``(start_ns, end_ns)`` of an episode; an open episode ends at the session's end."""
    end = task.end_ns if task.end_ns is not None else max(view.end_ns, task.start_ns)
    return task.start_ns, end


def list_tasks(session: Path | SessionView) -> list[dict[str, Any]]:
    """The episodes of ``session`` as plain dicts (what ``xsq tasks --json`` prints).

    Keys: ``episode_index``, ``task``, ``start_ns``, ``end_ns`` (None while open),
    ``duration_s`` (an open episode counts to the session's end), ``outcome``, ``open``,
    ``offset_s`` (start relative to the session's first message, s), ``operator``,
    ``instruction``, ``note``.
    """
    view = session if isinstance(session, SessionView) else load_session(session)
    rows = []
    for t in view.tasks:
        start, end = episode_range(view, t)
        rows.append(
            {
                "episode_index": t.episode_index,
                "task": t.task,
                "start_ns": t.start_ns,
                "end_ns": t.end_ns,
                "duration_s": round((end - start) / _NS, 3),
                "outcome": t.outcome,
                "open": t.end_ns is None,
                "offset_s": round((t.start_ns - view.start_ns) / _NS, 3),
                "operator": t.operator,
                "instruction": t.instruction,
                "note": t.note,
            }
        )
    return rows


def _stamp(ns: int) -> str:
    """Seconds since the epoch with 9 decimals: what Foxglove's time display accepts."""
    return f"{ns // _NS}.{ns % _NS:09d}"


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / _NS, UTC).strftime("%H:%M:%S.%f")[:-3]


def format_tasks(rows: list[dict[str, Any]], session_id: str = "") -> str:
    """A table of :func:`list_tasks` rows for humans.

    ``start`` is seconds since the epoch (paste it into Foxglove's playback time display
    to jump there); ``+s`` the offset from the session's first message.
    """
    head = f"session {session_id}: " if session_id else ""
    if not rows:
        return f"{head}no tasks"
    lines = [f"{head}{len(rows)} task(s)"]
    header = ("#", "task", "start (epoch s)", "UTC", "+s", "end (epoch s)", "duration", "outcome")
    table = [header]
    for r in rows:
        end = _stamp(r["end_ns"]) if r["end_ns"] is not None else "open"
        table.append(
            (
                str(r["episode_index"]),
                r["task"],
                _stamp(r["start_ns"]),
                _utc(r["start_ns"]),
                f"{r['offset_s']:.1f}",
                end,
                f"{r['duration_s']:.1f} s",
                r["outcome"] or ("(open)" if r["open"] else "-"),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
