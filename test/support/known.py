"""Deterministic messages: the publisher process and the test build the same bytes."""

from __future__ import annotations

from typing import Any

import numpy as np

IMAGE_TOPIC = "/known/camera/image_raw"
JOINT_TOPIC = "/known/joint_states"
EVENT_TOPIC = "/known/task_events"
JOINT_NAMES = [f"joint_{i:02d}" for i in range(28)]


def image(i: int, width: int = 64, height: int = 48) -> Any:
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec = 1000 + i
    msg.header.stamp.nanosec = 1234
    msg.header.frame_id = "known_camera"
    msg.height, msg.width = height, width
    msg.encoding = "rgb8"
    msg.step = width * 3
    rng = np.random.default_rng(i)
    msg.data = rng.integers(0, 256, height * width * 3, dtype=np.uint8).tobytes()
    return msg


def joint_state(i: int) -> Any:
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp.sec = 2000 + i // 100
    msg.header.stamp.nanosec = (i % 100) * 10_000_000
    msg.name = JOINT_NAMES
    msg.position = [0.001 * i + 0.01 * j for j in range(28)]
    msg.velocity = [float(-j) for j in range(28)]
    msg.effort = [0.5 * j + i for j in range(28)]
    return msg


def task_event(i: int) -> Any:
    from xsquare_logger_msgs.msg import TaskEvent

    msg = TaskEvent()
    msg.stamp.sec = 3000 + i
    msg.session_id = "known-session"
    msg.event_id = f"evt-{i}"
    msg.kind = TaskEvent.TASK_START if i % 2 == 0 else TaskEvent.TASK_END
    msg.task = "fold towel"
    msg.episode_index = i // 2
    msg.outcome = "" if i % 2 == 0 else "success"
    msg.operator_name = "op-7"
    msg.note = f"note {i} ü"
    return msg


MAKERS = {IMAGE_TOPIC: image, JOINT_TOPIC: joint_state, EVENT_TOPIC: task_event}
TYPES = {
    IMAGE_TOPIC: "sensor_msgs/msg/Image",
    JOINT_TOPIC: "sensor_msgs/msg/JointState",
    EVENT_TOPIC: "xsquare_logger_msgs/msg/TaskEvent",
}


def expected_bytes(topic: str, count: int, start: int = 0) -> list[bytes]:
    from rclpy.serialization import serialize_message

    return [serialize_message(MAKERS[topic](i)) for i in range(start, start + count)]
