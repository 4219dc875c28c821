"""``GET /metrics``: the floor in Prometheus' text exposition format (0.0.4).

Written by hand (a dozen gauges): every value is computed from the database at
scrape time, so each replica answers the same and nothing is kept in memory.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xsquare_logger.floor.catalog.core import Catalog

__all__ = ["CONTENT_TYPE", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("idle", "recording", "error", "stale")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(out: list[str], name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} gauge")
    for labels, value in samples:
        out.append(f"{name}{labels} {value:g}" if isinstance(value, float) else
                   f"{name}{labels} {value}")


def render(catalog: Catalog) -> str:
    tiles = [t for t in catalog.robots() if not t.revoked]
    states: Counter[str] = Counter()
    for t in tiles:
        hb = t.last_heartbeat
        states["stale" if t.stale or hb is None else hb.state] += 1
    out: list[str] = []
    _gauge(out, "xsq_floor_robots",
           "Registered robots by state; a robot without a recent heartbeat counts as stale.",
           [(f'{{state="{s}"}}', states[s]) for s in STATES])
    _gauge(out, "xsq_floor_robots_stale", "Robots with no heartbeat within the stale limit.",
           [("", states["stale"])])
    reporting = [(t.robot_id, t.last_heartbeat) for t in tiles if t.last_heartbeat]
    _gauge(out, "xsq_floor_messages_lost",
           "Messages lost in the robot's current session (its last heartbeat).",
           [(f'{{robot="{_label(r)}"}}', hb.messages_lost) for r, hb in reporting])
    _gauge(out, "xsq_floor_upload_backlog_bytes",
           "Bytes waiting to be uploaded on the robot (its last heartbeat).",
           [(f'{{robot="{_label(r)}"}}', hb.upload_backlog_bytes) for r, hb in reporting])
    summary = catalog.summary()
    _gauge(out, "xsq_floor_episodes_today",
           "Episodes started today (service local time) and kept, by outcome.",
           [(f'{{outcome="{_label(o)}"}}', n)
            for o, n in sorted(summary.episodes_by_outcome.items())])
    _gauge(out, "xsq_floor_episodes_discarded_today",
           "Episodes started today and discarded (re-recorded); not in episodes_today.",
           [("", summary.episodes_discarded)])
    return "\n".join(out) + "\n"
