"""A robot-side tablet link whose health, verdicts and previews a test steers, in its own process.

Usage: python -m support.console_robot --keys-dir DIR --events FILE --control DIR
       [--status-interval S] [--require FIELD ...] [--tasks NAME ...]

The real :class:`TabletServer` and :class:`VisitStateMachine` (CURVE, idempotency,
status PUB) on 127.0.0.1 with free ports, like ``support.tablet_robot``, but its
controller also offers what issue 11 asks of a recorder, read from files in
``--control`` at each call so a test can change them while the robot runs:

* ``health.json``: the stream health list (``StreamHealth`` fields), reported in
  status ``streams``; absent: the expected streams are reported ``unknown``.
* ``quality.json``: the verdict of the next ``task.end`` (``EpisodeQuality`` fields);
  absent: no verdict (``quality: null``).
* privacy pause is accepted and logged to ``--events``.
* camera previews (``preview.get``): a 320x180 JPEG of the asked camera's topic,
  each call logged to ``--events`` (so a test sees exactly when the robot was asked).

It STANDS IN FOR THE RECORDER (nothing is recorded; every call is a JSON line in
``--events``), so the console tests can drive every state the console shows
through the real link. The expected streams are the humanoid profile of the
default config.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from support.tablet_robot import ROBOT_ID, JsonlController
from xsquare_logger.config.model import LoggerConfig, TabletConfig, VisitConfig
from xsquare_logger.link.server import TabletServer
from xsquare_logger.link.visit import VisitStateMachine
from xsquare_logger.session.health import EpisodeQuality, EpisodeSpan, StreamHealth


@dataclass(frozen=True)
class Preview:
    topic: str
    stamp_ns: int
    width: int
    height: int
    jpeg: bytes


def _jpeg(topic: str) -> bytes:
    """A 320x180 JPEG whose colour depends on the topic (cameras tell apart)."""
    frame = np.zeros((180, 320, 3), np.uint8)
    frame[:] = (sum(topic.encode()) % 200, 90, 160)
    frame[60:120, 100:220] = 255
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 60])
    assert ok
    return buf.tobytes()


class SteeredController(JsonlController):
    """JsonlController plus health, verdicts and privacy pause, steered by files."""

    def __init__(self, events: Path, control: Path) -> None:
        super().__init__(events)
        self._control = control

    def _write(self, entry: dict[str, Any]) -> None:
        # Events now carry pydantic values (the verdict): written as their JSON.
        with self._path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, default=lambda o: o.model_dump(mode="json")) + "\n")

    def _read(self, name: str) -> object | None:
        path = self._control / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def stream_health(self) -> list[StreamHealth] | None:
        doc = self._read("health.json")
        if not isinstance(doc, list):
            return None
        return [StreamHealth.model_validate(item) for item in doc]

    def evaluate_episode(self, span: EpisodeSpan) -> EpisodeQuality | None:
        doc = self._read("quality.json")
        return None if doc is None else EpisodeQuality.model_validate(doc)

    def camera_preview(self, topic: str) -> Preview:
        self._write({"call": "camera_preview", "topic": topic})
        return Preview(topic, time.time_ns(), 320, 180, _jpeg(topic))

    def set_camera_paused(self, paused: bool, stamp_ns: int) -> None:
        self._write({"call": "set_camera_paused", "paused": paused, "stamp_ns": stamp_ns})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys-dir", type=Path, required=True)
    ap.add_argument("--events", type=Path, required=True)
    ap.add_argument("--control", type=Path, required=True)
    ap.add_argument("--status-interval", type=float, default=0.5)
    ap.add_argument("--require", nargs="*", default=[])
    ap.add_argument("--tasks", nargs="*", default=["fold towel", "wipe table"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = TabletConfig(
        command_endpoint="tcp://127.0.0.1:0",
        status_endpoint="tcp://127.0.0.1:0",
        keys_dir=args.keys_dir,
        status_interval=args.status_interval,
    )
    machine = VisitStateMachine(
        SteeredController(args.events, args.control),
        ROBOT_ID,
        tasks=args.tasks,
        visit=VisitConfig(required_fields=args.require),
        streams=LoggerConfig().health.streams,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with TabletServer(config, ROBOT_ID, machine) as server:
        ports = {"command_port": server.command_port, "status_port": server.status_port}
        print(json.dumps(ports), flush=True)
        logging.getLogger("console_robot").info("tablet robot ready")
        done.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
