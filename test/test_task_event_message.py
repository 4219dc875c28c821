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


def test_session_status_carries_stream_health() -> None:
    import math

    from xsquare_logger.recording.recorder import StatusSnapshot
    from xsquare_logger.ros.recorder_node import status_message
    from xsquare_logger.session.health import StreamHealth
    from xsquare_logger_msgs.msg import SessionStatus

    snap = StatusSnapshot(
        state="recording", session_id="s", stamp_ns=1, elapsed_sec=2.0, bytes_written=3,
        disk_free_bytes=4,
        streams=[StreamHealth(name="head", topic="/camera/head/image_raw", kind="camera",
                              state="stalled", rate_hz=0.0, nominal_hz=30.0, lost=0,
                              last_seen_s=2.5),
                 StreamHealth(name="wrench", topic="/wrench/left", state="missing")],
    )
    msg = deserialize_message(serialize_message(status_message(snap)), SessionStatus)
    head, wrench = msg.streams
    assert (head.name, head.kind, head.state, head.nominal_hz, head.last_seen_s) == (
        "head", "camera", "stalled", 30.0, 2.5)
    assert wrench.state == "missing" and math.isnan(wrench.rate_hz)
    assert math.isnan(wrench.last_seen_s) and not wrench.paused
    unmeasured = StatusSnapshot(state="recording", session_id="s", stamp_ns=1, elapsed_sec=0.0,
                                bytes_written=0, disk_free_bytes=0)
    assert list(status_message(unmeasured).streams) == []
