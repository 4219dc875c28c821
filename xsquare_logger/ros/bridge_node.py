"""`xsq node bridge`: the tablet link (ZeroMQ CURVE) as a node of its own.

It keeps no state: every tablet frame goes to the recorder's ``~/tablet_command``
service (the recorder's VisitStateMachine answers, idempotency included) and the
status it publishes comes from ``~/status``; ``~/visit_status`` (latched) tells it
when the state changed, so the tablet hears of a change at once. Killed and
restarted, it picks up where the recorder is; a tablet retrying with the same id
gets the first answer.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from xsquare_logger.config.model import LoggerConfig
from xsquare_logger.link.remote import RemoteMachine
from xsquare_logger.link.server import TabletServer
from xsquare_logger.ros.recorder_node import install_stop_signals
from xsquare_logger.ros.services import latched_qos

__all__ = ["RosMachineLink", "run_bridge"]

log = logging.getLogger(__name__)

# A command may wait on a file close (session.stop drains the queue): be patient.
COMMAND_TIMEOUT_S = 30.0
STATUS_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 10.0


class RosMachineLink:
    """:class:`~xsquare_logger.link.remote.MachineLink` over the recorder's services."""

    def __init__(self, node: Node, recorder: str) -> None:
        from xsquare_logger_msgs.msg import VisitStatus
        from xsquare_logger_msgs.srv import GetStatus, TabletCommand

        base = recorder.rstrip("/")
        self._node = node
        self._command: Any = node.create_client(TabletCommand, f"{base}/tablet_command")
        self._status: Any = node.create_client(GetStatus, f"{base}/status")
        self._command_type = TabletCommand
        self._status_type = GetStatus
        self._version = 0
        node.create_subscription(
            VisitStatus, f"{base}/visit_status", self._on_visit_status, latched_qos(1)
        )

    def wait_ready(self, timeout: float) -> bool:
        """Until the recorder's services answer (True) or ``timeout`` s (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._command.service_is_ready() and self._status.service_is_ready():
                return True
            time.sleep(0.05)
        return False

    def _on_visit_status(self, msg: Any) -> None:
        self._version = int(msg.version)

    @property
    def version(self) -> int:
        return self._version

    def _call(self, client: Any, request: Any, timeout: float) -> Any | None:
        if not client.service_is_ready():
            return None
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout):
            client.remove_pending_request(future)
            return None
        return future.result()

    def command(self, frame: bytes, received_ns: int, client: str) -> bytes | None:
        request = self._command_type.Request()
        request.client = client
        request.received_ns = received_ns
        request.frame = frame
        response = self._call(self._command, request, COMMAND_TIMEOUT_S)
        return None if response is None else bytes(response.reply)

    def status(self) -> dict[str, Any] | None:
        response = self._call(self._status, self._status_type.Request(), STATUS_TIMEOUT_S)
        if response is None:
            return None
        doc: dict[str, Any] = json.loads(response.status_json)
        self._version = max(self._version, int(response.version))
        return doc


def run_bridge(
    config: LoggerConfig, recorder: str, insecure: bool, ros_args: Sequence[str] = ()
) -> int:
    """Serve tablets until SIGINT/SIGTERM, driving the recorder node ``recorder``."""
    stop = threading.Event()
    install_stop_signals(stop)
    if insecure:
        config = config.model_copy(
            update={"tablet": config.tablet.model_copy(update={"insecure": True})}
        )
    rclpy.init(args=["xsq", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Node("xsq_bridge")
        link = RosMachineLink(node, recorder)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        # The executor spins here; the tablet server's thread waits on service futures.
        spinner = threading.Thread(target=_spin, args=(executor, stop), name="xsq-bridge-spin",
                                   daemon=True)
        spinner.start()
        if not link.wait_ready(READY_TIMEOUT_S):
            # Serve anyway: the tablet hears "recorder not answering" instead of silence.
            log.warning("recorder %s does not answer yet; serving the tablet anyway", recorder)
        server = TabletServer(config.tablet, config.robot_id, RemoteMachine(link, config.robot_id))
        try:
            server.start()
            print(
                f"tablet bridge ready: tablet commands on {server.command_endpoint}, "
                f"status on {server.status_endpoint}, recorder {recorder}",
                file=sys.stderr,
                flush=True,
            )
            stop.wait()
        finally:
            server.stop()
            stop.set()
            spinner.join(5.0)
            executor.shutdown()
            node.destroy_node()
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def _spin(executor: SingleThreadedExecutor, stop: threading.Event) -> None:
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
