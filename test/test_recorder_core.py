"""The recorder core without DDS: loss accounting, selection, config, QoS adaptation.

These drive the same callbacks rclpy calls (bytes + MessageInfo dicts) so every
kind of loss can be produced on purpose; the cross-process tests cover DDS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from support import known

from xsquare_logger.bag.qos import adapt_subscription, make_qos
from xsquare_logger.config.model import ConfigError, LoggerConfig, apply_overrides, load_config
from xsquare_logger.recording.recorder import Recorder
from xsquare_logger.recording.selection import TopicSelector
from xsquare_logger.session.store import SessionExistsError

GID_A = {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"A" * 16}
GID_B = {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"B" * 16}


def info(seq: int, gid: dict = GID_A, t: int = 1_000_000_000) -> dict:
    return {
        "source_timestamp": t + seq,
        "received_timestamp": t + seq + 500,
        "publication_sequence_number": seq,
        "reception_sequence_number": None,
        "publisher_gid": gid,
    }


def make_recorder(tmp_path: Path, **recording: object) -> Recorder:
    cfg = apply_overrides(
        LoggerConfig(),
        {f"recording.{k}": v for k, v in recording.items()}
        | {"recording.disk_reserve_bytes": 0},
        "test",
    )
    return Recorder(cfg, tmp_path / "s", "s")


def test_transport_gaps_are_counted_per_publisher(tmp_path: Path) -> None:
    rec = make_recorder(tmp_path)
    cb = rec.add_topic(known.JOINT_TOPIC, "sensor_msgs/msg/JointState", [make_qos()])
    data = serialize_message(known.joint_state(0))
    rec.start()
    for seq in (5, 6, 9, 10):  # first message sets the baseline; 7 and 8 were lost
        cb(data, info(seq, GID_A))
    for seq in (1, 2, 3, 7):  # second publisher: 4, 5, 6 lost
        cb(data, info(seq, GID_B))
    manifest = rec.stop()
    t = manifest.topics[known.JOINT_TOPIC]
    assert (t.received, t.written, t.lost_transport, t.publishers) == (8, 8, 5, 2)
    assert manifest.drops["lost_transport"] == 5
    assert manifest.drops["total"] == 5


def test_full_queue_drops_are_counted_and_rest_written(tmp_path: Path) -> None:
    rec = make_recorder(tmp_path, queue_max_bytes=1024 * 1024)
    cb = rec.add_topic(known.IMAGE_TOPIC, "sensor_msgs/msg/Image", [make_qos("best_effort")])
    frame = serialize_message(known.image(0, 320, 240))  # ~230 kB
    # The writer thread is not started yet, so the queue fills: 1 MiB holds 4 frames.
    for seq in range(1, 11):
        cb(frame, info(seq))
    rec.start()
    manifest = rec.stop()
    t = manifest.topics[known.IMAGE_TOPIC]
    assert t.received == 10
    assert t.dropped_queue == 6
    assert t.lost_transport == 0  # a queue drop is not also a transport gap
    assert t.written == 4
    assert manifest.drops["dropped_queue"] == 6
    with open(tmp_path / "s" / "s_0.mcap", "rb") as fh:
        msgs = [m for _s, c, m in make_reader(fh).iter_messages() if c.topic == known.IMAGE_TOPIC]
    assert [m.data for m in msgs] == [frame] * 4
    # log_time is the receive time, publish_time the publisher's source timestamp
    assert msgs[0].log_time == 1_000_000_501 and msgs[0].publish_time == 1_000_000_001


_RSS_SCRIPT = """
import json, sys, threading
from pathlib import Path
from rclpy.serialization import serialize_message
from support import known
from xsquare_logger.bag.qos import make_qos
from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.recording.recorder import Recorder

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))

overrides = {"recording.disk_reserve_bytes": 0, "recording.compression": "none"}
rec = Recorder(apply_overrides(LoggerConfig(), overrides, "t"), Path(sys.argv[1]), "s")
cb = rec.add_topic(known.IMAGE_TOPIC, "sensor_msgs/msg/Image", [make_qos("best_effort")])
frame = serialize_message(known.image(0, 1280, 720))  # 2.76 MB
base = rss_mb()

def receive():  # like rclpy: a new bytes object per frame, on another thread
    for seq in range(1, 151):
        info = {"publication_sequence_number": seq, "publisher_gid": {"data": b"A" * 16},
                "received_timestamp": 10**9 + seq, "source_timestamp": 10**9 + seq}
        cb(bytes(bytearray(frame)), info)

t = threading.Thread(target=receive)
t.start()
t.join()
queued = rss_mb() - base
rec.start()
manifest = rec.stop()
print(json.dumps({"queued_mb": queued, "after_mb": rss_mb() - base,
                  "written": manifest.topics[known.IMAGE_TOPIC].written}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmRSS from /proc")
def test_memory_of_a_burst_goes_back_to_the_os_after_the_session(tmp_path: Path) -> None:
    """~400 MB of raw frames queued, then written: the process does not stay that big
    (glibc kept the freed heap: 1.4 GB resident, idle, after a loaded raw run)."""
    res = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "s")],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["written"] == 150 and got["queued_mb"] > 300
    assert got["after_mb"] < 100, got


def test_unknown_type_is_refused_at_subscription(tmp_path: Path) -> None:
    rec = make_recorder(tmp_path)
    with pytest.raises(LookupError, match="nosuch_msgs/msg/Thing"):
        rec.add_topic("/x", "nosuch_msgs/msg/Thing", [])
    rec.start()
    rec.stop()


def test_existing_session_dir_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    with pytest.raises(SessionExistsError, match="exists already"):
        make_recorder(tmp_path)


def test_status_is_recorded_in_the_bag(tmp_path: Path) -> None:
    cfg = apply_overrides(LoggerConfig(), {"recording.disk_reserve_bytes": 0}, "test")
    seen = []
    rec = Recorder(cfg, tmp_path / "s", "s", status_encoder=lambda s: b"\x00\x01\x00\x00" +
                   json.dumps(s.dropped_queue).encode(), on_status=seen.append)
    rec.start()
    manifest = rec.stop()
    assert manifest.topics["/xsquare/session_status"].written >= 1
    assert seen[-1].state == "closed"


def test_topic_selection_rules() -> None:
    cfg = LoggerConfig().recording
    sel = TopicSelector(cfg, never={"/xsquare/session_status"})
    assert sel.wants("/camera/head/image_raw")
    assert not sel.wants("/rosout")
    assert not sel.wants("/xsquare/session_status")
    assert not sel.wants("/_hidden/thing")
    explicit = cfg.model_copy(update={"all_topics": False, "topics": ["/rosout"], "regex": "^/cam"})
    sel = TopicSelector(explicit)
    assert sel.wants("/rosout") and sel.wants("/camera/x") and not sel.wants("/joint_states")


def test_qos_adapts_to_publishers_like_rosbag2() -> None:
    rel = make_qos("reliable", "transient_local")
    be = make_qos("best_effort", "volatile")
    assert adapt_subscription([rel], 100)["durability"] == "transient_local"
    assert adapt_subscription([rel], 100)["reliability"] == "reliable"
    mixed = adapt_subscription([rel, be], 100)
    assert (mixed["reliability"], mixed["durability"]) == ("best_effort", "volatile")


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("recording:\n  chunk_size: 10\n  regex: '('\nrobot_id: 'bad id!'\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    text = str(exc.value)
    assert "recording.chunk_size" in text and "recording.regex" in text and "robot_id" in text
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"recording\.max_bag_size"):
        apply_overrides(LoggerConfig(), {"recording.max_bag_size": "big"}, "flags")


def test_shipped_robot_config_is_valid() -> None:
    cfg = load_config(Path(__file__).parents[1] / "config" / "robot.yaml")
    assert cfg.robot_id == "humanoid-01"
    assert cfg.recording.max_bag_size > 0


def test_every_config_field_is_documented() -> None:
    from xsquare_logger.config.model import RecordingConfig, TabletConfig

    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    for name in ("robot_id", "data_root"):
        assert f"`{name}`" in doc
    for section, model in (("recording", RecordingConfig), ("tablet", TabletConfig)):
        for name in model.model_fields:
            assert f"`{section}.{name}`" in doc, f"{section}.{name} missing: run "
            "scripts/gen_config_doc.py"


@pytest.mark.parametrize("mode", ["jpeg", "h264"])
def test_cameras_are_recorded_compressed(tmp_path: Path, mode: str) -> None:
    """Raw Image CDR in, CompressedImage / foxglove CompressedVideo out, decodable, stamped."""
    import cv2
    import numpy as np
    from mcap_ros2.decoder import DecoderFactory

    if mode == "h264":
        av = pytest.importorskip("av", reason="H.264 needs the optional 'av' extra")
    cam = "/camera/head/image_raw"
    rec = make_recorder(
        tmp_path, cameras={cam: {"mode": mode, "fps": 30, "keyframe_interval_s": 1.0}}
    )
    cb = rec.add_topic(cam, "sensor_msgs/msg/Image", [make_qos("best_effort")])
    rec.start()
    frames = [known.image(i, 320, 240) for i in range(40)]
    y, x = np.mgrid[0:240, 0:320]
    for i, f in enumerate(frames):  # smooth content: codec error is measurable
        pixels = np.stack([(x + 3 * i) % 256, y % 256, (x + y) % 256], -1)
        f.data = pixels.astype(np.uint8).tobytes()
        cb(serialize_message(f), info(i + 1, t=i * 33_333_333))
        time.sleep(0.003)  # camera pacing: the encoder lane keeps up
    manifest = rec.stop()
    out = cam + ("/compressed" if mode == "jpeg" else "/h264")
    assert manifest.topics[cam].compressed_to == out
    assert manifest.topics[cam].received == 40
    written = manifest.topics[out].written
    assert written + manifest.topics[cam].dropped_encode == 40
    assert manifest.drops["total"] == manifest.topics[cam].dropped_encode
    meta = (tmp_path / "s" / "metadata.yaml").read_text()
    assert out in meta and f"name: {cam}\n" not in meta  # the raw topic is not in the bag
    with open(tmp_path / "s" / "s_0.mcap", "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        msgs = [(s.name, m) for s, c, _r, m in reader.iter_decoded_messages(topics=[out])]
    assert len(msgs) == written > 30
    if mode == "jpeg":
        name, first = msgs[0]
        assert name == "sensor_msgs/msg/CompressedImage" and first.format == "jpeg"
        assert (first.header.stamp.sec, first.header.frame_id) == (1000, "known_camera")
        img = cv2.imdecode(np.frombuffer(bytes(first.data), np.uint8), cv2.IMREAD_COLOR)
        src = np.frombuffer(frames[0].data, np.uint8).reshape(240, 320, 3)[:, :, ::-1]
        assert np.abs(img.astype(int) - src.astype(int)).mean() < 4
    else:
        name, first = msgs[0]
        assert name == "foxglove_msgs/msg/CompressedVideo" and first.format == "h264"
        assert first.timestamp.sec == 1000 and first.frame_id == "known_camera"
        codec = av.CodecContext.create("h264", "r")
        decoded = 0
        for _n, m in msgs:
            decoded += len(codec.decode(av.Packet(bytes(m.data))))
        assert decoded == len(msgs)
        assert bytes(first.data).startswith(b"\x00\x00\x00\x01")
