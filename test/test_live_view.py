"""Live view: a real foxglove-sdk WebSocket server fed by the recorder, read by a
real WebSocket client speaking the Foxglove protocol."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from rclpy.serialization import serialize_message
from support import known
from support.waiting import wait_until

from xsquare_logger.bag.qos import make_qos
from xsquare_logger.bag.schema import ros2msg_schema
from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.recording.recorder import Recorder

websockets_sync = pytest.importorskip("websockets.sync.client")
LiveViewMod = pytest.importorskip("xsquare_logger.live.server")


def _info(seq: int, t: int) -> dict:
    gid = {"implementation_identifier": "x", "data": b"G" * 16}
    return {"source_timestamp": t, "received_timestamp": t,
            "publication_sequence_number": seq, "publisher_gid": gid}


def test_live_view_streams_recorded_cdr_and_throttles_cameras(tmp_path: Path) -> None:
    live_cfg = LiveViewMod.LiveConfig(enabled=True, port=0, camera_rate_hz=10, max_rate_hz=1000)
    live = LiveViewMod.LiveView(live_cfg, ros2msg_schema, name="test-robot")
    cfg = apply_overrides(LoggerConfig(), {"recording.disk_reserve_bytes": 0}, "test")
    rec = Recorder(cfg, tmp_path / "s", "s", taps=[live])
    cam = rec.add_topic(known.IMAGE_TOPIC, "sensor_msgs/msg/Image", [make_qos("best_effort")])
    joints = rec.add_topic(known.JOINT_TOPIC, "sensor_msgs/msg/JointState", [make_qos()])
    offered: list[str] = []  # topics the writer thread has offered to the live view
    real_offer = live.offer

    def counting_offer(topic: str, type_name: str, data: bytes, log_time_ns: int) -> bool:
        sent = real_offer(topic, type_name, data, log_time_ns)
        offered.append(topic)
        return sent

    live.offer = counting_offer
    rec.start()
    frame = serialize_message(known.image(0))
    js = serialize_message(known.joint_state(0))
    cam(frame, _info(1, 1_000_000_000))  # recorded, but nobody watches yet: not sent
    joints(js, _info(1, 1_000_000_000))
    # Taps run on the writer thread: on a busy machine it could still hold these two when
    # the viewer subscribes below, and then send them (CI saw 11 frames instead of 10).
    wait_until(lambda: len(offered) >= 2, "the first two messages offered to the live view")
    try:
        with websockets_sync.connect(
            f"ws://127.0.0.1:{live.port}", subprotocols=["foxglove.sdk.v1"], open_timeout=10
        ) as ws:
            channels = {}
            deadline = time.monotonic() + 10
            while len(channels) < 2 and time.monotonic() < deadline:
                msg = json.loads(ws.recv(timeout=10))
                if msg.get("op") == "advertise":
                    channels.update({c["topic"]: c for c in msg["channels"]})
            image_ch = channels[known.IMAGE_TOPIC]
            assert image_ch["encoding"] == "cdr" and image_ch["schemaEncoding"] == "ros2msg"
            assert image_ch["schemaName"] == "sensor_msgs/msg/Image"
            ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                {"id": 1, "channelId": image_ch["id"]},
                {"id": 2, "channelId": channels[known.JOINT_TOPIC]["id"]},
            ]}))
            watched = [live._channels[t] for t in (known.IMAGE_TOPIC, known.JOINT_TOPIC)]
            while not all(c.has_sinks() for c in watched) and time.monotonic() < deadline:
                time.sleep(0.01)
            # One second of camera at 30 Hz and joints at 100 Hz, by log time.
            t0 = 2_000_000_000
            for i in range(30):
                cam(frame, _info(i + 2, t0 + i * 33_333_333))
            for i in range(100):
                joints(js, _info(i + 2, t0 + i * 10_000_000))
            got: dict[int, list[bytes]] = {1: [], 2: []}
            while len(got[1]) < 10 or len(got[2]) < 100:
                try:
                    data = ws.recv(timeout=10)
                except TimeoutError:
                    raise AssertionError(
                        f"got {len(got[1])} frames, {len(got[2])} joints; "
                        f"sent {live.sent}, throttled {live.throttled}"
                    ) from None
                if isinstance(data, bytes) and data[0] == 0x01:
                    sub_id, _ts = struct.unpack_from("<IQ", data, 1)
                    got[sub_id].append(data[13:])
    finally:
        rec.stop()
        live.close()
    assert got[1] == [frame] * 10  # 30 frames in 1 s throttled to 10 Hz, bytes unchanged
    assert got[2] == [js] * 100  # joints under max_rate_hz pass through
    assert live.throttled == 20
    manifest_topics = json.loads((tmp_path / "s" / "session.json").read_text())["topics"]
    assert manifest_topics[known.IMAGE_TOPIC]["written"] == 31  # recording is not throttled


def _advertised(ws: object, want: set[str], timeout: float = 10) -> dict[str, dict]:
    channels: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while not want <= set(channels) and time.monotonic() < deadline:
        try:
            msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[attr-defined]
        except TimeoutError:
            break
        if isinstance(msg, str) and json.loads(msg).get("op") == "advertise":
            channels.update({c["topic"]: c for c in json.loads(msg)["channels"]})
    return channels


def test_live_view_advertises_task_topics_at_start_and_sends_every_event(
    tmp_path: Path,
) -> None:
    """The current-task panel and the TaskEvent log need /xsquare/* live: advertised as the
    session starts (before any event), and every event delivered, however close together."""
    from std_msgs.msg import String

    from xsquare_logger.recording.recorder import (
        CURRENT_TASK_TOPIC,
        STATUS_TOPIC,
        TASK_EVENTS_TOPIC,
    )
    from xsquare_logger.session.events import TaskEventData
    from xsquare_logger_msgs.msg import TaskEvent

    live_cfg = LiveViewMod.LiveConfig(enabled=True, port=0, camera_rate_hz=1, max_rate_hz=1)
    live = LiveViewMod.LiveView(live_cfg, ros2msg_schema, name="test-robot")
    cfg = apply_overrides(LoggerConfig(), {"recording.disk_reserve_bytes": 0}, "test")
    rec = Recorder(cfg, tmp_path / "s", "s", status_encoder=lambda _s: b"\x00\x01\x00\x00",
                   task_topics=True, taps=[live])
    rec.start()
    want = {TASK_EVENTS_TOPIC, CURRENT_TASK_TOPIC, STATUS_TOPIC}
    sent: list[tuple[bytes, bytes]] = []
    try:
        with websockets_sync.connect(
            f"ws://127.0.0.1:{live.port}", subprotocols=["foxglove.sdk.v1"], open_timeout=10
        ) as ws:
            channels = _advertised(ws, want)
            assert want <= set(channels), sorted(channels)
            assert channels[TASK_EVENTS_TOPIC]["schemaName"] == "xsquare_logger_msgs/msg/TaskEvent"
            ws.send(json.dumps({"op": "subscribe", "subscriptions": [
                {"id": 1, "channelId": channels[TASK_EVENTS_TOPIC]["id"]},
                {"id": 2, "channelId": channels[CURRENT_TASK_TOPIC]["id"]},
            ]}))
            watched = [live._channels[t] for t in (TASK_EVENTS_TOPIC, CURRENT_TASK_TOPIC)]
            deadline = time.monotonic() + 10
            while not all(c.has_sinks() for c in watched) and time.monotonic() < deadline:
                time.sleep(0.01)
            # Five events 10 ms apart: far above max_rate_hz=1, and none may be throttled.
            t0 = time.time_ns()
            for i in range(5):
                stamp = t0 + i * 10_000_000
                ev = TaskEvent(session_id="s", event_id=f"e{i}", kind=TaskEvent.TASK_START,
                               task=f"task {i}", episode_index=i)
                ev.stamp.sec, ev.stamp.nanosec = divmod(stamp, 1_000_000_000)
                pair = (serialize_message(ev), serialize_message(String(data=f"#{i} task {i}")))
                sent.append(pair)
                rec.record_event(TaskEventData(stamp, "s", f"e{i}", "task_start", f"task {i}", i),
                                 *pair)
            got: dict[int, list[bytes]] = {1: [], 2: []}
            while len(got[1]) < 5 or len(got[2]) < 5:
                try:
                    data = ws.recv(timeout=10)
                except TimeoutError:
                    raise AssertionError(f"got {len(got[1])} events, {len(got[2])} tasks") from None
                if isinstance(data, bytes) and data[0] == 0x01:
                    sub_id, _ts = struct.unpack_from("<IQ", data, 1)
                    got[sub_id].append(data[13:])
    finally:
        rec.stop()
        live.close()
    assert got[1] == [e for e, _t in sent]
    assert got[2] == [t for _e, t in sent]


def test_recorder_core_does_not_import_the_live_view() -> None:
    """The recorder takes taps (recording/tap.py); the node builds the LiveView."""
    import ast

    import xsquare_logger.recording.recorder as recorder_mod

    tree = ast.parse(Path(recorder_mod.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if m and m.startswith("xsquare_logger.live")]
