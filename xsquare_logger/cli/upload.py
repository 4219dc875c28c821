"""``xsq upload status | now [SESSION...] | retry SESSION... | run``.

``xsq`` hooks these in with :func:`add_parser` and :func:`run`; ``python -m
xsquare_logger.cli.upload upload ...`` runs them alone. Exit status: 0 on
success, 1 when a session could not be uploaded and verified (or is unknown),
2 on configuration errors, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from xsquare_logger.config.model import ConfigError, LoggerConfig, apply_overrides, load_config
from xsquare_logger.upload.backends import remote_url
from xsquare_logger.upload.queue import (
    BACKOFF,
    FAILED,
    QUEUED,
    UPLOADING,
    SessionRow,
    UploadQueue,
)

__all__ = ["add_parser", "main", "run"]

_SubParsers = argparse._SubParsersAction


def add_parser(sub: _SubParsers) -> None:
    """Add the ``upload`` command to the ``xsq`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML config (default: embedded defaults)")
    common.add_argument("--data-root", type=Path, help="directory holding session folders")
    common.add_argument("--destination", help="override upload.destination (file://, s3://)")
    common.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set upload.part_size=33554432",
    )
    p = sub.add_parser(
        "upload",
        help="closed sessions to central storage: queue status, upload now, retry",
        description="The uploader moves closed sessions to upload.destination, verifies "
        "them, then frees local disk by the retention policy (docs/upload.md).",
    )
    usub = p.add_subparsers(dest="upload_command", required=True, metavar="ACTION")
    s = usub.add_parser("status", parents=[common], help="queue, per-session state, last error")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    n = usub.add_parser(
        "now", parents=[common], help="upload now, ignoring the network gate (progress bar)"
    )
    n.add_argument("sessions", nargs="*", metavar="SESSION", help="session ids (default: all)")
    n.add_argument("--attempts", type=int, default=3, help="tries per session on network errors")
    n.add_argument("--no-progress", action="store_true", help="no progress bar")
    r = usub.add_parser("retry", parents=[common], help="queue failed sessions again")
    r.add_argument("sessions", nargs="+", metavar="SESSION")
    usub.add_parser("run", parents=[common], help="run the uploader alone until SIGINT/SIGTERM")


def _config(args: argparse.Namespace, config: LoggerConfig | None) -> LoggerConfig:
    if config is None:
        config = load_config(args.config)
    overrides: dict[str, Any] = {}
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    if getattr(args, "data_root", None):
        overrides["data_root"] = str(args.data_root)
    if getattr(args, "destination", None):
        overrides["upload.destination"] = args.destination
    return apply_overrides(config, overrides, "command line")


def run(args: argparse.Namespace, config: LoggerConfig | None = None) -> int:
    """Run ``xsq upload ...``; ``config`` (if given) is used instead of ``--config``."""
    try:
        cfg = _config(args, config)
    except ConfigError as exc:
        print(f"xsq upload: {exc}", file=sys.stderr)
        return 2
    action = args.upload_command
    if action == "status":
        return _status(cfg, args.json)
    from xsquare_logger.upload.uploader import Uploader

    if action == "run":
        return _run_alone(cfg)
    uploader = Uploader(cfg)
    try:
        if action == "retry":
            return _retry(uploader, args.sessions)
        return _now(uploader, args.sessions, args.attempts, not args.no_progress)
    except KeyboardInterrupt:
        print("xsq upload: interrupted; completed parts are kept for the next try", file=sys.stderr)
        return 130
    finally:
        uploader.stop()


# --- status ----------------------------------------------------------------------------------


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _row_dict(r: SessionRow) -> dict[str, Any]:
    return {
        "session_id": r.session_id,
        "state": r.state,
        "remote": remote_url(r.destination, r.remote_prefix),
        "total_bytes": r.total_bytes,
        "bytes_left": r.bytes_left,
        "attempts": r.attempts,
        "next_attempt_ns": r.next_attempt_ns or None,
        "last_error": r.last_error,
        "error_kind": r.error_kind,
        "verified_ns": r.verified_ns,
        "deleted_ns": r.deleted_ns,
    }


def _status(cfg: LoggerConfig, as_json: bool) -> int:
    from xsquare_logger.upload.uploader import default_queue_path

    path = default_queue_path(cfg)
    if not path.exists():
        msg = f"no upload queue at {path} yet (the uploader has not run on this data_root)"
        print(json.dumps({"queue": str(path), "sessions": []}) if as_json else msg)
        return 0
    q = UploadQueue(path)
    try:
        rows = q.sessions()
        gate = json.loads(q.get_meta("gate") or "null")
    finally:
        q.close()
    pending = [r for r in rows if r.state in (QUEUED, UPLOADING, BACKOFF, FAILED)]
    backlog = {"sessions": len(pending), "bytes": sum(r.bytes_left for r in pending)}
    if as_json:
        doc = {
            "queue": str(path),
            "destination": cfg.upload.destination,
            "gate": gate,
            "backlog": backlog,
            "sessions": [_row_dict(r) for r in rows],
        }
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(f"destination: {cfg.upload.destination}   queue: {path}")
    if gate:
        at = datetime.fromtimestamp(gate["at_ns"] / 1e9).strftime("%Y-%m-%d %H:%M:%S")
        state = "open" if gate["open"] else f"closed: {gate['reason']}"
        idle = ", nothing was due" if gate.get("idle") else ""
        console.print(f"gate: {state} (uploader checked at {at}{idle})", markup=False)
    console.print(f"backlog: {backlog['sessions']} session(s), {_human(backlog['bytes'])} left")
    header = ("session", "state", "size", "left", "tries", "last error")
    lines = []
    for r in rows:
        err = r.last_error or ""
        if r.state == BACKOFF or (r.state == QUEUED and r.next_attempt_ns > time.time_ns()):
            err = f"retry at {datetime.fromtimestamp(r.next_attempt_ns / 1e9):%H:%M:%S}: {err}"
        size, left = _human(r.total_bytes), _human(r.bytes_left)
        lines.append((r.session_id, r.state, size, left, str(r.attempts), err))
    if not sys.stdout.isatty():
        # Piped (grep, less, a script): rich would cut the table at 80 columns and
        # ellipsize the ids an operator copies into `xsq upload retry`. Plain columns.
        widths = [max(len(x[i]) for x in (header, *lines)) for i in range(len(header) - 1)]
        for cells in (header, *lines):
            padded = [c.ljust(w) for c, w in zip(cells, widths, strict=False)]
            print("  ".join([*padded, cells[-1]]).rstrip())
        return 0
    table = Table(show_lines=False)
    for col in header:
        table.add_column(col, overflow="fold")
    for cells in lines:
        table.add_row(*cells)
    console.print(table)
    return 0


# --- retry / now / run -----------------------------------------------------------------------


def _retry(uploader: Any, sessions: list[str]) -> int:
    status = 0
    for sid in sessions:
        try:
            row = uploader.retry(sid)
        except KeyError as exc:
            print(f"xsq upload retry: {exc.args[0]}", file=sys.stderr)
            status = 1
            continue
        print(f"{sid}: {row.state}")
    return status


def _now(uploader: Any, sessions: list[str], attempts: int, progress: bool) -> int:
    uploader.scan()
    q = uploader.queue
    if sessions:
        rows = []
        for sid in sessions:
            row = q.session(sid)
            if row is None:
                print(
                    f"xsq upload now: no closed session {sid!r} under {uploader.data_root}",
                    file=sys.stderr,
                )
                return 1
            rows.append(row)
    else:
        rows = q.sessions((QUEUED, UPLOADING, BACKOFF, FAILED))
    if not rows:
        print("nothing to upload")
        return 0
    for r in rows:
        if r.state == FAILED:
            q.requeue(r.session_id)  # the operator asked for it explicitly
    bar = _Bar(progress and sys.stderr.isatty())
    status = 0
    with bar:
        for r in rows:
            status |= _now_one(uploader, r, attempts, bar)
    return status


def _now_one(uploader: Any, row: SessionRow, attempts: int, bar: _Bar) -> int:
    sid = row.session_id
    task = bar.add(sid, row.total_bytes)

    def progress() -> None:
        current = uploader.queue.session(sid)
        if current is not None:
            bar.update(task, current.bytes_done)

    progress()
    t0 = time.monotonic()
    outcome = ""
    for attempt in range(max(1, attempts)):
        outcome = uploader.upload(sid, force=True, progress=progress)
        if outcome != "retry" or attempt == attempts - 1:
            break
        wait = max(0.0, uploader.queue.session(sid).next_attempt_ns / 1e9 - time.time())
        time.sleep(min(wait, 30.0))
    current = uploader.queue.session(sid)
    progress()
    dt = time.monotonic() - t0
    if outcome in ("verified", "deleted"):
        bar.print(
            f"{sid}: {outcome} ({_human(row.total_bytes)} in {dt:.1f} s) -> "
            f"{remote_url(current.destination, current.remote_prefix)}"
        )
        return 0
    if outcome == "busy":
        bar.print(f"{sid}: being uploaded by another uploader process; see `xsq upload status`")
        return 1
    bar.print(f"{sid}: {outcome}: {current.last_error}")
    return 1


class _Bar:
    """A rich progress bar in bytes, or plain lines when not on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, name: str, total: int) -> int:
        if self._progress is None:
            return 0
        return int(self._progress.add_task(name, total=total))

    def update(self, task: int, done: int) -> None:
        if self._progress is not None:
            self._progress.update(task, completed=done)

    def print(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)


def _run_alone(cfg: LoggerConfig) -> int:
    from xsquare_logger.upload.uploader import Uploader

    uploader = Uploader(cfg)
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    logging.getLogger(__name__).info(
        "uploader running: %s -> %s", cfg.data_root, cfg.upload.destination
    )
    uploader.start()
    while not done.wait(1.0):
        pass
    uploader.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xsquare_logger.cli.upload upload ACTION ...`` (same as ``xsq upload``)."""
    parser = argparse.ArgumentParser(prog="xsq")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
