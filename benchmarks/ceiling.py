"""The benchmark's ceiling: a bare raw subscriber that counts and discards.

Subscribes exactly like the recorder (raw, publisher-matched QoS, no QoS
event handlers, the same receive thread: ``ros/pump.py``, MessageInfo
callbacks) but writes nothing, so recorded ÷ received here isolates what
recording costs. With rclpy's executor instead, this subscriber itself lost
a third of the 500 Hz control messages beside raw cameras (issue 12), which
made it no ceiling at all.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

import rclpy
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from xsquare_logger.bag.qos import adapt_subscription
from xsquare_logger.recording.sequence import SequenceTracker
from xsquare_logger.ros.pump import PumpedGroup, SubscriptionPump
from xsquare_logger.ros.qos import qos_from_dict, qos_to_dict
from xsquare_logger.ros.recorder_node import RECORDER_SWITCH_INTERVAL, _msg_class

__all__ = ["main"]


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("xsq_ceiling")
    counts: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    gaps: dict[str, int] = {}  # messages DDS never delivered (publication sequence gaps)
    subs: dict[str, Any] = {}
    pump = SubscriptionPump(node.context, name="xsq-ceiling-rx")
    group = PumpedGroup()

    def make_cb(topic: str) -> Any:
        observe = SequenceTracker().observe

        def cb(msg: bytes, info: dict[str, Any]) -> None:
            counts[topic] += 1
            nbytes[topic] += len(msg)
            seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
            if seq and gid is not None:
                gaps[topic] += observe(gid["data"], seq)

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
            gaps[topic] = 0
            qos = qos_from_dict(adapt_subscription(offered, 100))
            cb = make_cb(topic)
            subs[topic] = node.create_subscription(
                _msg_class(types[0]),
                topic,
                cb,
                qos,
                raw=True,
                callback_group=group,
                event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
            )
            pump.add(subs[topic], cb)
            print(f"subscribed {topic}", file=sys.stderr, flush=True)

    discover()
    node.create_timer(1.0, discover)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    sys.setswitchinterval(RECORDER_SWITCH_INTERVAL)  # as the recorder runs
    t0 = time.monotonic()
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
        if pump.error is not None:
            raise pump.error
    pump.stop()
    elapsed = time.monotonic() - t0
    print(json.dumps({"received": counts, "bytes": nbytes, "gaps": gaps, "duration_s": elapsed}))
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
