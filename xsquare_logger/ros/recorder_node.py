"""Recorder node: the thin rclpy shell around :class:`~xsquare_logger.recording.Recorder`.

It only discovers topics, creates raw subscriptions with publisher-matching
QoS, publishes ``SessionStatus`` and maps ROS parameters onto the config.
"""

from __future__ import annotations

import importlib
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import rclpy
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import InvalidHandle
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import Subscription

from xsquare_logger.bag.qos import adapt_subscription, qos_mismatch
from xsquare_logger.bag.schema import SchemaNotFoundError
from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.live.server import LiveView
from xsquare_logger.recording.recorder import (
    INTERNAL_TOPICS,
    STATUS_TOPIC,
    Recorder,
    StatusSnapshot,
    make_session_id,
)
from xsquare_logger.recording.selection import TopicSelector
from xsquare_logger.ros.pump import PumpedGroup, SubscriptionPump
from xsquare_logger.ros.qos import qos_from_dict, qos_to_dict
from xsquare_logger.session.health import StreamHealth
from xsquare_logger.session.manifest import SessionManifest

__all__ = ["RecorderNode", "status_message"]

log = logging.getLogger("xsquare_logger.recorder_node")

_STATE = {"idle": 0, "recording": 1, "stopping": 2, "closed": 0, "error": 3}


def status_message(snap: StatusSnapshot) -> Any:
    """Build an ``xsquare_logger_msgs/SessionStatus`` from a snapshot."""
    from xsquare_logger_msgs.msg import SessionStatus, TopicStats

    msg = SessionStatus()
    msg.stamp.sec, msg.stamp.nanosec = divmod(snap.stamp_ns, 10**9)
    msg.state = _STATE.get(snap.state, 3)
    msg.session_id = snap.session_id
    msg.current_task = snap.current_task
    msg.episode_index = snap.episode_index
    msg.elapsed_sec = float(snap.elapsed_sec)
    msg.bytes_written = snap.bytes_written
    totals = snap.totals.to_dict()  # the one set of counters (session/counters.py)
    for key, value in totals.items():
        setattr(msg, f"messages_{key}", value)
    msg.disk_free_bytes = snap.disk_free_bytes
    msg.upload_backlog = snap.upload_backlog
    msg.topics = [TopicStats(topic=t.topic, **t.to_dict()) for t in snap.topics]
    msg.streams = [_stream_message(h) for h in snap.streams or ()]
    return msg


def _stream_message(h: StreamHealth) -> Any:
    from xsquare_logger_msgs.msg import StreamHealth as StreamHealthMsg

    def num(value: float | None) -> float:
        return math.nan if value is None else float(value)  # NaN: unmeasured (plots skip it)

    return StreamHealthMsg(
        name=h.name,
        topic=h.topic,
        kind=h.kind,
        state=h.state,
        rate_hz=num(h.rate_hz),
        nominal_hz=num(h.nominal_hz),
        lost=h.lost,
        last_seen_s=num(h.last_seen_s),
        paused=h.paused,
    )


def _status_qos() -> QoSProfile:
    return QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


class RecorderNode(Node):
    """Subscribes (raw) to the selected topics while a session records.

    Idle until :meth:`start_session`; subscriptions exist only during a session
    (an idle robot spends no CPU on camera traffic) and are destroyed at
    :meth:`stop_session`, so latched topics are replayed into every new session.
    """

    def __init__(
        self, config: LoggerConfig, node_name: str = "xsq_recorder", context: Any = None
    ) -> None:
        super().__init__(
            node_name,
            context=context,
            allow_undeclared_parameters=True,
            automatically_declare_parameters_from_overrides=True,
        )
        self.config = apply_overrides(config, self._config_overrides(), "ROS parameters")
        self.recorder: Recorder | None = None
        self.session_dir: Path | None = None
        self.auto_stop_reason: str | None = None
        self.auto_stopped = threading.Event()
        self.on_auto_stop: list[Callable[[str], None]] = []
        # Told of each new recorder before it starts (ros/services.py: file events).
        self.on_session_started: list[Callable[[Recorder], None]] = []
        self.on_session_closed: list[Callable[[SessionManifest], None]] = []
        self._lock = threading.RLock()
        self._status_pub = self.create_publisher(
            _msg_class("xsquare_logger_msgs/msg/SessionStatus"), STATUS_TOPIC, _status_qos()
        )
        self.selector = TopicSelector(self.config.recording, never=set(INTERNAL_TOPICS))
        self.subscriptions_by_topic: dict[str, Subscription] = {}
        # Recorded topics are taken on a receive thread of their own (ros/pump.py).
        self.pump = SubscriptionPump(self.context)
        self._pumped = PumpedGroup()
        self._warned: set[str] = set()
        self.create_timer(self.config.recording.discovery_interval, self.discover)
        self.live: LiveView | None = None
        if self.config.live.enabled:
            from xsquare_logger.bag.schema import ros2msg_schema

            self.live = LiveView(self.config.live, ros2msg_schema, name=self.config.robot_id)

    def destroy_node(self) -> None:
        self.pump.stop()
        if self.live is not None:
            self.live.close()
            self.live = None
        super().destroy_node()

    # -- session lifecycle ------------------------------------------------------------------
    def start_session(
        self,
        session_dir: Path | None = None,
        visit: dict[str, object] | None = None,
        task_topics: bool = False,
    ) -> Recorder:
        """Create the session directory, start the writer, subscribe. Raises on errors
        (existing directory, unwritable data_root) before anything is recorded."""
        with self._lock:
            if self.recorder is not None:
                raise RuntimeError(f"session {self.recorder.session_id} is already recording")
            cfg = self.config
            session_id = make_session_id(cfg.robot_id)
            if session_dir is None:
                session_dir = cfg.data_root / session_id
            else:
                session_id = session_dir.name
            self.auto_stop_reason = None
            self.auto_stopped.clear()
            recorder = Recorder(
                cfg,
                session_dir,
                session_id,
                status_encoder=lambda s: serialize_message(status_message(s)),
                on_status=self._publish_status,
                on_auto_stop=self._auto_stop,
                visit=visit,
                task_topics=task_topics,
                taps=[self.live] if self.live is not None else [],
            )
            self.recorder = recorder
            self.session_dir = session_dir
            for callback in self.on_session_started:
                callback(recorder)
            recorder.start()
            self.get_logger().info(f"recording session {session_id} into {session_dir}")
            self.discover()
            return recorder

    def stop_session(self, reason: str = "stopped") -> SessionManifest | None:
        """Unsubscribe, drain the queue, finalize every file. Blocks until written."""
        with self._lock:
            recorder = self.recorder
            if recorder is None:
                return None
            subs = list(self.subscriptions_by_topic.values())
            self.subscriptions_by_topic.clear()
            # The receive loop lets go of them first: no callback into this session after.
            self.pump.remove(subs, wait=True)
            for sub in subs:
                self.destroy_subscription(sub)
            manifest = recorder.stop(self.auto_stop_reason or reason)
            self.recorder = None
            for callback in self.on_session_closed:
                callback(manifest)
            self.get_logger().info(
                f"session {manifest.session_id} closed ({manifest.close_reason}); "
                f"{manifest.drops.get('lost', 0)} messages lost"
            )
            return manifest

    def _config_overrides(self) -> dict[str, Any]:
        # Parameters given at launch (e.g. `-p recording.max_bag_size:=1000000`)
        # override the YAML config with the same dotted names.
        return {
            name: p.value
            for name, p in self.get_parameters_by_prefix("").items()
            # rclpy declares its own (use_sim_time, start_type_description_service...).
            if name.split(".")[0] in LoggerConfig.model_fields and p.value is not None
        }

    def _publish_status(self, snap: StatusSnapshot) -> None:
        if rclpy.ok(context=self.context):
            self._status_pub.publish(status_message(snap))

    def _auto_stop(self, reason: str) -> None:
        self.auto_stop_reason = reason
        self.auto_stopped.set()
        for callback in self.on_auto_stop:
            callback(reason)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    def discover(self) -> None:
        """Subscribe to newly seen topics; refresh offered QoS of known ones."""
        with self._lock:
            recorder = self.recorder
            if recorder is None or self.auto_stopped.is_set():
                return
            for topic, types in self.get_topic_names_and_types():
                if not self.selector.wants(topic):
                    continue
                infos = self.get_publishers_info_by_topic(topic)
                offered = [qos_to_dict(i.qos_profile) for i in infos]
                sub = self.subscriptions_by_topic.get(topic)
                if sub is not None:
                    if offered:
                        recorder.update_qos(topic, offered)
                        self._warn_mismatch(topic, sub, offered)
                    continue
                if len(types) != 1:
                    self._warn_once(topic, f"not recording {topic}: it has several types {types}")
                    continue
                if not offered:
                    continue  # only subscribers so far: wait for a publisher to learn its QoS
                self._subscribe(recorder, topic, types[0], offered)

    def _warn_mismatch(
        self, topic: str, sub: Subscription[Any], offered: list[dict[str, Any]]
    ) -> None:
        # The subscription's QoS was chosen for the publishers seen when it was made; one
        # that joined later with weaker QoS is not matched and its messages never arrive.
        why = qos_mismatch(qos_to_dict(sub.qos_profile), offered)
        if why is not None:
            self._warn_once(
                f"qos:{topic}",
                f"not recording every publisher of {topic}: {why}; "
                "its messages are missed until the next session",
            )

    def _subscribe(
        self, recorder: Recorder, topic: str, type_name: str, offered: list[dict[str, Any]]
    ) -> None:
        try:
            msg_class = _msg_class(type_name)
            if recorder.has_topic(topic):
                callback = recorder.callback_for(topic)
            else:
                callback = recorder.add_topic(topic, type_name, offered)
        except (SchemaNotFoundError, ImportError, AttributeError, ValueError) as exc:
            self._warn_once(topic, f"not recording {topic} ({type_name}): {exc}")
            return
        qos = adapt_subscription(offered, self.config.recording.qos_depth)
        sub = self.create_subscription(
            msg_class,
            topic,
            callback,
            qos_from_dict(qos),
            callback_group=self._pumped,
            raw=True,
            # No per-subscription QoS event handlers: rclpy adds two by default (incompatible
            # QoS / type warnings), each a waitable of the executor, rebuilt into its wait
            # set on every spin (~15% of the executor thread at 3x720p30 raw, issue 12).
            # discover() warns about publishers with incompatible QoS from the graph instead.
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
        )
        self.pump.add(sub, callback)
        self.subscriptions_by_topic[topic] = sub
        self.get_logger().info(
            f"recording {topic} [{type_name}] ({qos['reliability']}, {qos['durability']})"
        )


def _msg_class(type_name: str) -> Any:
    """Import the Python class of ``pkg/msg/Type`` (rosidl_runtime_py is not on PyPI)."""
    parts = type_name.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"unsupported type name {type_name!r} (expected pkg/msg/Type)")
    module = importlib.import_module(f"{parts[0]}.msg")
    return getattr(module, parts[2])


#: GIL switch interval while a recorder spins (CPython's default is 5 ms). Why: the
#: executor thread holds the GIL ~2/3 of the time at 3x720p30 raw, and each time the
#: writer's I/O thread returns from a GIL-free write or compress it waits up to a whole
#: interval to get the GIL back, so with 5 ms it fell behind the cameras (py-spy, issue
#: 12). At 0.5 ms the threads hand over ten times as often, for a few % more switching.
RECORDER_SWITCH_INTERVAL: Final = 0.0005


def spin_until_stopped(node: RecorderNode, stop: threading.Event) -> None:
    """Spin on this thread until ``stop`` is set or the recorder stopped itself."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, RECORDER_SWITCH_INTERVAL))
    try:
        while not stop.is_set() and not node.auto_stopped.is_set():
            try:
                executor.spin_once(timeout_sec=0.1)
            except InvalidHandle:
                # A session stopped on another thread (tablet, auto-stop) destroyed a
                # subscription between the executor's wait and its dispatch. Readiness is
                # level-triggered in rcl, so the next wait sees whatever is still queued.
                continue
            if node.pump.error is not None:
                raise node.pump.error  # a recorder callback failed on the receive thread
    finally:
        sys.setswitchinterval(previous)
        executor.remove_node(node)
        executor.shutdown()


def install_stop_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def record(
    config: LoggerConfig,
    session_dir: Path | None,
    ros_args: Sequence[str] = (),
    *,
    start_paused: bool = False,
    setup: Callable[[RecorderNode], object] | None = None,
) -> int:
    """Run one recording until SIGINT/SIGTERM; print the session path. Returns exit code.

    ``setup`` is called with the node before the session starts (the CLI adds the
    services there); ``start_paused``: nothing is written until ``~/resume`` (rosbag2)."""
    stop = threading.Event()
    install_stop_signals(stop)
    rclpy.init(args=["xsq", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = RecorderNode(config)
        if setup is not None:
            setup(node)
        try:
            recorder = node.start_session(session_dir)
            if start_paused:
                # Stamp 0: before any message the session can receive.
                recorder.set_writing_paused(True, 0)
                node.get_logger().info("writing paused until ~/resume (--start-paused)")
            spin_until_stopped(node, stop)
            manifest = node.stop_session("stopped")
        finally:
            node.destroy_node()
        assert manifest is not None
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    drops = manifest.drops.get("lost", 0)
    print(f"session closed ({manifest.close_reason}); {drops} messages lost", file=sys.stderr)
    print(node.session_dir)
    if node.auto_stop_reason:
        print(f"recording ended early: {node.auto_stop_reason}", file=sys.stderr)
        return 3
    return 0
