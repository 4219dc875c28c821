"""``xsq``: the command line. Verbs and flags follow `ros2 bag` where the job is the same."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from xsquare_logger import __version__
from xsquare_logger.cli import export as export_cli
from xsquare_logger.cli import floor as floor_cli
from xsquare_logger.cli import keys as keys_cli
from xsquare_logger.cli import nodes as nodes_cli
from xsquare_logger.cli import tablet as tablet_cli
from xsquare_logger.cli import tools as tools_cli
from xsquare_logger.cli import upload as upload_cli
from xsquare_logger.config import ConfigError, LoggerConfig, apply_overrides, load_config
from xsquare_logger.errors import XsqError

__all__ = [
    "bridge_main",
    "build_parser",
    "main",
    "recorder_main",
    "recorder_node_main",
    "sim_main",
    "uploader_node_main",
]


def _add_record(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "record",
        help="record topics into a new session (rosbag2/MCAP directory)",
        description="Record until SIGINT/SIGTERM, then finalize and print the session path. "
        "Exit 0 on a normal stop, 3 if the recorder ended the session itself "
        "(disk reserve reached, disk error), 2 on bad configuration.",
    )
    p.add_argument("topics_pos", nargs="*", metavar="TOPIC", help="topics to record")
    p.add_argument("--topics", nargs="+", default=[], metavar="TOPIC", help="topics to record")
    p.add_argument("-a", "--all-topics", action="store_true", help="record all topics")
    p.add_argument("-e", "--regex", help="record topics matching this regular expression")
    p.add_argument("--exclude-regex", help="exclude topics matching this regular expression")
    p.add_argument("-o", "--output", type=Path, help="session directory (must not exist)")
    p.add_argument("-b", "--max-bag-size", type=int, metavar="BYTES", help="split size; 0 = off")
    p.add_argument(
        "-d", "--max-bag-duration", type=float, metavar="SECONDS", help="split duration; 0 = off"
    )
    p.add_argument("--compression", choices=["zstd", "lz4", "none"], help="MCAP chunk compression")
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--robot-id", help="robot id (first part of the session id)")
    p.add_argument("--data-root", type=Path, help="where new sessions are created")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set recording.qos_depth=50",
    )
    p.add_argument(
        "--no-recover",
        action="store_true",
        help="do not recover unfinished sessions under data_root at start",
    )
    p.add_argument(
        "--start-paused",
        action="store_true",
        help="write nothing until the ~/resume service is called (as ros2 bag record)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xsq", description="xsquare_logger robot data logger")
    parser.add_argument("--version", action="version", version=f"xsquare_logger {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_record(sub)

    p = sub.add_parser(
        "run",
        help="robot stack: recorder (idle) + tablet bridge; the tablet starts/stops visits",
    )
    p.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    p.add_argument("--robot-id", help="robot id (first part of the session id)")
    p.add_argument("--data-root", type=Path, help="where new sessions are created")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set tablet.command_endpoint=...")
    p.add_argument("--insecure", action="store_true",
                   help="tablet link without CURVE authentication (logs a warning)")
    p.add_argument("--no-recover", action="store_true",
                   help="do not recover unfinished sessions under data_root at start")

    p = sub.add_parser("info", help="summarize a session (like `ros2 bag info`, plus losses)")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("recover", help="repair a session or .mcap.active file left by a crash")
    p.add_argument("path", type=Path)

    p = sub.add_parser("sim", help="simulated humanoid publishing cameras, joints, forces")
    p.add_argument("args", nargs=argparse.REMAINDER, help="see `xsq sim -- --help`")

    nodes_cli.add_parser(sub)
    keys_cli.add_parser(sub)
    tablet_cli.add_parser(sub)
    tools_cli.add_parsers(sub)
    upload_cli.add_parser(sub)
    floor_cli.add_parser(sub)
    export_cli.add_parser(sub)

    p = sub.add_parser("demo", help="sim + recorder for a short session, then `xsq info`")
    p.add_argument("--duration", type=float, default=20.0, help="seconds to record")
    p.add_argument("--profile", default="humanoid", help="sim profile (humanoid|light)")
    p.add_argument("--data-root", type=Path, default=Path("data/demo"))
    return parser


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def _common_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = _parse_value(value)
    if args.robot_id:
        overrides["robot_id"] = args.robot_id
    if args.data_root:
        overrides["data_root"] = str(args.data_root)
    return overrides


def record_config(args: argparse.Namespace) -> LoggerConfig:
    """Config file (or embedded defaults), then CLI flags on top."""
    config = load_config(args.config)
    overrides = _common_overrides(args)
    topics = [*args.topics_pos, *args.topics]
    if topics:
        overrides["recording.topics"] = topics
    if args.all_topics:
        overrides["recording.all_topics"] = True
    elif topics or args.regex:
        # As with `ros2 bag record`: naming topics or a regex means "only these".
        overrides["recording.all_topics"] = False
    if args.regex:
        overrides["recording.regex"] = args.regex
    if args.exclude_regex is not None:
        overrides["recording.exclude_regex"] = args.exclude_regex
    if args.max_bag_size is not None:
        overrides["recording.max_bag_size"] = args.max_bag_size
    if args.max_bag_duration is not None:
        overrides["recording.max_bag_duration"] = args.max_bag_duration
    if args.compression:
        overrides["recording.compression"] = args.compression
    return apply_overrides(config, overrides, "command-line flags")


def _recover_at_start(args: argparse.Namespace, config: LoggerConfig) -> None:
    if not args.no_recover:
        from xsquare_logger.session.recovery import recover_data_root

        for line in recover_data_root(config.data_root):
            print(line, file=sys.stderr)


def _stack_config(args: argparse.Namespace) -> LoggerConfig:
    return apply_overrides(load_config(args.config), _common_overrides(args), "flags")


def _cmd_run(args: argparse.Namespace, ros_args: list[str]) -> int:
    config = _stack_config(args)
    _recover_at_start(args, config)
    from xsquare_logger.ros.stack import run_stack

    return run_stack(config, args.insecure, ros_args)


def _cmd_record(args: argparse.Namespace, ros_args: list[str]) -> int:
    config = record_config(args)
    if args.output is not None and args.output.exists():
        print(f"xsq record: output directory {args.output} exists already; not overwriting",
              file=sys.stderr)
        return 2
    _recover_at_start(args, config)
    from xsquare_logger.ros.recorder_node import record
    from xsquare_logger.ros.services import SessionServices

    return record(
        config, args.output, ros_args, start_paused=args.start_paused, setup=SessionServices
    )


def _cmd_info(args: argparse.Namespace) -> int:
    from xsquare_logger.tools.info import InfoError, format_info, session_info

    try:
        info = session_info(args.path)
    except InfoError as exc:
        print(f"xsq info: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _cmd_recover(args: argparse.Namespace) -> int:
    from xsquare_logger.session.recovery import RecoveryFailed, recover_path

    try:
        for line in recover_path(args.path):
            print(line)
    except RecoveryFailed as exc:
        print(f"xsq recover: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after --ros-args belongs to rclpy (e.g. -p recording.qos_depth:=50).
    ros_args: list[str] = []
    if "--ros-args" in argv:
        i = argv.index("--ros-args")
        argv, ros_args = argv[:i], argv[i:]
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "record":
            return _cmd_record(args, ros_args)
        if args.command == "run":
            return _cmd_run(args, ros_args)
        if args.command == "info":
            return _cmd_info(args)
        if args.command == "recover":
            return _cmd_recover(args)
        if args.command == "sim":
            from xsquare_logger.ros.sim_node import main as sim_main

            rest = [a for a in args.args if a != "--"]
            return int(sim_main(rest + ros_args) or 0)
        if args.command == "node":
            config = _stack_config(args)
            if args.node == "recorder":
                _recover_at_start(args, config)
            return nodes_cli.run(args, config, ros_args)
        if args.command == "keys":
            return keys_cli.run(args)
        if args.command == "tablet":
            return tablet_cli.run(args)
        if args.command == "upload":
            return upload_cli.run(args)
        if args.command == "floor":
            return floor_cli.run(args)
        if args.command == "export":
            return export_cli.run(args)
        if args.command in tools_cli.COMMANDS:
            return tools_cli.run(args)
        if args.command == "demo":
            from xsquare_logger.cli.demo import run_demo

            return run_demo(args.duration, args.profile, args.data_root)
    except XsqError as exc:
        # Any error the user can act on: one line (or the field list of a bad config),
        # exit 2, no traceback. Bugs are not XsqError and keep theirs.
        print(f"xsq {args.command}: {exc}", file=sys.stderr)
        return 2
    return 1


def recorder_main() -> None:
    """Entry point ``xsq-recorder`` (launch files): ``--config FILE`` plus ROS args."""
    sys.exit(main(["record", *sys.argv[1:]]))


def recorder_node_main() -> None:
    """Entry point ``xsq-recorder-node``: ``xsq node recorder`` (separate-node stack)."""
    sys.exit(main(["node", "recorder", *sys.argv[1:]]))


def bridge_main() -> None:
    """Entry point ``xsq-bridge``: ``xsq node bridge`` (the tablet link as its own node)."""
    sys.exit(main(["node", "bridge", *sys.argv[1:]]))


def uploader_node_main() -> None:
    """Entry point ``xsq-uploader-node``: ``xsq node uploader``."""
    sys.exit(main(["node", "uploader", *sys.argv[1:]]))


def sim_main() -> None:
    """Entry point ``xsq-sim``: the simulated humanoid (``xsq sim``)."""
    from xsquare_logger.ros.sim_node import main as run_sim

    sys.exit(int(run_sim(sys.argv[1:]) or 0))


if __name__ == "__main__":
    sys.exit(main())
