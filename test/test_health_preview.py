"""Camera previews (recording/preview.py): a lease, about 320 px JPEG, nothing unasked."""

from __future__ import annotations

import threading

import cv2
import numpy as np

from xsquare_logger.recording.preview import MAX_JPEG_BYTES, NEVER, PreviewMaker
from xsquare_logger.sim.frames import build_ring
from xsquare_logger.sim.profiles import get_profile

S = 1_000_000_000


def head_frame() -> bytes:
    spec = get_profile("humanoid").stream("/camera/head/image_raw")
    return build_ring(spec, verify=False).payload(0, 1_000 * S)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * S

    def __call__(self) -> int:
        return self.now


def wait_made(maker: PreviewMaker, n: int) -> None:
    done = threading.Event()
    for _ in range(200):
        if maker.made >= n:
            return
        done.wait(0.02)
    raise AssertionError(f"{maker.made} previews made, expected {n}")


def test_no_request_no_work_then_a_lease_gives_a_small_jpeg() -> None:
    clock = Clock()
    maker = PreviewMaker(width=320, interval_s=1.0, lease_s=5.0, clock=clock)
    lane = maker.lane("/camera/head/image_raw")
    frame = head_frame()
    assert lane.next_ns == NEVER  # every frame compares and moves on
    try:
        assert maker.request(lane.topic) is None  # the first request opens the lease
        assert lane.next_ns <= clock.now
        maker.offer(lane, frame, clock.now)
        wait_made(maker, 1)
        got = maker.request(lane.topic)
        assert got is not None and (got.width, got.height) == (320, 180)
        assert len(got.jpeg) <= MAX_JPEG_BYTES and got.stamp_ns == clock.now
        img = cv2.imdecode(np.frombuffer(got.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        assert img.shape == (180, 320, 3)
        # At most one per interval: the next frame is due a second later.
        assert lane.next_ns == clock.now + S
        # The lease lapses: a due frame is refused and no more are due.
        clock.now += 6 * S
        maker.offer(lane, frame, clock.now)
        assert lane.next_ns == NEVER and maker.made == 1
        assert maker.request(lane.topic) is None  # stale picture not shown: lease reopened
        maker.offer(lane, frame, clock.now)
        wait_made(maker, 2)
        assert maker.request(lane.topic) is not None
        maker.clear()  # privacy pause
        assert maker.request(lane.topic) is None and lane.picture is None
    finally:
        maker.close()
