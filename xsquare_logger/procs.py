"""Starting xsquare processes with safe ROS networking (demo, benchmarks, tests).

Every ROS process we start stays on this machine
(``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and gets a domain id of its own
so parallel runs never hear each other.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["ros_env", "start", "stop"]


def ros_env(domain_id: int | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a ROS process: localhost-only discovery, its own domain."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if domain_id is None:
        # Fast DDS accepts 0..232; avoid 0 (the default every stray node uses).
        domain_id = random.SystemRandom().randint(1, 232)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


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
