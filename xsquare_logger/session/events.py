"""What the operator's tablet puts on record: the visit and its task events.

Plain data shared by the recorder (into the bag and session.json), the link
(protocol to state machine) and the tools. No ROS, no ZeroMQ here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xsquare_logger.session.health import EpisodeQuality

__all__ = ["EVENT_KINDS", "TaskEventData", "VisitInfo"]

#: Every ``TaskEventData.kind``, with its ``xsquare_logger_msgs/TaskEvent.kind`` number
#: (TaskEvent.msg names the same numbers as constants, TASK_DISCARD=5 ... PRIVACY_RESUME=7).
EVENT_KINDS: dict[str, int] = {
    "session_start": 0,
    "session_end": 1,
    "task_start": 2,
    "task_end": 3,
    "mark": 4,
    "task_discard": 5,
    "privacy_pause": 6,
    "privacy_resume": 7,
}


@dataclass(frozen=True)
class VisitInfo:
    visit_id: str
    operator: str
    consent: bool
    site: str = ""
    notes: str = ""
    # Required visit metadata (config visit.required_fields): the robot's configured
    # values (visit.metadata) overlaid by the tablet's session.start ``metadata``.
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskEventData:
    """One accepted tablet event, as recorded (``xsquare_logger_msgs/TaskEvent``).

    ``kind`` is a key of :data:`EVENT_KINDS`. ``stamp_ns`` is the robot's receive
    time of the command. ``window_ns``: for ``task_start`` the episode's window start
    (tap minus pre-roll), for ``task_end`` its window end (tap plus post-roll); None
    for other kinds. ``quality`` (``task_end`` only) is the recorder's verdict, None
    when none was computed. ``paused`` (``task_end`` only): the privacy-paused ranges
    ``(start_ns, end_ns)`` inside the episode's window. ``task_discard`` names the
    discarded episode in ``episode_index``/``task``.
    """

    stamp_ns: int
    session_id: str
    event_id: str
    kind: str
    task: str = ""
    episode_index: int = -1
    outcome: str = ""
    operator: str = ""
    note: str = ""
    instruction: str = ""
    window_ns: int | None = None
    quality: EpisodeQuality | None = None
    paused: tuple[tuple[int, int], ...] = ()
