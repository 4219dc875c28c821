"""Time alignment of one episode (pure numpy; times are int64 ns since the epoch).

1. The grid: the grid camera's frame times (:func:`grid_slots`). Where its frames are more
   than 1.5 periods apart, the missing frames become empty slots at the nominal period, so a
   dropped frame is seen (and handled) rather than silently shortening the clip.
2. Every other input is taken at each slot's time: another camera's nearest frame
   (:func:`match`), a joint or wrench value by nearest sample or linear interpolation
   (:func:`sample`); an input is missing at a slot when no sample is within the tolerance.
3. :func:`plan` applies the missing-frame policy: ``drop`` (the episode, if any slot misses
   anything), ``split`` (into the runs of complete slots) or ``hold`` (the last value of
   each missing input, flagged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Plan", "Segment", "grid_slots", "hold_index", "match", "plan", "sample"]

_NS = 1_000_000_000


def grid_slots(frame_t: np.ndarray, fps: int) -> tuple[np.ndarray, np.ndarray]:
    """Slots from the grid camera's (sorted) frame times.

    Returns:
        ``(slot_t, slot_frame)``: each slot's time and the frame index it holds, -1 for a
        slot of a missing frame (placed at the nominal period after the previous slot).
    """
    frame_t = np.asarray(frame_t, dtype=np.int64)
    if frame_t.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    period = _NS / fps
    gaps = np.diff(frame_t)
    missing = np.maximum(0, np.rint(gaps / period).astype(np.int64) - 1)
    missing[gaps < 1.5 * period] = 0
    times: list[int] = [int(frame_t[0])]
    frames: list[int] = [0]
    for i, extra in enumerate(missing.tolist()):
        base = times[-1]
        for k in range(1, extra + 1):
            times.append(int(base + round(k * period)))
            frames.append(-1)
        times.append(int(frame_t[i + 1]))
        frames.append(i + 1)
    return np.asarray(times, np.int64), np.asarray(frames, np.int64)


def _nearest(src_t: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest source time for each ``t`` and its distance (ns)."""
    right = np.clip(np.searchsorted(src_t, t), 0, len(src_t) - 1)
    left = np.clip(right - 1, 0, len(src_t) - 1)
    d_left = np.abs(t - src_t[left])
    d_right = np.abs(src_t[right] - t)
    take_left = d_left <= d_right
    return np.where(take_left, left, right), np.where(take_left, d_left, d_right)


def match(frame_t: np.ndarray, slot_t: np.ndarray, tol_ns: int) -> np.ndarray:
    """For each slot, the index of the nearest frame within ``tol_ns``, else -1."""
    frame_t = np.asarray(frame_t, dtype=np.int64)
    if frame_t.size == 0:
        return np.full(len(slot_t), -1, np.int64)
    idx, dist = _nearest(frame_t, np.asarray(slot_t, np.int64))
    return np.where(dist <= tol_ns, idx, -1).astype(np.int64)


def sample(
    src_t: np.ndarray, values: np.ndarray, slot_t: np.ndarray, method: str, tol_ns: int
) -> tuple[np.ndarray, np.ndarray]:
    """Values of a sampled signal at the slot times.

    Args:
        src_t: sorted sample times (n,).
        values: (n, d) samples.
        slot_t: (m,) slot times.
        method: ``nearest`` or ``linear`` (between the two samples around the slot time;
            at either end of the signal, the nearest sample).
        tol_ns: a slot whose nearest sample is farther away has no value.

    Returns:
        ``(out, ok)``: (m, d) float64 values (NaN where not ok) and the (m,) ok mask.
    """
    src_t = np.asarray(src_t, np.int64)
    values = np.asarray(values, np.float64).reshape(len(src_t), -1)
    slot_t = np.asarray(slot_t, np.int64)
    out = np.full((len(slot_t), values.shape[1]), np.nan)
    if src_t.size == 0:
        return out, np.zeros(len(slot_t), bool)
    idx, dist = _nearest(src_t, slot_t)
    ok = dist <= tol_ns
    out[ok] = values[idx[ok]]
    if method == "linear" and src_t.size > 1:
        hi = np.searchsorted(src_t, slot_t, side="right")
        inner = ok & (hi > 0) & (hi < len(src_t))
        lo_i, hi_i = hi[inner] - 1, hi[inner]
        span = (src_t[hi_i] - src_t[lo_i]).astype(np.float64)
        w = np.where(span > 0, (slot_t[inner] - src_t[lo_i]) / np.where(span > 0, span, 1), 0.0)
        out[inner] = values[lo_i] + (values[hi_i] - values[lo_i]) * w[:, None]
    return out, ok


def hold_index(ok: np.ndarray) -> np.ndarray:
    """For each slot, the last slot at or before it whose input is present (-1: none yet)."""
    idx = np.where(ok, np.arange(len(ok)), -1)
    return np.maximum.accumulate(idx) if len(idx) else idx


@dataclass
class Segment:
    """Slots ``[lo, hi)`` that become one dataset episode."""

    lo: int
    hi: int

    @property
    def length(self) -> int:
        return self.hi - self.lo


@dataclass
class Plan:
    """What the policy made of an episode's slots.

    Attributes:
        segments: the slot ranges written (none: the episode is skipped).
        source: input -> (m,) slot whose value each slot takes (itself, or the one held).
        held: (m,) slots where any input was held (policy ``hold``).
        missing: input -> number of slots it was missing at.
        reason: why slots or the whole episode were left out ("" if nothing was).
    """

    segments: list[Segment]
    source: dict[str, np.ndarray]
    held: np.ndarray
    missing: dict[str, int] = field(default_factory=dict)
    reason: str = ""


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def plan(ok: dict[str, np.ndarray], policy: str, min_frames: int) -> Plan:
    """Apply ``policy`` (``drop``, ``split``, ``hold``) to the inputs' (m,) ok masks."""
    m = len(next(iter(ok.values()))) if ok else 0
    complete = np.ones(m, bool)
    for mask in ok.values():
        complete &= mask
    missing = {name: int((~mask).sum()) for name, mask in ok.items() if (~mask).any()}
    what = ", ".join(f"{name} at {n}" for name, n in sorted(missing.items()))
    identity = {name: np.arange(m) for name in ok}
    none = np.zeros(m, bool)
    if policy == "hold":
        source = {name: hold_index(mask) for name, mask in ok.items()}
        # Before an input's first sample there is nothing to hold: start after it.
        start = max((int(np.argmax(mask)) if mask.any() else m for mask in ok.values()),
                    default=0)
        held = ~complete
        segments = [Segment(start, m)] if m - start >= min_frames else []
        reason = f"held missing inputs ({what})" if missing else ""
        if start:
            reason = (reason + "; " if reason else "") + f"{start} leading frames cut"
        if not segments:
            reason = f"fewer than {min_frames} frames" + (f" ({reason})" if reason else "")
        return Plan(segments, source, held, missing, reason)
    if complete.all() and m >= min_frames:
        return Plan([Segment(0, m)], identity, none, missing)
    if policy == "drop" or not complete.any():
        why = f"missing inputs ({what})" if missing else f"fewer than {min_frames} frames"
        return Plan([], identity, none, missing, why)
    runs = [Segment(a, b) for a, b in _runs(complete) if b - a >= min_frames]
    reason = f"split at missing inputs ({what}) into {len(runs)} parts"
    return Plan(runs, identity, none, missing, reason)
