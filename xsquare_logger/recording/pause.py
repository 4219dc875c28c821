"""The writing pause (rosbag2's ``~/pause`` / ``~/resume``): the whole recording, by stamp.

Distinct from the privacy pause (cameras only, an operator's event in the visit).
While paused, recorded topics are received (and their sequence numbers followed, so
a pause is no transport loss) but not written; the recorder's own topics (status,
task events) still are, so the bag shows when and why nothing else was written.
The cut is by receive stamp on the writer thread, so messages still queued when the
pause began are cut exactly at its stamp, whatever the queue held.
"""

from __future__ import annotations

import threading

__all__ = ["WritingPause"]


class WritingPause:
    """Paused ranges ``[start_ns, end_ns)`` (end 0 while open); thread-safe toggling."""

    def __init__(self, paused_from_ns: int | None = None) -> None:
        self._lock = threading.Lock()
        self._ranges: list[list[int]] = []
        if paused_from_ns is not None:
            self._ranges.append([paused_from_ns, 0])

    @property
    def paused(self) -> bool:
        ranges = self._ranges
        return bool(ranges) and ranges[-1][1] == 0

    def set(self, paused: bool, stamp_ns: int) -> bool:
        """Pause (or resume) from ``stamp_ns`` on; False when it already was so."""
        with self._lock:
            if paused == self.paused:
                return False
            if paused:
                self._ranges.append([stamp_ns, 0])
            else:
                # A resume stamped before the pause (clock step) ends it at its start.
                self._ranges[-1][1] = max(stamp_ns, self._ranges[-1][0])
            return True

    def covers(self, log_ns: int) -> bool:
        """Whether a message received at ``log_ns`` falls in a pause (writer thread)."""
        if not self._ranges:
            return False
        return any(s <= log_ns and (not e or log_ns < e) for s, e in list(self._ranges))

    def ranges(self) -> list[tuple[int, int]]:
        """The paused ranges so far; an open one ends at 0."""
        with self._lock:
            return [(s, e) for s, e in self._ranges]
