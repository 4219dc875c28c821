"""Issue 11 through the real robot stack: tablet (ZeroMQ + CURVE) -> `xsq run` (rclpy
recorder) -> bag and session.json, read back with the official `mcap` reader.

Required visit fields refused by name, the re-record flow (task.end, task.discard,
task.start of the same task), discard idempotency, pre/post-roll windows beside the
taps, the discarded flag in session.json and the `xsquare.tasks` metadata record, and
the privacy pause as an event in the bag, and the verdict of a recorder that sees none of
its expected streams (no sim here: every one is missing).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from xsquare_logger.link.keys import KeyStore
from xsquare_logger.tablet.client import StatusSubscriber, TabletClient, TabletError

pytestmark = pytest.mark.ros


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "ROS_DOMAIN_ID": "61"}  # this suite's own DDS domain


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
            "--set", 'visit.required_fields=["site", "robot_serial", "calibration_version"]',
            "--set", 'visit.metadata={"robot_serial": "H1-0042"}',
            "--set", "visit.pre_roll_s=0.5",
            "--set", "visit.post_roll_s=0.25",
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


def _events(session: Path) -> list[tuple[int, object]]:
    out = []
    for f in sorted(session.glob("*.mcap")):
        with open(f, "rb") as fh:
            reader = make_reader(fh, decoder_factories=[DecoderFactory()])
            for _s, _c, message, msg in reader.iter_decoded_messages(
                topics=["/xsquare/task_events"]
            ):
                out.append((message.log_time, msg))
    return out


def test_rerecord_flow_and_required_fields(procs, env, tmp_path: Path) -> None:
    stack, client, status, data = _start_stack(procs, env, tmp_path)
    try:
        hello = client.hello()
        assert hello["required_fields"] == ["site", "calibration_version"]
        with pytest.raises(TabletError) as err:
            client.start_visit("visit-9", "ana", True)
        assert err.value.code == "MISSING_FIELDS"
        assert err.value.missing == ["site", "calibration_version"]
        assert client.hello()["state"] == "idle"  # refused: nothing started
        sid = client.start_visit("visit-9", "ana", True, site="flat 3",
                                 metadata={"calibration_version": "cal-7"})["session_id"]
        client.start_task("fold towel", instruction="fold the blue towel")
        ended = client.end_task("success")
        # Nothing publishes here: every expected stream is missing, and the verdict says so.
        assert ended["quality"]["verdict"] == "fail"
        assert ended["quality"]["reasons"][0] == (
            "head camera missing: /camera/head/image_raw never appeared")
        first = client.request("task.discard", {"episode_index": 0}, request_id="discard-1")
        assert client.request("task.discard", {"episode_index": 0},
                              request_id="discard-1") == first
        assert client.discard_task()["already_discarded"] is True
        again = client.start_task(first["task"], first["instruction"])
        assert again["episode_index"] == 1
        assert client.privacy_pause("visitor")["changed"] is True
        assert client.privacy_pause()["changed"] is False
        assert client.status()["privacy_paused"] is True
        assert client.privacy_resume()["changed"] is True
        client.end_task("success")
        live = client.status()
        assert [e["discarded"] for e in live["recent_episodes"]] == [True, False]
        assert {s["name"]: s["state"] for s in live["streams"]}["joints"] == "missing"
        client.stop_visit()
    finally:
        client.close()
        status.close()
        assert stack.stop() == 0, stack.stderr()

    session = data / sid
    manifest = json.loads((session / "session.json").read_text())
    assert manifest["visit"]["metadata"] == {"robot_serial": "H1-0042",
                                             "calibration_version": "cal-7"}
    tasks = manifest["tasks"]
    assert [(t["episode_index"], t["task"], t["discarded"]) for t in tasks] == [
        (0, "fold towel", True), (1, "fold towel", False)]
    assert tasks[1]["instruction"] == "fold the blue towel"
    recorded = _events(session)
    session_start = recorded[0][0]
    for t in tasks:
        # The taps stay as tapped; the window adds the configured margins (the pre-roll
        # never before the session's start).
        assert t["window_end_ns"] == t["end_ns"] + 250_000_000
        assert t["window_start_ns"] == max(session_start, t["start_ns"] - 500_000_000)
    kinds = [m.kind for _t, m in recorded]
    assert kinds == [0, 2, 3, 5, 2, 6, 7, 3, 1]
    discard = recorded[3][1]
    assert discard.episode_index == 0 and discard.event_id == first["event_id"]
    assert discard.event_id in tasks[0]["event_ids"]
    last = sorted(session.glob("*.mcap"))[-1]
    with open(last, "rb") as fh:
        records = {m.name: m.metadata for m in make_reader(fh).iter_metadata()}
    episodes = json.loads(records["xsquare.tasks"]["tasks"])
    assert [(e["episode_index"], e["discarded"]) for e in episodes] == [(0, True), (1, False)]
    assert all("window_start_ns" in e and "quality" in e for e in episodes)
