"""The visit as this console saw it: episodes (outcome, duration, quality) and marks.

The operator needs the list ("did episode 4 pass?"). Two sources, merged: the
replies this console proxied (:meth:`VisitLog.record`: instruction, marks per
episode, the open task at once) and the robot's status (:meth:`VisitLog.sync`:
``recent_episodes``, the last ended episodes with outcome, quality and discard, the
robot's truth, also for episodes tagged from another tablet or before this console
started). A visit started elsewhere resets the list; the counts in the status
(``episodes``, ``marks``) stay the truth.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Episode", "Mark", "VisitLog"]

#: Marks kept for the page (the newest); the count is kept in full.
MAX_MARKS = 50


@dataclass
class Episode:
    index: int
    task: str
    instruction: str = ""
    start_ns: int | None = None
    outcome: str = ""  # "" while open; success | failure | aborted
    duration_sec: float | None = None
    note: str = ""
    # {"verdict": "pass" | "warn" | "fail", "reasons": [...]}; None: the robot gave none
    quality: dict[str, Any] | None = None
    discarded: bool = False
    marks: int = 0


@dataclass
class Mark:
    number: int  # 1 for the visit's first mark
    label: str
    episode_index: int  # -1 outside a task
    robot_time_ns: int | None


@dataclass
class _Visit:
    session_id: str = ""
    visit_id: str = ""
    ended: bool = False
    complete: bool = True  # False when the console joined a visit already under way
    episodes: dict[int, Episode] = field(default_factory=dict)
    marks: list[Mark] = field(default_factory=list)
    mark_count: int = 0


def _int(value: Any, default: int = -1) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class VisitLog:
    """Thread-safe: HTTP handler threads record replies, the status thread syncs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._visit = _Visit()

    def record(
        self, cmd: str, args: dict[str, Any], result: dict[str, Any], robot_time_ns: int | None
    ) -> None:
        """Take in the result of a successful command ``cmd`` sent with ``args``."""
        with self._lock:
            v = self._visit
            if cmd == "session.start":
                self._visit = _Visit(
                    session_id=str(result.get("session_id", "")),
                    visit_id=str(result.get("visit_id", args.get("visit_id", ""))),
                )
            elif cmd == "task.start":
                index = _int(result.get("episode_index"))
                v.episodes[index] = Episode(
                    index=index,
                    task=str(result.get("task", args.get("task", ""))),
                    instruction=str(args.get("instruction", "")),
                    start_ns=robot_time_ns,
                )
            elif cmd == "task.end":
                ep = self._episode(result, args)
                ep.outcome = str(result.get("outcome", args.get("outcome", "")))
                duration = result.get("duration_sec")
                ep.duration_sec = float(duration) if isinstance(duration, int | float) else None
                ep.note = str(args.get("note", ""))
                quality = result.get("quality")
                ep.quality = quality if isinstance(quality, dict) else None
            elif cmd == "task.discard":
                self._episode(result, args).discarded = True
            elif cmd == "mark":
                v.mark_count += 1
                index = _int(result.get("episode_index"))
                v.marks.append(
                    Mark(v.mark_count, str(result.get("label", "")), index, robot_time_ns)
                )
                del v.marks[:-MAX_MARKS]
                if index in v.episodes:
                    v.episodes[index].marks += 1
            elif cmd == "session.stop":
                auto = result.get("auto_ended_task")
                if isinstance(auto, dict):
                    ep = self._episode(auto, {})
                    ep.outcome = str(auto.get("outcome", "aborted"))
                v.ended = True

    def _episode(self, result: dict[str, Any], args: dict[str, Any]) -> Episode:
        index = _int(result.get("episode_index"))
        ep = self._visit.episodes.get(index)
        if ep is None:  # started before this console ran: keep what the reply says
            ep = Episode(index=index, task=str(result.get("task", args.get("task", ""))))
            self._visit.episodes[index] = ep
            self._visit.complete = False
        return ep

    def sync(self, status: dict[str, Any]) -> None:
        """Follow the robot: another visit than ours means our list is not its list."""
        session_id = status.get("session_id")
        if status.get("state") == "recording" and isinstance(session_id, str) and session_id:
            with self._lock:
                if session_id != self._visit.session_id:
                    self._visit = _Visit(
                        session_id=session_id,
                        visit_id=str(status.get("visit_id", "")),
                        complete=_int(status.get("episodes"), 0) == 0,
                    )
            self._merge_recent(status.get("recent_episodes"))
        elif status.get("state") == "idle":
            with self._lock:
                self._visit.ended = bool(self._visit.session_id)

    def _merge_recent(self, recent: Any) -> None:
        """Take the robot's word on ended episodes (status ``recent_episodes``)."""
        if not isinstance(recent, list):
            return
        with self._lock:
            for item in recent:
                if not isinstance(item, dict):
                    continue
                index = _int(item.get("episode_index"))
                if index < 0:
                    continue
                ep = self._visit.episodes.get(index)
                if ep is None:
                    ep = Episode(index=index, task=str(item.get("task", "")))
                    self._visit.episodes[index] = ep
                if isinstance(item.get("outcome"), str) and item["outcome"]:
                    ep.outcome = item["outcome"]
                duration = item.get("duration_sec")
                if isinstance(duration, int | float) and not isinstance(duration, bool):
                    ep.duration_sec = float(duration)
                quality = item.get("quality")
                ep.quality = quality if isinstance(quality, dict) else None
                ep.discarded = bool(item.get("discarded"))
            # Complete again once the robot's list reaches back to episode 0.
            indexes = [_int(i.get("episode_index")) for i in recent if isinstance(i, dict)]
            if 0 in indexes and all(i in self._visit.episodes for i in range(max(indexes) + 1)):
                self._visit.complete = True

    def snapshot(self) -> dict[str, Any]:
        """JSON for the page: episodes newest first, the newest marks, counts."""
        with self._lock:
            v = self._visit
            episodes = [asdict(v.episodes[i]) for i in sorted(v.episodes, reverse=True)]
            marks = [asdict(m) for m in reversed(v.marks)]
            return {
                "session_id": v.session_id,
                "visit_id": v.visit_id,
                "ended": v.ended,
                "complete": v.complete,
                "episodes": episodes,
                "marks": marks,
                "mark_count": v.mark_count,
            }
