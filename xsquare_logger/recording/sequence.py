"""Transport-loss detection from publication sequence numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SequenceTracker"]


@dataclass
class SequenceTracker:
    """Detects gaps in publication sequence numbers, per publisher GID.

    The first message of a publisher sets the baseline: messages published
    before we subscribed are not losses.
    """

    last: dict[bytes, int] = field(default_factory=dict)

    def observe(self, gid: bytes, seq: int) -> int:
        """Record ``seq`` from publisher ``gid``; return how many messages were skipped."""
        prev = self.last.get(gid)
        if prev is None or seq <= prev:
            # seq <= prev: a publisher restarted with the same GID (or reordering);
            # re-baseline rather than invent a loss.
            self.last[gid] = seq
            return 0
        self.last[gid] = seq
        return seq - prev - 1

    @property
    def publishers(self) -> int:
        return len(self.last)
