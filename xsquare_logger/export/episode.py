"""The per-episode function: one tagged episode of a session -> staged dataset parts.

:func:`export_episode` is pure with respect to the dataset: it reads the session through
:mod:`~xsquare_logger.export.source`, writes only under its own staging directory, and
returns an :class:`EpisodeResult` naming the files it made. Job and result are plain
picklable data, so a local process pool (and later Ray tasks) run it unchanged.

The episode is cut to its window (the taps widened by the pre/post-roll, session.json's
``window_start_ns``/``window_end_ns``; the taps in older sessions). Its privacy-paused
ranges split it: camera frames captured or recorded inside one are never used, and each run
between pauses is aligned (grid, keyframe start, missing-frame policy) on its own, so no
slot ever fills a paused range (``privacy: drop`` in the mapping skips the episode instead).

Two passes over the episode's chunks: the first reads every non-camera sample, the camera
frame times (header stamps: the capture times) and the H.264 frames (small); the second,
only for raw and JPEG cameras, decodes the frames the plan needs and encodes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# pyarrow ships no type information (its stubs are a separate, unofficial package).
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from xsquare_logger.camera.cdr import CdrError, compressed_video_data, parse_image
from xsquare_logger.camera.h264 import is_keyframe
from xsquare_logger.export import ExportError, align
from xsquare_logger.export.mapping import ExportMapping
from xsquare_logger.export.messages import (
    MessageError,
    compressed_image_data,
    joint_state,
    stamp_ns,
    wrench,
)
from xsquare_logger.export.source import SessionSource, iter_messages, open_source
from xsquare_logger.export.video import EncodeWriter, RemuxWriter, decode_h264
from xsquare_logger.session.manifest import TaskEntry

__all__ = ["EpisodeJob", "EpisodeResult", "PartResult", "episode_range", "export_episode",
           "image_stats", "is_discarded", "paused_ranges"]

_NS = 1_000_000_000
_MS = 1_000_000
_IMAGE_TYPE = "sensor_msgs/msg/Image"
_JPEG_TYPE = "sensor_msgs/msg/CompressedImage"
_H264_TYPE = "foxglove_msgs/msg/CompressedVideo"
_STATS_FRAMES = 60  # frames per part sampled for image stats
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to export (all plain data: it crosses process boundaries)."""

    job_id: int
    source: str  # session spec for open_source
    task: TaskEntry
    mapping: ExportMapping
    staging: str  # directory this job may write into
    encoder: str  # libsvtav1 / libx264, for cameras that are encoded


@dataclass
class PartResult:
    """One dataset episode (the whole source episode, or one part of a split)."""

    part: int
    frames: int
    table: str  # parquet of this part's frame columns (no dataset-wide indexes yet)
    videos: dict[str, str]  # feature key -> mp4
    remuxed: dict[str, bool]  # feature key -> True if copied without re-encoding
    image_stats: dict[str, dict[str, list[Any]]]
    start_ns: int  # capture time of the first and last frame
    end_ns: int


@dataclass
class EpisodeResult:
    """What became of one source episode."""

    job_id: int
    source: str
    session_id: str
    robot_id: str
    episode_index: int
    task: str
    operator: str
    outcome: str | None
    parts: list[PartResult] = field(default_factory=list)
    skipped: str = ""  # why nothing was written ("" = something was)
    notes: str = ""  # policy and video decisions, for the summary
    missing: dict[str, int] = field(default_factory=dict)
    requests: int = 0  # network requests made reading this episode (0 from a local session)
    bytes_fetched: int = 0  # bytes they fetched (session.json, summaries, chunks)
    # The operator's taps and the range cut (the window with pre/post-roll, else the taps).
    tap_start_ns: int = 0
    tap_end_ns: int = 0
    window_start_ns: int = 0
    window_end_ns: int = 0

    @property
    def frames(self) -> int:
        return sum(p.frames for p in self.parts)


@dataclass
class _Camera:
    key: str
    topic: str
    kind: str  # raw / jpeg / h264
    stamps: list[int] = field(default_factory=list)
    log_times: list[int] = field(default_factory=list)
    h264: list[bytes] = field(default_factory=list)
    keyframe: list[bool] = field(default_factory=list)
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sorted_t: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    # Frames (in sorted order) captured or recorded inside a privacy pause: never exported.
    private: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


@dataclass
class _Signal:
    times: list[int] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


def _cameras(source: SessionSource, mapping: ExportMapping) -> dict[str, _Camera]:
    topics = source.topics()
    out: dict[str, _Camera] = {}
    for key, raw in mapping.camera_features().items():
        for topic, kind, type_name in ((f"{raw}/h264", "h264", _H264_TYPE),
                                       (f"{raw}/compressed", "jpeg", _JPEG_TYPE),
                                       (raw, "raw", _IMAGE_TYPE)):
            if topics.get(topic) == type_name:
                out[key] = _Camera(key, topic, kind)
                break
        else:
            raise ExportError(f"session {source.manifest.session_id}: camera {key} has no "
                              f"recorded topic {raw} (raw, /compressed or /h264)")
    return out


def _joint_columns(names: tuple[str, ...], wanted: list[str], session: str, topic: str
                   ) -> np.ndarray:
    position = {n: i for i, n in enumerate(names)}
    lacking = [n for n in wanted if n not in position]
    if lacking:
        raise ExportError(
            f"session {session}: {topic} joint names differ from the mapping: missing "
            f"{', '.join(lacking)} (recorded: {', '.join(names) or 'none'})")
    return np.asarray([position[n] for n in wanted], np.int64)


def _first_pass(job: EpisodeJob, source: SessionSource, cams: dict[str, _Camera],
                start: int, end: int) -> dict[str, _Signal]:
    m = job.mapping
    session = source.manifest.session_id
    joints = m.joint_features()
    wrenches = m.wrench_features()
    signals = {key: _Signal() for key in [*joints, *wrenches]}
    by_topic: dict[str, list[str]] = {}
    for key, feat in joints.items():
        by_topic.setdefault(feat.topic, []).append(key)
    columns: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
    cam_topics = {c.topic: c for c in cams.values()}
    margin = round(m.tolerance_ms * _MS) + 200 * _MS
    topics = sorted({*by_topic, *wrenches.values(), *cam_topics})
    for topic, log_time, data in iter_messages(source, topics, start - margin, end + margin):
        try:
            cam = cam_topics.get(topic)
            if cam is not None:
                if not start <= log_time <= end:
                    continue
                cam.stamps.append(stamp_ns(data) or log_time)
                cam.log_times.append(log_time)
                if cam.kind == "h264":
                    frame = bytes(compressed_video_data(data))
                    cam.h264.append(frame)
                    cam.keyframe.append(is_keyframe(frame))
                continue
            if topic in by_topic:
                js = joint_state(data)
                for key in by_topic[topic]:
                    feat = joints[key]
                    cache = (key, js.names)
                    if cache not in columns:
                        columns[cache] = _joint_columns(js.names, m.joint_names(feat), session,
                                                        topic)
                    sig = signals[key]
                    sig.times.append(js.stamp_ns or log_time)
                    sig.values.append(js.field(feat.field)[columns[cache]])
            for key, wtopic in wrenches.items():
                if wtopic == topic:
                    stamp, values = wrench(data)
                    signals[key].times.append(stamp or log_time)
                    signals[key].values.append(values)
        except (MessageError, CdrError, IndexError) as exc:
            raise ExportError(f"session {session}: {topic}: malformed message at "
                              f"{log_time}: {exc}") from None
    return signals


def _decode_rgb(cam: _Camera, data: bytes) -> np.ndarray:
    import cv2

    if cam.kind == "raw":
        img = parse_image(data)
        if img.encoding == "bgr8":
            return np.ascontiguousarray(img.pixels[:, :, ::-1])
        if img.encoding == "mono8":
            return np.repeat(img.pixels, 3, axis=2)
        return np.asarray(img.pixels)
    _fmt, jpeg = compressed_image_data(data)
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ExportError(f"{cam.topic}: a frame is not a decodable image")
    rgb: np.ndarray = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb


def image_stats(samples: list[np.ndarray]) -> dict[str, list[Any]]:
    """LeRobot's image feature stats: per channel, values in [0, 1], shape (3, 1, 1)."""
    pixels = np.concatenate([s.reshape(-1, 3) for s in samples]).astype(np.float64) / 255.0

    def per_channel(values: np.ndarray) -> list[Any]:
        return [[[float(v)]] for v in values]

    out = {
        "min": per_channel(pixels.min(0)),
        "max": per_channel(pixels.max(0)),
        "mean": per_channel(pixels.mean(0)),
        "std": per_channel(pixels.std(0)),
        "count": [len(samples)],
    }
    for name, q in QUANTILES.items():
        out[name] = per_channel(np.quantile(pixels, q, axis=0))
    return out


def _thumb(rgb: np.ndarray) -> np.ndarray:
    step = max(1, max(rgb.shape[:2]) // 150)  # what LeRobot samples at: about 150 px
    return rgb[::step, ::step]


def is_discarded(t: TaskEntry) -> bool:
    """Marked ``discarded`` (re-recorded on the tablet): never exported, whatever the filter.

    The marker is a coming session.json field (``discarded: true``) or the outcome
    ``discarded``; session.json keeps unknown fields, so both are seen when they arrive.
    """
    return t.outcome == "discarded" or bool(getattr(t, "discarded", False))


def export_episode(job: EpisodeJob) -> EpisodeResult:
    """Export one episode into ``job.staging``; see the module doc.

    Raises:
        ExportError: the session cannot be read, lacks a mapped topic, its joint names
            differ from the mapping, or its camera rate is not the mapping's fps.
    """
    source = open_source(job.source)
    task = job.task
    manifest = source.manifest
    result = EpisodeResult(job.job_id, job.source, manifest.session_id, manifest.robot_id,
                           task.episode_index, task.task, task.operator, task.outcome)
    # The job may come from a catalog: session.json itself has the last word on a discard.
    recorded = next((t for t in manifest.tasks if t.episode_index == task.episode_index), None)
    if recorded is not None and is_discarded(recorded):
        result.skipped = "discarded"
    else:
        # Window and privacy pauses are the session's (a catalog row may not carry them).
        _export(job, source, result, recorded or task)
    result.requests = source.total_requests
    result.bytes_fetched = source.total_bytes_fetched
    return result


def episode_range(task: TaskEntry, recording_end_ns: int) -> tuple[int, int]:
    """The time range an episode is cut to: its window (the taps widened by the configured
    pre/post-roll) when session.json has one, else the taps (an open episode: up to the end
    of the recording)."""
    start = task.window_start_ns if task.window_start_ns is not None else task.start_ns
    end = task.window_end_ns if task.window_end_ns is not None else task.end_ns
    return start, end if end is not None else recording_end_ns


def paused_ranges(task: TaskEntry, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
    """The task's privacy-paused ranges clipped to ``[start_ns, end_ns]``, sorted, merged."""
    spans = sorted((max(a, start_ns), min(b, end_ns)) for a, b in task.privacy_paused
                   if a <= end_ns and b >= start_ns and a <= b)
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _inside(t: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    out = np.zeros(len(t), bool)
    for a, b in spans:
        out |= (t >= a) & (t <= b)
    return out


@dataclass
class _Run:
    """The aligned slots between two privacy pauses (the whole episode if none)."""

    slot_t: np.ndarray
    frame_of: dict[str, np.ndarray]  # camera key -> sorted frame index per slot (-1: none)
    values: dict[str, np.ndarray]
    plan: align.Plan


def _align_run(m: ExportMapping, cams: dict[str, _Camera], signals: dict[str, _Signal],
               lo: int, hi: int, after_pause: bool, notes: list[str]) -> _Run | None:
    """Align the grid camera's frames with capture times in ``(lo, hi)``, skipping private
    frames; apply the keyframe start and the missing-frame policy. None: nothing usable."""
    tol = round(m.tolerance_ms * _MS)
    period = _NS / m.fps
    grid = cams[next(iter(cams))]
    mine = np.flatnonzero((grid.sorted_t > lo) & (grid.sorted_t < hi) & ~grid.private)
    slot_t, rel = align.grid_slots(grid.sorted_t[mine], m.fps)
    slot_frame = np.where(rel >= 0, mine[np.clip(rel, 0, None)], -1) if len(mine) else rel
    ok: dict[str, np.ndarray] = {grid.key: slot_frame >= 0}
    frame_of: dict[str, np.ndarray] = {grid.key: slot_frame}
    cam_tol = min(tol, int(period / 2))
    for cam in list(cams.values())[1:]:
        idx = align.match(cam.sorted_t, slot_t, cam_tol)
        # A private frame is never used, not even as the nearest one to a slot outside.
        idx[(idx >= 0) & cam.private[np.clip(idx, 0, None)]] = -1
        frame_of[cam.key] = idx
        ok[cam.key] = idx >= 0
    values: dict[str, np.ndarray] = {}
    for key, sig in signals.items():
        t = np.asarray(sig.times, np.int64)
        order = np.argsort(t, kind="stable")
        vals = np.asarray(sig.values, np.float64).reshape(len(t), -1)[order]
        values[key], ok[key] = align.sample(t[order], vals, slot_t, m.interpolation, tol)

    # H.264 cameras: start where every one of them is at a keyframe, so each is a remux.
    h264 = [c for c in cams.values() if c.kind == "h264"]
    first = 0
    if h264 and len(slot_t):
        at_key = np.ones(len(slot_t), bool)
        for cam in h264:
            idx = frame_of[cam.key]
            key_sorted = np.asarray(cam.keyframe, bool)[cam.order]
            at_key &= (idx >= 0) & key_sorted[np.clip(idx, 0, None)]
        if at_key.any():
            first = int(np.argmax(at_key))
            if first:
                where = "after the privacy pause " if after_pause else ""
                notes.append(f"started {first} frames {where}in, at the first keyframe")
        elif after_pause:
            # The frames before the pause are not there to decode from: nothing to start at.
            notes.append(f"{len(slot_t)} frames after the privacy pause cut: no keyframe")
            return None
    slot_t = slot_t[first:]
    ok = {k: v[first:] for k, v in ok.items()}
    frame_of = {k: v[first:] for k, v in frame_of.items()}
    values = {k: v[first:] for k, v in values.items()}
    if not len(slot_t):
        return None
    return _Run(slot_t, frame_of, values, align.plan(ok, m.missing, m.min_frames))


def _export(job: EpisodeJob, source: SessionSource, result: EpisodeResult, task: TaskEntry
            ) -> EpisodeResult:
    m = job.mapping
    manifest = source.manifest
    start, end = episode_range(task, max(f.end_ns for f in source.files))
    paused = paused_ranges(task, start, end)
    result.tap_start_ns = task.start_ns
    result.tap_end_ns = task.end_ns if task.end_ns is not None else end
    result.window_start_ns, result.window_end_ns = start, end
    if paused and m.privacy == "drop":
        result.skipped = f"privacy-paused {len(paused)} time(s) (privacy: drop)"
        return result
    cams = _cameras(source, m)
    signals = _first_pass(job, source, cams, start, end)
    for cam in cams.values():
        t = np.asarray(cam.stamps, np.int64)
        cam.order = np.argsort(t, kind="stable")
        cam.sorted_t = t[cam.order]
        recorded = np.asarray(cam.log_times, np.int64)[cam.order]
        # Captured or recorded inside a pause (a frame in flight when the pause began).
        cam.private = _inside(cam.sorted_t, paused) | _inside(recorded, paused)
    grid = cams[next(iter(cams))]
    public_t = grid.sorted_t[~grid.private]
    if len(public_t) > 2:
        rate = _NS / float(np.median(np.diff(public_t)))
        if abs(rate - m.fps) > 0.1 * m.fps:
            raise ExportError(f"session {manifest.session_id}: camera {grid.key} runs at "
                              f"{rate:.1f} Hz but the mapping's fps is {m.fps}: set fps")

    # The privacy pauses cut the episode into runs; each is aligned on its own, so no slot
    # (and no held frame) ever fills a paused range.
    notes: list[str] = []
    bounds = [-(2**63), *(x for a, b in paused for x in (a, b)), 2**63 - 1]
    runs: list[_Run] = []
    for r in range(len(paused) + 1):
        run = _align_run(m, cams, signals, bounds[2 * r], bounds[2 * r + 1], r > 0, notes)
        if run is not None:
            runs.append(run)
    if paused:
        cut = sum(b - a for a, b in paused) / _NS
        notes.append(f"privacy-paused {cut:.2f} s cut ({len(paused)} range(s)): split there")
    missing: dict[str, int] = {}
    for run in runs:
        for k, n in run.plan.missing.items():
            missing[k] = missing.get(k, 0) + n
    result.missing = missing
    for run in runs:
        if run.plan.reason:
            notes.append(run.plan.reason)
    if m.missing == "drop" and any(run.plan.missing for run in runs):
        # The policy drops the whole source episode, whatever run lacks the input.
        result.notes = "; ".join(dict.fromkeys(notes))
        result.skipped = next(run.plan.reason for run in runs if run.plan.missing)
        return result
    pieces = [(run, seg) for run in runs for seg in run.plan.segments]
    result.notes = "; ".join(dict.fromkeys(notes))
    if not pieces:
        result.skipped = "; ".join(run.plan.reason for run in runs if run.plan.reason) or \
            "no frames"
        return result

    staging = Path(job.staging)
    staging.mkdir(parents=True, exist_ok=True)
    encoded: dict[str, dict[int, list[tuple[int, int]]]] = {}  # key -> msg idx -> (part, pos)
    writers: dict[tuple[int, str], Any] = {}
    samples: dict[tuple[int, str], list[np.ndarray]] = {}
    for p, (run, seg) in enumerate(pieces):
        plan, slot_t, values, frame_of = run.plan, run.slot_t, run.values, run.frame_of
        sl = slice(seg.lo, seg.hi)
        stem = f"job{job.job_id:06d}-part{p}"
        cols: dict[str, pa.Array] = {}
        for key in values:
            vals = values[key][plan.source[key][sl]].astype(np.float32)
            cols[key] = pa.FixedSizeListArray.from_arrays(pa.array(vals.reshape(-1)),
                                                          vals.shape[1])
        n = seg.length
        cols["timestamp"] = pa.array(np.arange(n, dtype=np.float32) / np.float32(m.fps))
        cols["frame_index"] = pa.array(np.arange(n, dtype=np.int64))
        cols["capture_time_ns"] = pa.array(slot_t[sl])
        cols["held"] = pa.array(plan.held[sl])
        table_path = staging / f"{stem}.parquet"
        pq.write_table(pa.table(cols), table_path)
        part = PartResult(p, n, str(table_path), {}, {}, {}, int(slot_t[seg.lo]),
                          int(slot_t[seg.hi - 1]))
        stride = max(1, n // _STATS_FRAMES)
        for cam in cams.values():
            sorted_idx = frame_of[cam.key][plan.source[cam.key][sl]]
            msg_idx = cam.order[sorted_idx]
            mp4 = staging / f"{stem}-{cam.key}.mp4"
            part.videos[cam.key] = str(mp4)
            if cam.kind == "h264":
                consecutive = bool(np.all(np.diff(msg_idx) == 1))
                if consecutive and cam.keyframe[int(msg_idx[0])]:
                    w = RemuxWriter(mp4, m.fps)
                    for i in msg_idx.tolist():
                        w.add(cam.h264[i])
                    w.close()
                    part.remuxed[cam.key] = True
                    # Stats from the keyframes alone: each decodes by itself, so the part is
                    # never decoded as a whole (that would cost what the remux saves).
                    keys = [i for i in msg_idx.tolist() if cam.keyframe[i]]
                    step = max(1, len(keys) // _STATS_FRAMES)
                    picked = [f for i in keys[::step] for f in decode_h264([cam.h264[i]])]
                    part.image_stats[cam.key] = image_stats([_thumb(f) for f in picked])
                    continue
                # Not a plain run from a keyframe (held or skipped frames): decode, encode.
                keys = [i for i in range(int(msg_idx[0]) + 1) if cam.keyframe[i]]
                base = keys[-1] if keys else 0
                decoded = list(decode_h264(cam.h264[base:int(msg_idx.max()) + 1]))
                w2 = EncodeWriter(mp4, m.fps, job.encoder, decoded[0].shape[1],
                                  decoded[0].shape[0])
                thumbs = []
                for pos, i in enumerate(msg_idx.tolist()):
                    w2.add(decoded[i - base])
                    if pos % stride == 0:
                        thumbs.append(_thumb(decoded[i - base]))
                w2.close()
                part.remuxed[cam.key] = False
                part.image_stats[cam.key] = image_stats(thumbs)
                notes.append(f"{cam.key} re-encoded (frames held or skipped)")
                continue
            part.remuxed[cam.key] = False
            for pos, i in enumerate(msg_idx.tolist()):
                encoded.setdefault(cam.key, {}).setdefault(i, []).append((p, pos))
        result.parts.append(part)

    # Second pass: raw and JPEG cameras, decoded and encoded in frame order.
    topic_cam = {c.topic: c for c in cams.values() if c.key in encoded}
    counters = dict.fromkeys(topic_cam, -1)
    if topic_cam:
        for topic, log_time, data in iter_messages(source, sorted(topic_cam), start, end):
            cam = topic_cam[topic]
            counters[topic] += 1
            uses = encoded[cam.key].get(counters[topic])
            if not uses:
                continue
            rgb = _decode_rgb(cam, data)
            for p, pos in uses:
                part = result.parts[p]
                wkey = (p, cam.key)
                if wkey not in writers:
                    writers[wkey] = EncodeWriter(Path(part.videos[cam.key]), m.fps,
                                                 job.encoder, rgb.shape[1], rgb.shape[0])
                writers[wkey].add(rgb)
                if pos % max(1, part.frames // _STATS_FRAMES) == 0:
                    samples.setdefault(wkey, []).append(_thumb(rgb))
            del log_time
        for (p, key), w in writers.items():
            written = w.close()
            if written != result.parts[p].frames:
                raise ExportError(f"session {manifest.session_id}: {key}: {written} frames "
                                  f"encoded for {result.parts[p].frames} (frames changed?)")
            result.parts[p].image_stats[key] = image_stats(samples[(p, key)])
    result.notes = "; ".join(dict.fromkeys(notes))
    return result
