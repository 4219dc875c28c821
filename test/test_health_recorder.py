"""The recorder's issue-11 side without DDS: calibration attachments, privacy pause,
health and verdicts from the callbacks' arrivals. Bags read with the official `mcap`
reader."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from support import known

from xsquare_logger.bag.qos import make_qos
from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.recording.recorder import Recorder
from xsquare_logger.session.calibration import CalibrationError
from xsquare_logger.session.health import EpisodeSpan
from xsquare_logger.sim.frames import patch_stamp

GID = {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"A" * 16}
S = 1_000_000_000
CAM = "/camera/head/image_raw"


def info(seq: int, recv: int) -> dict:
    return {"source_timestamp": recv - 1000, "received_timestamp": recv,
            "publication_sequence_number": seq, "publisher_gid": GID}


def recorder(tmp_path: Path, **overrides: object) -> Recorder:
    cfg = apply_overrides(LoggerConfig(), {"recording.disk_reserve_bytes": 0, **overrides},
                          "test")
    return Recorder(cfg, tmp_path / "s", "s")


def messages(session: Path) -> list[tuple[str, int]]:
    out = []
    for f in sorted(session.glob("*.mcap")):
        with open(f, "rb") as fh:
            for _s, channel, message in make_reader(fh).iter_messages():
                out.append((channel.topic, message.log_time))
    return out


def test_calibration_files_travel_as_attachments(tmp_path: Path) -> None:
    intr = tmp_path / "head_intrinsics.yaml"
    intr.write_text("camera_matrix: [600, 0, 320, 0, 600, 240, 0, 0, 1]\n")
    urdf = tmp_path / "robot.urdf"
    urdf.write_bytes(b"<robot name='h1'>" + bytes(range(256)) * 4 + b"</robot>")
    rec = recorder(tmp_path, **{"calibration.files": [str(intr), str(urdf)],
                                "recording.max_bag_duration": 0.1})
    cb = rec.add_topic(known.JOINT_TOPIC, "sensor_msgs/msg/JointState", [make_qos()])
    data = serialize_message(known.joint_state(0))
    rec.start()
    for i in range(1, 400):  # enough for more than one file (a split)
        cb(data, info(i, 10 * S + i * 1_000_000))
    manifest = rec.stop()
    session = tmp_path / "s"
    files = sorted(session.glob("*.mcap"))
    assert len(files) >= 2
    want = {"calibration/head_intrinsics.yaml": intr.read_bytes(),
            "calibration/robot.urdf": urdf.read_bytes()}
    for f in files:  # every file carries them: a split file stays self-contained
        with open(f, "rb") as fh:
            got = {a.name: a.data for a in make_reader(fh).iter_attachments()}
        assert got == want
    doc = json.loads((session / "session.json").read_text())
    assert [(c["name"], c["size"], c["sha256"]) for c in doc["calibration"]] == [
        (n, len(b), hashlib.sha256(b).hexdigest()) for n, b in want.items()]
    assert doc["calibration"][0]["source"] == str(intr)
    assert manifest.calibration[1].media_type == "application/xml"
    custom = yaml.safe_load((session / "metadata.yaml").read_text())[
        "rosbag2_bagfile_information"]["custom_data"]
    listed = json.loads(custom["xsquare.calibration"])
    assert [c["sha256"] for c in listed] == [c["sha256"] for c in doc["calibration"]]


def test_missing_calibration_file_refuses_the_start(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"nope\.yaml.*calibration\.files"):
        recorder(tmp_path, **{"calibration.files": [str(tmp_path / "nope.yaml")]})
    assert not (tmp_path / "s").exists()


def test_privacy_pause_cuts_cameras_only_and_counts_no_loss(tmp_path: Path) -> None:
    rec = recorder(tmp_path, **{"health.streams": [
        {"name": "head camera", "topic": CAM, "nominal_hz": 30},
        {"name": "joints", "topic": known.JOINT_TOPIC, "nominal_hz": 30},
    ]})
    cam = rec.add_topic(CAM, "sensor_msgs/msg/Image", [make_qos()])
    joints = rec.add_topic(known.JOINT_TOPIC, "sensor_msgs/msg/JointState", [make_qos()])
    frame = bytearray(serialize_message(known.image(0)))
    joint = bytearray(serialize_message(known.joint_state(0)))
    # Fed faster than real time, so the arrivals are placed in the last 10 s (the verdict
    # judges up to now) and the subscription before them.
    t0 = time.time_ns() - 10 * S
    assert rec.health is not None
    for monitor in rec.health.monitors.values():
        monitor.subscribed_ns = t0
    rec.start()
    pause_ns, resume_ns = t0 + 2 * S, t0 + 4 * S
    for k in range(6 * 30):  # 6 s of a 30 Hz camera, with joints beside every frame
        recv = t0 + k * S // 30
        if recv >= pause_ns and not rec.cameras_paused and recv < resume_ns:
            rec.set_camera_paused(True, pause_ns)
            rec.set_camera_paused(True, pause_ns)  # idempotent
        if recv >= resume_ns and rec.cameras_paused:
            rec.set_camera_paused(False, resume_ns)
        seq = k + 1  # one publisher: numbers go on through the pause (no transport gap)
        patch_stamp(frame, recv - 1000)
        patch_stamp(joint, recv - 1000)
        cam(bytes(frame), info(seq, recv))
        joints(bytes(joint), info(seq, recv))
    health = {h.name: h for h in rec.stream_health() or []}
    span = EpisodeSpan(session_id="s", episode_index=0, task="t", start_ns=t0,
                       end_ns=t0 + 6 * S, window_start_ns=t0, window_end_ns=t0 + 6 * S)
    quality = rec.evaluate_episode(span)
    manifest = rec.stop()
    got = messages(tmp_path / "s")
    cam_times = [t for topic, t in got if topic == CAM]
    joint_times = [t for topic, t in got if topic == known.JOINT_TOPIC]
    assert cam_times and not [t for t in cam_times if pause_ns <= t < resume_ns]
    assert len([t for t in joint_times if pause_ns <= t < resume_ns]) == 60
    assert rec.paused_frames == 60
    assert manifest.topics[CAM].lost == 0 and manifest.drops["total"] == 0
    # Silent for 4 s (the feed ended), and not paused any more: stalled.
    assert health["head camera"].state == "stalled" and not health["head camera"].paused
    assert health["joints"].kind == "joints" and health["head camera"].kind == "camera"
    # The camera went on arriving through the pause: nothing to hold against the episode.
    assert quality is not None and quality.verdict == "pass", quality


def test_health_off_means_no_verdict_and_unknown(tmp_path: Path) -> None:
    rec = recorder(tmp_path, **{"health.enabled": False, "health.previews": False})
    assert rec.stream_health() is None and rec.health is None and rec.previews is None
    rec.start()
    span = EpisodeSpan(session_id="s", episode_index=0, task="t", start_ns=0, end_ns=1,
                       window_start_ns=0, window_end_ns=1)
    assert rec.evaluate_episode(span) is None
    rec.stop()
