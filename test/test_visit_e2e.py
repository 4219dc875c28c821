"""A whole home visit: tablet (real ZeroMQ + CURVE) -> `xsq run` (real rclpy recorder) -> bag.

Checked with readers we did not write: the official `mcap` reader (messages and
metadata records), `mcap_ros2` decoding, `rosbags`, `pymcap-cli doctor`.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import pymcap_doctor
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from support import known

from xsquare_logger.link.keys import KeyStore
from xsquare_logger.tablet.client import StatusSubscriber, TabletClient, TabletError

pytestmark = pytest.mark.ros


def _start_stack(procs, env, tmp_path: Path):
    keys = tmp_path / "keys"
    store = KeyStore(keys)
    store.init_robot()
    store.add_tablet("tab1")
    data = tmp_path / "data"
    rec = procs(
        [
            "-m", "xsquare_logger.cli.main", "run",
            "--robot-id", "tbot",
            "--data-root", str(data),
            "--set", f"tablet.keys_dir={keys}",
            "--set", "tablet.command_endpoint=tcp://127.0.0.1:0",
            "--set", "tablet.status_endpoint=tcp://127.0.0.1:0",
        ],
        env,
        "stack",
    )
    rec.wait_for("robot stack ready")
    m = re.search(r"commands on (tcp://\S+), status on (tcp://\S+)", rec.stderr())
    assert m, rec.stderr()
    client = TabletClient.from_keys_dir(m.group(1), keys, "tab1", timeout=5.0)
    status = StatusSubscriber.from_key_files(
        m.group(2), store.robot_public_file, store.issued_dir / "tab1.key_secret"
    )
    return rec, client, status, data


def _decode(session: Path, topic: str) -> list[tuple[int, object]]:
    out = []
    for f in sorted(session.glob("*.mcap")):
        with open(f, "rb") as fh:
            reader = make_reader(fh, decoder_factories=[DecoderFactory()])
            for _s, _channel, message, msg in reader.iter_decoded_messages(topics=[topic]):
                out.append((message.log_time, msg))
    return out


def test_full_visit_lands_in_the_bag(procs, env, tmp_path: Path) -> None:
    stack, client, status, data = _start_stack(procs, env, tmp_path)
    try:
        hello = client.hello()
        assert hello["robot_id"] == "tbot" and hello["state"] == "idle"
        with pytest.raises(TabletError) as err:
            client.start_task("fold towel")  # no visit yet
        assert err.value.code == "INVALID_STATE"

        session_id = client.start_visit("visit-42", "op-7", True, site="home 3")["session_id"]
        pub = procs([*["-m", "support.known_publisher"], f"{known.JOINT_TOPIC}=100@100"],
                    env, "publisher")
        events = []
        plan = [("fold towel", "success"), ("arrange shoes", "failure"), ("wipe table", "aborted")]
        for i, (task, outcome) in enumerate(plan):
            started = client.start_task(task)
            assert started["episode_index"] == i
            events.append(started["event_id"])
            if i == 2:
                events.append(client.mark("spill", note="water on floor")["event_id"])
            events.append(client.end_task(outcome)["event_id"])
            time.sleep(0.2)
        assert pub.wait(60) == 0
        live = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            live = status.recv(timeout=2.0)
            if live and live.get("session_id") == session_id and live.get("messages_written"):
                break
        assert live and live["state"] == "recording" and live["messages_written"] > 0
        stopped = client.stop_visit()
        assert stopped["session_id"] == session_id
    finally:
        client.close()
        status.close()
        assert stack.stop() == 0, stack.stderr()

    session = data / session_id
    manifest = json.loads((session / "session.json").read_text())
    assert manifest["state"] == "closed"
    assert manifest["visit"]["visit_id"] == "visit-42" and manifest["visit"]["consent"] is True
    tasks = manifest["tasks"]
    assert [(t["episode_index"], t["task"], t["outcome"]) for t in tasks] == [
        (0, "fold towel", "success"), (1, "arrange shoes", "failure"), (2, "wipe table", "aborted")
    ]
    assert all(t["start_ns"] < t["end_ns"] for t in tasks)
    assert manifest["marks"][0]["label"] == "spill" and manifest["marks"][0]["episode_index"] == 2
    assert manifest["topics"][known.JOINT_TOPIC]["written"] == 100

    # TaskEvents in the bag, in order, stamped with the robot's receive time.
    recorded = _decode(session, "/xsquare/task_events")
    kinds = [m.kind for _t, m in recorded]
    assert kinds == [0, 2, 3, 2, 3, 2, 4, 3, 1]
    assert [m.event_id for _t, m in recorded][1:-1] == events
    for log_time, m in recorded:
        assert log_time == m.stamp.sec * 10**9 + m.stamp.nanosec
    ends = [m for _t, m in recorded if m.kind == 3]
    assert [m.outcome for m in ends] == ["success", "failure", "aborted"]
    assert tasks[0]["start_ns"] == recorded[1][0] and tasks[0]["end_ns"] == recorded[2][0]

    # The current task as a plain string, for Foxglove's State Transitions panel.
    labels = [m.data for _t, m in _decode(session, "/xsquare/current_task")]
    assert labels == ["idle", "#0 fold towel", "idle", "#1 arrange shoes", "idle",
                      "#2 wipe table", "idle", "idle"]

    # Episodes in an MCAP metadata record: found without scanning messages.
    last = sorted(session.glob("*.mcap"))[-1]
    with open(last, "rb") as fh:
        records = {m.name: m.metadata for m in make_reader(fh).iter_metadata()}
    episodes = json.loads(records["xsquare.tasks"]["tasks"])
    assert [(e["episode_index"], e["outcome"]) for e in episodes] == [
        (0, "success"), (1, "failure"), (2, "aborted")
    ]
    assert pymcap_doctor(last).returncode == 0

    from rosbags.rosbag2 import Reader

    with Reader(session) as bag:
        assert {c.topic for c in bag.connections} >= {"/xsquare/task_events", known.JOINT_TOPIC}
