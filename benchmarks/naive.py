"""The straightforward recorder a Python user would write: the `make bench` baseline.

rclpy raw subscriptions (same discovery, publisher-matched QoS and executor loop as the
ceiling subscriber) whose callbacks write each message with the official ``mcap``
``Writer`` (zstd chunks) right away: no queue, no writer thread. Prints the per-topic
counts written as one JSON line at the end, like :mod:`benchmarks.ceiling`.

    python -m benchmarks.naive OUT.mcap
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import rclpy
from mcap.writer import CompressionType, Writer
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from xsquare_logger.bag.qos import adapt_subscription
from xsquare_logger.bag.schema import ros2msg_schema
from xsquare_logger.ros.qos import qos_from_dict, qos_to_dict
from xsquare_logger.ros.recorder_node import _msg_class

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("xsq_naive")
    out = open(args[0], "wb")  # noqa: SIM115 - closed below, after the writer
    writer = Writer(out, compression=CompressionType.ZSTD)
    writer.start(profile="ros2", library="naive rclpy + mcap.writer.Writer")
    written: dict[str, int] = {}
    subs: dict[str, Any] = {}

    def make_cb(topic: str, channel_id: int) -> Any:
        def cb(msg: bytes, info: dict[str, Any]) -> None:
            recv = info.get("received_timestamp") or time.time_ns()
            writer.add_message(
                channel_id, log_time=recv, data=msg,
                publish_time=info.get("source_timestamp") or recv,
            )  # fmt: skip
            written[topic] += 1

        return cb

    def discover() -> None:
        for topic, types in node.get_topic_names_and_types():
            if topic in subs or topic in ("/rosout", "/parameter_events") or len(types) != 1:
                continue
            offered = [qos_to_dict(i.qos_profile) for i in node.get_publishers_info_by_topic(topic)]
            if not offered:
                continue
            schema = writer.register_schema(types[0], "ros2msg", ros2msg_schema(types[0]))
            channel = writer.register_channel(topic, "cdr", schema)
            written[topic] = 0
            qos = qos_from_dict(adapt_subscription(offered, 100))
            subs[topic] = node.create_subscription(
                _msg_class(types[0]), topic, make_cb(topic, channel), qos, raw=True
            )
            print(f"subscribed {topic}", file=sys.stderr, flush=True)

    discover()
    node.create_timer(1.0, discover)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()
    writer.finish()
    out.close()
    print(json.dumps({"received": written}))


if __name__ == "__main__":
    main()
