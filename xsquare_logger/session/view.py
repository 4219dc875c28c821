"""The one read model of a session directory: metadata.yaml + session.json + files.

``xsq info``, ``xsq tasks``, ``xsq report``, ``xsq clip`` and the uploader's scan all
open a session through :meth:`SessionView.open`, so they agree on what a session is
and fail the same way: :class:`SessionUnreadable`, one line naming the path and why
(missing, unfinished, truncated, corrupt).

Episodes come from ``session.json`` (rewritten at every tablet event, so it survives a
crash). Without a readable ``session.json`` they come from the ``xsquare.tasks`` MCAP
Metadata record of the session's last file, found through the file's summary (metadata
index): one seek, no message scan.

All times are integer nanoseconds since the Unix epoch (the bag's ``log_time`` clock).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.records import Metadata
from mcap.stream_reader import StreamReader
from pydantic import ValidationError

from xsquare_logger.errors import XsqError, one_line
from xsquare_logger.session.counters import LossCounters, counters_document
from xsquare_logger.session.fsutil import ACTIVE_SUFFIX
from xsquare_logger.session.manifest import (
    MANIFEST_NAME,
    ManifestError,
    SessionManifest,
    TaskEntry,
    read_manifest,
)
from xsquare_logger.session.metadata import METADATA_NAME, read_metadata_yaml

__all__ = [
    "ACTIVE_SUFFIX",
    "TASKS_RECORD",
    "SessionFile",
    "SessionUnreadable",
    "SessionView",
    "read_tasks_record",
]

#: Name of the MCAP Metadata record holding the episode list (written by SessionWriter).
TASKS_RECORD = "xsquare.tasks"


class SessionUnreadable(XsqError):
    """The path is not a readable session: missing, unfinished, truncated or corrupt."""


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
    """What readers need to know about a session directory.

    Attributes:
        directory: The session directory.
        metadata: The ``rosbag2_bagfile_information`` mapping of metadata.yaml
            ({} when opened with ``need_metadata=False`` and it is missing).
        manifest: session.json, or None when missing or invalid (``manifest_error`` says why).
        files: The MCAP files in recording order (from metadata.yaml).
        start_ns: First message ``log_time`` of the session (ns).
        end_ns: Last message ``log_time`` of the session (ns).
        tasks: The episodes, in the order they were started.
        tasks_source: ``"session.json"``, ``"mcap:<file>"`` or ``"none"``.
        active_files: Names of unfinished ``*.active`` files (``xsq recover`` repairs them).
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
    active_files: list[str] = field(default_factory=list)
    manifest_error: str | None = None

    @classmethod
    def open(
        cls, path: Path, *, need_metadata: bool = True, need_manifest: bool = False
    ) -> SessionView:
        """Read a session directory (or its metadata.yaml / session.json path).

        Raises:
            SessionUnreadable: no such directory; metadata.yaml missing (an unfinished
                session: the message says to run ``xsq recover``) or unreadable, when
                ``need_metadata``; session.json missing or invalid, when ``need_manifest``.
        """
        directory = _session_dir(path)
        active = sorted(p.name for p in directory.glob("*" + ACTIVE_SUFFIX))
        meta = _read_metadata(directory, active, required=need_metadata)
        manifest_error: str | None = None
        try:
            manifest: SessionManifest | None = read_manifest(directory)
        except ManifestError as exc:
            if need_manifest:
                raise SessionUnreadable(str(exc)) from None
            manifest, manifest_error = None, str(exc)
        try:
            files = [
                SessionFile(
                    directory / entry["path"],
                    int(entry["starting_time"]["nanoseconds_since_epoch"]),
                    int(entry["starting_time"]["nanoseconds_since_epoch"])
                    + int(entry["duration"]["nanoseconds"]),
                    int(entry.get("message_count", 0)),
                )
                for entry in meta.get("files") or []
            ]
            start_ns = int(meta["starting_time"]["nanoseconds_since_epoch"]) if meta else 0
            end_ns = start_ns + int(meta["duration"]["nanoseconds"]) if meta else 0
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionUnreadable(
                f"{directory / METADATA_NAME}: unreadable: missing or bad field {one_line(exc)}"
            ) from None
        tasks: list[TaskEntry] = []
        marks: list[dict[str, object]] = []
        visit: dict[str, object] | None = None
        source = "none"
        if manifest is not None:
            tasks, source = list(manifest.tasks), MANIFEST_NAME
            marks, visit = list(manifest.marks), manifest.visit
        elif meta:
            last = _last_mcap(directory, files)
            if last is not None:
                record = read_tasks_record(last)
                if record is not None:
                    tasks, marks, visit = record
                    source = f"mcap:{last.name}"
        return cls(directory, meta, manifest, files, start_ns, end_ns, tasks, source,
                   marks, visit, active, manifest_error)

    @property
    def session_id(self) -> str:
        if self.manifest is not None:
            return self.manifest.session_id
        custom = self.metadata.get("custom_data") or {}
        return str(custom.get("xsquare.session_id") or self.directory.name)

    def counters(self) -> dict[str, LossCounters]:
        """Per-topic counters: session.json, else metadata.yaml ``custom_data``, else {}."""
        if self.manifest is not None:
            return {name: t.counters() for name, t in self.manifest.topics.items()}
        custom = self.metadata.get("custom_data") or {}
        try:
            doc = json.loads(str(custom.get("xsquare.counters", "")) or "{}")
            return {n: LossCounters.from_mapping(c) for n, c in (doc.get("topics") or {}).items()}
        except (ValueError, TypeError, AttributeError):
            return {}

    def counters_document(self) -> dict[str, Any]:
        """``{"total": {...}, "topics": {...}}`` (what metadata.yaml ``custom_data`` holds)."""
        return counters_document(self.counters())


def _session_dir(path: Path) -> Path:
    if path.is_file() and path.name in (METADATA_NAME, MANIFEST_NAME):
        return path.parent
    if not path.is_dir():
        raise SessionUnreadable(f"{path}: no such session directory")
    return path


def _read_metadata(directory: Path, active: list[str], required: bool) -> dict[str, Any]:
    try:
        meta = read_metadata_yaml(directory)
    except FileNotFoundError:
        if not required:
            return {}
        hint = f"; unfinished files {active}: run `xsq recover {directory}`" if active else ""
        raise SessionUnreadable(
            f"{directory}: no {METADATA_NAME} (not a finished session?){hint}"
        ) from None
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise SessionUnreadable(
            f"{directory / METADATA_NAME}: unreadable: {one_line(exc)}"
        ) from None
    return meta


def _file_number(path: Path) -> int:
    match = re.search(r"_(\d+)\.mcap$", path.name)
    return int(match.group(1)) if match else -1


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
        SessionUnreadable: the file has no summary (truncated) or the record is malformed.
    """
    try:
        with open(mcap_path, "rb") as f:
            summary = make_reader(f).get_summary()
            if summary is None:
                raise SessionUnreadable(f"{mcap_path}: no summary section (run `xsq recover`)")
            indexes = [m for m in summary.metadata_indexes if m.name == TASKS_RECORD]
            if not indexes:
                return None
            f.seek(indexes[-1].offset)
            record = next(StreamReader(f, skip_magic=True).records)
    except OSError as exc:
        raise SessionUnreadable(f"{mcap_path}: cannot read: {exc.strerror}") from None
    except (McapError, StopIteration, ValueError) as exc:
        raise SessionUnreadable(f"{mcap_path}: corrupt MCAP: {one_line(exc)}") from None
    if not isinstance(record, Metadata):
        raise SessionUnreadable(
            f"{mcap_path}: metadata index of {TASKS_RECORD!r} points elsewhere"
        )
    try:
        tasks = [TaskEntry.model_validate(t) for t in json.loads(record.metadata["tasks"])]
        marks = list(json.loads(record.metadata.get("marks", "[]")))
        visit = json.loads(record.metadata.get("visit", "null")) or None
    except (KeyError, ValueError, ValidationError) as exc:
        raise SessionUnreadable(
            f"{mcap_path}: malformed {TASKS_RECORD!r} record: {one_line(exc)}"
        ) from None
    return tasks, marks, visit
