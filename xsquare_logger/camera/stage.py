"""The compression stage: raw camera frames in, encoded messages out, off the ROS thread.

``submit`` is called from the subscription callback with the frame's raw CDR bytes. It never
waits on a codec: it appends the frame to its topic's lane and returns. Worker threads parse
and encode; ``on_output`` receives each result **in submission order per topic**.

* A lane holds at most ``max_pending_per_topic`` frames (queued, encoding, or encoded and
  waiting for an earlier frame). When it is full, ``submit`` returns False and counts the frame
  in ``skipped``: encoding has fallen behind the camera, and the frame is lost (report it like
  any other loss). Dropping the newest frame keeps memory bounded (a 720p frame is 2.7 MB)
  and keeps the stream's keyframe cadence intact. One exception: on an H.264 lane, a frame
  due to be a keyframe (stamp at or past the encoder's keyframe deadline) takes the place
  of the newest frame not yet started, which is counted in ``skipped`` instead, so a skip
  never pushes a keyframe past ``keyframe_interval_s``.
* H.264 lanes are serial: one encoder per camera, fed one frame at a time in order, because
  each P-frame depends on the previous one. JPEG lanes are parallel: frames of one camera
  may be encoded on several workers at once, and delivery still follows submission order.
* A frame that fails (not an rgb8/bgr8/mono8 image, malformed CDR, codec error) or whose
  ``on_output`` raises is counted in ``failed`` and dropped; the lane goes on.

OpenCV and libx264 release the GIL, so ``workers`` threads encode truly in parallel; the
Python work per frame is a parse (a few ``struct`` reads) and a few dict/deque operations.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from xsquare_logger.camera.cdr import parse_image
from xsquare_logger.camera.encoders import (
    COMPRESSED_IMAGE,
    COMPRESSED_VIDEO,
    Encoder,
    H264Encoder,
    JpegEncoder,
    make_encoder,
    require_codec,
)
from xsquare_logger.config.camera import CameraCompression

__all__ = ["CompressionStage", "LaneStats", "OnOutput"]

_log = logging.getLogger(__name__)

OnOutput = Callable[[str, str, bytes, int, int, int], None]
"""``on_output(out_topic, out_type, cdr_bytes, log_time_ns, publish_time_ns, seq)``."""

_OUTPUT_TYPES = {"jpeg": COMPRESSED_IMAGE, "h264": COMPRESSED_VIDEO}
_CDR_LE = b"\x00\x01"
_STAMP = struct.Struct("<iI")  # header.stamp, right after the 4-byte CDR encapsulation


def _stamp_ns(cdr: bytes) -> int | None:
    """``header.stamp`` of a little-endian Image CDR, ns; None if it cannot be read."""
    if len(cdr) < 12 or cdr[:2] != _CDR_LE:
        return None
    sec, nanosec = _STAMP.unpack_from(cdr, 4)
    return int(sec) * 1_000_000_000 + int(nanosec)


@dataclass(frozen=True, slots=True)
class LaneStats:
    """Counters of one camera's lane (a snapshot; frames unless noted).

    Attributes:
        topic: the raw ``sensor_msgs/msg/Image`` topic.
        out_topic: where its encoded frames go.
        out_type: ``sensor_msgs/msg/CompressedImage`` or ``foxglove_msgs/msg/CompressedVideo``.
        submitted: accepted by ``submit``.
        delivered: handed to ``on_output``.
        skipped: refused by ``submit`` because the lane was full (losses).
        failed: accepted but not delivered: bad image, codec error, ``on_output`` error
            (losses).
        keyframes: delivered H.264 keyframes.
        in_bytes: raw CDR bytes of delivered frames.
        out_bytes: encoded CDR bytes delivered.
        last_error: the latest failure, as text.
    """

    topic: str
    out_topic: str
    out_type: str
    submitted: int = 0
    delivered: int = 0
    skipped: int = 0
    failed: int = 0
    keyframes: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    last_error: str | None = None

    @property
    def pending(self) -> int:
        """Frames accepted but not yet delivered or failed."""
        return self.submitted - self.delivered - self.failed


class _Job:
    __slots__ = (
        "cdr", "done", "error", "keyframe", "log_ns", "out", "pub_ns", "seq", "size", "started",
    )  # fmt: skip

    def __init__(self, cdr: bytes, log_ns: int, pub_ns: int, seq: int) -> None:
        self.cdr = cdr
        self.size = len(cdr)
        self.log_ns = log_ns
        self.pub_ns = pub_ns
        self.seq = seq
        self.out: bytes | None = None
        self.error: str | None = None
        self.keyframe = False
        self.done = False
        self.started = False  # a worker took it (set under the lane lock)


class _Lane:
    """One camera: its config, encoder, frames in flight and counters."""

    def __init__(self, topic: str, config: CameraCompression) -> None:
        self.topic = topic
        self.config = config
        self.out_topic = config.output_topic(topic)
        self.out_type = _OUTPUT_TYPES[config.mode]
        self.serial = config.mode == "h264"
        self.lock = threading.Lock()
        self.pending: deque[_Job] = deque()  # submission order, until delivered
        self.waiting: deque[_Job] = deque()  # serial lanes: accepted, not yet started
        self.busy = False  # serial lanes: a job is queued or encoding
        self.delivering = False  # a worker is running the delivery loop
        self.encoder: Encoder | None = None
        # Counters, see LaneStats; written under ``lock``.
        self.submitted = self.delivered = self.skipped = self.failed = self.keyframes = 0
        self.in_bytes = self.out_bytes = 0
        self.last_error: str | None = None

    def snapshot(self) -> LaneStats:
        with self.lock:
            return LaneStats(
                self.topic, self.out_topic, self.out_type, self.submitted, self.delivered,
                self.skipped, self.failed, self.keyframes, self.in_bytes, self.out_bytes,
                self.last_error,
            )  # fmt: skip

    def encoder_for(self, width: int, height: int) -> Encoder | None:
        """The current encoder, or None if a new one is needed for this frame size."""
        enc = self.encoder
        if isinstance(enc, H264Encoder) and (enc.width, enc.height) != (width, height):
            return None
        return enc


class CompressionStage:
    """Encode camera topics on worker threads, delivering results in order per topic.

    Args:
        spec: raw image topic -> its ``CameraCompression``. Topics with mode ``raw`` are
            ignored (record them as they are).
        on_output: called for each encoded frame as ``on_output(out_topic, out_type,
            cdr_bytes, log_time_ns, publish_time_ns, seq)``, from a worker thread, one call
            at a time per topic, in submission order. Keep it short (enqueue for the writer).
        workers: encoding threads shared by all cameras.
        max_pending_per_topic: frames of one topic in flight before ``submit`` refuses more.

    Raises:
        CodecUnavailable: a configured codec's library is missing (raised here, at start-up,
            rather than at the first frame).
        ValueError: two cameras' output topics collide with each other or with a recorded
            topic.
    """

    def __init__(
        self,
        spec: Mapping[str, CameraCompression],
        on_output: OnOutput,
        workers: int = 2,
        # 4 frames = 133 ms of a 30 Hz camera before a frame is refused, for ~8 MB more per
        # 720p camera. With 2 (66 ms), a 30 min JPEG humanoid run on the quiet 2-core VM lost
        # 70 of 162,000 frames (kind not recorded; raw runs lost none); with 4, none (issue 12).
        max_pending_per_topic: int = 4,
    ) -> None:
        if workers < 1 or max_pending_per_topic < 1:
            raise ValueError("workers and max_pending_per_topic must be >= 1")
        self._on_output = on_output
        self._max_pending = max_pending_per_topic
        self._lanes: dict[str, _Lane] = {
            topic: _Lane(topic, cfg) for topic, cfg in spec.items() if cfg.mode != "raw"
        }
        outs = [lane.out_topic for lane in self._lanes.values()]
        clash = sorted({t for t in outs if outs.count(t) > 1 or t in spec})
        if clash:
            raise ValueError(f"compressed output topics collide with other topics: {clash}")
        for lane in self._lanes.values():
            require_codec(lane.config.mode)
            if lane.config.mode == "jpeg":
                # Stateless and thread-safe: one per lane, shared by the workers.
                lane.encoder = JpegEncoder(lane.config.jpeg_quality)
        self._closed = False
        self._idle = threading.Condition()
        self._tasks: queue.SimpleQueue[tuple[_Lane, _Job] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"xsq-compress-{i}", daemon=True)
            for i in range(workers if self._lanes else 0)
        ]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ public

    def handles(self, topic: str) -> bool:
        """Whether frames of ``topic`` go through this stage (mode jpeg or h264)."""
        return topic in self._lanes

    @property
    def outputs(self) -> dict[str, tuple[str, str]]:
        """Raw topic -> (output topic, output type), to declare channels up front."""
        return {t: (lane.out_topic, lane.out_type) for t, lane in self._lanes.items()}

    def submit(
        self, topic: str, cdr_bytes: bytes, log_time_ns: int, publish_time_ns: int, seq: int
    ) -> bool:
        """Queue one raw ``sensor_msgs/msg/Image`` for encoding; never blocks on a codec.

        Args:
            topic: a topic this stage handles (see ``handles``).
            cdr_bytes: the serialized Image as received; kept (not copied) until encoded.
            log_time_ns: receive time, ns; passed through to ``on_output``.
            publish_time_ns: publish time, ns; passed through.
            seq: the recorder's sequence number; passed through.

        Returns:
            True if accepted; False if the topic already has ``max_pending_per_topic`` frames
            in flight (the frame is dropped and counted in ``skipped``). On an H.264 lane a
            frame due to be a keyframe is accepted in place of the newest frame not yet
            started (that one is counted in ``skipped``).

        Raises:
            KeyError: ``topic`` is not handled by this stage.
            RuntimeError: the stage is closed.
        """
        lane = self._lanes.get(topic)
        if lane is None:
            raise KeyError(f"{topic!r} is not a compressed camera topic of this stage")
        with lane.lock:
            if self._closed:
                raise RuntimeError("CompressionStage is closed")
            if len(lane.pending) >= self._max_pending:
                lane.skipped += 1
                return lane.serial and self._take_place(
                    lane, cdr_bytes, log_time_ns, publish_time_ns, seq
                )
            job = _Job(cdr_bytes, log_time_ns, publish_time_ns, seq)
            lane.pending.append(job)
            lane.submitted += 1
            if lane.serial:
                if lane.busy:  # the worker finishing the current frame queues this one
                    lane.waiting.append(job)
                    return True
                lane.busy = True
            # Queued under the lane lock, so close() knows every accepted frame is queued
            # ahead of its stop sentinels (SimpleQueue.put never blocks).
            self._tasks.put((lane, job))
        return True

    @staticmethod
    def _take_place(lane: _Lane, cdr: bytes, log_ns: int, pub_ns: int, seq: int) -> bool:
        """Full H.264 lane (lock held): if this frame is due to be a keyframe and the newest
        pending frame is not started and not due, put this frame in its place."""
        encoder = lane.encoder
        deadline = encoder.keyframe_deadline_ns if isinstance(encoder, H264Encoder) else None
        job = lane.pending[-1]
        if deadline is None or job.started:
            return False
        stamp, queued = _stamp_ns(cdr), _stamp_ns(job.cdr)
        if stamp is None or queued is None or stamp < deadline or queued >= deadline:
            return False
        job.cdr, job.size, job.log_ns, job.pub_ns, job.seq = cdr, len(cdr), log_ns, pub_ns, seq
        return True

    def stats(self) -> dict[str, LaneStats]:
        """A snapshot of every lane's counters, by raw topic."""
        return {topic: lane.snapshot() for topic, lane in self._lanes.items()}

    @property
    def skipped(self) -> dict[str, int]:
        """Frames refused because encoding fell behind, by raw topic."""
        return {topic: lane.skipped for topic, lane in self._lanes.items()}

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every accepted frame is delivered or failed.

        Args:
            timeout: seconds to wait at most; None waits as long as it takes.

        Returns:
            True if drained, False on timeout.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while any(lane.pending for lane in self._lanes.values()):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # A timeout as well as the notify: cheap insurance against a missed wake-up.
                self._idle.wait(0.5 if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new frames, deliver those accepted, stop the workers, free the codecs.

        Args:
            timeout: seconds to wait for the drain; None waits as long as it takes.

        Returns:
            True if every accepted frame was delivered or failed before the workers stopped.
        """
        if self._closed:
            return True
        self._closed = True
        for lane in self._lanes.values():
            with lane.lock:  # barrier: a submit() past its closed check finishes queueing
                pass
        drained = self.drain(timeout)
        for _ in self._threads:
            self._tasks.put(None)
        for t in self._threads:
            t.join(None if drained else 1.0)
        if drained:
            for lane in self._lanes.values():
                if lane.encoder is not None:
                    lane.encoder.close()
                    lane.encoder = None
        return drained

    def __enter__(self) -> CompressionStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- workers

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            lane, job = task
            self._encode(lane, job)
            nxt = None
            if lane.serial:
                with lane.lock:
                    if lane.waiting:
                        nxt = lane.waiting.popleft()
                    else:
                        lane.busy = False
            if nxt is not None:
                # Queued before delivering, so the next frame can start on another worker.
                self._tasks.put((lane, nxt))
            self._deliver(lane)

    def _encode(self, lane: _Lane, job: _Job) -> None:
        with lane.lock:
            job.started = True  # from now on submit() must not swap its frame
        try:
            image = parse_image(job.cdr)
            encoder = lane.encoder_for(image.width, image.height)
            if encoder is None:
                # First frame, or the camera changed resolution: a new stream (its first
                # frame is a keyframe with the new SPS). Only serial lanes get here.
                if lane.encoder is not None:
                    lane.encoder.close()
                encoder = lane.encoder = make_encoder(lane.config, image)
            job.out = encoder.encode(image)
            job.keyframe = bool(getattr(encoder, "last_keyframe", False))
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
        job.cdr = b""  # let the raw frame go now, not when the lane drains
        with lane.lock:
            job.done = True

    def _deliver(self, lane: _Lane) -> None:
        """Hand finished frames at the head of the lane to on_output, in order.

        Only one worker delivers per lane at a time (``delivering``); others just mark their
        job done and leave, and the deliverer picks it up on its next check.
        """
        with lane.lock:
            if lane.delivering:
                return
            lane.delivering = True
        while True:
            with lane.lock:
                if not lane.pending or not lane.pending[0].done:
                    lane.delivering = False
                    break
                job = lane.pending[0]
            error = job.error
            if error is None:
                assert job.out is not None
                try:
                    self._on_output(
                        lane.out_topic, lane.out_type, job.out, job.log_ns, job.pub_ns, job.seq
                    )
                except Exception as exc:
                    error = f"on_output: {type(exc).__name__}: {exc}"
            with lane.lock:
                lane.pending.popleft()
                previous_error = lane.last_error
                if error is None:
                    lane.delivered += 1
                    lane.keyframes += job.keyframe
                    lane.in_bytes += job.size
                    lane.out_bytes += len(job.out or b"")
                else:
                    lane.failed += 1
                    lane.last_error = error
            if error is not None and error != previous_error:
                # Once per distinct error: a misconfigured camera fails every frame.
                _log.warning("%s: frame %d not compressed: %s", lane.topic, job.seq, error)
        with self._idle:
            self._idle.notify_all()
