"""Publishes known messages from its own process (real rclpy, real DDS).

Usage: python -m support.known_publisher TOPIC=COUNT[@HZ] ... [--latched] [--hold S]
Waits until each (non-latched) topic has a subscriber, publishes, then stays
alive ``--hold`` seconds so reliable delivery completes. Prints one JSON line
with the counts published.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message

from support import known


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--latched", action="store_true", help="transient local, publish at once")
    ap.add_argument("--hold", type=float, default=1.0)
    ap.add_argument("--image-size", default="64x48", help="WxH of the known images")
    ap.add_argument("--dump", help="write the exact bytes published (pickle) to this file")
    ap.add_argument("--wait", type=float, default=20.0, help="max seconds to wait for subscribers")
    args = ap.parse_args()
    rclpy.init()
    node = Node("known_publisher")
    plan = []
    for spec in args.specs:
        topic, _, rest = spec.partition("=")
        count, _, hz = rest.partition("@")
        best_effort = topic == known.IMAGE_TOPIC
        qos = QoSProfile(
            depth=max(10, int(count)) if args.latched else 100,
            reliability=ReliabilityPolicy.BEST_EFFORT
            if best_effort
            else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL
            if args.latched
            else DurabilityPolicy.VOLATILE,
        )
        cls = type(known.MAKERS[topic](0))
        pub = node.create_publisher(cls, topic, qos)
        make = known.MAKERS[topic]
        if topic == known.IMAGE_TOPIC:
            w, h = (int(v) for v in args.image_size.split("x"))
            payloads = [serialize_message(known.image(i, w, h)) for i in range(int(count))]
        else:
            payloads = [serialize_message(make(i)) for i in range(int(count))]
        plan.append((topic, pub, payloads, float(hz) if hz else 50.0))
    if not args.latched:
        deadline = time.monotonic() + args.wait
        while any(p.get_subscription_count() == 0 for _, p, _, _ in plan):
            if time.monotonic() > deadline:
                print("no subscriber appeared", file=sys.stderr)
                sys.exit(1)
            time.sleep(0.05)
        time.sleep(0.3)  # let both sides finish matching before data flows
    published = {topic: 0 for topic, *_ in plan}
    longest = max(len(p) for _, _, p, _ in plan)
    period = 1.0 / max(hz for *_, hz in plan)
    t0 = time.monotonic()
    for i in range(longest):
        for topic, pub, payloads, _hz in plan:
            if i < len(payloads):
                pub.publish(payloads[i])
                published[topic] += 1
        if not args.latched:
            time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
    if args.dump:
        # CDR padding bytes are not deterministic across serializations, so
        # "byte-identical" is checked against the exact buffers we sent.
        with open(args.dump, "wb") as fh:
            pickle.dump({topic: payloads for topic, _p, payloads, _h in plan}, fh)
    print(json.dumps({"published": published}), flush=True)
    time.sleep(args.hold)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
