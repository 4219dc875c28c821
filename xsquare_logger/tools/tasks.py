"""`xsq tasks`: the episodes of a session (read through :class:`SessionView`).

Episodes come from ``session.json``, else from the ``xsquare.tasks`` MCAP Metadata
record of the session's last file (see :mod:`xsquare_logger.session.view`).

All times are integer nanoseconds since the Unix epoch (the bag's ``log_time`` clock).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xsquare_logger.session.manifest import TaskEntry
from xsquare_logger.session.view import (
    TASKS_RECORD,
    SessionFile,
    SessionUnreadable,
    SessionView,
    read_tasks_record,
)
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

_NS = 1_000_000_000


class TasksError(ToolError, SessionUnreadable):
    """The session, or the episode asked for, cannot be found or read."""


def load_session(path: Path) -> SessionView:
    """:meth:`SessionView.open` for the tools (metadata.yaml required).

    Raises:
        TasksError: not a session directory, or metadata.yaml missing (an unfinished
            session: ``xsq recover`` rebuilds it) or unreadable.
    """
    try:
        return SessionView.open(path)
    except TasksError:
        raise
    except SessionUnreadable as exc:
        raise TasksError(str(exc)) from None


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
