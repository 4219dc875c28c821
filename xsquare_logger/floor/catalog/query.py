"""Episode filters, time arguments and the opaque keyset cursor.

A cursor is the sort key of the last row of a page (start_ns, session_id,
episode_index), base64url-encoded JSON: the next page is "rows after this key",
which stays right while new episodes arrive and costs one index range scan
however deep the page (no OFFSET).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import get_args

from xsquare_logger.floor.catalog.db import CatalogError
from xsquare_logger.session.health import EpisodeQuality

__all__ = [
    "MAX_LIMIT",
    "QUALITY_VERDICTS",
    "EpisodeFilter",
    "check_limit",
    "day_range_ns",
    "decode_cursor",
    "encode_cursor",
    "parse_time_ns",
]

MAX_LIMIT = 1000
#: EpisodeQuality.verdict's values (session/health.py), in the order the docs list them.
QUALITY_VERDICTS: tuple[str, ...] = get_args(EpisodeQuality.model_fields["verdict"].annotation)


@dataclass(frozen=True)
class EpisodeFilter:
    """Every field empty/None = no constraint; all given ones must hold."""

    task: str | None = None
    outcome: str | None = None
    operator: str | None = None
    robot: str | None = None
    site: str | None = None
    since_ns: int | None = None  # episode start >= since
    until_ns: int | None = None  # episode start < until
    quality: str | None = None  # the recorder's verdict: one of QUALITY_VERDICTS
    include_discarded: bool = False  # discarded (re-recorded) episodes are left out

    def __post_init__(self) -> None:
        if self.quality and self.quality not in QUALITY_VERDICTS:
            raise CatalogError(f"quality {self.quality!r}: expected "
                               f"{', '.join(QUALITY_VERDICTS[:-1])} or {QUALITY_VERDICTS[-1]}")


def _ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.astimezone()  # naive = the service's local time zone
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def parse_time_ns(text: str, name: str = "time") -> int:
    """``YYYY-MM-DD`` (local midnight), an ISO 8601 date-time, or integer ns since the epoch."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        if len(value) == 10:
            return _ns(datetime.combine(date.fromisoformat(value), time()))
        return _ns(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise CatalogError(
            f"{name} {text!r}: expected YYYY-MM-DD, an ISO 8601 date-time or ns since the epoch"
        ) from None


def day_range_ns(day: str | None) -> tuple[str, int, int]:
    """``YYYY-MM-DD`` (default: today, local time) -> (day, start_ns, end_ns)."""
    try:
        d = date.fromisoformat(day) if day else date.today()
    except ValueError:
        raise CatalogError(f"day {day!r}: expected YYYY-MM-DD") from None
    start = _ns(datetime.combine(d, time()))
    end = _ns(datetime.combine(d + timedelta(days=1), time()))
    return d.isoformat(), start, end


def encode_cursor(key: tuple[int, str, int] | tuple[int, str]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[object]:
    """The key of ``size`` parts (int first, then str, then ints) or a CatalogError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    types = (int, str, int)[:size]
    if (
        not isinstance(key, list)
        or len(key) != size
        or not all(
            isinstance(v, t) and not isinstance(v, bool)
            for v, t in zip(key, types, strict=True)
        )
    ):
        raise CatalogError("cursor: not a cursor this service returned (pass next_cursor as is)")
    return key


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise CatalogError(f"limit {limit}: must be 1..{MAX_LIMIT}")
    return limit
