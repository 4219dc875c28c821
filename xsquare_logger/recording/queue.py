"""A queue bounded by bytes, so a burst of camera frames cannot exhaust memory."""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["ByteBoundedQueue"]

T = TypeVar("T")


class ByteBoundedQueue(Generic[T]):
    """FIFO that refuses items once ``max_bytes`` are queued.

    ``put`` never blocks: the ROS callback must return at once, and a refused
    item is counted as a drop by the caller rather than stalling the executor.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())
        self.peak_bytes = 0

    def put(self, item: T, nbytes: int) -> bool:
        """Enqueue ``item`` of size ``nbytes``; False (not queued) when full."""
        with self._cond:
            # An item larger than the whole bound is still accepted into an
            # empty queue, otherwise one huge message would be dropped forever.
            if self._bytes + nbytes > self.max_bytes and self._items:
                return False
            self._items.append((item, nbytes))
            self._bytes += nbytes
            if self._bytes > self.peak_bytes:
                self.peak_bytes = self._bytes
            self._cond.notify()
            return True

    def get_batch(self, timeout: float, max_items: int = 256) -> list[T]:
        """Wait up to ``timeout`` seconds for items; return up to ``max_items`` of them."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            out: list[T] = []
            while self._items and len(out) < max_items:
                item, nbytes = self._items.popleft()
                self._bytes -= nbytes
                out.append(item)
            return out

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
