"""The TaskEvent a ROS subscriber (and the bag) gets carries the episode's verdict."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("xsquare_logger_msgs", reason="msg/ not built (make setup)")

from rclpy.serialization import deserialize_message, serialize_message

from xsquare_logger.ros.stack import task_event_message
from xsquare_logger.session.events import EVENT_KINDS, TaskEventData
from xsquare_logger.session.health import EpisodeQuality
from xsquare_logger_msgs.msg import TaskEvent


def _round_trip(event: TaskEventData) -> TaskEvent:
    return deserialize_message(serialize_message(task_event_message(event)), TaskEvent)


def test_task_end_carries_the_verdict_as_json() -> None:
    quality = EpisodeQuality(verdict="fail", reasons=["head camera stalled for 2.1 s"])
    msg = _round_trip(TaskEventData(stamp_ns=5_000_000_001, session_id="s", event_id="s-3",
                                    kind="task_end", task="fold towel", episode_index=0,
                                    outcome="success", quality=quality))
    assert msg.kind == TaskEvent.TASK_END and msg.stamp.sec == 5 and msg.stamp.nanosec == 1
    assert json.loads(msg.quality_json) == {"verdict": "fail",
                                            "reasons": ["head camera stalled for 2.1 s"]}


def test_other_events_have_no_verdict_and_named_kinds() -> None:
    msg = _round_trip(TaskEventData(stamp_ns=1, session_id="s", event_id="s-4",
                                    kind="task_discard", episode_index=0))
    assert msg.quality_json == "" and msg.kind == TaskEvent.TASK_DISCARD
    assert (EVENT_KINDS["privacy_pause"], EVENT_KINDS["privacy_resume"]) == (
        TaskEvent.PRIVACY_PAUSE, TaskEvent.PRIVACY_RESUME)
