"""Bandwidth cap: one token bucket shared by every part in flight, and a body that obeys it.

Pacing happens as the HTTP client reads the request body, so the cap holds on
the wire (within one 64 KiB slice), not just on average per part.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

from xsquare_logger.errors import XsqError

__all__ = ["Aborted", "ThrottledBody", "TokenBucket"]

SLICE = 64 * 1024  # bytes handed to the socket per read when throttled


class Aborted(XsqError):
    """The transfer was told to stop while a throttled body was being sent."""


class TokenBucket:
    """``rate`` bytes/s, bursts up to ``burst`` bytes (default: a quarter second of rate)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 bytes/s")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(SLICE, rate / 4))
        self._tokens = self.burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int, cancelled: Callable[[], bool] | None = None) -> None:
        """Block until ``n`` bytes may be sent (checks ``cancelled`` every 0.1 s)."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                # Going into debt by one slice keeps big reads possible with a small burst.
                if self._tokens > 0:
                    self._tokens -= n
                    return
                wait = max(0.001, -self._tokens / self.rate)
            if cancelled is not None and cancelled():
                raise Aborted("transfer stopped")
            time.sleep(min(wait, 0.1))


class ThrottledBody(io.RawIOBase):
    """A seekable, read-only view of ``data`` whose reads are paced by ``bucket``.

    botocore re-reads a body from the start on a retry, so seek/tell are real.
    """

    def __init__(
        self,
        data: bytes | memoryview,
        bucket: TokenBucket,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._pos = 0
        self._bucket = bucket
        self._cancelled = cancelled

    def __len__(self) -> int:
        return len(self._data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._data)}[whence]
        self._pos = max(0, min(len(self._data), base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        remaining = len(self._data) - self._pos
        n = remaining if size is None or size < 0 else min(size, remaining)
        n = min(n, SLICE)
        if n <= 0:
            return b""
        if self._cancelled is not None and self._cancelled():
            raise Aborted("transfer stopped")
        self._bucket.take(n, self._cancelled)
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    # Ignore [override]: typeshed's RawIOBase takes any writable buffer; callers pass these.
    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # see above
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)
