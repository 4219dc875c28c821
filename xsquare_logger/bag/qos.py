"""QoS profiles as rosbag2 writes them, and how the recorder adapts to publishers.

Profiles are plain dicts in rosbag2 metadata version 9 form (lower-case policy
names, durations as ``{sec, nsec}``), so they go into metadata.yaml and the
MCAP channel metadata unchanged and stay free of rclpy.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = [
    "INFINITE",
    "QosDict",
    "adapt_subscription",
    "make_qos",
    "qos_mismatch",
    "qos_profiles_yaml",
]

QosDict = dict[str, Any]

# What rosbag2 (Jazzy and later) writes for an infinite duration.
INFINITE: dict[str, int] = {"sec": 9223372036, "nsec": 854775807}


def make_qos(
    reliability: str = "reliable",
    durability: str = "volatile",
    history: str = "keep_last",
    depth: int = 10,
    liveliness: str = "automatic",
    deadline: dict[str, int] | None = None,
    lifespan: dict[str, int] | None = None,
    liveliness_lease_duration: dict[str, int] | None = None,
) -> QosDict:
    """One QoS profile dict, ordered as rosbag2 writes it."""
    return {
        "history": history,
        "depth": depth,
        "reliability": reliability,
        "durability": durability,
        "deadline": dict(deadline or INFINITE),
        "lifespan": dict(lifespan or INFINITE),
        "liveliness": liveliness,
        "liveliness_lease_duration": dict(liveliness_lease_duration or INFINITE),
        "avoid_ros_namespace_conventions": False,
    }


def adapt_subscription(offered: list[QosDict], depth: int) -> QosDict:
    """Choose the subscription QoS that matches every publisher, as rosbag2 does.

    Reliable only if all publishers are reliable (a reliable subscription does
    not match a best-effort publisher); transient local only if all publishers
    offer it (so late-joining recorders still get latched data, e.g. TaskEvents).
    With no publisher known yet, fall back to best effort + volatile, which
    matches anything.
    """
    if not offered:
        return make_qos("best_effort", "volatile", depth=depth)
    reliable = all(p.get("reliability") == "reliable" for p in offered)
    transient = all(p.get("durability") == "transient_local" for p in offered)
    return make_qos(
        "reliable" if reliable else "best_effort",
        "transient_local" if transient else "volatile",
        depth=depth,
    )


def qos_mismatch(requested: QosDict, offered: list[QosDict]) -> str | None:
    """Why a subscription with ``requested`` QoS misses some of the ``offered`` publishers,
    or None when it matches them all (the DDS request/offered rules for the two policies
    the recorder adapts: reliability and durability)."""
    if requested.get("reliability") == "reliable" and any(
        p.get("reliability") != "reliable" for p in offered
    ):
        return "a best_effort publisher joined after the recorder subscribed reliable"
    if requested.get("durability") == "transient_local" and any(
        p.get("durability") != "transient_local" for p in offered
    ):
        return "a volatile publisher joined after the recorder subscribed transient_local"
    return None


def qos_profiles_yaml(profiles: list[QosDict]) -> str:
    """The YAML string rosbag2 stores in MCAP channel metadata ``offered_qos_profiles``."""
    if not profiles:
        return ""
    return yaml.safe_dump(profiles, sort_keys=False, default_flow_style=False).strip()
