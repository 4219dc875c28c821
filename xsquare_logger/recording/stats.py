"""Per-topic counters: what arrived, what was written, and every kind of loss."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["SequenceTracker", "TopicStats"]


@dataclass
class TopicStats:
    """Counters for one recorded topic.

    ``lost_transport`` is derived from gaps in each publisher's
    ``publication_sequence_number``: messages the middleware never delivered.
    ``dropped_queue`` counts messages received but refused by the full writer
    queue; ``dropped_disk`` those that could not be written (disk full / closed);
    ``dropped_encode`` camera frames skipped because compression fell behind, or
    that failed to encode.
    """

    topic: str
    type: str
    received: int = 0
    written: int = 0
    bytes_written: int = 0
    lost_transport: int = 0
    dropped_queue: int = 0
    dropped_disk: int = 0
    dropped_encode: int = 0
    publishers: int = 0

    @property
    def lost_total(self) -> int:
        return self.lost_transport + self.dropped_queue + self.dropped_disk + self.dropped_encode

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


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
