"""Tag-to-bag latency: tablet command sent -> TaskEvent written into the session's MCAP.

Runs the real robot stack pieces in this process (RecorderNode, RosSessionController,
VisitStateMachine, TabletServer with CURVE on 127.0.0.1) and a real TabletClient,
so both ends read the same clock. Each ``mark`` command is timed from just before
the client sends it to the moment the recorder's writer thread has appended the
event to the MCAP writer (it reaches the disk at the next flush, <= flush_interval).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def run(n: int = 1000) -> dict[str, Any]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from support.procs import ros_env

    from xsquare_logger.config.model import LoggerConfig, apply_overrides
    from xsquare_logger.link.keys import KeyStore
    from xsquare_logger.link.server import TabletServer
    from xsquare_logger.link.visit import VisitStateMachine
    from xsquare_logger.ros.recorder_node import RecorderNode
    from xsquare_logger.ros.stack import RosSessionController
    from xsquare_logger.tablet.client import TabletClient

    tmp = Path(tempfile.mkdtemp(prefix="xsq-tagbench-"))
    store = KeyStore(tmp / "keys")
    store.init_robot()
    store.add_tablet("bench")
    config = apply_overrides(
        LoggerConfig(),
        {
            "data_root": str(tmp / "data"),
            "tablet.keys_dir": str(tmp / "keys"),
            "tablet.command_endpoint": "tcp://127.0.0.1:0",
            "tablet.status_endpoint": "tcp://127.0.0.1:0",
        },
        "bench",
    )
    env = ros_env()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = RecorderNode(config, context=context)
    controller = RosSessionController(node)
    machine = VisitStateMachine(controller, config.robot_id)
    server = TabletServer(config.tablet, config.robot_id, machine)
    server.start()
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    written: dict[str, int] = {}
    done = threading.Condition()
    client = TabletClient.from_keys_dir(server.command_endpoint, tmp / "keys", "bench")
    try:
        client.start_visit("bench-visit", "bench", True)
        assert node.recorder is not None

        def on_written(event: Any) -> None:
            with done:
                written[event.event_id] = time.perf_counter_ns()
                done.notify_all()

        node.recorder.on_event_written = on_written
        client.start_task("bench task")
        rtt: list[float] = []
        tag: list[float] = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            event_id = client.mark(f"m{i}")["event_id"]
            t1 = time.perf_counter_ns()
            with done:
                done.wait_for(functools.partial(written.__contains__, event_id), timeout=5.0)
            rtt.append((t1 - t0) / 1e6)
            tag.append((written[event_id] - t0) / 1e6)
        client.end_task("success")
        client.stop_visit()
    finally:
        client.close()
        server.stop()
        stop.set()
        spinner.join()
        if node.recorder is not None:
            node.stop_session("bench")
        node.destroy_node()
        rclpy.shutdown(context=context)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"commands": n, "round_trip": _pct(rtt), "tag_to_bag": _pct(tag)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
