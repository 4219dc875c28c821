"""`xsq node uploader`: the uploader as a node of its own.

Woken by the recorder's ``~/events/session_closed`` (transient local: a restarted
uploader hears of the last sessions too); its periodic scan of ``data_root`` finds
anything it missed. Whether a session records is read from the session lock on
disk (upload/uploader.py's default), which needs no ROS and survives any crash.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from xsquare_logger.config.model import LoggerConfig
from xsquare_logger.ros.recorder_node import install_stop_signals
from xsquare_logger.ros.services import latched_qos

__all__ = ["run_uploader"]


def run_uploader(config: LoggerConfig, recorder: str, ros_args: Sequence[str] = ()) -> int:
    from xsquare_logger.upload.uploader import Uploader
    from xsquare_logger_msgs.msg import SessionClosed

    stop = threading.Event()
    install_stop_signals(stop)
    rclpy.init(args=["xsq", *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Node("xsq_uploader")
        uploader = Uploader(config)

        def closed(msg: Any) -> None:
            node.get_logger().info(f"session {msg.session_id} closed ({msg.reason}): scanning")
            uploader.wake()

        node.create_subscription(
            SessionClosed, f"{recorder.rstrip('/')}/events/session_closed", closed, latched_qos(10)
        )
        uploader.start()
        print(f"uploader ready: {config.upload.destination}, recorder {recorder}",
              file=sys.stderr, flush=True)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set():
                executor.spin_once(timeout_sec=0.1)
        finally:
            uploader.stop()
            executor.shutdown()
            node.destroy_node()
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0
