"""Camera previews for the console: asked from the robot only while a page shows them.

The robot makes a preview (about 320 px wide JPEG, at most one a second per camera)
only for a camera some console asked for within its lease (``preview.get``;
/tmp/console_needs.md, section 1, is the shape asked of the protocol). So the cost
on the robot follows the page: the page polls ``GET /api/preview`` only while it is
visible, this module turns each poll into at most one ``preview.get`` per camera
per ``min_interval`` (two open tabs do not double the robot's work), and with no
page open nothing is asked at all.

Previews use their own client (own socket, short timeout, no retries): a slow or
absent robot must never make an operator's Success tap wait behind a picture.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from xsquare_logger.tablet.client import TabletError

__all__ = ["CAMERA_NAME", "PreviewSource"]

#: What the console accepts as a camera name in ``/api/preview?camera=``.
CAMERA_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
# The page puts the picture into a data: URL; anything but base64 text is not one.
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
#: After the robot says it has no ``preview.get`` (an older robot), ask again only
#: this often (seconds): a software update may bring it.
UNSUPPORTED_RETRY_SEC = 30.0


class _Client(Protocol):
    last_reply: Any

    def request(
        self, cmd: str, args: dict[str, Any] | None = None, request_id: str | None = None
    ) -> dict[str, Any]: ...

    def close(self) -> None: ...


class PreviewSource:
    """``get(camera)`` -> the newest preview as JSON for the page (never raises).

    ``client`` sends ``preview.get``; ``min_interval`` (seconds) is how long an
    answer is reused; ``clock`` returns seconds (monotonic).
    """

    def __init__(
        self,
        client: _Client,
        *,
        min_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._unsupported_until = 0.0
        self.requests_sent = 0  # what the robot was asked, for tests and the benchmark

    def get(self, camera: str) -> dict[str, Any]:
        """The newest preview of ``camera``: ``available`` False with an ``error`` when none."""
        with self._lock:
            now = self._clock()
            cached = self._cache.get(camera)
            if cached is not None and now - cached[0] < self._min_interval:
                return cached[1]
            if now < self._unsupported_until:
                return _none(camera, "PREVIEW_UNSUPPORTED", "this robot offers no previews")
            answer = self._ask(camera)
            if (answer.get("error") or {}).get("code") == "UNKNOWN_COMMAND":
                self._unsupported_until = now + UNSUPPORTED_RETRY_SEC
                answer = _none(camera, "PREVIEW_UNSUPPORTED", "this robot offers no previews")
            self._cache[camera] = (now, answer)
            return answer

    def _ask(self, camera: str) -> dict[str, Any]:
        self.requests_sent += 1
        try:
            result = self._client.request("preview.get", {"camera": camera})
        except TabletError as exc:
            return _none(camera, exc.code, exc.message)
        robot_ns = getattr(self._client.last_reply, "robot_time_ns", None)
        stamp = result.get("stamp_ns")
        data = result.get("data_b64")
        available = (
            bool(result.get("available"))
            and isinstance(data, str)
            and bool(data)
            and _BASE64.match(data) is not None
        )
        age = None
        if available and isinstance(stamp, int) and isinstance(robot_ns, int) and stamp > 0:
            age = round(max(0, robot_ns - stamp) / 1e9, 1)
        return {
            "camera": camera,
            "topic": str(result.get("topic", "")),
            "available": available,
            "age_sec": age,
            "width": result.get("width", 0),
            "height": result.get("height", 0),
            "format": str(result.get("format", "jpeg")),
            "data_b64": data if available else "",
            "error": None,
        }

    def close(self) -> None:
        with self._lock:
            self._client.close()


def _none(camera: str, code: str, message: str) -> dict[str, Any]:
    return {
        "camera": camera,
        "topic": "",
        "available": False,
        "age_sec": None,
        "width": 0,
        "height": 0,
        "format": "jpeg",
        "data_b64": "",
        "error": {"code": code, "message": message},
    }
