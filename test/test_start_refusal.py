"""A recorder that cannot start leaves nothing behind.

Runs the real ``xsq record`` with the shipped humanoid config (JPEG cameras) in an
environment where OpenCV really cannot be imported (a ``cv2`` package on the path
that raises ImportError, as on an image that lacks opencv-python-headless).
"""

from __future__ import annotations

import os
from pathlib import Path

from conftest import xsq

REPO = Path(__file__).resolve().parent.parent


def test_missing_codec_refuses_start_without_an_empty_session(env, tmp_path: Path) -> None:
    blocker = tmp_path / "no_opencv" / "cv2"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('cv2 is not installed here')\n")
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker.parent), env.get("PYTHONPATH", "")])
    data = tmp_path / "data"
    res = xsq(
        "record", "--config", str(REPO / "config" / "robot.yaml"), "--data-root", str(data),
        "--no-recover", env=env, timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "xsq record" in ln]
    assert lines and ("OpenCV" in lines[-1] or "JPEG" in lines[-1]), res.stderr
    # No session directory may be left behind by a refused start.
    assert not data.exists() or not any(data.iterdir()), list(data.iterdir())
