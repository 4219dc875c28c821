"""Give freed heap memory back to the OS after a burst of camera frames.

Why: glibc serves a 2.7 MB raw frame from mmap only until the first such block is freed;
then it raises its mmap threshold and later frames come from the heap, whose free pages it
keeps. After a loaded raw session the recorder process sat at 1.4-1.6 GB resident, idle,
with a queue bound of 512 MB (issue 12); ``malloc_trim(0)`` took it back to ~110 MB.
Elsewhere (no glibc) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["BurstTrimmer", "release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where that is not possible."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True


class BurstTrimmer:
    """Calls :func:`release_free_memory` once the queue drained after holding ``high`` bytes.

    Checked by the writer thread now and then (not per message); a trim walks the heap,
    so it runs once per burst, not while the queue stays empty.
    """

    def __init__(self, high: int, low: int) -> None:
        self.high, self.low = high, low
        self._armed = False
        self.trims = 0

    def check(self, queued_bytes: int) -> None:
        if queued_bytes >= self.high:
            self._armed = True
        elif self._armed and queued_bytes <= self.low:
            self._armed = False
            if release_free_memory():
                self.trims += 1
