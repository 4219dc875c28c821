"""`xsq keys ...` and `xsq tablet ...`: key management on the robot, and a command-line tablet.

``xsq`` hooks these in with :func:`add_parsers` and :func:`run`. `xsq tablet`
speaks exactly the protocol a tablet app speaks (docs/tablet-protocol.md), so
it doubles as a reference client and a field tool when the tablet is broken.
Exit status: 0 on success, 1 when the robot answers an error or cannot be
reached (``xsq tablet: <CODE>: <message>`` on stderr), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..config import ConfigError, TabletConfig, load_config
from .client import StatusSubscriber, TabletClient, TabletError, keys_from_files
from .keys import ROBOT_KEY_ENV, TABLET_KEY_ENV, KeyStore, KeyStoreError, add_key_arguments

__all__ = ["add_parsers", "format_status", "run"]

_SubParsers = argparse._SubParsersAction  # type: ignore[type-arg]

# Silence on the status socket for this long is worth telling the user about.
_FOLLOW_QUIET_S = 5.0


# --- parsers ---------------------------------------------------------------------------


def add_parsers(sub: _SubParsers) -> None:
    """Add the ``keys`` and ``tablet`` commands to the ``xsq`` subparsers."""
    _add_keys(sub)
    _add_tablet(sub)


def _add_keys(sub: _SubParsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--keys-dir", type=Path, help="key store (default: tablet.keys_dir of --config)"
    )
    common.add_argument("--config", type=Path, help="robot YAML config to take keys_dir from")
    p = sub.add_parser(
        "keys",
        help="CURVE keys of the tablet link: robot key pair, tablet allow-list",
        description="Manage the robot's key pair and the tablets it accepts. A running "
        "robot picks up added and revoked tablets within a second.",
    )
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    ksub.add_parser("init", parents=[common], help="create the robot key pair")
    a = ksub.add_parser(
        "add-tablet", parents=[common], help="create a tablet key pair and authorize it"
    )
    a.add_argument("name", help="tablet name (letters, digits, _ . -)")
    r = ksub.add_parser("revoke", parents=[common], help="stop accepting a tablet")
    r.add_argument("name")
    ls = ksub.add_parser("list", parents=[common], help="list authorized tablets")
    ls.add_argument("--json", action="store_true", help="machine-readable output")


def _add_tablet(sub: _SubParsers) -> None:
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
    t = tsub.add_parser("start-task", parents=[common], help="open an episode (task.start)")
    t.add_argument("task")
    t.add_argument("--instruction", default="")
    e = tsub.add_parser("end-task", parents=[common], help="close the episode (task.end)")
    e.add_argument("--outcome", required=True, choices=["success", "failure", "aborted"])
    e.add_argument("--note", default="")
    m = tsub.add_parser("mark", parents=[common], help="mark an instant (mark)")
    m.add_argument("label")
    m.add_argument("--note", default="")
    tsub.add_parser("stop-visit", parents=[common], help="end the session (session.stop)")
    st = tsub.add_parser("status", parents=[common], help="robot status (status)")
    st.add_argument(
        "--follow", action="store_true", help="print status messages as they arrive (Ctrl-C ends)"
    )
    st.add_argument(
        "--count", type=int, default=0, metavar="N", help="with --follow: stop after N messages"
    )
    from .console.server import add_console_parser

    add_console_parser(tsub)


# --- execution -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``keys`` or ``tablet`` command; returns the exit status."""
    if args.command == "keys":
        return _run_keys(args)
    if args.command == "tablet":
        return _run_tablet(args)
    raise ValueError(f"not a tablet-link command: {args.command!r}")


def _keys_dir(args: argparse.Namespace) -> Path:
    if args.keys_dir is not None:
        return Path(args.keys_dir).expanduser()
    if args.config is not None:
        return load_config(args.config).tablet.keys_dir
    return TabletConfig().keys_dir


def _run_keys(args: argparse.Namespace) -> int:
    try:
        store = KeyStore(_keys_dir(args))
        action = args.keys_command
        if action == "init":
            public = store.init_robot()
            print(f"robot key pair created: {public} (public), {store.robot_secret_file} (secret)")
            print("next: xsq keys add-tablet NAME")
        elif action == "add-tablet":
            secret = store.add_tablet(args.name)
            robot_copy = store.issued_dir / store.robot_public_file.name
            print(f"tablet {args.name!r} authorized ({store.authorized_dir / args.name}.key)")
            print("copy these two files onto the tablet, then delete the first one here:")
            print(f"  {secret}")
            print(f"  {robot_copy}")
            print(
                f"try it: xsq tablet hello --robot HOST --robot-key {robot_copy.name} "
                f"--tablet-key {secret.name}"
            )
        elif action == "revoke":
            store.revoke(args.name)
            print(f"tablet {args.name!r} revoked; a running robot refuses it within a second")
        elif action == "list":
            _print_tablets(store, args.json)
    except (KeyStoreError, ConfigError) as exc:
        print(f"xsq keys: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_tablets(store: KeyStore, as_json: bool) -> None:
    tablets = store.list_tablets()
    if as_json:
        rows = [
            {
                "name": t.name,
                "public_key": t.public_key,
                "path": str(t.path),
                "issued_secret": str(t.issued_secret) if t.issued_secret else None,
            }
            for t in tablets
        ]
        print(json.dumps(rows, indent=2))
        return
    if not tablets:
        print(f"no authorized tablets in {store.authorized_dir}")
    for t in tablets:
        pending = f"  (issued secret still here: {t.issued_secret})" if t.issued_secret else ""
        print(f"{t.name}  {t.public_key}{pending}")


def _key_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    if args.insecure:
        return {"insecure": True}
    if args.robot_key is None or args.tablet_key is None:
        raise _Usage(
            "--robot-key FILE and --tablet-key FILE are required "
            f"(or ${ROBOT_KEY_ENV} and ${TABLET_KEY_ENV}), unless --insecure"
        )
    return keys_from_files(args.robot_key, args.tablet_key)


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
