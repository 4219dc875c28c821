"""Find closed sessions under data_root and describe what of them is uploaded, in what order.

A session is uploadable only when it is finished: ``session.json`` says closed or
recovered, no ``.mcap.active`` file is left, and nobody holds its recording lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from xsquare_logger.errors import XsqError
from xsquare_logger.session.fsutil import LOCK_NAME, SessionLock, sha256_file
from xsquare_logger.session.manifest import MANIFEST_NAME
from xsquare_logger.session.view import ACTIVE_SUFFIX, SessionUnreadable, SessionView

__all__ = [
    "LocalFile",
    "LocalSession",
    "SessionNotReady",
    "describe_session",
    "find_sessions",
    "lock_is_held",
    "recording_in_progress",
    "remote_prefix",
    "sha256_file",
]

# Never uploaded: the recorder's lock and half-written atomic-rename temporaries.
_SKIP_SUFFIXES = (".tmp", ACTIVE_SUFFIX)


class SessionNotReady(XsqError):
    """The directory is not (yet) a closed session that may be uploaded."""


@dataclass(frozen=True)
class LocalFile:
    """One file to upload; ``sha256`` is from session.json or hashed at enqueue time."""

    name: str
    size: int  # bytes
    sha256: str  # hex


@dataclass(frozen=True)
class LocalSession:
    """A closed session: its files in upload order (session.json is always last)."""

    session_id: str
    robot_id: str
    started_ns: int
    directory: Path
    files: tuple[LocalFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def day(self) -> str:
        """UTC ``yyyy-mm-dd`` of the session start (the layout's date folder)."""
        return datetime.fromtimestamp(self.started_ns / 1e9, UTC).strftime("%Y-%m-%d")




def lock_is_held(directory: Path) -> bool:
    """True if a recorder (or recovery) holds ``.recording.lock`` in ``directory``.

    Opens read-only and never creates or deletes the lock file: the uploader must
    not leave traces in a session whose bytes it uploads.
    """
    return SessionLock.is_held(directory)


def recording_in_progress(data_root: Path) -> bool:
    """True if any session directory under ``data_root`` is locked by a writer."""
    if not data_root.is_dir():
        return False
    return any(
        lock_is_held(d) for d in data_root.iterdir() if d.is_dir() and not d.name.startswith(".")
    )


def describe_session(directory: Path) -> LocalSession:
    """Check that ``directory`` is a closed session and list its files in upload order.

    Raises :class:`SessionNotReady` (with the reason) for an open, crashed or
    inconsistent session.
    """
    try:
        manifest = SessionView.open(directory, need_metadata=False, need_manifest=True).manifest
    except SessionUnreadable as exc:
        raise SessionNotReady(str(exc)) from None
    assert manifest is not None  # need_manifest
    if manifest.state not in ("closed", "recovered"):
        raise SessionNotReady(f"{directory}: session state is {manifest.state!r}, not closed")
    if any(directory.glob("*" + ACTIVE_SUFFIX)):
        raise SessionNotReady(f"{directory}: a file is still being written (.active)")
    if lock_is_held(directory):
        raise SessionNotReady(f"{directory}: locked by a recorder")
    listed = {f.path: f for f in manifest.files}
    files: list[LocalFile] = []
    # A listed file that is missing or changed is not refused here: the session is
    # queued and its upload fails with that reason, where the operator sees it.
    others = sorted(
        p.name
        for p in directory.iterdir()
        if p.is_file()
        and p.name not in listed
        and p.name not in (MANIFEST_NAME, LOCK_NAME)
        and not p.name.endswith(_SKIP_SUFFIXES)
    )
    # metadata.yaml and other extras are not in files[]: hash them now, once; the
    # listed files keep the sha256 the writer computed while writing them.
    for name in others:
        path = directory / name
        files.append(LocalFile(name, path.stat().st_size, sha256_file(path)))
    files.extend(LocalFile(e.path, e.size, e.sha256) for e in manifest.files)
    marker = directory / MANIFEST_NAME
    files.append(LocalFile(MANIFEST_NAME, marker.stat().st_size, sha256_file(marker)))
    return LocalSession(
        session_id=manifest.session_id,
        robot_id=manifest.robot_id,
        started_ns=manifest.started_ns,
        directory=directory,
        files=tuple(files),
    )


def find_sessions(data_root: Path) -> Iterator[Path]:
    """Session directories directly under ``data_root`` (dot-folders are ours, skipped)."""
    if not data_root.is_dir():
        return
    for d in sorted(data_root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_NAME).is_file():
            yield d


def remote_prefix(prefix: str, session: LocalSession) -> str:
    """``<prefix>/<robot_id>/<yyyy-mm-dd>/<session_id>`` (no leading or trailing slash)."""
    parts = [p for p in prefix.strip("/").split("/") if p]
    return "/".join([*parts, session.robot_id, session.day, session.session_id])
