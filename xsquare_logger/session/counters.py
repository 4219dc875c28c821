"""Per-topic counters: what arrived, what was written, and every kind of loss."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["TopicStats"]


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
