"""SHA-256 of a stream of buffers on a thread of its own, in order.

Why a thread: at 3x720p30 raw the MCAP writer's I/O thread was the recorder's critical path
(chunk CRC, the file write and SHA-256 one after the other, ~85% of its wall time busy), and
SHA-256 was a third of it. hashlib releases the GIL on large buffers, so hashing chunk k here
overlaps writing chunk k on the I/O thread (issue 12). The digest is the same as hashing
inline: buffers are hashed in the order they were handed over.

A buffer handed over must not change until it was hashed; :meth:`after` runs a callback
once everything before it is hashed (the writer returns a chunk buffer to its pool there).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["BackgroundHasher"]

_Item = tuple[Any, int, Callable[[], None] | None]  # (buffer or None, length or -1, callback)


class BackgroundHasher:
    """Feed buffers (in order) to one SHA-256 on a daemon thread."""

    def __init__(self, sha: Any = None, name: str = "xsq-sha256") -> None:
        # A running hashlib object to go on from (bytes hashed before), or a new SHA-256;
        # fed only by the thread until stop().
        self.sha = sha if sha is not None else hashlib.sha256()
        self._items: queue.Queue[_Item | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self._stopped = False

    def update(self, data: Any, length: int = -1) -> None:
        """Hash ``data`` (bytes, or a bytearray/buffer of which the first ``length`` bytes)."""
        self._items.put((data, length, None))

    def after(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the hashing thread once everything handed over so far is hashed."""
        self._items.put((None, -1, callback))

    def hexdigest(self) -> str:
        """Digest of everything handed over so far (waits for the thread to catch up)."""
        if not self._stopped:
            self._items.join()
        return self.sha.hexdigest()

    def stop(self) -> None:
        """Hash what is queued, run queued callbacks, end the thread. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._items.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while True:
            item = self._items.get()
            try:
                if item is None:
                    return
                data, length, callback = item
                if data is not None:
                    if length < 0:
                        self.sha.update(data)
                    else:
                        with memoryview(data) as view, view[:length] as part:
                            self.sha.update(part)
                if callback is not None:
                    callback()
            finally:
                self._items.task_done()
