"""Conversion between rclpy QoS objects and the recorder's rosbag2-style QoS dicts."""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    LivelinessPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

from xsquare_logger.bag.qos import INFINITE, QosDict, make_qos

__all__ = ["qos_from_dict", "qos_to_dict"]

def _duration(d: Duration) -> dict[str, int]:
    ns = d.nanoseconds
    # rmw reports "infinite" as INT64_MAX ns (and "default" as 0); store
    # rosbag2's canonical infinite form for both.
    if ns <= 0 or ns >= 0x7FFFFFFF * 10**9:
        return dict(INFINITE)
    return {"sec": ns // 10**9, "nsec": ns % 10**9}


def _name(policy: object) -> str:
    return str(getattr(policy, "name", policy)).lower()


def qos_to_dict(profile: QoSProfile) -> QosDict:
    """An offered (publisher) profile as rosbag2 metadata v9 writes it."""
    return make_qos(
        reliability=_name(profile.reliability),
        durability=_name(profile.durability),
        # Publishers report history UNKNOWN over DDS discovery; rosbag2 writes it as is.
        history=_name(profile.history),
        depth=int(profile.depth),
        liveliness=_name(profile.liveliness),
        deadline=_duration(profile.deadline),
        lifespan=_duration(profile.lifespan),
        liveliness_lease_duration=_duration(profile.liveliness_lease_duration),
    )


def qos_from_dict(q: QosDict) -> QoSProfile:
    """A subscription profile from the recorder's chosen dict (history keep_last)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=int(q["depth"]),
        reliability=(
            ReliabilityPolicy.RELIABLE
            if q["reliability"] == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        ),
        durability=(
            DurabilityPolicy.TRANSIENT_LOCAL
            if q["durability"] == "transient_local"
            else DurabilityPolicy.VOLATILE
        ),
        liveliness=LivelinessPolicy.AUTOMATIC,
    )
