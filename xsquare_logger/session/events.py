"""What the operator's tablet puts on record: the visit and its task events.

Plain data shared by the recorder (into the bag and session.json), the link
(protocol to state machine) and the tools. No ROS, no ZeroMQ here.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TaskEventData", "VisitInfo"]


@dataclass(frozen=True)
class VisitInfo:
    visit_id: str
    operator: str
    consent: bool
    site: str = ""
    notes: str = ""


@dataclass(frozen=True)
class TaskEventData:
    """One accepted tablet event, as recorded (``xsquare_logger_msgs/TaskEvent``).

    ``kind`` is one of ``session_start``, ``session_end``, ``task_start``,
    ``task_end``, ``mark``. ``stamp_ns`` is the robot's receive time of the command.
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
