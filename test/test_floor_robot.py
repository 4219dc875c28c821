"""The robot side of the floor: per-episode losses, and `xsq run` reporting to a floor.

The episode-loss test drives the real recorder core with the callbacks rclpy calls
(as test_recorder_core does), so transport gaps land exactly inside one episode.
The stack tests run real `xsq run --sim` processes (rclpy, ZeroMQ CURVE tablet link)
against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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


# -- `xsq run` with a floor -------------------------------------------------------------------

TOKEN = "robot-tok-9f8e7d6c5b4a39281706"


def _stack(procs, env, tmp_path: Path, floor_url: str, *extra: str,  # type: ignore[no-untyped-def]
           token: str = TOKEN):
    import re

    from xsquare_logger.link.keys import KeyStore
    from xsquare_logger.tablet.client import TabletClient

    env = dict(env, ROS_DOMAIN_ID="63", XSQ_FLOOR_TOKEN=token)
    keys = tmp_path / "keys"
    store = KeyStore(keys)
    store.init_robot()
    store.add_tablet("tab1")
    data = tmp_path / "data"
    net = tmp_path / "sys" / "class" / "net" / "wlan0"  # the upload gate's interface
    (net / "wireless").mkdir(parents=True)
    (net / "operstate").write_text("up\n")
    stack = procs(
        [
            "-m", "xsquare_logger.cli.main", "-v", "run",
            "--robot-id", "fbot",
            "--data-root", str(data),
            "--set", f"tablet.keys_dir={keys}",
            "--set", "tablet.command_endpoint=tcp://127.0.0.1:0",
            "--set", "tablet.status_endpoint=tcp://127.0.0.1:0",
            "--set", f"floor.url={floor_url}",
            "--set", "floor.heartbeat_interval=0.2",
            "--set", f"upload.destination=file://{tmp_path / 'depot'}",
            "--set", f"upload.gate.sysfs_root={tmp_path / 'sys'}",
            "--set", "upload.scan_interval=0.5",
            "--set", "upload.retention.delete_after=0",
            "--set", "upload.retention.reverify_before_delete=false",
            *extra,
        ],
        env,
        "stack",
    )
    stack.wait_for("robot stack ready")
    m = re.search(r"commands on (tcp://\S+), status on", stack.stderr())
    assert m, stack.stderr()
    client = TabletClient.from_keys_dir(m.group(1), keys, "tab1", timeout=5.0)
    return stack, client, data, env


def _visit(procs, env, client) -> str:  # type: ignore[no-untyped-def]
    session_id = client.start_visit("visit-1", "op-12", True, site="floor A")["session_id"]
    client.start_task("fold towel")
    pub = procs(["-m", "support.known_publisher", f"{known.JOINT_TOPIC}=100@100"], env, "pub")
    assert pub.wait(60) == 0
    return session_id


def test_xsq_run_reports_heartbeats_and_sessions_to_the_floor(procs, env, tmp_path: Path) -> None:
    from test_floor_reporter import Floor, wait_for

    from xsquare_logger.floor.protocol import Heartbeat, SessionReport

    floor = Floor()
    try:
        stack, client, data, env = _stack(procs, env, tmp_path, floor.url)
        try:
            session_id = _visit(procs, env, client)

            def recording_beat() -> Heartbeat | None:
                for r in reversed(floor.heartbeats()):
                    hb = Heartbeat.model_validate(r["body"])
                    if hb.task and hb.streams.get(known.JOINT_TOPIC, None) and \
                            hb.streams[known.JOINT_TOPIC].received == 100:
                        return hb
                return None

            wait_for(recording_beat, "a heartbeat of the open episode")
            hb = recording_beat()
            assert hb is not None
            assert (hb.robot_id, hb.state, hb.session_id) == ("fbot", "recording", session_id)
            assert (hb.task, hb.episode_index) == ("fold towel", 0)
            assert hb.elapsed_sec > 0 and hb.disk_free_bytes > 0
            assert hb.disk_reserve_bytes == LoggerConfig().recording.disk_reserve_bytes
            assert hb.config_digest.startswith("sha256:") and hb.software_version
            client.end_task("success")
            client.stop_visit()
            wait_for(lambda: len(floor.sessions()) >= 2, "closed and verified reports", 60)
            wait_for(lambda: any(Heartbeat.model_validate(r["body"]).state == "idle"
                                 for r in floor.heartbeats()[-3:]), "an idle heartbeat")
        finally:
            client.close()
            assert stack.stop() == 0, stack.stderr()
    finally:
        floor.stop()
    reports = [SessionReport.model_validate(r["body"]) for r in floor.sessions()]
    assert [r.upload_state for r in reports] == ["pending", "verified"]
    for r in reports:
        assert r.manifest.session_id == session_id and r.manifest.state == "closed"
        assert [(t.task, t.outcome, t.lost) for t in r.manifest.tasks] == [
            ("fold towel", "success", {})]
        assert r.bytes > 0
    assert reports[1].remote.startswith("file://") and session_id in reports[1].remote
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in floor.requests)
    assert TOKEN not in stack.stderr() + stack.stdout()  # debug logging on (-v)
    assert list((data / ".floor-outbox").iterdir()) == []


def test_xsq_run_with_a_dead_floor_records_as_before(procs, env, tmp_path: Path) -> None:
    from support.localserver import free_port

    stack, client, data, env = _stack(
        procs, env, tmp_path, f"http://127.0.0.1:{free_port()}", "--set", "upload.enabled=false"
    )
    try:
        session_id = _visit(procs, env, client)
        client.end_task("success")
        client.stop_visit()
    finally:
        client.close()
        assert stack.stop(timeout=30) == 0, stack.stderr()
    manifest = read_manifest(data / session_id)
    assert manifest.state == "closed"
    assert manifest.topics[known.JOINT_TOPIC].written == 100
    assert [(t.task, t.outcome) for t in manifest.tasks] == [("fold towel", "success")]
    assert "does not answer" in stack.stderr()  # said once, not per retry
    assert stack.stderr().count("does not answer") == 1
    # The closed session's report waits in the outbox for the floor.
    queued = list((data / ".floor-outbox").iterdir())
    assert [p.name.split("-", 1)[1] for p in queued] == [f"{session_id}-pending.json"]


def test_xsq_run_with_a_floor_but_no_token_refuses_to_start(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XSQ_FLOOR_TOKEN"}
    out = subprocess.run(
        [sys.executable, "-m", "xsquare_logger.cli.main", "run", "--data-root", str(tmp_path),
         "--set", "floor.url=http://127.0.0.1:9"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "xsq run: floor.url is set but no robot token: set floor.token_file or $XSQ_FLOOR_TOKEN"]


# -- against the real floor service (floor/api.py + catalog on SQLite) ----------------------


class FloorService:
    """The real service app (``create_app``) served by uvicorn on 127.0.0.1 in this process."""

    def __init__(self, tmp_path: Path) -> None:
        import threading

        import uvicorn
        from support.localserver import free_port

        from xsquare_logger.floor.api import create_app
        from xsquare_logger.floor.catalog import Catalog

        self.catalog = Catalog(f"sqlite:///{tmp_path / 'floor.db'}")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(create_app(self.catalog, dashboard=None), host="127.0.0.1",
                                port=port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        from test_floor_reporter import wait_for

        wait_for(lambda: self.server.started, "uvicorn started")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.catalog.close()


def _service(tmp_path: Path) -> FloorService:
    pytest.importorskip("xsquare_logger.floor.api", reason="floor service not installed")
    return FloorService(tmp_path)


def test_xsq_run_episodes_reach_the_real_floor_catalog(procs, env, tmp_path: Path) -> None:
    from test_floor_reporter import wait_for

    service = _service(tmp_path)
    try:
        token = service.catalog.add_robot("fbot")
        token_file = tmp_path / "floor-token"
        token_file.write_text(token + "\n")
        # The token from the file ($XSQ_FLOOR_TOKEN empty = not set).
        stack, client, data, env = _stack(procs, env, tmp_path, service.url,
                                          "--set", f"floor.token_file={token_file}", token="")
        try:
            session_id = _visit(procs, env, client)
            client.end_task("success")
            client.start_task("arrange shoes")
            client.end_task("failure")
            wait_for(lambda: (t := service.catalog.robot("fbot")) is not None
                     and t.last_heartbeat is not None
                     and t.last_heartbeat.session_id == session_id, "a recording heartbeat")
            client.stop_visit()

            def verified() -> bool:
                page = service.catalog.episodes()
                return len(page.items) == 2 and all(
                    e.upload_state == "verified" for e in page.items)

            wait_for(verified, "both episodes catalogued with the verified upload", 60)
        finally:
            client.close()
            assert stack.stop() == 0, stack.stderr()
        rows = service.catalog.episodes().items
        assert [(e.robot_id, e.session_id, e.episode_index, e.task, e.outcome, e.operator)
                for e in rows] == [
            ("fbot", session_id, 0, "fold towel", "success", "op-12"),
            ("fbot", session_id, 1, "arrange shoes", "failure", "op-12")]
        assert all(e.remote.startswith("file://") and e.end_ns for e in rows)
        assert [e.lost for e in rows] == [{}, {}]
        assert token not in stack.stderr() + stack.stdout()
        assert list((data / ".floor-outbox").iterdir()) == []
    finally:
        service.stop()


def test_a_revoked_robot_keeps_its_reports_until_a_new_token_is_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_floor_reporter import report, wait_for

    from xsquare_logger.config.floor import FloorConfig
    from xsquare_logger.floor.reporter import FloorReporter

    service = _service(tmp_path)
    try:
        token_file = tmp_path / "floor-token"
        token_file.write_text(service.catalog.add_robot("humanoid-07"))
        service.catalog.revoke_robot("humanoid-07")
        config = FloorConfig(url=service.url, token_file=token_file)
        rep = FloorReporter(config, "humanoid-07", tmp_path / "outbox",
                            backoff_initial=0.05, backoff_max=0.2)
        rep.start()
        try:
            rep.report(report("humanoid-07_s1"))
            wait_for(lambda: any("refused the robot token (401)" in r.getMessage()
                                 for r in caplog.records), "the 401 of the revoked token")
            assert len(rep.pending()) == 1
            assert service.catalog.session("humanoid-07_s1") is None
            token_file.write_text(service.catalog.add_robot("humanoid-07"))  # re-admitted
            wait_for(lambda: not rep.pending(), "the kept report delivered with the new token")
        finally:
            rep.stop()
        detail = service.catalog.session("humanoid-07_s1")
        assert detail is not None and detail.robot_id == "humanoid-07"
        assert [e.lost for e in detail.episode_rows] == [{"/camera/head/image_raw": 3}]
    finally:
        service.stop()
