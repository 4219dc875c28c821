"""`xsq tablet ...`: a command-line tablet, and the operator console (tablet side).

``xsq`` hooks these in with :func:`add_parser` and :func:`run`. Tablet side: imports
the tablet client and the link protocol, never the robot's configuration (only
``console --config FILE`` reads a robot YAML, for its task list and ports). `xsq tablet`
speaks exactly the protocol a tablet app speaks (docs/tablet-protocol.md), so
it doubles as a reference client and a field tool when the tablet is broken.
Exit status: 0 on success, 1 when the robot answers an error or cannot be
reached (``xsq tablet: <CODE>: <message>`` on stderr), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from xsquare_logger.link.keys import ROBOT_KEY_ENV, TABLET_KEY_ENV, KeyStoreError, add_key_arguments
from xsquare_logger.tablet.client import (
    StatusSubscriber,
    TabletClient,
    TabletError,
    keys_from_files,
)
from xsquare_logger.tablet.console.server import (
    DEFAULT_PORT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    run_console,
)

__all__ = ["add_parser", "format_status", "run"]

_SubParsers = argparse._SubParsersAction

# Silence on the status socket for this long is worth telling the user about.
_FOLLOW_QUIET_S = 5.0


# --- parsers ---------------------------------------------------------------------------


def add_parser(sub: _SubParsers) -> None:
    """Add the ``tablet`` command (and its ``console`` action) to the ``xsq`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection")
    g.add_argument("--robot", default="127.0.0.1", metavar="HOST", help="robot address")
    g.add_argument("--command-port", type=int, default=5555, help="command port (ROUTER)")
    g.add_argument("--status-port", type=int, default=5556, help="status port (PUB)")
    add_key_arguments(g, "no CURVE (the robot must run --insecure too)")
    g.add_argument("--timeout", type=float, default=2.0, help="seconds per attempt")
    g.add_argument("--retries", type=int, default=3, help="re-sends (same id) after a timeout")
    g.add_argument("--id", dest="request_id", help="request id (default: a fresh UUID)")
    g.add_argument("--json", action="store_true", help="print the JSON result")

    p = sub.add_parser(
        "tablet",
        help="operate the robot from the command line, as the tablet does",
        description="Send tablet commands to a robot over the tablet link "
        "(docs/tablet-protocol.md).",
    )
    tsub = p.add_subparsers(dest="tablet_command", required=True, metavar="ACTION")
    tsub.add_parser("hello", parents=[common], help="robot id, protocol version, state")
    s = tsub.add_parser("start-visit", parents=[common], help="start a session (session.start)")
    s.add_argument("--visit-id", required=True)
    s.add_argument("--operator", required=True)
    s.add_argument(
        "--consent", action="store_true", help="the people present agreed to be recorded"
    )
    s.add_argument("--site", default="")
    s.add_argument("--notes", default="")
    s.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="visit metadata the robot requires (visit.required_fields), repeatable")
    t = tsub.add_parser("start-task", parents=[common], help="open an episode (task.start)")
    t.add_argument("task")
    t.add_argument("--instruction", default="")
    e = tsub.add_parser("end-task", parents=[common], help="close the episode (task.end)")
    e.add_argument("--outcome", required=True, choices=["success", "failure", "aborted"])
    e.add_argument("--note", default="")
    m = tsub.add_parser("mark", parents=[common], help="mark an instant (mark)")
    m.add_argument("label")
    m.add_argument("--note", default="")
    d = tsub.add_parser("discard-task", parents=[common],
                        help="discard the last ended episode (task.discard; re-record = this, "
                        "then start-task)")
    d.add_argument("--episode", type=int, metavar="N",
                   help="must be the last ended episode (guards against a stale screen)")
    d.add_argument("--note", default="")
    for name, cmd in (("privacy-pause", "privacy.pause"), ("privacy-resume", "privacy.resume")):
        pp = tsub.add_parser(name, parents=[common], help=f"camera streams ({cmd})")
        pp.add_argument("--note", default="")
    tsub.add_parser("stop-visit", parents=[common], help="end the session (session.stop)")
    st = tsub.add_parser("status", parents=[common], help="robot status (status)")
    st.add_argument(
        "--follow", action="store_true", help="print status messages as they arrive (Ctrl-C ends)"
    )
    st.add_argument(
        "--count", type=int, default=0, metavar="N", help="with --follow: stop after N messages"
    )
    _add_console(tsub)


# --- execution -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``tablet`` command; returns the exit status."""
    if args.tablet_command == "console":
        return run_console_command(args)
    return _run_tablet(args)


def _key_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.insecure:
        return {"insecure": True}
    if args.robot_key is None or args.tablet_key is None:
        raise _Usage(
            "--robot-key FILE and --tablet-key FILE are required "
            f"(or ${ROBOT_KEY_ENV} and ${TABLET_KEY_ENV}), unless --insecure"
        )
    return dict(keys_from_files(args.robot_key, args.tablet_key))


class _Usage(Exception):
    pass


def _run_tablet(args: argparse.Namespace) -> int:
    try:
        keys = _key_kwargs(args)
        if args.tablet_command == "status" and args.follow:
            return _follow(args, keys)
        endpoint = f"tcp://{args.robot}:{args.command_port}"
        with TabletClient(endpoint, timeout=args.timeout, retries=args.retries, **keys) as client:
            result = _send(client, args)
    except _Usage as exc:
        print(f"xsq tablet: {exc}", file=sys.stderr)
        return 2
    except KeyStoreError as exc:
        print(f"xsq tablet: KEYS: {exc}", file=sys.stderr)
        return 1
    except TabletError as exc:
        print(f"xsq tablet: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(result) if args.json else _human(args.tablet_command, result))
    return 0


def _send(client: TabletClient, args: argparse.Namespace) -> dict[str, Any]:
    action, rid = args.tablet_command, args.request_id
    if action == "hello":
        return client.request("hello", request_id=rid)
    if action == "start-visit":
        visit: dict[str, Any] = {
            "visit_id": args.visit_id,
            "operator": args.operator,
            "consent": args.consent,
        }
        visit.update({k: v for k, v in (("site", args.site), ("notes", args.notes)) if v})
        meta: dict[str, str] = {}
        for item in args.meta:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise _Usage(f"--meta {item!r}: expected KEY=VALUE")
            meta[key] = value
        if meta:
            visit["metadata"] = meta
        return client.request("session.start", visit, rid)
    if action == "start-task":
        task = {
            "task": args.task,
            **({"instruction": args.instruction} if args.instruction else {}),
        }
        return client.request("task.start", task, rid)
    if action == "end-task":
        end = {"outcome": args.outcome, **({"note": args.note} if args.note else {})}
        return client.request("task.end", end, rid)
    if action == "mark":
        mark = {"label": args.label, **({"note": args.note} if args.note else {})}
        return client.request("mark", mark, rid)
    if action == "discard-task":
        discard: dict[str, Any] = {"note": args.note} if args.note else {}
        if args.episode is not None:
            discard["episode_index"] = args.episode
        return client.request("task.discard", discard, rid)
    if action in ("privacy-pause", "privacy-resume"):
        return client.request(action.replace("-", "."), {"note": args.note} if args.note else {},
                              rid)
    if action == "stop-visit":
        return client.request("session.stop", request_id=rid)
    if action == "status":
        return client.request("status", request_id=rid)
    raise _Usage(f"unknown action {action!r}")


def _follow(args: argparse.Namespace, keys: dict[str, Any]) -> int:
    endpoint = f"tcp://{args.robot}:{args.status_port}"
    quiet = max(_FOLLOW_QUIET_S, args.timeout)
    seen = 0
    with StatusSubscriber(endpoint, **keys) as sub:
        try:
            while args.count <= 0 or seen < args.count:
                message = sub.recv(timeout=quiet)
                if message is None:
                    print(
                        f"xsq tablet: no status from {endpoint} for {quiet:g} s "
                        "(robot down, or wrong keys?)",
                        file=sys.stderr,
                    )
                    continue
                seen += 1
                print(json.dumps(message) if args.json else format_status(message), flush=True)
        except KeyboardInterrupt:
            pass
    return 0


# --- human output ----------------------------------------------------------------------


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_status(s: dict[str, Any]) -> str:
    """One line summarizing a status result or message."""
    if s.get("state") != "recording":
        head = f"{s.get('robot_id', '?')}: idle"
    else:
        head = f"{s.get('robot_id', '?')}: recording {s.get('session_id')}"
        if s.get("current_task"):
            head += f" | task {s['current_task']!r} (episode {s.get('episode_index')})"
        head += f" | {s.get('elapsed_sec', 0):.1f} s"
        if not s.get("recording", True):
            head += " | RECORDER STOPPED"
    return (
        f"{head} | {_size(s.get('bytes_written', 0))}, {s.get('messages_written', 0)} msgs, "
        f"{s.get('messages_lost', 0)} lost | disk {_size(s.get('disk_free_bytes', 0))} free"
        f" | upload backlog {s.get('upload_backlog', 0)}"
        + (f" | error: {s['last_error']}" if s.get("last_error") else "")
    )


def _human(action: str, r: dict[str, Any]) -> str:
    if action == "hello":
        lines = [f"robot {r['robot_id']} (protocol {r['protocol_version']}): {r['state']}"]
        if r.get("session_id"):
            lines.append(f"session {r['session_id']}")
        if r.get("current_task"):
            lines.append(f"task {r['current_task']!r} (episode {r['episode_index']})")
        if r.get("tasks"):
            lines.append("tasks: " + ", ".join(r["tasks"]))
        return "\n".join(lines)
    if action == "start-visit":
        return f"session {r['session_id']} started (visit {r['visit_id']})"
    if action == "start-task":
        return f"episode {r['episode_index']} started: {r['task']} (event {r['event_id']})"
    if action == "end-task":
        return (
            f"episode {r['episode_index']} ended: {r['outcome']} "
            f"after {r['duration_sec']:.1f} s (event {r['event_id']})"
        )
    if action == "mark":
        where = f"episode {r['episode_index']}" if r["episode_index"] >= 0 else "no task open"
        return f"marked {r['label']!r} ({where}, event {r['event_id']})"
    if action == "discard-task":
        again = " (already discarded)" if r.get("already_discarded") else ""
        return (f"episode {r['episode_index']} discarded{again}: {r['task']} "
                f"({r['outcome']}, event {r['event_id']})")
    if action in ("privacy-pause", "privacy-resume"):
        state = "cameras paused" if r["paused"] else "cameras recording"
        return state + ("" if r["changed"] else " (no change)")
    if action == "stop-visit":
        lines = []
        auto = r.get("auto_ended_task")
        if auto:
            lines.append(
                f"open task {auto['task']!r} (episode {auto['episode_index']}) ended as aborted"
            )
        lines.append(
            f"session {r['session_id']} stopped: {r['episodes']} episodes, {r['marks']} marks"
            + (f"; saved in {r['path']}" if r.get("path") else "")
        )
        return "\n".join(lines)
    return format_status(r)


# --- operator console ------------------------------------------------------------------


def _add_console(
    tablet_subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``console`` to the ``xsq tablet`` actions; dispatch the parsed args to :func:`run`."""
    p = tablet_subparsers.add_parser(
        "console",
        help="serve the operator console (a local web page) for one robot",
        description="Serve the operator console on this tablet and talk ZeroMQ to the robot. "
        "Open the printed URL in the tablet's browser; it works with no internet. "
        "Runs until Ctrl-C. Exit 2 on bad configuration, missing keys or a busy port.",
    )
    p.add_argument("--robot", required=True, metavar="HOST", help="robot host name or address")
    p.add_argument(
        "--command-port",
        type=int,
        metavar="PORT",
        help="robot command port (default: port of the config's tablet.command_endpoint, 5555)",
    )
    p.add_argument(
        "--status-port",
        type=int,
        metavar="PORT",
        help="robot status port (default: port of the config's tablet.status_endpoint, 5556)",
    )
    add_key_arguments(p, "no CURVE (only if the robot runs --insecure)")
    p.add_argument(
        "--bind",
        default="127.0.0.1",
        help="address the page is served on (default 127.0.0.1: only this tablet)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port the page is served on (default {DEFAULT_PORT}; 0 = any free port)",
    )
    p.add_argument("--config", type=Path, help="YAML config (task list, default ports)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each reply attempt (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=DEFAULT_RETRIES,
        help=f"re-sends (same id) before ROBOT_UNREACHABLE (default {DEFAULT_RETRIES})",
    )
    return p


def _port_of(endpoint: str, default: int) -> int:
    port = urlsplit(endpoint.replace("*", "0.0.0.0")).port
    return port if port else default


def run_console_command(args: argparse.Namespace) -> int:
    """``xsq tablet console``: serve until SIGINT/SIGTERM; returns the exit status."""

    def fail(message: str) -> int:
        print(f"xsq tablet console: {message}", file=sys.stderr)
        return 2

    tasks: list[str] = []
    command_ep, status_ep = "tcp://*:5555", "tcp://*:5556"
    if args.config is not None:
        # Only with --config does the console read a robot YAML; without it the task
        # buttons come from the robot's hello reply (the robot's own list).
        from xsquare_logger.config import ConfigError, load_config

        try:
            cfg = load_config(args.config).tablet
        except ConfigError as exc:
            return fail(str(exc))
        tasks, command_ep, status_ep = list(cfg.tasks), cfg.command_endpoint, cfg.status_endpoint
    keys: dict[str, Any] = {}
    if args.insecure:
        print(
            "xsq tablet console: WARNING: --insecure: commands travel unauthenticated "
            "and unencrypted",
            file=sys.stderr,
        )
    elif args.robot_key is None or args.tablet_key is None:
        return fail(
            f"--robot-key FILE and --tablet-key FILE are required (or ${ROBOT_KEY_ENV} "
            f"and ${TABLET_KEY_ENV}), unless --insecure"
        )
    else:
        try:
            keys = dict(keys_from_files(args.robot_key, args.tablet_key))
        except KeyStoreError as exc:
            return fail(f"KEYS: {exc}")
    try:
        server = run_console(
            args.robot,
            args.command_port or _port_of(command_ep, 5555),
            args.status_port or _port_of(status_ep, 5556),
            bind=args.bind,
            port=args.port,
            tasks=tasks,
            timeout=args.timeout,
            retries=args.retries,
            **keys,
        )
    except (OSError, ValueError) as exc:
        return fail(f"cannot serve on {args.bind}:{args.port}: {exc}")
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        robot = server.backend.robot["command_endpoint"]
        print(f"operator console: {server.url}  (robot {robot}; Ctrl-C stops)", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``xsq-tablet``: the tablet-side commands alone (what a tablet install runs).

    Same actions and flags as ``xsq tablet``; imports nothing of the robot side.
    """
    import logging

    parser = argparse.ArgumentParser(prog="xsq-tablet", description="tablet side of the link")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(sub)
    argv = sys.argv[1:] if argv is None else argv
    # `xsq-tablet hello ...` reads as `xsq tablet hello ...`.
    args = parser.parse_args(["tablet", *argv])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
