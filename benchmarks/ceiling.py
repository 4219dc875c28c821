"""The benchmark's ceiling: a bare raw subscriber that counts and discards.

Subscribes exactly like the recorder (raw, publisher-matched QoS, same
executor loop, MessageInfo callbacks) but writes nothing, so recorded ÷
received here isolates what recording costs.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from xsquare_logger.bag.qos import adapt_subscription
from xsquare_logger.ros.qos import qos_from_dict, qos_to_dict
from xsquare_logger.ros.recorder_node import _msg_class

__all__ = ["main"]


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("xsq_ceiling")
    counts: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    subs: dict[str, Any] = {}

    def make_cb(topic: str) -> Any:
        def cb(msg: bytes, _info: dict[str, Any]) -> None:
            counts[topic] += 1
            nbytes[topic] += len(msg)

        return cb

    def discover() -> None:
        for topic, types in node.get_topic_names_and_types():
            if topic in subs or topic in ("/rosout", "/parameter_events") or len(types) != 1:
                continue
            offered = [qos_to_dict(i.qos_profile) for i in node.get_publishers_info_by_topic(topic)]
            if not offered:
                continue
            counts[topic] = 0
            nbytes[topic] = 0
            qos = qos_from_dict(adapt_subscription(offered, 100))
            subs[topic] = node.create_subscription(
                _msg_class(types[0]), topic, make_cb(topic), qos, raw=True
            )
            print(f"subscribed {topic}", file=sys.stderr, flush=True)

    discover()
    node.create_timer(1.0, discover)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    t0 = time.monotonic()
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    print(json.dumps({"received": counts, "bytes": nbytes, "duration_s": time.monotonic() - t0}))
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
