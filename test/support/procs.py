"""Starting xsquare processes with safe ROS networking (benchmarks, tests).

Every ROS process we start stays on this machine
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and gets a domain id of its own
so parallel runs never hear each other.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from xsquare_logger.ros.env import ros_env

__all__ = ["ros_env", "start", "stop"]


def start(
    args: Sequence[str],
    env: Mapping[str, str],
    stdout: Path | int | None = None,
    stderr: Path | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m ...`` style argv with this interpreter; files capture output."""
    out = open(stdout, "wb") if isinstance(stdout, Path) else stdout  # noqa: SIM115
    err = open(stderr, "wb") if isinstance(stderr, Path) else stderr  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, *args], env=dict(env), stdout=out, stderr=err, stdin=subprocess.DEVNULL
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 60.0, sig: int = signal.SIGINT) -> int:
    """Signal ``proc`` and wait; kill it if it does not exit within ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
    return proc.wait()
