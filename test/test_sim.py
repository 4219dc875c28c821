"""Tests of the simulated humanoid (profiles, pre-serialized payloads, the sim node).

The end-to-end tests start ``python -m xsquare_logger.ros.sim_node`` as a
subprocess on a domain of their own (localhost discovery only) and subscribe
from this process with ordinary (deserializing) subscriptions.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xsquare_logger.sim.frames import (
    STAMP_OFFSET,
    build_ring,
    message_class,
    read_stamp_ns,
    render_frames,
)
from xsquare_logger.sim.profiles import (
    HUMANOID_JOINT_NAMES,
    CameraInfoStream,
    ImageStream,
    JointStateStream,
    WrenchStream,
    get_profile,
    profile_names,
)

REPO = Path(__file__).resolve().parents[1]


def unique_domain_id(offset: int = 0) -> int:
    """A ROS domain id (100..199) of this test process's own."""
    return 100 + (os.getpid() + offset) % 100


def sim_env(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


# ------------------------------------------------------------------------ profiles


def test_profiles_shape():
    assert profile_names() == ["humanoid", "light"]
    with pytest.raises(ValueError, match=r"humanoid.*light"):
        get_profile("nope")

    hum = get_profile("humanoid")
    cams = ["head", "left_wrist", "right_wrist"]
    assert hum.cameras == cams
    for cam in cams:
        img = hum.stream(f"/camera/{cam}/image_raw")
        info = hum.stream(f"/camera/{cam}/camera_info")
        assert isinstance(img, ImageStream) and isinstance(info, CameraInfoStream)
        assert (img.width, img.height, img.encoding, img.rate_hz) == (1280, 720, "rgb8", 30.0)
        assert img.type_name == "sensor_msgs/msg/Image" and img.qos == "sensor"
        assert info.type_name == "sensor_msgs/msg/CameraInfo" and info.rate_hz == 30.0
        assert img.frame_id == info.frame_id == f"{cam}_camera_optical_frame"
        assert info.fx > 0 and 0 < info.cx < img.width and 0 < info.cy < img.height
    js = hum.stream("/joint_states")
    assert isinstance(js, JointStateStream)
    assert js.rate_hz == 500.0 and js.qos == "reliable"
    assert len(js.joint_names) == 28 == len(set(js.joint_names))
    for side in ("left", "right"):
        w = hum.stream(f"/gripper/{side}/wrench")
        assert isinstance(w, WrenchStream)
        assert w.type_name == "geometry_msgs/msg/WrenchStamped"
        assert (w.rate_hz, w.qos) == (500.0, "sensor")

    light = get_profile("light")
    assert light.topics == hum.topics
    img = light.stream("/camera/head/image_raw")
    assert (img.width, img.height, img.rate_hz) == (320, 240, 15.0)
    assert light.stream("/joint_states").rate_hz == 100.0
    assert light.stream("/gripper/right/wrench").rate_hz == 100.0

    one = hum.with_cameras(1)
    assert one.cameras == ["head"]
    assert "/camera/left_wrist/camera_info" not in one.topics
    assert "/joint_states" in one.topics
    with pytest.raises(ValueError):
        hum.with_cameras(4)


# ------------------------------------------------------------------- payload rings


@pytest.mark.parametrize("topic", get_profile("light").topics)
def test_ring_stamp_patch_roundtrip(topic):
    from rclpy.serialization import deserialize_message

    spec = get_profile("light").stream(topic)
    ring = build_ring(spec)
    stamp = 1_700_000_123 * 1_000_000_000 + 987_654_321
    data = ring.payload(len(ring) + 1, stamp)  # the index wraps around the ring
    assert isinstance(data, bytes)
    assert data[:2] == b"\x00\x01"  # CDR little endian
    assert read_stamp_ns(data) == stamp
    msg = deserialize_message(data, message_class(spec.type_name))
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_123, 987_654_321)
    assert msg.header.frame_id == spec.frame_id
    # A later stamp patches the same buffer in place.
    assert read_stamp_ns(ring.payload(1, stamp + 5)) == stamp + 5
    assert STAMP_OFFSET == 4


def test_frames_distinct_and_moving():
    prof = get_profile("light")
    a, b = (render_frames(prof.stream(f"/camera/{c}/image_raw")) for c in ("head", "left_wrist"))
    assert len(a) == 30 and a[0].shape == (240, 320, 3) and a[0].dtype.name == "uint8"
    assert (a[0] != a[1]).mean() > 0.3  # moving pattern + per-frame noise
    assert abs(float(a[0].mean()) - float(b[0].mean())) > 3 or (a[0] != b[0]).mean() > 0.9


def test_joint_cycle_is_smooth_and_named():
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import JointState

    spec = get_profile("humanoid").stream("/joint_states")
    ring = build_ring(spec, verify=False)
    assert len(ring) == 1000  # 2 s at 500 Hz
    first = deserialize_message(ring.payload(0, 1), JointState)
    last = deserialize_message(ring.payload(len(ring) - 1, 1), JointState)
    assert list(first.name) == list(HUMANOID_JOINT_NAMES)
    for j in range(28):
        # One sample apart across the wrap: no jump.
        assert abs(first.position[j] - last.position[j]) < 0.05
        assert abs(first.position[j]) < 3.2


# ---------------------------------------------------------------------- end to end


def _spin_until(executor, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    # Drain what is still queued.
    drain = time.monotonic() + 0.3
    while time.monotonic() < drain:
        executor.spin_once(timeout_sec=0.02)


def test_sim_light_end_to_end():
    import rclpy
    from geometry_msgs.msg import WrenchStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from xsquare_logger.ros.sim_node import qos_for

    prof = get_profile("light")
    domain = unique_domain_id()
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("test_sim_listener", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    received: dict[str, list] = {t: [] for t in prof.topics}
    for spec in prof.streams:
        node.create_subscription(
            message_class(spec.type_name),
            spec.topic,
            lambda msg, t=spec.topic: received[t].append(msg),
            qos_for(spec.qos),
        )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xsquare_logger.ros.sim_node",
            "--profile",
            "light",
            "--duration",
            "3",
            "--stats",
            # Discovery on a loaded 2-core box can take longer than the 3 s run:
            # start the clock once our subscriber is matched (as the benchmarks do).
            "--wait-subscribers",
            "10",
        ],
        cwd=REPO,
        env=sim_env(domain),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _spin_until(executor, proc, timeout=15.0)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert set(stats) >= {"published", "skipped", "duration_s"}
    assert abs(stats["duration_s"] - 3.0) < 0.5
    types = {
        "sensor_msgs/msg/Image": Image,
        "sensor_msgs/msg/CameraInfo": CameraInfo,
        "sensor_msgs/msg/JointState": JointState,
        "geometry_msgs/msg/WrenchStamped": WrenchStamped,
    }
    for spec in prof.streams:
        msgs = received[spec.topic]
        published = stats["published"][spec.topic]
        # Every tick is either published or skipped (a late, overloaded box).
        nominal = spec.rate_hz * stats["duration_s"]
        assert abs(published + stats["skipped"][spec.topic] - nominal) <= 2 + 0.02 * nominal
        assert len(msgs) >= 3, f"{spec.topic}: only {len(msgs)} messages"
        assert published >= len(msgs), spec.topic
        assert all(type(m) is types[spec.type_name] for m in msgs), spec.topic
        stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs]
        assert all(b > a for a, b in itertools.pairwise(stamps)), spec.topic
        assert abs(stamps[-1] / 1e9 - time.time()) < 60  # system clock stamps
        assert all(m.header.frame_id == spec.frame_id for m in msgs), spec.topic

        if isinstance(spec, ImageStream):
            for m in msgs:
                assert (m.width, m.height, m.encoding) == (320, 240, "rgb8")
                assert m.step == 960 and len(m.data) == 960 * 240 and m.is_bigendian == 0
            # Frames cycle through the ring: consecutive frames differ.
            assert bytes(msgs[0].data) != bytes(msgs[1].data)
        elif isinstance(spec, CameraInfoStream):
            m = msgs[0]
            assert (m.width, m.height) == (320, 240)
            assert m.distortion_model == "plumb_bob" and len(m.d) == 5
            assert m.k[0] > 0 and m.k[8] == 1.0 and m.p[10] == 1.0
            # camera_info carries the stamp of its image.
            image_topic = spec.topic.replace("camera_info", "image_raw")
            image_stamps = {
                (i.header.stamp.sec, i.header.stamp.nanosec) for i in received[image_topic]
            }
            info_stamps = {(i.header.stamp.sec, i.header.stamp.nanosec) for i in msgs}
            assert image_stamps & info_stamps
        elif isinstance(spec, JointStateStream):
            for m in msgs:
                assert list(m.name) == list(spec.joint_names)
                assert len(m.position) == len(m.velocity) == len(m.effort) == len(m.name)
        elif isinstance(spec, WrenchStream):
            assert all(-40 < m.wrench.force.z < 0 for m in msgs)

    # Joint states and wrenches of one control tick share a stamp.
    def stamps(topic):
        return {(m.header.stamp.sec, m.header.stamp.nanosec) for m in received[topic]}

    left, right = stamps("/gripper/left/wrench"), stamps("/gripper/right/wrench")
    assert stamps("/joint_states") & left & right


def test_sim_sigterm_clean_exit():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xsquare_logger.ros.sim_node",
            "--profile",
            "light",
            "--cameras",
            "1",
            "--stats",
        ],
        cwd=REPO,
        env=sim_env(unique_domain_id(1)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait for "publishing" on stderr, then let it run a moment.
        line = ""
        deadline = time.monotonic() + 10
        while "publishing" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
        assert "publishing" in line, line
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert set(stats["published"]) == {
        "/camera/head/image_raw",
        "/camera/head/camera_info",
        "/joint_states",
        "/leader/joint_states",
        "/gripper/left/wrench",
        "/gripper/right/wrench",
    }
    assert stats["published"]["/joint_states"] > 10
    assert 0.3 < stats["duration_s"] < 5


# ------------------------------------------------- sim session through the recorder


def _record_sim(procs, env, out: Path, *sim_args: str):
    """A short real session: `xsq record -a`, then the light sim (waiting for the recorder's
    subscriptions), then stop; returns the report's skew verdicts per camera."""
    from xsquare_logger.tools.report import Thresholds, analyze, evaluate, scan_session
    from xsquare_logger.tools.tasks import load_session

    rec = procs(["-m", "xsquare_logger.cli.main", "record", "-a", "-o", str(out)], env,
                "recorder")
    sim = procs(["-m", "xsquare_logger.ros.sim_node", "--profile", "light", "--duration", "3",
                 "--wait-subscribers", "30", *sim_args], env, "sim")
    assert sim.wait(90) == 0, sim.stderr()
    assert rec.stop() == 0, rec.stderr()
    numbers = analyze(scan_session(load_session(out)))
    checks = evaluate(numbers, Thresholds())["checks"]
    return numbers["skew_ms"], {c["subject"]: c for c in checks if c["check"] == "camera_skew"}


@pytest.mark.ros
def test_default_sim_cameras_are_synced_and_pass_the_skew_check(procs, env, tmp_path):
    skew, verdicts = _record_sim(procs, env, tmp_path / "synced")
    assert set(verdicts) == {"left_wrist", "right_wrist"}
    assert all(v["ok"] for v in verdicts.values()), (skew, verdicts)
    assert skew["frame_period_ms"] == pytest.approx(1000 / 15, rel=0.05)


@pytest.mark.ros
def test_staggered_sim_cameras_fail_the_skew_check(procs, env, tmp_path):
    skew, verdicts = _record_sim(procs, env, tmp_path / "staggered", "--camera-sync",
                                 "staggered")
    # Ticks 1/3 of a period apart: every other camera is a third of a frame off.
    assert set(verdicts) == {"left_wrist", "right_wrist"}
    assert not any(v["ok"] for v in verdicts.values()), (skew, verdicts)
    for camera in verdicts:
        assert skew["cameras"][camera]["p50"] / skew["frame_period_ms"] == pytest.approx(
            1 / 3, abs=0.05
        )
