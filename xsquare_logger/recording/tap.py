"""What the recorder hands written messages to besides the bag (the live view, ...).

The recorder core knows only this Protocol; the composition root (``ros/recorder_node.py``)
builds the concrete taps (``live.server.LiveView``) and passes them in, so ``recording/``
never imports ``live/``. All methods are called on the recorder's writer thread, after the
message is in the bag; a tap that raises is dropped for the rest of the session (a tap is a
convenience, it must never stop a recording).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Tap"]


class Tap(Protocol):
    """A consumer of the recorded stream.

    A tap may outlive a session (the node's live view serves every session): its owner
    closes it, never the recorder.
    """

    def advertise(self, topic: str, type_name: str) -> None:
        """``topic`` of ``type_name`` is recorded in this session (called as it registers,
        so viewers can subscribe before the first message)."""

    def offer(self, topic: str, type_name: str, data: bytes, log_time_ns: int) -> bool:
        """A message as written (serialized CDR, receive time in ns). Returns whether the
        tap used it (e.g. False when nobody watches or it was throttled)."""
        ...  # pragma: no cover - protocol

    def close(self) -> None:
        """Release the tap's resources (its owner calls this)."""
