"""`xsq run`: the robot stack in one process: recorder node (idle) + tablet bridge.

The tablet bridge drives sessions through :class:`RosSessionController`, which
implements the bridge's :class:`~xsquare_logger.session.events.SessionController`
over the recorder node: accepted events are published as ``TaskEvent`` on
``/xsquare/task_events`` (reliable, transient local) for any other node, written
into the bag by the recorder itself (exact receive-time stamps, never dropped),
and the current task goes out as a plain string for Foxglove's State Transitions.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rclpy.signals import SignalHandlerOptions

from xsquare_logger.config.model import LoggerConfig, config_digest
from xsquare_logger.floor.reporter import load_token
from xsquare_logger.link.control import CameraPreview
from xsquare_logger.recording.control import ControllerError, RecordingStatus
from xsquare_logger.recording.recorder import CURRENT_TASK_TOPIC, TASK_EVENTS_TOPIC
from xsquare_logger.ros.recorder_node import RecorderNode, install_stop_signals, spin_until_stopped
from xsquare_logger.session.events import EVENT_KINDS, TaskEventData, VisitInfo
from xsquare_logger.session.health import EpisodeQuality, EpisodeSpan, StreamHealth
from xsquare_logger.session.manifest import SessionManifest

if TYPE_CHECKING:
    from xsquare_logger.floor.protocol import Heartbeat
    from xsquare_logger.floor.reporter import FloorReporter
    from xsquare_logger.link.visit import VisitStateMachine
    from xsquare_logger.upload.uploader import Uploader

__all__ = ["RosSessionController", "run_stack", "start_floor_reporter"]

log = logging.getLogger("xsquare_logger.stack")

IDLE_TASK = "idle"


def _latched(depth: int) -> QoSProfile:
    return QoSProfile(
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def task_event_message(event: TaskEventData) -> Any:
    from xsquare_logger_msgs.msg import TaskEvent

    msg = TaskEvent()
    msg.stamp.sec, msg.stamp.nanosec = divmod(event.stamp_ns, 10**9)
    msg.session_id = event.session_id
    msg.event_id = event.event_id
    msg.kind = EVENT_KINDS[event.kind]
    msg.task = event.task
    msg.episode_index = event.episode_index
    msg.outcome = event.outcome
    msg.operator_name = event.operator
    msg.note = event.note
    msg.instruction = event.instruction
    if event.quality is not None:
        # Compact JSON, the same shape as the task.end reply's `quality`.
        msg.quality_json = json.dumps(event.quality.model_dump(mode="json"),
                                      separators=(",", ":"))
    return msg


def current_task_label(event: TaskEventData) -> str | None:
    """What Foxglove's State Transitions panel shows; None = unchanged by this event."""
    if event.kind == "task_start":
        return f"#{event.episode_index} {event.task}"
    if event.kind in ("task_end", "session_start", "session_end"):
        return IDLE_TASK
    return None


class RosSessionController:
    """SessionController over a :class:`RecorderNode` (thread-safe: the bridge thread calls)."""

    def __init__(self, node: RecorderNode) -> None:
        from std_msgs.msg import String

        from xsquare_logger_msgs.msg import TaskEvent

        self.node = node
        self._string = String
        self._event_pub = node.create_publisher(TaskEvent, TASK_EVENTS_TOPIC, _latched(100))
        self._task_pub = node.create_publisher(String, CURRENT_TASK_TOPIC, _latched(1))
        self.last_error = ""
        self.on_session_lost: list[Any] = []
        # Set by the stack when the uploader runs: sessions waiting to leave the robot.
        self.upload_backlog: Callable[[], int] = lambda: 0
        node.on_auto_stop.append(self._recorder_stopped_itself)

    def start_session(self, visit: VisitInfo, stamp_ns: int) -> str:
        try:
            recorder = self.node.start_session(visit=asdict(visit), task_topics=True)
        except Exception as exc:  # disk, permissions, existing dir: the operator must know
            self.last_error = str(exc)
            raise ControllerError(f"cannot start recording: {exc}") from exc
        self.last_error = ""
        return recorder.session_id

    def record_event(self, event: TaskEventData) -> None:
        msg = task_event_message(event)
        label = current_task_label(event)
        task_msg = self._string(data=label) if label is not None else None
        recorder = self.node.recorder
        if recorder is not None and recorder.session_id == event.session_id:
            recorder.record_event(
                event,
                serialize_message(msg),
                serialize_message(task_msg) if task_msg is not None else None,
            )
        self._event_pub.publish(msg)
        if task_msg is not None:
            self._task_pub.publish(task_msg)

    # Issue 11 capabilities (link/control.py): the recorder provides them; until it
    # does, privacy pause is refused, no verdict is computed, health is "unknown".
    def set_camera_paused(self, paused: bool, stamp_ns: int) -> None:
        recorder = self.node.recorder
        pause = getattr(recorder, "set_camera_paused", None)
        if recorder is None or pause is None:
            raise ControllerError("this recorder cannot pause the camera streams")
        try:
            pause(paused, stamp_ns)
        except Exception as exc:
            raise ControllerError(str(exc)) from exc

    def evaluate_episode(self, span: EpisodeSpan) -> EpisodeQuality | None:
        evaluate = getattr(self.node.recorder, "evaluate_episode", None)
        return None if evaluate is None else evaluate(span)

    def stream_health(self) -> list[StreamHealth] | None:
        # Measured now, not at the last status: a stall shows within a status period.
        recorder = self.node.recorder
        measure = getattr(recorder, "stream_health", None)
        return None if measure is None else measure()

    def camera_preview(self, topic: str) -> CameraPreview | None:
        recorder = self.node.recorder
        return None if recorder is None else recorder.preview(topic)

    def stop_session(self, stamp_ns: int) -> str:
        path = str(self.node.session_dir or "")
        manifest = self.node.stop_session("stopped by operator")
        if manifest is None:
            raise ControllerError("no session is recording")
        return path

    def _backlog(self) -> int:
        try:
            return int(self.upload_backlog())
        except Exception:  # the status must not fail because the upload queue is busy
            log.exception("upload backlog unavailable")
            return 0

    def _recorder_stopped_itself(self, reason: str) -> None:
        # Called on the writer thread: finalize from another thread, then tell the bridge.
        self.last_error = reason

        def finish() -> None:
            self.node.stop_session(reason)
            for callback in self.on_session_lost:
                callback(reason)

        threading.Thread(target=finish, name="xsq-auto-stop", daemon=True).start()

    def status(self) -> RecordingStatus:
        recorder = self.node.recorder
        root = self.node.config.data_root
        try:
            free = shutil.disk_usage(root if root.exists() else root.parent).free
        except OSError:
            free = 0
        if recorder is None:
            return RecordingStatus(
                recording=False,
                disk_free_bytes=free,
                last_error=self.last_error,
                upload_backlog=self._backlog(),
            )
        snap = recorder.last_status or recorder.snapshot()
        return RecordingStatus(
            recording=True,
            session_id=snap.session_id,
            elapsed_sec=snap.elapsed_sec,
            bytes_written=snap.bytes_written,
            messages_written=snap.totals.written,
            messages_lost=snap.totals.lost,
            disk_free_bytes=snap.disk_free_bytes,
            upload_backlog=self._backlog(),
            topics={t.topic: t.to_dict() for t in snap.topics},
            last_error=self.last_error,
        )


def start_floor_reporter(
    node: RecorderNode,
    controller: RosSessionController,
    machine: VisitStateMachine,
    uploader: Uploader | None,
    token: str,
) -> FloorReporter:
    """Heartbeats from the stack's state; a report when a session closes and when its
    upload is verified. The hooks only write to the outbox: nothing waits on the floor."""
    from xsquare_logger.floor.reporter import FloorReporter, heartbeat_from_status, outbox_dir

    cfg = node.config
    digest = config_digest(cfg)

    def heartbeat() -> Heartbeat:
        return heartbeat_from_status(
            cfg.robot_id,
            controller.status(),
            machine.open_episode(),
            disk_reserve_bytes=cfg.recording.disk_reserve_bytes,
            config_digest=digest,
            backlog=uploader.backlog() if uploader is not None else None,
            last_upload_error=uploader.last_error() if uploader is not None else "",
        )

    reporter = FloorReporter(
        cfg.floor,
        cfg.robot_id,
        outbox_dir(cfg.floor, cfg.data_root),
        heartbeat,
        token=token,
        reload_token=True,
    )

    def closed(manifest: SessionManifest) -> None:
        directory = node.session_dir or cfg.data_root / manifest.session_id
        reporter.report_session(directory, "pending", manifest=manifest)

    node.on_session_closed.append(closed)
    if uploader is not None:
        # Runs right after verification, before retention may delete the directory.
        uploader.on_verified.append(
            lambda _sid, directory, remote: reporter.report_session(directory, "verified", remote)
        )
    reporter.start()
    return reporter


def run_stack(
    config: LoggerConfig,
    insecure: bool,
    ros_args: Sequence[str] = (),
    *,
    tablet: bool = True,
    upload: bool = True,
) -> int:
    """Run recorder + tablet bridge until SIGINT/SIGTERM; sessions come from the tablet
    or the ROS services (ros/services.py). ``tablet``/``upload`` False: the recorder
    process of the separate-node form (`xsq node recorder`), bridge and uploader apart."""
    from xsquare_logger.link.server import TabletServer
    from xsquare_logger.link.visit import VisitStateMachine
    from xsquare_logger.ros.services import SessionServices

    # A floor configured without a usable token fails here, before anything starts.
    token = load_token(config.floor) if config.floor.url else ""
    stop = threading.Event()
    install_stop_signals(stop)
    if insecure:
        config = config.model_copy(
            update={"tablet": config.tablet.model_copy(update={"insecure": True})}
        )
    rclpy.init(args=["xsq", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = RecorderNode(config)
        controller = RosSessionController(node)
        machine = VisitStateMachine(
            controller,
            config.robot_id,
            tasks=config.tablet.tasks,
            visit=config.visit,
            streams=config.health.streams,
            preview_interval_s=config.health.preview_interval_s,
            preview_lease_s=config.health.preview_lease_s,
        )
        if hasattr(machine, "session_lost"):
            controller.on_session_lost.append(machine.session_lost)
        SessionServices(node, machine)
        uploader = None
        if config.upload.enabled and upload:
            from xsquare_logger.upload.uploader import Uploader

            uploader = Uploader(config, is_recording=lambda: node.recorder is not None)
            controller.upload_backlog = lambda: uploader.backlog()["sessions"]
            node.on_session_closed.append(lambda _m: uploader.wake())
            uploader.start()
        reporter = None
        if config.floor.url:
            reporter = start_floor_reporter(node, controller, machine, uploader, token)
        server = TabletServer(config.tablet, config.robot_id, machine) if tablet else None
        if server is not None:
            server.start()
            print(
                f"robot stack ready: tablet commands on {server.command_endpoint}, "
                f"status on {server.status_endpoint}",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"recorder node ready: services under {node.get_fully_qualified_name()}/",
                  file=sys.stderr, flush=True)
        try:
            while not stop.is_set():
                spin_until_stopped(node, stop)
                node.auto_stopped.clear()
        finally:
            if server is not None:
                server.stop()
            if uploader is not None:
                controller.upload_backlog = lambda: 0
                uploader.stop()
            if node.recorder is not None:
                manifest = node.stop_session("robot stack shut down")
                if manifest is not None:
                    print(node.session_dir)
            if reporter is not None:
                reporter.stop()  # unsent reports stay in the outbox for the next start
            node.destroy_node()
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0
