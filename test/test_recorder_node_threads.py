"""The recorder node while its executor spins: sessions started and stopped from other
threads (the tablet link, auto-stop) under traffic, and publishers whose QoS the
subscription cannot match. Real rclpy pub/sub in one process (own context and domain)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from support.waiting import wait_until

from xsquare_logger.bag.qos import make_qos, qos_mismatch
from xsquare_logger.config.model import LoggerConfig, apply_overrides

TOPIC = "/churn/joint_states"


@pytest.fixture
def ros(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE"):
        monkeypatch.setenv(key, env[key])
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        rclpy.shutdown(context=ctx)


def _config(tmp_path: Path) -> LoggerConfig:
    return apply_overrides(
        LoggerConfig(),
        {"data_root": str(tmp_path / "data"), "recording.disk_reserve_bytes": 0,
         "recording.discovery_interval": 0.05, "recording.topics": [TOPIC]},
        "test",
    )


def _received(rec: Any) -> int:
    return sum(t.received for t in rec.snapshot().topics if t.topic == TOPIC)


class Spinner:
    """spin_until_stopped on a thread of its own, keeping what it raised."""

    def __init__(self, node: Any) -> None:
        from xsquare_logger.ros.recorder_node import spin_until_stopped

        self.stop = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                spin_until_stopped(node, self.stop)
            except BaseException as exc:  # reported by the test
                self.error = exc

        self.thread = threading.Thread(target=run, name="test-spin")
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()


def _publish(node: Any, stop: threading.Event, qos: QoSProfile) -> threading.Thread:
    from sensor_msgs.msg import JointState

    pub = node.create_publisher(JointState, TOPIC, qos)

    def run() -> None:
        msg = JointState(name=["j"], position=[0.0])
        while not stop.is_set():
            pub.publish(msg)
            time.sleep(0.0005)

    thread = threading.Thread(target=run, name="test-pub")
    thread.start()
    return thread


def _churn(node: Any, stop: threading.Event) -> None:
    from sensor_msgs.msg import JointState

    while not stop.is_set():
        subs = [node.create_subscription(JointState, TOPIC, lambda _m: None, 10)
                for _ in range(4)]
        time.sleep(0.002)
        for sub in subs:
            node.destroy_subscription(sub)


def test_sessions_stopped_from_another_thread_keep_the_executor_alive(
    ros: Any, tmp_path: Path
) -> None:
    """The tablet stops a session on its own thread while the executor is mid-dispatch;
    the executor must neither die nor stop recording the next session (CI saw the robot
    stack exit with InvalidHandle from rclpy's wait loop)."""
    from xsquare_logger.ros.recorder_node import RecorderNode

    node = RecorderNode(_config(tmp_path), context=ros)
    source = rclpy.create_node("churn_source", context=ros)
    stop_pub = threading.Event()
    publisher = _publish(source, stop_pub, QoSProfile(depth=10))
    spinner = Spinner(node)
    # Beside the sessions, another thread keeps making and destroying subscriptions with
    # rclpy's default event handlers on the node: the tightest form of the race, which
    # without the executor guard killed the spin loop within a second.
    stop_churn = threading.Event()
    churn = threading.Thread(target=_churn, args=(node, stop_churn), name="test-churn")
    churn.start()
    written = []
    try:
        for n in range(12):
            rec = node.start_session(tmp_path / f"s{n}")
            wait_until(lambda r=rec: _received(r) >= 20, f"session {n} to record {TOPIC}")
            assert spinner.error is None, repr(spinner.error)
            manifest = node.stop_session("stopped by operator")
            assert manifest is not None
            written.append(manifest.topics[TOPIC].written)
    finally:
        stop_pub.set()
        stop_churn.set()
        publisher.join()
        churn.join()
        spinner.join()
        node.destroy_node()
        source.destroy_node()
    assert spinner.error is None, repr(spinner.error)
    assert len(written) == 12 and min(written) >= 20, written


def test_a_publisher_the_subscription_cannot_match_is_warned_about(
    ros: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from xsquare_logger.ros.recorder_node import RecorderNode

    node = RecorderNode(_config(tmp_path), context=ros)
    source = rclpy.create_node("qos_source", context=ros)
    stop_pub = threading.Event()
    reliable = _publish(source, stop_pub, QoSProfile(depth=10))  # rclpy default: reliable
    spinner = Spinner(node)
    late: threading.Thread | None = None
    try:
        rec = node.start_session(tmp_path / "s")
        wait_until(lambda: TOPIC in node.subscriptions_by_topic, "the recorder to subscribe")
        assert "not recording every publisher" not in capfd.readouterr().err
        late = _publish(
            source, stop_pub, QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        seen = ""

        def warned() -> bool:
            nonlocal seen
            seen += capfd.readouterr().err
            return "not recording every publisher of " + TOPIC in seen

        wait_until(warned, "the QoS mismatch warning")
        assert "best_effort publisher joined" in seen
        assert _received(rec) > 0  # the reliable one still records
        node.stop_session("stopped")
    finally:
        stop_pub.set()
        reliable.join()
        if late is not None:
            late.join()
        spinner.join()
        node.destroy_node()
        source.destroy_node()
    assert spinner.error is None, repr(spinner.error)
    # once per topic, not once per discovery tick
    assert seen.count("not recording every publisher") == 1, seen


@pytest.mark.parametrize(
    ("requested", "offered", "why"),
    [
        (("reliable", "volatile"), [("reliable", "volatile")], None),
        (("best_effort", "volatile"), [("reliable", "transient_local"),
                                       ("best_effort", "volatile")], None),
        (("reliable", "volatile"), [("reliable", "volatile"), ("best_effort", "volatile")],
         "best_effort"),
        (("best_effort", "transient_local"), [("reliable", "volatile")], "volatile"),
    ],
)
def test_qos_mismatch(
    requested: tuple[str, str], offered: list[tuple[str, str]], why: str | None
) -> None:
    got = qos_mismatch(make_qos(*requested), [make_qos(*o) for o in offered])
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got
