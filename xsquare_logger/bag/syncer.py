"""fdatasync of a growing file on a thread of its own, so writing never waits for the disk.

Why a thread: the recorder fsyncs its open bag every ``flush_interval`` (1 s) so a power loss
costs at most that much. At 3x720p30 raw that is ~250 MB of dirty pages per second; on this
machine's disk (~370 MB/s with fdatasync) each sync took ~0.7 s, and while the writer's I/O
thread sat in it, chunk buffers ran out and the recorder's queue dropped frames (issue 12).
Here the sync runs beside the writes: the I/O thread hands over "sync now" and goes on
writing. Requests that arrive while a sync runs are merged into the next one (a sync covers
every byte written before it started), so the durable point trails the written point by at
most one sync's duration plus one interval, which is as tight as the disk allows.

``fdatasync`` rather than ``fsync``: it skips the timestamp-only inode update and still
writes the file size, which is what reading the data back after a crash needs.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["BackgroundSync"]


class BackgroundSync:
    """Sync one file descriptor on request, on a daemon thread; errors are kept for the caller.

    The caller owns the descriptor and must call :meth:`stop` before closing it.
    """

    def __init__(self, fd: int, name: str = "xsq-fsync") -> None:
        self._fd = fd
        self._cond = threading.Condition()
        self._requested = False
        self._stopping = False
        self._busy = False
        self.error: OSError | None = None
        self.syncs = 0  # completed syncs
        self.last_duration = 0.0  # seconds the last sync took
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def request(self) -> None:
        """Ask for a sync of everything written so far; returns at once."""
        with self._cond:
            self._requested = True
            self._cond.notify()

    def wait_idle(self) -> None:
        """Block until no sync is requested or running (the durable point caught up)."""
        with self._cond:
            while (self._requested or self._busy) and self._thread.is_alive():
                self._cond.wait(0.1)

    def stop(self) -> None:
        """Finish a requested or running sync, then end the thread. Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._requested and not self._stopping:
                    self._cond.wait()
                if not self._requested:
                    return  # stopping, nothing left to sync
                self._requested = False
                self._busy = True
            started = time.monotonic()
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                if self.error is None:
                    self.error = exc
            finally:
                with self._cond:
                    self._busy = False
                    self.syncs += 1
                    self.last_duration = time.monotonic() - started
                    self._cond.notify_all()
