"""The robot side of the floor: per-episode losses, and `xsq run` reporting to a floor.

The episode-loss test drives the real recorder core with the callbacks rclpy calls
(as test_recorder_core does), so transport gaps land exactly inside one episode.
The stack tests run real `xsq run --sim` processes (rclpy, ZeroMQ CURVE tablet link)
against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from support import known

from xsquare_logger.bag.qos import make_qos
from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.recording.recorder import Recorder
from xsquare_logger.ros.stack import current_task_label, task_event_message
from xsquare_logger.session.events import TaskEventData
from xsquare_logger.session.manifest import TaskEntry, read_manifest

GID = {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"A" * 16}


def _info(seq: int) -> dict:
    t = 1_000_000_000 + seq * 1000
    return {"source_timestamp": t, "received_timestamp": t + 500,
            "publication_sequence_number": seq, "publisher_gid": GID}


def test_episode_losses_are_the_losses_inside_each_episode(tmp_path: Path) -> None:
    cfg = apply_overrides(LoggerConfig(), {"recording.disk_reserve_bytes": 0}, "test")
    rec = Recorder(cfg, tmp_path / "s", "s", task_topics=True)
    joints = rec.add_topic(known.JOINT_TOPIC, "sensor_msgs/msg/JointState", [make_qos()])
    imu = rec.add_topic("/imu", "sensor_msgs/msg/JointState", [make_qos()])
    data = serialize_message(known.joint_state(0))
    n = [0]

    def event(kind: str, episode: int, stamp: int, outcome: str = "") -> None:
        n[0] += 1
        e = TaskEventData(stamp, "s", f"s-{n[0]}", kind, "fold towel", episode, outcome)
        label = current_task_label(e)
        task = None if label is None else serialize_message(known_string(label))
        rec.record_event(e, serialize_message(task_event_message(e)), task)

    rec.start()
    for seq in (1, 2):
        joints(data, _info(seq))
        imu(data, _info(seq))
    event("task_start", 0, 10)
    for seq in (3, 4, 5):  # episode 0: nothing lost
        joints(data, _info(seq))
        imu(data, _info(seq))
    event("task_end", 0, 20, "success")
    joints(data, _info(8))  # between episodes: 6, 7 lost (in no episode)
    event("task_start", 1, 30)
    joints(data, _info(12))  # episode 1: 9, 10, 11 lost on the joints only
    imu(data, _info(6))
    event("task_end", 1, 40, "failure")
    manifest = rec.stop()

    assert manifest.topics[known.JOINT_TOPIC].lost_transport == 5
    on_disk = read_manifest(tmp_path / "s")
    assert [t.lost for t in on_disk.tasks] == [{}, {known.JOINT_TOPIC: 3}]
    assert [t.outcome for t in on_disk.tasks] == ["success", "failure"]
    # The same in the bag's xsquare.tasks metadata (tools find episodes without session.json).
    with open(tmp_path / "s" / "s_0.mcap", "rb") as fh:
        meta = {m.name: m.metadata for m in make_reader(fh).iter_metadata()}
    tasks = [TaskEntry.model_validate(t) for t in json.loads(meta["xsquare.tasks"]["tasks"])]
    assert [t.lost for t in tasks] == [{}, {known.JOINT_TOPIC: 3}]


def test_an_old_session_json_without_episode_losses_still_loads(tmp_path: Path) -> None:
    entry = TaskEntry.model_validate({"episode_index": 0, "task": "t", "start_ns": 1})
    assert entry.lost == {}


def known_string(text: str) -> object:
    from std_msgs.msg import String

    return String(data=text)
