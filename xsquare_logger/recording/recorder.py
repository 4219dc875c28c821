"""The recorder core: ROS callbacks hand bytes to a bounded queue, one thread writes.

No rclpy here. The node adapts subscriptions to :meth:`Recorder.add_topic`,
whose returned callback does O(1) work per message: count, enqueue, return.
Everything else (sequence-gap accounting, MCAP writing, compression, hashing,
flushing, disk checks, status) happens on the writer thread.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from xsquare_logger import __version__
from xsquare_logger.bag.mcap_writer import McapWriterError
from xsquare_logger.bag.qos import QosDict, make_qos
from xsquare_logger.camera.stage import CompressionStage
from xsquare_logger.config.model import LoggerConfig, config_digest
from xsquare_logger.errors import XsqError
from xsquare_logger.recording.health import HealthTracker, StreamMonitor
from xsquare_logger.recording.memory import BurstTrimmer, release_free_memory
from xsquare_logger.recording.pause import WritingPause
from xsquare_logger.recording.preview import Preview, PreviewLane, PreviewMaker
from xsquare_logger.recording.queue import ByteBoundedQueue
from xsquare_logger.recording.sequence import SequenceTracker
from xsquare_logger.recording.tap import Tap
from xsquare_logger.session.calibration import load_calibration
from xsquare_logger.session.counters import LossCounters, TopicStats
from xsquare_logger.session.episodes import apply_event
from xsquare_logger.session.events import TaskEventData
from xsquare_logger.session.health import EpisodeQuality, EpisodeSpan, StreamHealth
from xsquare_logger.session.manifest import SessionManifest, write_manifest
from xsquare_logger.session.store import SessionWriter

__all__ = [
    "INTERNAL_TOPICS",
    "STATUS_TOPIC",
    "STATUS_TYPE",
    "Recorder",
    "RecorderError",
    "StatusSnapshot",
    "make_session_id",
]

log = logging.getLogger("xsquare_logger.recorder")

STATUS_TOPIC = "/xsquare/session_status"
STATUS_TYPE = "xsquare_logger_msgs/msg/SessionStatus"
TASK_EVENTS_TOPIC = "/xsquare/task_events"
TASK_EVENTS_TYPE = "xsquare_logger_msgs/msg/TaskEvent"
CURRENT_TASK_TOPIC = "/xsquare/current_task"
CURRENT_TASK_TYPE = "std_msgs/msg/String"
# Topics the recorder writes itself (never subscribed: that would record them twice).
INTERNAL_TOPICS = frozenset({STATUS_TOPIC, TASK_EVENTS_TOPIC, CURRENT_TASK_TOPIC})
_EVENT = -1  # queue index of an internal tablet event
_SPLIT = -2  # queue index of a split request (~/split_bagfile)

#: Camera payloads: not written under the privacy pause (recording/health.py: kind camera).
CAMERA_TYPES = frozenset({
    "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage",
    "foxglove_msgs/msg/CompressedVideo",
})

# What a full or failing disk raises from the session writer.
_WRITE_ERRORS = (OSError, McapWriterError)

# The info is rclpy's MessageInfo (a TypedDict): typed as a read-only mapping so it fits.
RawCallback = Callable[[bytes, Mapping[str, Any]], None]


def make_session_id(robot_id: str, now: datetime | None = None) -> str:
    """``<robot_id>_<UTC yyyymmddTHHMMSSZ>_<6 hex>``: sortable by time, unique per robot."""
    now = now or datetime.now(UTC)
    return f"{robot_id}_{now.strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(3)}"


class RecorderError(XsqError):
    """The recorder was used wrongly (started twice, events without task topics...)."""


@dataclass
class StatusSnapshot:
    """What the operator and the bag see about a session, about once a second.

    ``topics`` are copies of the recorded topics' counters (the recorder's own
    status/task topics excluded); ``totals`` is their :meth:`LossCounters.total`.
    """

    state: str  # "recording" | "stopping" | "closed"
    session_id: str
    stamp_ns: int
    elapsed_sec: float
    bytes_written: int
    disk_free_bytes: int
    topics: list[TopicStats] = field(default_factory=list)
    current_task: str = ""
    episode_index: int = -1
    upload_backlog: int = 0
    # Each expected stream (config health.streams) as measured; None: health not measured.
    streams: list[StreamHealth] | None = None
    totals: LossCounters = field(init=False)

    def __post_init__(self) -> None:
        self.totals = LossCounters.total(self.topics)

    # The session totals by name (what SessionStatus carries).
    @property
    def messages_written(self) -> int:
        return self.totals.written

    @property
    def lost_transport(self) -> int:
        return self.totals.lost_transport

    @property
    def dropped_queue(self) -> int:
        return self.totals.dropped_queue

    @property
    def dropped_disk(self) -> int:
        return self.totals.dropped_disk

    @property
    def dropped_encode(self) -> int:
        return self.totals.dropped_encode

    @property
    def lost(self) -> int:
        return self.totals.lost


class Recorder:
    """Records one session. ``start()``, feed callbacks, ``stop()``.

    Or as a context manager: ``with Recorder(...) as rec:`` starts it and stops
    (finalizes) the session on exit; an exception in the block stops it with
    reason ``error: <type>``. Misuse raises :class:`RecorderError`.

    ``status_encoder`` turns a :class:`StatusSnapshot` into serialized
    ``SessionStatus`` CDR so status is recorded in the bag itself;
    ``on_status`` lets the node publish it; ``on_auto_stop`` is told when the
    recorder ended the session by itself (disk reserve, disk error).
    """

    def __init__(
        self,
        config: LoggerConfig,
        session_dir: Path,
        session_id: str,
        status_encoder: Callable[[StatusSnapshot], bytes] | None = None,
        on_status: Callable[[StatusSnapshot], None] | None = None,
        on_auto_stop: Callable[[str], None] | None = None,
        session_writer_factory: Callable[..., SessionWriter] = SessionWriter,
        visit: dict[str, object] | None = None,
        task_topics: bool = False,
        taps: Sequence[Tap] = (),
    ) -> None:
        self.config = config
        self.rcfg = config.recording
        # Written messages also go to these (the live view); see recording/tap.py.
        # A tuple, replaced (never mutated) when a tap is dropped: the writer thread
        # iterates it per message without a copy.
        self.taps: tuple[Tap, ...] = tuple(taps)
        self.session_id = session_id
        self.session_dir = session_dir
        self._status_encoder = status_encoder
        self._on_status = on_status
        self._on_auto_stop = on_auto_stop
        self.started_ns = time.time_ns()
        # Read before anything exists: a missing calibration file refuses the start.
        calibration = load_calibration(config.calibration.files)
        manifest = SessionManifest(
            session_id=session_id,
            robot_id=config.robot_id,
            software_version=__version__,
            config_digest=config_digest(config),
            started_ns=self.started_ns,
            visit=visit,
            calibration=[c.entry for c in calibration],
        )
        # Camera compression (JPEG/H.264) on worker threads; None when every camera is raw.
        # Raises CodecUnavailable if a configured codec is not installed: before the
        # session directory exists, so a refused start leaves nothing behind.
        self.stage: CompressionStage | None = None
        if any(c.mode != "raw" for c in self.rcfg.cameras.values()):
            self.stage = CompressionStage(
                self.rcfg.cameras, self._on_compressed, workers=self.rcfg.compression_workers
            )
        try:
            self.writer = session_writer_factory(session_dir, manifest, self.rcfg)
        except BaseException:
            if self.stage is not None:
                self.stage.close(timeout=1.0)
            raise
        self.writer.attachments = [(c.entry.name, c.data, c.entry.media_type) for c in calibration]
        self.queue: ByteBoundedQueue[tuple[int, bytes, Mapping[str, Any]]] = ByteBoundedQueue(
            self.rcfg.queue_max_bytes
        )
        # A queue that held a burst of frames leaves freed heap behind: give it back.
        self._trimmer = BurstTrimmer(
            high=min(64 << 20, self.rcfg.queue_max_bytes // 2), low=8 << 20
        )
        # Issue 11: stream health, previews, privacy pause (off the per-message path but
        # for one monitor append and one compare on expected and camera topics).
        hcfg = config.health
        self.health: HealthTracker | None = (
            HealthTracker(hcfg.streams, hcfg, self.started_ns) if hcfg.enabled else None
        )
        self.previews: PreviewMaker | None = (
            PreviewMaker(hcfg.preview_width, hcfg.preview_interval_s, hcfg.preview_lease_s)
            if hcfg.previews
            else None
        )
        self._cameras_paused = False
        # [start_ns, end_ns or 0 while open] of every privacy pause, in order.
        self._pauses: list[list[int]] = []
        self._camera_indices: set[int] = set()
        self.paused_frames = 0  # camera frames received under the pause (not written, not lost)
        # rosbag2 ~/pause: recorded topics received but not written (recording/pause.py).
        self.writing_pause = WritingPause()
        self.paused_messages = 0  # received under the writing pause (not written, not lost)
        self.stats: list[TopicStats] = []
        self._seq: list[SequenceTracker] = []
        self._by_name: dict[str, int] = {}
        self._lock = threading.Lock()
        self._accepting = True
        self._stop_requested = threading.Event()
        self.stop_reason = "stopped"
        self._thread = threading.Thread(target=self._run, name="xsq-writer", daemon=True)
        self._status_index: int | None = None
        self._disk_failed = False
        self.disk_free = shutil.disk_usage(session_dir).free
        self.last_status: StatusSnapshot | None = None
        # Called on the writer thread once an event is in the MCAP writer (benchmarks).
        self.on_event_written: Callable[[TaskEventData], None] | None = None
        if status_encoder is not None:
            self._status_index = self._register(
                STATUS_TOPIC, STATUS_TYPE, [make_qos("reliable", "volatile", depth=10)]
            )
        self._event_index: int | None = None
        self._current_task_index: int | None = None
        if task_topics:
            latched = [make_qos("reliable", "transient_local", depth=100)]
            self._event_index = self._register(TASK_EVENTS_TOPIC, TASK_EVENTS_TYPE, latched)
            self._current_task_index = self._register(
                CURRENT_TASK_TOPIC, CURRENT_TASK_TYPE, latched
            )

    # -- topics (any thread) ----------------------------------------------------------------
    def _register(
        self, topic: str, type_name: str, qos: list[QosDict], compressed_to: str | None = None
    ) -> int:
        stats = TopicStats(topic, type_name)
        with self._lock:
            if self._stop_requested.is_set():
                raise RecorderError(f"{self.session_id}: topic {topic} added after stop")
            index = self.writer.add_topic(topic, type_name, qos, stats, compressed_to)
            self.stats.append(stats)
            self._seq.append(SequenceTracker())
            self._by_name[topic] = index
        for tap in self.taps:  # advertised now, so viewers can subscribe before data
            self._tap_call(tap, tap.advertise, topic, type_name)
        return index

    def has_topic(self, topic: str) -> bool:
        return topic in self._by_name

    def callback_for(self, topic: str) -> RawCallback:
        """The callback of an already registered topic (re-subscription after QoS change)."""
        index = self._by_name[topic]
        stats = self.stats[index]
        compress = topic if self.stage is not None and self.stage.handles(topic) else None
        observed = self._observed(index, stats.type, compress)
        if observed is not None:
            return observed
        if compress:
            return self._make_compress_callback(topic, index)
        return self._make_callback(index)

    def add_topic(self, topic: str, type_name: str, qos: list[QosDict]) -> RawCallback:
        """Register ``topic`` and return the raw subscription callback for it.

        ``qos`` are the publishers' offered profiles (rosbag2 v9 dicts).
        Raises :class:`~xsquare_logger.bag.schema.SchemaNotFoundError` if the
        type's definition is not installed (the bag would not be self-describing).
        """
        if self.stage is not None and self.stage.handles(topic):
            out_topic, out_type = self.stage.outputs[topic]
            if type_name != "sensor_msgs/msg/Image":
                raise ValueError(f"{topic} is configured for compression but is {type_name}")
            out_index = self._register(out_topic, out_type, qos)
            index = self._register(topic, type_name, qos, compressed_to=out_topic)
            self._camera_indices.update((index, out_index))
            return self._observed(index, type_name, topic) or self._make_compress_callback(
                topic, index
            )
        index = self._register(topic, type_name, qos)
        if type_name in CAMERA_TYPES:
            self._camera_indices.add(index)
        return self._observed(index, type_name) or self._make_callback(index)

    def _make_compress_callback(self, topic: str, index: int) -> RawCallback:
        """Like the plain callback, but frames go to the encoder lane of ``topic``."""
        stats = self.stats[index]
        observe = self._seq[index].observe
        assert self.stage is not None
        submit = self.stage.submit

        def callback(msg: bytes, info: Mapping[str, Any]) -> None:
            stats.received += 1
            if not self._accepting:
                return
            seq = info.get("publication_sequence_number") or 0
            gid = info.get("publisher_gid")
            if seq and gid is not None:
                lost = observe(gid["data"], seq)
                if lost:
                    stats.lost_transport += lost
            recv = info.get("received_timestamp") or time.time_ns()
            # A refused frame (encoder behind) is counted from the stage's own
            # counters in _sync_encode_stats, together with failed encodes.
            submit(topic, msg, recv, info.get("source_timestamp") or recv, seq)

        return callback

    def _on_compressed(
        self, out_topic: str, _out_type: str, cdr: bytes, log_ns: int, pub_ns: int, seq: int
    ) -> None:
        """Encoder worker output: queue it for the writer like any received message."""
        index = self._by_name[out_topic]
        stats = self.stats[index]
        stats.received += 1
        info = {
            "received_timestamp": log_ns,
            "source_timestamp": pub_ns,
            "publication_sequence_number": seq,
        }
        if not self.queue.put((index, cdr, info), len(cdr)):
            stats.dropped_queue += 1

    def _sync_encode_stats(self) -> None:
        if self.stage is None:
            return
        for topic, lane in self.stage.stats().items():
            index = self._by_name.get(topic)
            if index is not None:
                self.stats[index].dropped_encode = lane.skipped + lane.failed

    def _observed(
        self, index: int, type_name: str, compress_topic: str | None = None
    ) -> RawCallback | None:
        """The callback of an expected stream or a camera (health, pause, preview); None
        for any other topic, which keeps the plain callback."""
        monitor = self.health.monitors.get(self.stats[index].topic) if self.health else None
        camera = type_name in CAMERA_TYPES
        if monitor is None and not camera:
            return None
        if monitor is not None:
            monitor.subscribed(time.time_ns(), type_name)
        lane = None
        if self.previews is not None and type_name == "sensor_msgs/msg/Image":
            lane = self.previews.lane(self.stats[index].topic)
        return self._make_observed_callback(index, monitor, camera, lane, compress_topic)

    def _make_observed_callback(
        self,
        index: int,
        monitor: StreamMonitor | None,
        camera: bool,
        lane: PreviewLane | None,
        compress_topic: str | None,
    ) -> RawCallback:
        """The plain (or compress) callback plus: the monitor sees every arrival; a camera
        under the privacy pause is neither written nor counted lost (its sequence numbers
        are still followed, so the pause is no transport gap); a due preview is handed on."""
        stats = self.stats[index]
        put = self.queue.put
        observe = self._seq[index].observe
        arrive = monitor.arrive if monitor is not None else None
        submit = self.stage.submit if compress_topic is not None and self.stage else None
        previews = self.previews

        def callback(msg: bytes, info: Mapping[str, Any]) -> None:
            recv = info.get("received_timestamp") or time.time_ns()
            if arrive is not None:
                arrive(recv, msg)
            if not self._accepting:
                stats.received += 1
                return
            seq = info.get("publication_sequence_number") or 0
            gid = info.get("publisher_gid")
            if seq and gid is not None:
                lost = observe(gid["data"], seq)
                if lost:
                    stats.lost_transport += lost
            if camera:
                if self._cameras_paused:
                    self.paused_frames += 1
                    return
                if lane is not None and recv >= lane.next_ns and previews is not None:
                    previews.offer(lane, msg, recv)
            stats.received += 1
            if submit is not None:
                assert compress_topic is not None
                submit(compress_topic, msg, recv, info.get("source_timestamp") or recv, seq)
            elif not put((index, msg, info), len(msg)):
                stats.dropped_queue += 1

        return callback

    def _make_callback(self, index: int) -> RawCallback:
        stats = self.stats[index]
        put = self.queue.put
        observe = self._seq[index].observe

        def callback(msg: bytes, info: Mapping[str, Any]) -> None:
            stats.received += 1
            if not self._accepting:
                return
            # Gap accounting here, in arrival order, sees every received message,
            # so a message the full queue refuses is not also counted as a
            # transport loss (about 1 us; the writer thread would see only survivors).
            seq = info.get("publication_sequence_number")
            gid = info.get("publisher_gid")
            if seq and gid is not None:
                lost = observe(gid["data"], seq)
                if lost:
                    stats.lost_transport += lost
            if not put((index, msg, info), len(msg)):
                stats.dropped_queue += 1

        return callback

    def record_event(
        self, event: TaskEventData, event_cdr: bytes, current_task_cdr: bytes | None
    ) -> None:
        """Record an accepted tablet event (and the new current task) in the bag and
        session.json. Never refused by a full queue: events are what make the data usable.
        ``event.stamp_ns`` (the robot's receive time of the command) is the log time.
        """
        if self._event_index is None:
            raise RecorderError("this recorder was created without task_topics")
        # Episode losses are counted from the counters as they are now, at the command's
        # arrival: transport and queue losses are counted on arrival too, so messages
        # still queued behind the event do not shift losses into the wrong episode.
        lost = self._lost_by_topic() if event.kind in ("task_start", "task_end") else None
        self.queue.put((_EVENT, b"", {"event": (event, event_cdr, current_task_cdr, lost)}), 0)

    def request_split(self) -> None:
        """Finish the current file once everything queued before is written (any thread)."""
        self.queue.put((_SPLIT, b"", {}), 0)

    def set_writing_paused(self, paused: bool, stamp_ns: int) -> bool:
        """rosbag2 pause/resume from ``stamp_ns`` (receive time) on; False: already so."""
        return self.writing_pause.set(paused, stamp_ns)

    def _lost_by_topic(self) -> dict[str, int]:
        """Each recorded topic's lost counter (any thread; reads only)."""
        internal = {self._status_index, self._event_index, self._current_task_index}
        # Encoder losses are synced into the stats only once per status; read them live.
        encode = (
            {t: lane.skipped + lane.failed for t, lane in self.stage.stats().items()}
            if self.stage is not None
            else {}
        )
        return {
            s.topic: s.lost - s.dropped_encode + encode.get(s.topic, s.dropped_encode)
            for i, s in enumerate(list(self.stats))
            if i not in internal
        }

    # -- issue 11: privacy pause, health, verdicts, previews (link/control.py) ------------
    def set_camera_paused(self, paused: bool, stamp_ns: int) -> None:
        """From ``stamp_ns`` (log time) on, write no camera message (or write them again).

        Paused frames are neither written nor lost (``paused_frames`` counts them); the
        privacy event itself is recorded by the link. Idempotent."""
        with self._lock:
            if paused == self._cameras_paused:
                return
            if paused:
                self._pauses.append([stamp_ns, 0])
                self._cameras_paused = True
                if self.previews is not None:
                    self.previews.clear()  # a preview must not show what the pause hides
            else:
                self._pauses[-1][1] = stamp_ns
                self._cameras_paused = False

    def _in_pause(self, log_ns: int) -> bool:
        return any(s <= log_ns and (not e or log_ns < e) for s, e in self._pauses)

    @property
    def cameras_paused(self) -> bool:
        return self._cameras_paused

    def _expected_lost(self) -> dict[str, int]:
        """Losses per expected topic; a compressed camera's include its output topic's."""
        lost = self._lost_by_topic()
        if self.stage is None:
            return lost
        return {
            t: n + (lost.get(self.stage.outputs[t][0], 0) if self.stage.handles(t) else 0)
            for t, n in lost.items()
        }

    def stream_health(self) -> list[StreamHealth] | None:
        """Each expected stream as measured now (any thread); None when health is off."""
        if self.health is None:
            return None
        return self.health.health(time.time_ns(), self._expected_lost(), self._cameras_paused)

    def evaluate_episode(self, span: EpisodeSpan) -> EpisodeQuality | None:
        """The verdict on the episode ending now (any thread); None when health is off."""
        if self.health is None:
            return None
        pauses = [(s, e) for s, e in list(self._pauses)]
        return self.health.evaluate(span, time.time_ns(), self._expected_lost(), pauses)

    def preview(self, topic: str) -> Preview | None:
        """Open ``topic``'s preview lease; its newest preview (None: none yet, paused, off)."""
        if self.previews is None or self._cameras_paused or not self._accepting:
            return None
        return self.previews.request(topic)

    def update_qos(self, topic: str, qos: list[QosDict]) -> None:
        with self._lock:
            self.writer.update_qos(self._by_name[topic], qos)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread.is_alive() or self._thread.ident is not None:
            raise RecorderError(f"recorder of {self.session_id} was started already")
        self._thread.start()

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop("stopped" if exc_type is None else f"error: {exc_type.__name__}")

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the writer thread to drain the queue and finalize; returns at once."""
        if not self._stop_requested.is_set():
            self.stop_reason = reason
            self._stop_requested.set()

    def stop(self, reason: str = "stopped", timeout: float | None = None) -> SessionManifest:
        """Stop accepting messages, write everything queued, finalize files. Blocks."""
        if self._thread.ident is None:
            raise RecorderError(f"recorder of {self.session_id} was never started")
        self.request_stop(reason)
        self._thread.join(timeout)
        return self.writer.manifest

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # -- writer thread ----------------------------------------------------------------------
    def _process(self, batch: list[tuple[int, bytes, Mapping[str, Any]]]) -> None:
        write = self.writer.write
        # Frames queued between a pause's stamp and the call that set it: cut here too.
        cameras = self._camera_indices if self._pauses else None
        for index, msg, info in batch:
            if index == _EVENT:
                self._write_event(*info["event"])
                continue
            if index == _SPLIT:
                if not self._disk_failed:
                    try:
                        self.writer.split()
                    except _WRITE_ERRORS as exc:
                        self._disk_error(exc)
                continue
            stats = self.stats[index]
            seq = info.get("publication_sequence_number") or 0
            stats.publishers = self._seq[index].publishers
            if self._disk_failed:
                stats.dropped_disk += 1
                continue
            recv = info.get("received_timestamp") or time.time_ns()
            if cameras is not None and index in cameras and self._in_pause(recv):
                continue  # received before the pause flag was up; under it by its stamp
            if self.writing_pause.covers(recv):
                self.paused_messages += 1
                continue
            src = info.get("source_timestamp") or recv
            try:
                write(index, recv, src, msg, seq & 0xFFFFFFFF)
            except _WRITE_ERRORS as exc:
                stats.dropped_disk += 1
                self._disk_error(exc)
                continue
            if self.taps:
                self._offer_taps(stats, msg, recv)

    def _write_event(
        self,
        event: TaskEventData,
        event_cdr: bytes,
        current_task_cdr: bytes | None,
        lost: dict[str, int] | None = None,
    ) -> None:
        manifest = self.writer.manifest
        apply_event(manifest.tasks, manifest.marks, event, lost)
        if self._disk_failed:
            return
        assert self._event_index is not None and self._current_task_index is not None
        try:
            self.writer.write(self._event_index, event.stamp_ns, event.stamp_ns, event_cdr, 0)
            self.stats[self._event_index].received += 1
            if current_task_cdr is not None:
                self.writer.write(
                    self._current_task_index, event.stamp_ns, event.stamp_ns, current_task_cdr, 0
                )
                self.stats[self._current_task_index].received += 1
            if self.taps:
                self._offer_taps(self.stats[self._event_index], event_cdr, event.stamp_ns)
                if current_task_cdr is not None:
                    self._offer_taps(
                        self.stats[self._current_task_index], current_task_cdr, event.stamp_ns
                    )
            if self.on_event_written is not None:
                self.on_event_written(event)
            # Episodes must survive a crash: session.json is rewritten at once.
            write_manifest(self.session_dir, manifest)
        except _WRITE_ERRORS as exc:
            self._disk_error(exc)

    def _offer_taps(self, stats: TopicStats, msg: bytes, log_time: int) -> None:
        for tap in self.taps:
            self._tap_call(tap, tap.offer, stats.topic, stats.type, msg, log_time)

    def _tap_call(self, tap: Tap, method: Callable[..., object], *args: object) -> None:
        try:
            method(*args)
        except Exception:  # a tap (the live view) is a convenience: it must never stop recording
            log.exception("%s failed; disabled for this session", type(tap).__name__)
            self.taps = tuple(t for t in self.taps if t is not tap)

    def _disk_error(self, exc: Exception) -> None:
        self._disk_failed = True
        reason = f"disk error: {exc}"
        log.error("recording stopped: %s; flushed data is kept (run `xsq recover`)", reason)
        self._accepting = False
        self.stop_reason = reason
        self._stop_requested.set()
        if self._on_auto_stop:
            self._on_auto_stop(reason)

    def _check_disk(self) -> None:
        try:
            self.disk_free = shutil.disk_usage(self.session_dir).free
        except OSError:
            return
        reserve = self.rcfg.disk_reserve_bytes
        if self.disk_free < reserve and not self._stop_requested.is_set():
            reason = (
                f"disk reserve reached: {self.disk_free / 1e6:.0f} MB free "
                f"< reserve {reserve / 1e6:.0f} MB on {self.session_dir}"
            )
            log.warning("closing session: %s", reason)
            self.request_stop(reason)
            if self._on_auto_stop:
                self._on_auto_stop(reason)

    def snapshot(self, state: str = "recording") -> StatusSnapshot:
        internal = {self._status_index, self._event_index, self._current_task_index}
        stats = [s for i, s in enumerate(self.stats) if i not in internal]
        now = time.time_ns()
        return StatusSnapshot(
            state=state,
            session_id=self.session_id,
            stamp_ns=now,
            elapsed_sec=(now - self.started_ns) / 1e9,
            bytes_written=self.writer.bytes_written,
            disk_free_bytes=self.disk_free,
            topics=[s.copy() for s in stats],
        )

    def _emit_status(self, state: str) -> None:
        self._sync_encode_stats()
        snap = self.snapshot(state)
        if self.health is not None:
            lost = self._expected_lost()
            self.health.sample_losses(snap.stamp_ns, lost)
            snap.streams = self.health.health(snap.stamp_ns, lost, self._cameras_paused)
        self.last_status = snap
        index = self._status_index
        if self._status_encoder is not None and index is not None and not self._disk_failed:
            try:
                data = self._status_encoder(snap)
                self.writer.write(index, snap.stamp_ns, snap.stamp_ns, data, 0)
                self.stats[index].received += 1
                if self.taps:
                    self._offer_taps(self.stats[index], data, snap.stamp_ns)
            except _WRITE_ERRORS as exc:
                self._disk_error(exc)
        if self._on_status:
            try:
                self._on_status(snap)
            except Exception:  # a status consumer must never stop the recording
                log.exception("status callback failed")

    def _run(self) -> None:
        rcfg = self.rcfg
        now = time.monotonic()
        next_flush = now + rcfg.flush_interval
        next_status = now  # first status at once: the bag shows when recording began
        next_disk = now
        try:
            while True:
                stopping = self._stop_requested.is_set()
                if stopping and self._accepting:
                    self._accepting = False
                    if self.stage is not None:
                        # Frames still encoding reach the queue before we drain it.
                        self.stage.close(timeout=30)
                batch = self.queue.get_batch(timeout=0.05)
                if batch:
                    self._process(batch)
                now = time.monotonic()
                if now >= next_disk:
                    self._check_disk()
                    next_disk = now + 0.25
                self._trimmer.check(self.queue.queued_bytes)  # two compares
                if now >= next_status:
                    self._emit_status("recording")
                    next_status = now + rcfg.status_interval
                if now >= next_flush and not self._disk_failed:
                    try:
                        self.writer.flush()
                    except _WRITE_ERRORS as exc:
                        self._disk_error(exc)
                    next_flush = now + rcfg.flush_interval
                if stopping and not batch and len(self.queue) == 0:
                    break
            self._finish()
        except Exception:
            log.exception("writer thread failed; abandoning session for recovery")
            self.stop_reason = "error: writer thread failed (see log)"
            self.writer.abandon(self.stop_reason)
            if self._on_auto_stop:
                self._on_auto_stop(self.stop_reason)

    def _finish(self) -> None:
        if self.previews is not None:
            self.previews.close()
        if self.stage is not None:
            self.stage.close(timeout=30)  # idempotent; after a disk error it was not closed yet
            self._sync_encode_stats()
        if self._disk_failed:
            self.writer.abandon(self.stop_reason)
            self._emit_status("closed")
            return
        self._emit_status("stopping")
        try:
            self.writer.close(self.stop_reason)
        except _WRITE_ERRORS as exc:
            self._disk_failed = True
            self.stop_reason = f"disk error while closing: {exc}"
            self.writer.abandon(self.stop_reason)
        self.last_status = self.snapshot("closed")
        release_free_memory()  # an idle recorder keeps no memory of the session's frames
        if self._on_status:
            self._on_status(self.last_status)
