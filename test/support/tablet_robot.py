"""A robot-side tablet link in its own process, for the tablet link tests.

Usage: python -m support.tablet_robot --keys-dir DIR --events FILE [--insecure]
       [--status-interval S]

Runs the real :class:`TabletServer` and :class:`VisitStateMachine` on
127.0.0.1 with free ports (port 0), prints one JSON line with the bound ports
on stdout (``{"command_port": ..., "status_port": ...}``), logs ``tablet robot
ready`` on stderr, and serves until SIGINT/SIGTERM.

Its controller STANDS IN FOR THE RECORDER: it records nothing but writes every
call it receives (start, events, stop) as a JSON line to ``--events``, so the
tests can check exactly what the bridge asked the recorder to record. The
lead's full-flow test drives the real recorder through the same bridge.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xsquare_logger.config.model import TabletConfig
from xsquare_logger.link.server import TabletServer
from xsquare_logger.link.visit import VisitStateMachine
from xsquare_logger.recording.control import RecordingStatus
from xsquare_logger.session.events import TaskEventData, VisitInfo

ROBOT_ID = "test-robot"


class JsonlController:
    """A SessionController that appends each call to a JSON-lines file (no recording)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._sessions = 0
        self._session_id = ""

    def _write(self, entry: dict[str, Any]) -> None:
        with self._path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def start_session(self, visit: VisitInfo, stamp_ns: int) -> str:
        self._sessions += 1
        self._session_id = f"{ROBOT_ID}-{self._sessions}"
        self._write({"call": "start_session", "visit": asdict(visit), "stamp_ns": stamp_ns})
        return self._session_id

    def record_event(self, event: TaskEventData) -> None:
        self._write({"call": "record_event", **asdict(event)})

    def set_camera_paused(self, paused: bool, stamp_ns: int) -> None:
        self._write({"call": "set_camera_paused", "paused": paused, "stamp_ns": stamp_ns})

    def stop_session(self, stamp_ns: int) -> str:
        self._write({"call": "stop_session", "stamp_ns": stamp_ns})
        path, self._session_id = f"/data/{self._session_id}", ""
        return path

    def status(self) -> RecordingStatus:
        return RecordingStatus(
            recording=bool(self._session_id),
            session_id=self._session_id,
            disk_free_bytes=10**12,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys-dir", type=Path, required=True)
    ap.add_argument("--events", type=Path, required=True)
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--status-interval", type=float, default=1.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = TabletConfig(
        command_endpoint="tcp://127.0.0.1:0",
        status_endpoint="tcp://127.0.0.1:0",
        keys_dir=args.keys_dir,
        insecure=args.insecure,
        status_interval=args.status_interval,
    )
    machine = VisitStateMachine(JsonlController(args.events), ROBOT_ID, tasks=["fold towel"])
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with TabletServer(config, ROBOT_ID, machine) as server:
        ports = {"command_port": server.command_port, "status_port": server.status_port}
        print(json.dumps(ports), flush=True)
        logging.getLogger("tablet_robot").info("tablet robot ready")
        done.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
