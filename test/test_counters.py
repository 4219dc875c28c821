"""One set of loss counters: every output of a session shows the same "lost".

A real RecorderNode (in-process rclpy, own domain) records a JPEG camera fed faster
than its encoder lane takes frames, so frames are dropped by the encoder. Then
session.json, metadata.yaml ``custom_data``, the ``SessionStatus`` recorded in the
bag, the tablet status, ``xsq info --json`` and ``xsq report --json`` must all show
the same per-topic and total ``lost``; the recorded ``TaskEvent`` carries the
instruction.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import rclpy
import yaml
from conftest import xsq
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message, serialize_message
from support import known
from support.waiting import wait_until

from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.errors import XsqError
from xsquare_logger.session.counters import LossCounters, TopicStats
from xsquare_logger.session.events import TaskEventData
from xsquare_logger.session.fsutil import LockError, SessionLock, atomic_write
from xsquare_logger.session.view import SessionUnreadable, SessionView

CAM = "/camera/head/image_raw"
OUT = CAM + "/compressed"
GID = {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"C" * 16}


def _info(seq: int) -> dict:
    t = time.time_ns()  # the bag's clock: status and task events are stamped with it too
    return {"source_timestamp": t, "received_timestamp": t + 500,
            "publication_sequence_number": seq, "reception_sequence_number": None,
            "publisher_gid": GID}


def test_loss_counters_are_one_set_everywhere(env, monkeypatch, tmp_path: Path) -> None:
    from xsquare_logger.link.visit import VisitStateMachine
    from xsquare_logger.ros.recorder_node import RecorderNode
    from xsquare_logger.ros.stack import RosSessionController
    from xsquare_logger_msgs.msg import SessionStatus, TaskEvent

    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    cfg = apply_overrides(
        LoggerConfig(),
        {"data_root": str(tmp_path / "data"), "recording.disk_reserve_bytes": 0,
         "recording.status_interval": 0.2, "recording.compression_workers": 1,
         "recording.cameras": {CAM: {"mode": "jpeg"}}},
        "test",
    )
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = RecorderNode(cfg, context=ctx)
        controller = RosSessionController(node)
        machine = VisitStateMachine(controller, cfg.robot_id)
        rec = node.start_session(task_topics=True)
        controller.record_event(TaskEventData(
            stamp_ns=time.time_ns(), session_id=rec.session_id, event_id="e1",
            kind="task_start", task="fold", episode_index=0, operator="ana",
            instruction="fold the towel in thirds"))
        cb = rec.add_topic(CAM, "sensor_msgs/msg/Image", [])
        frame = serialize_message(known.image(0, 1280, 720))
        # Back to back, far faster than one encoder thread: its lane (2 frames) fills.
        for seq in range(1, 61):
            cb(frame, _info(seq))
        assert rec.stage is not None
        wait_until(lambda: all(s.pending == 0 for s in rec.stage.stats().values()), "encoder idle")
        lane = rec.stage.stats()[CAM]
        expected = lane.skipped + lane.failed
        assert expected > 0, "the JPEG lane never filled: no encoder drops to compare"
        # The tablet status, once a status after the last frame has been taken.
        wait_until(lambda: machine.snapshot()["topics"].get(CAM, {}).get("lost") == expected,
              "tablet status to show the encoder drops")
        tablet = json.loads(json.dumps(machine.snapshot()))
        manifest = node.stop_session("stopped")
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    assert manifest is not None
    session = Path(node.session_dir or "")
    lost = manifest.topics[CAM].lost
    total = manifest.drops["lost"]
    assert lost == manifest.topics[CAM].dropped_encode == expected
    assert total == manifest.drops["total"] == lost  # nothing else lost
    assert manifest.topics[OUT].written + lost == 60

    # session.json on disk (not just the returned object)
    doc = json.loads((session / "session.json").read_text())
    assert doc["topics"][CAM]["lost"] == lost and doc["drops"]["lost"] == total

    # metadata.yaml custom_data
    meta = yaml.safe_load((session / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    counters = json.loads(meta["custom_data"]["xsquare.counters"])
    assert counters["topics"][CAM]["lost"] == lost and counters["total"]["lost"] == total

    # the SessionStatus and TaskEvent messages recorded in the bag
    statuses, events = [], []
    for path in sorted(session.glob("*.mcap")):
        with open(path, "rb") as fh:
            for _s, ch, m in make_reader(fh).iter_messages():
                if ch.topic == "/xsquare/session_status":
                    statuses.append(deserialize_message(m.data, SessionStatus))
                elif ch.topic == "/xsquare/task_events":
                    events.append(deserialize_message(m.data, TaskEvent))
    last = statuses[-1]
    [cam_stats] = [t for t in last.topics if t.topic == CAM]
    assert cam_stats.lost == cam_stats.dropped_encode == lost
    assert last.messages_lost == last.messages_dropped_encode == total
    assert last.messages_dropped_queue == 0  # encoder drops are no longer hidden in here
    assert [e.instruction for e in events] == ["fold the towel in thirds"]

    # the tablet status
    assert tablet["topics"][CAM]["lost"] == lost and tablet["messages_lost"] == total

    # xsq info --json and xsq report --json
    res = xsq("info", str(session), "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["counters"]["topics"][CAM]["lost"] == lost
    assert info["counters"]["total"]["lost"] == total
    assert [t["lost"] for t in info["topics"] if t["name"] == OUT] == [0]
    res = xsq("report", str(session), "--json", "-o", str(tmp_path / "report"))
    assert res.returncode in (0, 4), res.stderr
    report = json.loads(res.stdout)
    assert report["losses"]["per_topic"][CAM]["lost"] == lost
    assert report["losses"]["total"] == total
    assert report["losses"]["timeline"][-1][-1] == total  # from the last SessionStatus


def test_lost_is_the_one_sum() -> None:
    a = TopicStats("/a", "t", received=10, written=4, lost_transport=1, dropped_queue=2,
                   dropped_disk=3, dropped_encode=4)
    b = LossCounters(received=5, written=5, dropped_encode=1)
    assert a.lost == 10 and a.to_dict()["lost"] == 10
    total = LossCounters.total([a, b])
    assert total.to_dict() == {"received": 15, "written": 9, "lost_transport": 1,
                               "dropped_queue": 2, "dropped_disk": 3, "dropped_encode": 5,
                               "lost": 11}
    # "lost" read back from a document is recomputed, never trusted
    assert LossCounters.from_mapping({"dropped_queue": 2, "lost": 99}).lost == 2


def test_session_lock_is_a_context_manager(tmp_path: Path) -> None:
    with SessionLock(tmp_path) as lock:
        assert lock.held and SessionLock.is_held(tmp_path)
        with pytest.raises(LockError, match="locked"), SessionLock(tmp_path):
            pass
        with pytest.raises(LockError, match="already held"):
            lock.acquire()
    assert not SessionLock.is_held(tmp_path) and not lock.held
    assert issubclass(LockError, XsqError)


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write(target, "old")
    atomic_write(target, b"new")
    assert target.read_text() == "new" and not list(tmp_path.glob("*.tmp"))


def test_session_view_errors_are_one_class(tmp_path: Path) -> None:
    with pytest.raises(SessionUnreadable, match="no such session directory"):
        SessionView.open(tmp_path / "nope")
    (tmp_path / "s_0.mcap.active").write_bytes(b"")
    with pytest.raises(SessionUnreadable, match=r"no metadata\.yaml.*xsq recover"):
        SessionView.open(tmp_path)
    (tmp_path / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2\n")
    with pytest.raises(SessionUnreadable, match="unreadable"):
        SessionView.open(tmp_path)
    (tmp_path / "metadata.yaml").unlink()
    (tmp_path / "session.json").write_text('{"format": "xsquare_session/1"')  # truncated
    with pytest.raises(SessionUnreadable, match=r"session\.json"):
        SessionView.open(tmp_path, need_metadata=False, need_manifest=True)


def test_recorder_and_writer_are_context_managers(tmp_path: Path) -> None:
    from xsquare_logger.recording.recorder import Recorder, RecorderError
    from xsquare_logger.session.store import SessionWriterError

    cfg = apply_overrides(LoggerConfig(), {"recording.disk_reserve_bytes": 0}, "test")
    with Recorder(cfg, tmp_path / "s", "s") as rec:
        with pytest.raises(RecorderError, match="started already"):
            rec.start()
        with pytest.raises(RecorderError, match="task_topics"):
            rec.record_event(TaskEventData(0, "s", "e", "mark"), b"", None)
    assert not rec.running and rec.writer.closed
    assert json.loads((tmp_path / "s" / "session.json").read_text())["state"] == "closed"
    assert not SessionLock.is_held(tmp_path / "s")
    with pytest.raises(SessionWriterError, match="write after close"):
        rec.writer.write(0, 1, 1, b"", 0)
    assert issubclass(RecorderError, XsqError) and issubclass(SessionWriterError, XsqError)
    with pytest.raises(RecorderError, match="never started"):
        Recorder(cfg, tmp_path / "t", "t").stop()
