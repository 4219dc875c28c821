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

* If the recorder ends a session by itself (disk reserve reached, storage
  error), its controller calls :meth:`VisitStateMachine.session_lost`: the
  machine returns to ``idle`` and status says why (``session_lost_reason``).

Thread-safe: one lock serializes commands, snapshots and ``session_lost``
(which the recorder side calls from its own thread).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from xsquare_logger.link.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    MarkArgs,
    ProtocolError,
    Request,
    SessionStartArgs,
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

__all__ = ["AUTO_ABORT_NOTE", "VisitState", "VisitStateMachine"]

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 1000
AUTO_ABORT_NOTE = "ended automatically: session.stop while the task was open"


class VisitState(StrEnum):
    IDLE = "idle"
    RECORDING = "recording"


@dataclass
class _OpenTask:
    task: str
    episode_index: int
    event_id: str
    started_ns: int


@dataclass
class _Session:
    session_id: str
    visit: VisitInfo
    started_ns: int
    next_event: int = 0
    next_episode: int = 0
    marks: int = 0
    task: _OpenTask | None = None

    def event_id(self, offset: int = 0) -> str:
        return f"{self.session_id}-{self.next_event + offset}"


class _Failed(Exception):
    """Raised inside a handler to reply with an error (state untouched)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class VisitStateMachine:
    """Executes validated tablet requests against a :class:`SessionController`.

    ``robot_id`` is reported by ``hello`` and status. ``clock`` returns wall time
    in nanoseconds (status ``elapsed_sec``, ``robot_time_ns``). ``tasks`` is the
    task list the operator console offers (reported by ``hello``).
    ``cache_size`` bounds the idempotency cache (replies kept).
    """

    def __init__(
        self,
        controller: SessionController,
        robot_id: str,
        clock: Callable[[], int] = time.time_ns,
        *,
        tasks: Sequence[str] = (),
        cache_size: int = 10_000,
    ) -> None:
        self._controller = controller
        self._robot_id = robot_id
        self._clock = clock
        self._tasks = list(tasks)
        self._cache_size = cache_size
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
            "mark": self._mark,
            "session.stop": self._session_stop,
            "status": self._status,
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
        }

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
            return error_reply(request.id, exc.code, exc.message)
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
        }

    def _status(self, request: Request, received_ns: int) -> dict[str, Any]:
        return self.snapshot()

    def _session_start(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, SessionStartArgs)
        if self._session is not None:
            raise _Failed(
                ErrorCode.INVALID_STATE,
                f"session {self._session.session_id} is running; send session.stop first",
            )
        visit = VisitInfo(
            visit_id=args.visit_id,
            operator=args.operator,
            consent=args.consent,
            site=args.site,
            notes=args.notes,
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
        event = TaskEventData(
            stamp_ns=received_ns,
            session_id=s.session_id,
            event_id=s.event_id(),
            kind="task_start",
            task=args.task,
            episode_index=s.next_episode,
            operator=s.visit.operator,
            instruction=args.instruction,
        )
        self._record(event)
        s.task = _OpenTask(args.task, s.next_episode, event.event_id, received_ns)
        s.next_episode += 1
        s.next_event += 1
        self._changed()
        return {"episode_index": event.episode_index, "event_id": event.event_id, "task": args.task}

    def _end_task_event(self, s: _Session, outcome: str, note: str, stamp_ns: int) -> TaskEventData:
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
        )

    def _task_end(self, request: Request, received_ns: int) -> dict[str, Any]:
        args = request.args
        assert isinstance(args, TaskEndArgs)
        s = self._require_session()
        task = s.task
        if task is None:
            raise _Failed(ErrorCode.INVALID_STATE, "no task is open; send task.start first")
        event = self._end_task_event(s, args.outcome, args.note, received_ns)
        self._record(event)
        s.task = None
        s.next_event += 1
        self._changed()
        return {
            "episode_index": task.episode_index,
            "event_id": event.event_id,
            "task": task.task,
            "outcome": args.outcome,
            "duration_sec": round((received_ns - task.started_ns) / 1e9, 3),
        }

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
            event = self._end_task_event(s, "aborted", AUTO_ABORT_NOTE, received_ns)
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
