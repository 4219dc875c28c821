"""The visit state machine: what each tablet command does, and when it is allowed.

States: ``idle`` (no session) and ``recording`` (a session runs, with or without
an open task). The machine owns the event stream of a session (session_start,
task_start, task_end, mark, session_end, each with a unique event id) and hands
every event to the :class:`SessionController`, which records it.

Rules the tablet relies on (docs/tablet-protocol.md):

* An error reply changes nothing. Every handler checks first, then calls the
  controller, then commits its own state; a :class:`ControllerError` becomes a
  ``RECORDER_ERROR`` reply with the state as it was. (The one documented
  exception is ``session.stop``: see :meth:`VisitStateMachine._session_stop`.)
* Idempotency: the reply to every request that carried a readable id is kept
  (last 10,000 by default) under ``(client, id)``; a repeated id gets the stored
  reply byte for byte and has no effect, even if the repeated body differs.
* ``session.stop`` with a task open first ends the task as ``aborted`` (recorded
  as a task_end event with an explanatory note), then ends the session.

* Issue 11: ``session.start`` is refused (``MISSING_FIELDS``) without the visit
  fields the config requires; ``task.end`` asks the controller for a verdict and
  records the episode window (taps +- pre/post-roll); ``task.discard`` marks the
  last ended episode (once; repeats answer ``already_discarded``); privacy
  pause/resume are idempotent and need a controller that can pause cameras
  (capabilities: link/control.py).

* If the recorder ends a session by itself (disk reserve reached, storage
  error), its controller calls :meth:`VisitStateMachine.session_lost`: the
  machine returns to ``idle`` and status says why (``session_lost_reason``).

Thread-safe: one lock serializes commands, snapshots and ``session_lost``
(which the recorder side calls from its own thread).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from xsquare_logger.config.model import ALWAYS_REQUIRED, VISIT_ARGS, ExpectedStream, VisitConfig
from xsquare_logger.link.control import CameraPauser, EpisodeJudge, HealthSource, PreviewSource
from xsquare_logger.link.protocol import (
    PROTOCOL_VERSION,
    UNCACHED_COMMANDS,
    ErrorCode,
    MarkArgs,
    PreviewGetArgs,
    PrivacyPauseArgs,
    PrivacyResumeArgs,
    ProtocolError,
    Request,
    SessionStartArgs,
    TaskDiscardArgs,
    TaskEndArgs,
    TaskStartArgs,
    decode_envelope,
    encode,
    error_reply,
    ok_reply,
    validate_request,
)
from xsquare_logger.recording.control import ControllerError, RecordingStatus, SessionController
from xsquare_logger.session.events import TaskEventData, VisitInfo
from xsquare_logger.session.health import (
    EpisodeQuality,
    EpisodeSpan,
    StreamHealth,
    stream_alert,
    unmeasured_streams,
)

__all__ = ["AUTO_ABORT_NOTE", "VisitState", "VisitStateMachine"]

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 1000
# Bounds on what an evaluator returns and on the status episode list: a reply or
# status message must stay far below the 64 KiB message limit.
_MAX_REASONS = 8
_MAX_REASON_CHARS = 200
RECENT_EPISODES = 20
AUTO_ABORT_NOTE = "ended automatically: session.stop while the task was open"


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


class VisitState(StrEnum):
    IDLE = "idle"
    RECORDING = "recording"


@dataclass
class _OpenTask:
    task: str
    episode_index: int
    event_id: str
    started_ns: int
    instruction: str = ""
    window_start_ns: int = 0


@dataclass
class _EndedTask:
    task: str
    episode_index: int
    instruction: str
    outcome: str
    duration_sec: float
    quality: EpisodeQuality | None
    discard_event_id: str = ""  # set once discarded

    def summary(self) -> dict[str, Any]:
        return {
            "episode_index": self.episode_index,
            "task": self.task,
            "outcome": self.outcome,
            "duration_sec": self.duration_sec,
            "quality": _quality_json(self.quality),
            "discarded": bool(self.discard_event_id),
        }


def _quality_json(quality: EpisodeQuality | None) -> dict[str, Any] | None:
    return None if quality is None else quality.model_dump(mode="json")


@dataclass
class _Session:
    session_id: str
    visit: VisitInfo
    started_ns: int
    next_event: int = 0
    next_episode: int = 0
    marks: int = 0
    task: _OpenTask | None = None
    ended: list[_EndedTask] = field(default_factory=list)
    # Privacy pause: when the current pause began (None: not paused), and the closed ranges.
    paused_since: int | None = None
    pause_event_id: str = ""
    pauses: list[tuple[int, int]] = field(default_factory=list)

    def paused_within(self, start_ns: int, end_ns: int) -> tuple[tuple[int, int], ...]:
        """The paused ranges clipped to ``[start_ns, end_ns]`` (an open pause ends there)."""
        ranges = list(self.pauses)
        if self.paused_since is not None:
            ranges.append((self.paused_since, end_ns))
        return tuple(
            (max(a, start_ns), min(b, end_ns)) for a, b in ranges if a < end_ns and b > start_ns
        )

    def event_id(self, offset: int = 0) -> str:
        return f"{self.session_id}-{self.next_event + offset}"


class _Failed(Exception):
    """Raised inside a handler to reply with an error (state untouched)."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class VisitStateMachine:
    """Executes validated tablet requests against a :class:`SessionController`.

    ``robot_id`` is reported by ``hello`` and status. ``clock`` returns wall time
    in nanoseconds (status ``elapsed_sec``, ``robot_time_ns``). ``tasks`` is the
    task list the operator console offers (reported by ``hello``).
    ``cache_size`` bounds the idempotency cache (replies kept). ``visit`` gives the
    required visit fields, the robot's own visit metadata and the episode margins;
    ``streams`` the expected streams (config ``health.streams``) reported in status.
    """

    def __init__(
        self,
        controller: SessionController,
        robot_id: str,
        clock: Callable[[], int] = time.time_ns,
        *,
        tasks: Sequence[str] = (),
        cache_size: int = 10_000,
        visit: VisitConfig | None = None,
        streams: Sequence[ExpectedStream] = (),
        preview_interval_s: float = 1.0,
        preview_lease_s: float = 5.0,
    ) -> None:
        self._controller = controller
        self._robot_id = robot_id
        self._clock = clock
        self._tasks = list(tasks)
        self._cache_size = cache_size
        self._visit = visit or VisitConfig()
        self._streams = list(streams)
        self._preview_timing = {
            "interval_sec": preview_interval_s, "lease_sec": preview_lease_s,
        }
        self._replies: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._session: _Session | None = None
        self._lost_reason = ""
        self._version = 0
        # Reentrant: the status command takes a snapshot while handling a request.
        self._lock = threading.RLock()
        self._handlers: dict[str, Callable[[Request, int], dict[str, Any]]] = {
            "hello": self._hello,
            "session.start": self._session_start,
            "task.start": self._task_start,
            "task.end": self._task_end,
            "task.discard": self._task_discard,
            "mark": self._mark,
            "privacy.pause": self._privacy_pause,
            "privacy.resume": self._privacy_resume,
            "session.stop": self._session_stop,
            "status": self._status,
            "preview.get": self._preview_get,
        }

    # --- public ---------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Increments on every state change (the server publishes status at once)."""
        return self._version

    @property
    def state(self) -> VisitState:
        return VisitState.IDLE if self._session is None else VisitState.RECORDING

    def open_episode(self) -> tuple[str, int, int] | None:
        """``(task, episode_index, started_ns)`` of the open task, or None (read-only).

        Lock-free on purpose: the floor heartbeat reads it and must never wait for a
        tablet command in progress (one reference read is atomic; the open task
        object is never mutated, only replaced).
        """
        s = self._session
        task = s.task if s is not None else None
        return None if task is None else (task.task, task.episode_index, task.started_ns)

    def handle_frame(self, frame: bytes, received_ns: int, client: str = "") -> bytes:
        """Parse, execute and answer one raw request frame; returns the encoded reply.

        ``received_ns`` is the robot's receive time (the events' timestamp);
        ``client`` identifies the sender (its CURVE public key) so two tablets
        choosing the same id do not see each other's replies.
        """
        with self._lock:
            return self._handle_frame(frame, received_ns, client)

    def handle(self, request: Request, received_ns: int, client: str = "") -> dict[str, Any]:
        """Execute a validated request (or return the stored reply to its id) as a dict."""
        with self._lock:
            if request.cmd in UNCACHED_COMMANDS:
                return self._execute(request, received_ns)
            cached = self._replies.get((client, request.id))
            if cached is None:
                cached = self._remember(client, request.id, self._execute(request, received_ns))
        return json.loads(cached)

    def session_lost(self, reason: str, session_id: str | None = None) -> None:
        """The recorder ended the session by itself: return to ``idle``.

        Called by the recording side from any thread. Ignored when no session
        runs, when ``session_id`` names another session, or when the recorder
        still records this machine's session (a late call about an old session).
        """
        with self._lock:
            s = self._session
            if s is None or (session_id is not None and session_id != s.session_id):
                return
            try:
                status = self._controller.status()
                if status.recording and status.session_id == s.session_id:
                    return
            except Exception:
                log.exception("controller status() failed in session_lost")
            log.warning("session %s ended by the recorder: %s", s.session_id, reason)
            self._session = None
            self._lost_reason = reason[:_MAX_ERROR_CHARS] or "ended by the recorder"
            self._changed()

    def _handle_frame(self, frame: bytes, received_ns: int, client: str) -> bytes:
        try:
            doc, request_id = decode_envelope(frame)
        except ProtocolError as exc:
            # No readable id: nothing to cache under, nothing executed.
            return encode(error_reply(exc.request_id, exc.code, exc.message))
        cached = self._replies.get((client, request_id))
        if cached is not None:
            return cached
        try:
            request = validate_request(doc, request_id)
        except ProtocolError as exc:
            reply = error_reply(request_id, exc.code, exc.message)
            return self._remember(client, request_id, reply)
        if request.cmd in UNCACHED_COMMANDS:
            return encode(self._execute(request, received_ns))
        return self._remember(client, request_id, self._execute(request, received_ns))

    def snapshot(self) -> dict[str, Any]:
        """The status fields: this machine's state plus the controller's RecordingStatus."""
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        try:
            rec = self._controller.status()
        except Exception as exc:  # the status must never take the bridge down
            log.exception("controller status() failed")
            rec = RecordingStatus(recording=False, last_error=f"status unavailable: {exc}")
        s = self._session
        now = self._clock()
        task = s.task if s else None
        streams = self._stream_health(rec)
        return {
            "robot_id": self._robot_id,
            "robot_time_ns": now,
            "state": str(self.state),
            "session_id": s.session_id if s else "",
            "visit_id": s.visit.visit_id if s else "",
            "operator": s.visit.operator if s else "",
            "current_task": task.task if task else "",
            "episode_index": task.episode_index if task else -1,
            "episodes": s.next_episode if s else 0,
            "marks": s.marks if s else 0,
            "elapsed_sec": round((now - s.started_ns) / 1e9, 3) if s else 0.0,
            "task_elapsed_sec": round((now - task.started_ns) / 1e9, 3) if task else 0.0,
            "recording": rec.recording,
            "bytes_written": rec.bytes_written,
            "messages_written": rec.messages_written,
            "messages_lost": rec.messages_lost,
            "disk_free_bytes": rec.disk_free_bytes,
            "upload_backlog": rec.upload_backlog,
            "topic_count": len(rec.topics),
            # Per topic: received, written, the four loss kinds and lost (LossCounters.to_dict).
            "topics": rec.topics,
            # Bounded: a status message must stay far below the 64 KiB message limit.
            "last_error": rec.last_error[:_MAX_ERROR_CHARS],
            "session_lost_reason": self._lost_reason,
            "streams": [h.model_dump(mode="json") for h in streams],
            "stream_alert": stream_alert(streams, task is not None),
            "privacy_paused": bool(s and s.paused_since is not None),
            "privacy_paused_sec": (
                round((now - s.paused_since) / 1e9, 3)
                if s and s.paused_since is not None
                else 0.0
            ),
            "recent_episodes": [e.summary() for e in s.ended[-RECENT_EPISODES:]] if s else [],
        }

    def _stream_health(self, rec: RecordingStatus) -> list[StreamHealth]:
        measured: Sequence[StreamHealth] | None = None
        if isinstance(self._controller, HealthSource):
            try:
                measured = self._controller.stream_health()
            except Exception:
                log.exception("controller stream_health() failed")
        if measured is not None:
            return list(measured)
        lost = {t: c.get("lost", 0) for t, c in rec.topics.items()}
        return unmeasured_streams(self._streams, lost)

    # --- plumbing -------------------------------------------------------------------

    def _remember(self, client: str, request_id: str, reply: dict[str, Any]) -> bytes:
        data = encode(reply)
        self._replies[(client, request_id)] = data
        while len(self._replies) > self._cache_size:
            self._replies.popitem(last=False)
        return data

    def _execute(self, request: Request, received_ns: int) -> dict[str, Any]:
        try:
            result = self._handlers[request.cmd](request, received_ns)
        except _Failed as exc:
            return error_reply(request.id, exc.code, exc.message, **exc.details)
        except Exception:
            # A bug must cost one reply, not the bridge (handlers commit last,
            # so the state is as it was before the request).
            log.exception("tablet command %s (id %s) failed", request.cmd, request.id)
            return error_reply(request.id, ErrorCode.INTERNAL, "internal error; see robot log")
        return ok_reply(request.id, result, received_ns)

    def _require_session(self) -> _Session:
        if self._session is None:
            raise _Failed(ErrorCode.INVALID_STATE, "no session is running; send session.start")
        return self._session

    def _record(self, event: TaskEventData) -> None:
        try:
            self._controller.record_event(event)
        except ControllerError as exc:
            message = f"the recorder refused the event: {exc}"
            raise _Failed(ErrorCode.RECORDER_ERROR, message) from None

    def _recording_gone(self) -> bool:
        """True when the recorder has ended the session on its own (disk reserve, error)."""
        try:
            return not self._controller.status().recording
        except Exception:
            return False

    def _changed(self) -> None:
        self._version += 1

    # --- commands -------------------------------------------------------------------

    def _hello(self, request: Request, received_ns: int) -> dict[str, Any]:
        s = self._session
        task = s.task if s else None
        return {
            "robot_id": self._robot_id,
            "protocol_version": PROTOCOL_VERSION,
            "state": str(self.state),
            "session_id": s.session_id if s else "",
            "current_task": task.task if task else "",
            "episode_index": task.episode_index if task else -1,
            "tasks": list(self._tasks),
            "required_fields": self._tablet_required(),
            "visit_metadata": dict(self._visit.metadata),
        }

    def _required(self) -> list[str]:
        return [f for f in self._visit.required_fields if f not in ALWAYS_REQUIRED]

    def _tablet_required(self) -> list[str]:
        """Required fields the robot does not provide itself: what the console must ask."""
        provided = {k for k, v in self._visit.metadata.items() if v.strip()}
        return [f for f in self._required() if f not in provided]

    def _missing(self, args: SessionStartArgs, metadata: dict[str, str]) -> list[str]:
        given = {"site": args.site, "notes": args.notes}
        return [
            f
            for f in self._required()
            if not (given.get(f, "") if f in VISIT_ARGS else metadata.get(f, "")).strip()
        ]

    def _status(self, request: Request, received_ns: int) -> dict[str, Any]:
        return self.snapshot()

    def _preview_get(self, request: Request, received_ns: int) -> dict[str, Any]:
        """The newest preview of one camera; read-only (no event, allowed in any state)."""
        args = request.args
        assert isinstance(args, PreviewGetArgs)
        stream = next(
            (s for s in self._streams if s.name == args.camera and s.kind == "camera"), None
        )
        if stream is None:
            cameras = ", ".join(s.name for s in self._streams if s.kind == "camera")
            raise _Failed(
                ErrorCode.BAD_REQUEST,
                f"args.camera: {args.camera!r} is not a camera stream (cameras: {cameras})",
            )
        picture = None
        paused = self._session is not None and self._session.paused_since is not None
        if self._session is not None and not paused and isinstance(
            self._controller, PreviewSource
        ):
            try:
                picture = self._controller.camera_preview(stream.topic)
            except Exception:  # a preview is a convenience: never an error for the console
                log.exception("camera_preview(%s) failed", stream.topic)
        result: dict[str, Any] = {
            "camera": stream.name, "topic": stream.topic, "available": picture is not None,
            "stamp_ns": 0, "width": 0, "height": 0, "format": "jpeg", "data_b64": "",
            **self._preview_timing,
        }
        if picture is not None:
            result.update(
                stamp_ns=picture.stamp_ns, width=picture.width, height=picture.height,
                data_b64=base64.b64encode(picture.jpeg).decode("ascii"),
            )
        return result

    def _session_start(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, SessionStartArgs)
        if self._session is not None:
            raise _Failed(
                ErrorCode.INVALID_STATE,
                f"session {self._session.session_id} is running; send session.stop first",
            )
        metadata = {**self._visit.metadata, **args.metadata}
        missing = self._missing(args, metadata)
        if missing:
            where = ", ".join(f if f in VISIT_ARGS else f"metadata.{f}" for f in missing)
            raise _Failed(
                ErrorCode.MISSING_FIELDS,
                f"this robot needs these visit fields before recording: {', '.join(missing)} "
                f"(session.start args {where})",
                missing=missing,
            )
        visit = VisitInfo(
            visit_id=args.visit_id,
            operator=args.operator,
            consent=args.consent,
            site=args.site,
            notes=args.notes,
            metadata=metadata,
        )
        try:
            session_id = self._controller.start_session(visit, received_ns)
        except ControllerError as exc:
            raise _Failed(ErrorCode.RECORDER_ERROR, f"could not start recording: {exc}") from None
        session = _Session(session_id=session_id, visit=visit, started_ns=received_ns)
        event = TaskEventData(
            stamp_ns=received_ns,
            session_id=session_id,
            event_id=session.event_id(),
            kind="session_start",
            operator=visit.operator,
            note=visit.notes,
        )
        try:
            self._record(event)
        except _Failed:
            # Roll back so the error leaves no running session behind.
            try:
                self._controller.stop_session(received_ns)
            except ControllerError:
                log.exception("could not stop session %s after a failed start", session_id)
            raise
        session.next_event = 1
        self._session = session
        self._lost_reason = ""
        self._changed()
        return {"session_id": session_id, "event_id": event.event_id, "visit_id": visit.visit_id}

    def _task_start(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, TaskStartArgs)
        s = self._require_session()
        if s.task is not None:
            raise _Failed(
                ErrorCode.INVALID_STATE,
                f"task {s.task.task!r} (episode {s.task.episode_index}) is open; "
                "send task.end first",
            )
        # The pre-roll never reaches back before the session began (nothing recorded there).
        window_start = max(s.started_ns, received_ns - _ns(self._visit.pre_roll_s))
        event = TaskEventData(
            stamp_ns=received_ns,
            session_id=s.session_id,
            event_id=s.event_id(),
            kind="task_start",
            task=args.task,
            episode_index=s.next_episode,
            operator=s.visit.operator,
            instruction=args.instruction,
            window_ns=window_start,
        )
        self._record(event)
        s.task = _OpenTask(
            args.task, s.next_episode, event.event_id, received_ns, args.instruction, window_start
        )
        s.next_episode += 1
        s.next_event += 1
        self._changed()
        return {"episode_index": event.episode_index, "event_id": event.event_id, "task": args.task}

    def _end_task_event(
        self,
        s: _Session,
        outcome: str,
        note: str,
        stamp_ns: int,
        window_end: int,
        quality: EpisodeQuality | None = None,
    ) -> TaskEventData:
        assert s.task is not None
        return TaskEventData(
            stamp_ns=stamp_ns,
            session_id=s.session_id,
            event_id=s.event_id(),
            kind="task_end",
            task=s.task.task,
            episode_index=s.task.episode_index,
            outcome=outcome,
            operator=s.visit.operator,
            note=note,
            window_ns=window_end,
            quality=quality,
            paused=s.paused_within(s.task.window_start_ns, window_end),
        )

    def _evaluate(self, s: _Session, stamp_ns: int, window_end: int) -> EpisodeQuality | None:
        """The recorder's verdict, bounded; any failure of the evaluator is "no verdict"."""
        task = s.task
        assert task is not None
        if not isinstance(self._controller, EpisodeJudge):
            return None
        span = EpisodeSpan(
            session_id=s.session_id,
            episode_index=task.episode_index,
            task=task.task,
            start_ns=task.started_ns,
            end_ns=stamp_ns,
            window_start_ns=task.window_start_ns,
            window_end_ns=window_end,
        )
        try:
            quality = self._controller.evaluate_episode(span)
        except Exception:
            # A verdict is advice; it must never cost the operator the task.end.
            log.exception("episode %d: quality evaluation failed", task.episode_index)
            return None
        if quality is None:
            return None
        reasons = [r[:_MAX_REASON_CHARS] for r in quality.reasons[:_MAX_REASONS]]
        return EpisodeQuality(verdict=quality.verdict, reasons=reasons)

    def _ended(
        self, s: _Session, outcome: str, stamp_ns: int, quality: EpisodeQuality | None
    ) -> _EndedTask:
        task = s.task
        assert task is not None
        duration = round((stamp_ns - task.started_ns) / 1e9, 3)
        return _EndedTask(
            task.task, task.episode_index, task.instruction, outcome, duration, quality
        )

    def _task_end(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, TaskEndArgs)
        s = self._require_session()
        task = s.task
        if task is None:
            raise _Failed(ErrorCode.INVALID_STATE, "no task is open; send task.start first")
        window_end = received_ns + _ns(self._visit.post_roll_s)
        quality = self._evaluate(s, received_ns, window_end)
        event = self._end_task_event(s, args.outcome, args.note, received_ns, window_end, quality)
        self._record(event)
        ended = self._ended(s, args.outcome, received_ns, quality)
        s.ended.append(ended)
        s.task = None
        s.next_event += 1
        self._changed()
        return {
            "episode_index": task.episode_index,
            "event_id": event.event_id,
            "task": task.task,
            "outcome": args.outcome,
            "duration_sec": ended.duration_sec,
            "quality": _quality_json(quality),
            "window_start_ns": task.window_start_ns,
            "window_end_ns": window_end,
        }

    def _task_discard(self, request: Request, received_ns: int) -> dict[str, Any]:
        """Mark the last ended episode discarded; a second discard of it changes nothing."""
        args = request.args
        assert isinstance(args, TaskDiscardArgs)
        s = self._require_session()
        if s.task is not None:
            raise _Failed(
                ErrorCode.INVALID_STATE,
                f"task {s.task.task!r} (episode {s.task.episode_index}) is open; "
                "only the last ended episode can be discarded: send task.end first",
            )
        if not s.ended:
            raise _Failed(ErrorCode.INVALID_STATE, "no episode has ended in this session")
        last = s.ended[-1]
        if args.episode_index is not None and args.episode_index != last.episode_index:
            raise _Failed(
                ErrorCode.INVALID_STATE,
                f"episode {args.episode_index} is not the last ended episode "
                f"({last.episode_index}); only that one can be discarded",
            )
        result = {
            "episode_index": last.episode_index,
            "task": last.task,
            "instruction": last.instruction,
            "outcome": last.outcome,
        }
        if last.discard_event_id:
            return {**result, "event_id": last.discard_event_id, "already_discarded": True}
        event = TaskEventData(
            stamp_ns=received_ns,
            session_id=s.session_id,
            event_id=s.event_id(),
            kind="task_discard",
            task=last.task,
            episode_index=last.episode_index,
            outcome=last.outcome,
            operator=s.visit.operator,
            note=args.note,
        )
        self._record(event)
        last.discard_event_id = event.event_id
        s.next_event += 1
        self._changed()
        return {**result, "event_id": event.event_id, "already_discarded": False}

    def _privacy(self, paused: bool, note: str, received_ns: int) -> dict[str, Any]:
        s = self._require_session()
        if (s.paused_since is not None) == paused:  # already so: idempotent, nothing recorded
            return {"paused": paused, "changed": False, "event_id": None,
                    "paused_since_ns": s.paused_since}
        if not isinstance(self._controller, CameraPauser):
            raise _Failed(
                ErrorCode.RECORDER_ERROR,
                "this recorder cannot pause the camera streams; privacy pause is unavailable",
            )
        try:
            self._controller.set_camera_paused(paused, received_ns)
        except ControllerError as exc:
            raise _Failed(ErrorCode.RECORDER_ERROR, f"the recorder refused: {exc}") from None
        event = TaskEventData(
            stamp_ns=received_ns,
            session_id=s.session_id,
            event_id=s.event_id(),
            kind="privacy_pause" if paused else "privacy_resume",
            episode_index=s.task.episode_index if s.task else -1,
            operator=s.visit.operator,
            note=note,
        )
        try:
            self._record(event)
        except _Failed:
            # Undo: an error changes nothing (the cameras go back to how they were).
            try:
                self._controller.set_camera_paused(not paused, received_ns)
            except ControllerError:
                log.exception("could not undo set_camera_paused(%s)", paused)
            raise
        if paused:
            s.paused_since = received_ns
        else:
            assert s.paused_since is not None
            s.pauses.append((s.paused_since, received_ns))
            s.paused_since = None
        s.next_event += 1
        self._changed()
        return {"paused": paused, "changed": True, "event_id": event.event_id,
                "paused_since_ns": s.paused_since}

    def _privacy_pause(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, PrivacyPauseArgs)
        return self._privacy(True, args.note, received_ns)

    def _privacy_resume(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, PrivacyResumeArgs)
        return self._privacy(False, args.note, received_ns)

    def _mark(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, MarkArgs)
        s = self._require_session()
        episode = s.task.episode_index if s.task else -1
        # TaskEvent has no label field: a mark's label travels in ``task``.
        event = TaskEventData(
            stamp_ns=received_ns,
            session_id=s.session_id,
            event_id=s.event_id(),
            kind="mark",
            task=args.label,
            episode_index=episode,
            operator=s.visit.operator,
            note=args.note,
        )
        self._record(event)
        s.next_event += 1
        s.marks += 1
        self._changed()
        return {"event_id": event.event_id, "episode_index": episode, "label": args.label}

    def _session_stop(self, request: Request, received_ns: int) -> dict[str, Any]:
        """End the session; an open task is first ended as ``aborted``.

        If the recorder has already ended the session by itself (disk reserve,
        storage error), the stop still succeeds (``recording_had_ended: true``,
        ``path: ""``) so the tablet is never stuck in a session it cannot stop.

        The one exception to "an error changes nothing": when the automatic
        task end was recorded but stopping the recording then failed, the reply
        is ``RECORDER_ERROR`` and the task stays ended (it is in the recording);
        the session keeps running and a later session.stop can be tried.
        """
        s = self._require_session()
        auto_ended: dict[str, Any] | None = None
        gone = False
        if s.task is not None:
            # No post-roll: the recording ends now. No verdict: the episode was cut short.
            event = self._end_task_event(s, "aborted", AUTO_ABORT_NOTE, received_ns, received_ns)
            try:
                self._record(event)
            except _Failed:
                gone = self._recording_gone()
                if not gone:
                    raise
            auto_ended = {
                "episode_index": s.task.episode_index,
                "task": s.task.task,
                "event_id": event.event_id,
                "outcome": "aborted",
            }
            s.ended.append(self._ended(s, "aborted", received_ns, None))
            s.task = None
            s.next_event += 1
            self._changed()
        end_event = TaskEventData(
            stamp_ns=received_ns,
            session_id=s.session_id,
            event_id=s.event_id(),
            kind="session_end",
            operator=s.visit.operator,
        )
        try:
            self._controller.record_event(end_event)
            # Consumed even if the stop below fails: a retried stop gets a fresh event id.
            s.next_event += 1
        except ControllerError as exc:
            # The operator asked to stop: a missing session_end event must not prevent it.
            log.warning("session_end event of %s not recorded: %s", s.session_id, exc)
        try:
            path = self._controller.stop_session(received_ns)
        except ControllerError as exc:
            if not (gone or self._recording_gone()):
                message = f"could not stop recording: {exc}"
                raise _Failed(ErrorCode.RECORDER_ERROR, message) from None
            log.warning("session %s had already ended in the recorder: %s", s.session_id, exc)
            gone, path = True, ""
        self._session = None
        self._changed()
        return {
            "session_id": s.session_id,
            "event_id": end_event.event_id,
            "path": str(path),
            "episodes": s.next_episode,
            "marks": s.marks,
            "auto_ended_task": auto_ended,
            "recording_had_ended": gone,
        }
