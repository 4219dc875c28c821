"""Camera previews on request: a small JPEG about once a second, only while someone asks.

Pull with a lease (docs/tablet-protocol.md ``preview.get``): :meth:`PreviewMaker.request`
opens (or extends) a camera's lease for ``lease_s`` and returns the newest preview. The
camera's subscription callback pays one integer compare per frame (``recv >=
lane.next_ns``); ``next_ns`` is "never" unless a lease is open and the next preview is
due, so with no console open no preview work happens at all. A due frame is handed to
one worker thread (latest wins, nothing queues up), which scales it to ``width`` pixels
and encodes a JPEG small enough for a reply (``MAX_JPEG_BYTES``); OpenCV releases the
GIL while it does.

The first request after a lease lapsed only opens it (no picture yet: the one kept is
stale); :meth:`clear` drops every picture (privacy pause: cameras must not be shown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xsquare_logger.camera.cdr import CdrError, UnsupportedImage, parse_image

__all__ = ["MAX_JPEG_BYTES", "NEVER", "Preview", "PreviewLane", "PreviewMaker", "make_jpeg"]

log = logging.getLogger("xsquare_logger.preview")

NEVER = 1 << 62
#: The JPEG stays under this, so its base64 (4/3) keeps a reply far below 64 KiB.
MAX_JPEG_BYTES = 18 * 1024


@dataclass(frozen=True)
class Preview:
    topic: str
    stamp_ns: int  # robot receive time of the frame it was made from
    width: int
    height: int
    jpeg: bytes


def make_jpeg(cdr: bytes, width: int) -> tuple[bytes, int, int]:
    """A ``sensor_msgs/msg/Image`` (CDR) as a JPEG about ``width`` px wide: (jpeg, w, h)."""
    import cv2

    img = parse_image(cdr)
    pixels = img.pixels
    # Decimate first (a strided view, no copy), then area-resize the small remainder.
    step = max(1, img.width // (2 * width))
    small = np.ascontiguousarray(pixels[::step, ::step])
    w = min(width, img.width)
    h = max(1, round(img.height * w / img.width))
    small = cv2.resize(small, (w, h), interpolation=cv2.INTER_AREA)
    if img.encoding == "rgb8":
        small = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    for quality in (80, 60, 40, 25, 10):
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and len(buf) <= MAX_JPEG_BYTES:
            return buf.tobytes(), w, h
    raise ValueError(f"preview of {img.width}x{img.height} does not fit {MAX_JPEG_BYTES} bytes")


class PreviewLane:
    """One camera's lease and newest picture. ``next_ns`` is read per frame."""

    __slots__ = ("lease_until_ns", "next_ns", "picture", "topic")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.next_ns = NEVER
        self.lease_until_ns = 0
        self.picture: Preview | None = None


class PreviewMaker:
    """The previews of one session's cameras (see the module docstring)."""

    def __init__(
        self,
        width: int = 320,
        interval_s: float = 1.0,
        lease_s: float = 5.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.width = width
        self.interval_ns = int(interval_s * 1e9)
        self.lease_ns = int(lease_s * 1e9)
        self._clock = clock
        self.lanes: dict[str, PreviewLane] = {}
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[bytes, int]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self.made = 0  # previews encoded (benchmarks, tests)

    def lane(self, topic: str) -> PreviewLane:
        """The one lane of ``topic`` (the subscription and a request may race to make it)."""
        with self._cond:
            lane = self.lanes.get(topic)
            if lane is None:
                lane = self.lanes[topic] = PreviewLane(topic)
            return lane

    def offer(self, lane: PreviewLane, cdr: bytes, recv_ns: int) -> None:
        """A due frame (``recv_ns >= lane.next_ns``; the caller compared): queue it."""
        if recv_ns > lane.lease_until_ns:  # nobody asked for a while: stop making them
            lane.next_ns = NEVER
            return
        lane.next_ns = recv_ns + self.interval_ns
        with self._cond:
            if self._closed:
                return
            self._pending[lane.topic] = (cdr, recv_ns)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="xsq-preview", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def request(self, topic: str) -> Preview | None:
        """Open or extend ``topic``'s lease; the newest picture, None when none yet."""
        lane = self.lane(topic)
        now = self._clock()
        lapsed = now > lane.lease_until_ns
        lane.lease_until_ns = now + self.lease_ns
        if lapsed:
            lane.picture = None  # stale: it may show a scene from minutes ago
            lane.next_ns = 0  # the next frame is due
            return None
        return lane.picture

    def clear(self) -> None:
        """Drop every picture and pending frame, and close the leases (privacy pause)."""
        with self._cond:
            self._pending.clear()
        for lane in list(self.lanes.values()):
            lane.picture = None
            lane.next_ns = NEVER
            lane.lease_until_ns = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                topic, (cdr, recv_ns) = self._pending.popitem()
            try:
                jpeg, w, h = make_jpeg(cdr, self.width)
            except (CdrError, UnsupportedImage, ValueError) as exc:
                log.warning("no preview of %s: %s", topic, exc)
                continue
            lane = self.lanes[topic]
            if lane.next_ns != NEVER or lane.lease_until_ns:  # not cleared meanwhile
                lane.picture = Preview(topic, recv_ns, w, h, jpeg)
                self.made += 1
