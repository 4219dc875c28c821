"""``xsq node recorder|bridge|uploader``: the robot stack as separate ROS 2 nodes.

``xsq run`` is the same stack in one process. Apart, a crash of the tablet bridge or
the uploader never stops a recording: the visit state machine and its idempotency
cache live in the recorder process; the bridge and the uploader only talk to it
over its services and topics (docs/ros-interface.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xsquare_logger.config import LoggerConfig

__all__ = ["DEFAULT_RECORDER", "add_parser", "run"]

DEFAULT_RECORDER = "/xsq_recorder"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--robot-id", help="robot id (first part of the session id)")
    p.add_argument("--data-root", type=Path, help="where sessions are created")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "node",
        help="one node of the robot stack in its own process (recorder, bridge, uploader)",
        description="The robot stack as separate ROS 2 nodes; `xsq run` is all in one process.",
    )
    nodes = p.add_subparsers(dest="node", required=True, metavar="NODE")
    r = nodes.add_parser(
        "recorder",
        help="recorder + visit state machine + session services (idle until a visit)",
    )
    _common(r)
    r.add_argument("--no-recover", action="store_true",
                   help="do not recover unfinished sessions under data_root at start")
    b = nodes.add_parser(
        "bridge", help="the tablet link (ZeroMQ CURVE) driving the recorder's services"
    )
    _common(b)
    b.add_argument("--insecure", action="store_true",
                   help="tablet link without CURVE authentication (logs a warning)")
    b.add_argument("--recorder", default=DEFAULT_RECORDER, metavar="NODE",
                   help=f"the recorder node's fully qualified name (default {DEFAULT_RECORDER})")
    u = nodes.add_parser("uploader", help="the uploader, woken by the recorder's session events")
    _common(u)
    u.add_argument("--recorder", default=DEFAULT_RECORDER, metavar="NODE",
                   help=f"the recorder node's fully qualified name (default {DEFAULT_RECORDER})")


def run(args: argparse.Namespace, config: LoggerConfig, ros_args: list[str]) -> int:
    if args.node == "recorder":
        from xsquare_logger.ros.stack import run_stack

        return run_stack(config, False, ros_args, tablet=False, upload=False)
    if args.node == "bridge":
        from xsquare_logger.ros.bridge_node import run_bridge

        return run_bridge(config, args.recorder, args.insecure, ros_args)
    from xsquare_logger.ros.uploader_node import run_uploader

    return run_uploader(config, args.recorder, ros_args)
