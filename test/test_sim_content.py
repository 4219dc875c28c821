"""The sim's camera content modes (sim/frames.py): natural frames are what they claim."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from xsquare_logger.sim.frames import render_frames
from xsquare_logger.sim.profiles import get_profile

pytest.importorskip("skimage", reason="natural content reads scikit-image's sample photos")

CAMERA = "/camera/head/image_raw"


def _jpeg_kb(frame: np.ndarray) -> float:
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return len(buf) / 1e3


def test_natural_frames_move_loop_and_compress_like_photos() -> None:
    prof = get_profile("humanoid")
    natural = render_frames(prof.with_camera_content("natural").stream(CAMERA))
    synthetic = render_frames(prof.stream(CAMERA))
    assert len(natural) == len(synthetic) == 30
    assert all(f.shape == (720, 1280, 3) and f.dtype == np.uint8 for f in natural)

    def step(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())

    steps = [step(natural[i], natural[(i + 1) % 30]) for i in range(30)]
    # The camera moves every frame, and the ring's wrap-around is no bigger a jump.
    assert min(steps) > 3 and steps[-1] < 1.5 * max(steps[:-1])
    # Photographs with sensor noise: JPEG frames twice the size of the synthetic ones.
    assert _jpeg_kb(natural[0]) > 2 * _jpeg_kb(synthetic[0])
    # Each camera shows its own view.
    wrist = prof.with_camera_content("natural").stream("/camera/left_wrist/image_raw")
    other = render_frames(wrist)
    assert step(natural[0], other[0]) > 10


def test_unknown_content_is_refused() -> None:
    with pytest.raises(ValueError, match="camera content 'snow'"):
        get_profile("humanoid").with_camera_content("snow")
