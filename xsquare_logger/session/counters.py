"""The one definition of a session's counters: what arrived, what was written, what was lost.

Every output derives from :class:`LossCounters` (``to_dict``, ``lost``, ``total``):
session.json (``topics.<name>`` and ``drops``), metadata.yaml ``custom_data``
(``xsquare.counters``), the ``SessionStatus``/``TopicStats`` messages recorded in the
bag, the tablet status, ``xsq info`` and ``xsq report``. So "lost" means the same
number everywhere: the sum of the four loss kinds.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["COUNTER_KEYS", "LOSS_KINDS", "LossCounters", "TopicStats", "counters_document"]

#: The four ways a message can be lost; ``lost`` is their sum.
LOSS_KINDS = ("lost_transport", "dropped_queue", "dropped_disk", "dropped_encode")
#: The keys of :meth:`LossCounters.to_dict`, in this order.
COUNTER_KEYS = ("received", "written", *LOSS_KINDS, "lost")


@dataclass(kw_only=True)
class LossCounters:
    """Message counters of one topic, or of a whole session (:meth:`total`).

    ``received``: messages the middleware handed to the recorder (for a camera
    recorded compressed: raw frames in; its compressed topic counts encoded frames).
    ``written``: messages in the MCAP files.
    ``lost_transport``: gaps in each publisher's ``publication_sequence_number``:
    messages the middleware never delivered.
    ``dropped_queue``: received but refused by the full writer queue.
    ``dropped_disk``: received but not written (disk full, storage error).
    ``dropped_encode``: camera frames skipped because compression fell behind, or
    that failed to encode.
    """

    KINDS: ClassVar[tuple[str, ...]] = LOSS_KINDS

    received: int = 0
    written: int = 0
    lost_transport: int = 0
    dropped_queue: int = 0
    dropped_disk: int = 0
    dropped_encode: int = 0

    @property
    def lost(self) -> int:
        """Every message lost, of any kind (the one definition of "lost")."""
        return self.lost_transport + self.dropped_queue + self.dropped_disk + self.dropped_encode

    @property
    def loss_fraction(self) -> float:
        """``lost / (received + lost_transport)``: the share of the publishers' messages lost.

        ``received`` counts every message delivered (dropped ones too), and transport
        losses never arrived, so the denominator is what the publishers sent.
        """
        seen = self.received + self.lost_transport
        return self.lost / seen if seen else 0.0

    def counters(self) -> LossCounters:
        """A plain copy of just the counters (drops any subclass fields)."""
        return LossCounters(**{k: getattr(self, k) for k in COUNTER_KEYS[:-1]})

    def to_dict(self) -> dict[str, int]:
        """``received``, ``written``, the four loss kinds and ``lost``: what every output shows."""
        return {k: int(getattr(self, k)) for k in COUNTER_KEYS}

    def add(self, other: LossCounters) -> None:
        for k in COUNTER_KEYS[:-1]:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @classmethod
    def total(cls, items: Iterable[LossCounters]) -> LossCounters:
        """The sum of ``items`` (a session's totals from its topics)."""
        out = LossCounters()
        for item in items:
            out.add(item)
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | Any) -> LossCounters:
        """Counters from a dict (session.json, status JSON) or an object with the same
        attributes (a ``TopicStats`` message); missing keys count 0, ``lost`` is recomputed."""
        get = data.get if isinstance(data, Mapping) else lambda k, d: getattr(data, k, d)
        return LossCounters(**{k: int(get(k, 0) or 0) for k in COUNTER_KEYS[:-1]})


@dataclass
class TopicStats(LossCounters):
    """The live counters of one recorded topic (mutated by the recorder, one writer each).

    ``TopicStats(topic, type)``; the counters are keyword-only.
    """

    topic: str
    type: str
    bytes_written: int = 0
    publishers: int = 0

    def copy(self) -> TopicStats:
        return dataclasses.replace(self)


def counters_document(topics: Mapping[str, LossCounters]) -> dict[str, Any]:
    """``{"total": {...}, "topics": {name: {...}}}``: the counters of a session in one document
    (metadata.yaml ``custom_data["xsquare.counters"]`` as JSON, ``xsq info --json``)."""
    return {
        "total": LossCounters.total(topics.values()).to_dict(),
        "topics": {name: c.to_dict() for name, c in topics.items()},
    }


def counters_json(topics: Mapping[str, LossCounters]) -> str:
    return json.dumps(counters_document(topics), separators=(",", ":"))
