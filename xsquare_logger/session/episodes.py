"""The episode list of a session, built from accepted tablet events."""

from __future__ import annotations

import json
from collections.abc import Mapping

from xsquare_logger.session.events import TaskEventData
from xsquare_logger.session.manifest import TaskEntry

__all__ = ["apply_event", "tasks_metadata"]


def apply_event(
    tasks: list[TaskEntry],
    marks: list[dict[str, object]],
    event: TaskEventData,
    lost_now: Mapping[str, int] | None = None,
) -> None:
    """Update ``tasks``/``marks`` in place: task.start opens an episode, task.end closes it.

    ``lost_now`` is every recorded topic's lost counter when the event was received:
    kept at task.start, and at task.end the growth per topic becomes the episode's
    ``lost`` (topics that lost nothing are left out; a topic that appeared during the
    episode counts from 0). For a ``mark`` the label travels in ``event.task``
    (TaskEvent has no label field). ``task_discard`` marks the named episode
    ``discarded``; privacy events change no episode (the task_end event carries the
    paused ranges inside the episode's window).
    """
    if event.kind == "task_start":
        entry = TaskEntry(
            episode_index=event.episode_index,
            task=event.task,
            start_ns=event.stamp_ns,
            operator=event.operator,
            instruction=event.instruction,
            event_ids=[event.event_id],
            window_start_ns=event.window_ns,
        )
        entry._lost_at_start = dict(lost_now or {})
        tasks.append(entry)
    elif event.kind == "task_end":
        for entry in reversed(tasks):
            if entry.episode_index == event.episode_index and entry.end_ns is None:
                entry.end_ns = event.stamp_ns
                entry.outcome = event.outcome
                entry.note = event.note
                entry.event_ids.append(event.event_id)
                entry.window_end_ns = event.window_ns
                entry.quality = event.quality
                entry.privacy_paused = [(a, b) for a, b in event.paused]
                if lost_now is not None:
                    start = entry._lost_at_start
                    grown = {t: n - start.get(t, 0) for t, n in lost_now.items()}
                    entry.lost = {t: n for t, n in sorted(grown.items()) if n > 0}
                break
    elif event.kind == "task_discard":
        for entry in reversed(tasks):
            if entry.episode_index == event.episode_index:
                entry.discarded = True
                entry.event_ids.append(event.event_id)
                break
    elif event.kind == "mark":
        marks.append(
            {
                "stamp_ns": event.stamp_ns,
                "label": event.task,
                "note": event.note,
                "episode_index": event.episode_index,
                "event_id": event.event_id,
            }
        )


def tasks_metadata(
    tasks: list[TaskEntry], marks: list[dict[str, object]], session_id: str
) -> dict[str, str]:
    """The MCAP Metadata record ``xsquare.tasks``: tools find episodes without scanning."""
    return {
        "session_id": session_id,
        "count": str(len(tasks)),
        "tasks": json.dumps([t.model_dump(mode="json") for t in tasks]),
        "marks": json.dumps(marks),
    }
