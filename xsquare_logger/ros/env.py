"""DDS hygiene for every ROS process xsquare starts (demo, benchmarks, tests).

Every such process stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``)
and gets a domain id of its own, so parallel runs never hear each other.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping

__all__ = ["ros_env"]


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
