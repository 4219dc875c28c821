"""The recorder node's ROS 2 surface: session services and rosbag2-style events.

Every visit service is a tablet command in ROS clothes: the request becomes the
tablet protocol's JSON frame and goes through the SAME
:class:`~xsquare_logger.link.visit.VisitStateMachine` as the tablet link
(``handle_frame``: the same checks, the same typed error codes, the same
idempotency cache, under the client ``ros``), so a tablet and a ROS client see
one state. Split and pause act on the recorder directly (they are not visit
events) with a small reply cache of their own. docs/ros-interface.md is the
normative text.

Events: ``~/events/write_split`` (a finished file) and ``~/events/session_closed``
(a finished session), reliable + transient local, and ``~/visit_status`` (the
state machine, at once on every change). Handlers run on the node's executor.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from xsquare_logger.link.protocol import PROTOCOL_VERSION, ErrorCode, encode, error_reply, ok_reply
from xsquare_logger.recording.recorder import Recorder
from xsquare_logger.session.manifest import FileEntry, SessionManifest

if TYPE_CHECKING:
    from xsquare_logger.link.visit import VisitStateMachine
    from xsquare_logger.ros.recorder_node import RecorderNode

__all__ = ["ROS_CLIENT", "SessionServices", "latched_qos"]

log = logging.getLogger(__name__)

#: The idempotency namespace of every ROS caller (tablets use their CURVE key).
ROS_CLIENT = "ros"
_CACHE_SIZE = 1000
_VISIT_STATUS_PERIOD_S = 1.0


def latched_qos(depth: int) -> QoSProfile:
    return QoSProfile(
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def _stamp(msg: Any, ns: int) -> None:
    msg.stamp.sec, msg.stamp.nanosec = divmod(ns, 10**9)


def _fill(response: Any, reply: dict[str, Any]) -> dict[str, Any]:
    """ok/code/message/result_json of ``response`` from a protocol reply; returns result."""
    response.ok = bool(reply.get("ok"))
    if response.ok:
        result: dict[str, Any] = reply.get("result") or {}
        response.code = ""
        response.message = ""
        response.result_json = json.dumps(result, separators=(",", ":"))
        return result
    error = reply.get("error") or {}
    response.code = str(error.get("code", ErrorCode.INTERNAL))
    response.message = str(error.get("message", ""))
    response.result_json = ""
    return {}


class SessionServices:
    """Creates the services and event publishers on ``node``.

    ``machine`` None (``xsq record``: a session without a visit): only
    ``~/split_bagfile``, ``~/pause``, ``~/resume`` and ``~/status`` exist.
    """

    def __init__(
        self,
        node: RecorderNode,
        machine: VisitStateMachine | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        from xsquare_logger_msgs import msg as m
        from xsquare_logger_msgs import srv as s

        self.node = node
        self.machine = machine
        self._clock = clock
        self._m = m
        self._replies: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._split_pub = node.create_publisher(
            m.FileClosed, "~/events/write_split", latched_qos(100)
        )
        self._closed_pub = node.create_publisher(
            m.SessionClosed, "~/events/session_closed", latched_qos(10)
        )
        node.on_session_started.append(self._watch_files)
        node.on_session_closed.append(self._session_closed)
        srv = node.create_service
        srv(s.SplitBagfile, "~/split_bagfile", self._split)
        srv(s.Pause, "~/pause", lambda req, res: self._pause(req, res, True))
        srv(s.Resume, "~/resume", lambda req, res: self._pause(req, res, False))
        srv(s.GetStatus, "~/status", self._status)
        self._visit_pub = None
        if machine is None:
            return
        srv(s.StartSession, "~/start_session", self._start_session)
        srv(s.StopSession, "~/stop_session", self._stop_session)
        srv(s.StartTask, "~/task_start", self._task_start)
        srv(s.EndTask, "~/task_end", self._task_end)
        srv(s.DiscardTask, "~/task_discard", self._task_discard)
        srv(s.Mark, "~/mark", self._mark)
        srv(s.SetPrivacyPaused, "~/privacy", self._privacy)
        srv(s.TabletCommand, "~/tablet_command", self._tablet_command)
        self._visit_pub = node.create_publisher(m.VisitStatus, "~/visit_status", latched_qos(1))
        self._published_version = -1
        self._published_at = 0.0
        node.create_timer(0.1, self._maybe_publish_visit_status)

    # --- visit services: tablet frames through the state machine ------------------------

    def _command(self, request_id: str, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        assert self.machine is not None
        frame = encode({"v": PROTOCOL_VERSION, "id": request_id, "cmd": cmd, "args": args})
        reply = self.machine.handle_frame(frame, self._clock(), ROS_CLIENT)
        self._maybe_publish_visit_status()
        doc: dict[str, Any] = json.loads(reply)
        return doc

    def _start_session(self, req: Any, res: Any) -> Any:
        args: dict[str, Any] = {
            "visit_id": req.visit_id,
            "operator": req.operator_name,
            "consent": req.consent,
            "site": req.site,
            "notes": req.notes,
            "metadata": {kv.key: kv.value for kv in req.metadata},
        }
        reply = self._command(req.request_id, "session.start", args)
        result = _fill(res, reply)
        res.missing = list((reply.get("error") or {}).get("missing") or [])
        res.session_id = str(result.get("session_id", ""))
        res.event_id = str(result.get("event_id", ""))
        return res

    def _stop_session(self, req: Any, res: Any) -> Any:
        result = _fill(res, self._command(req.request_id, "session.stop", {}))
        res.session_id = str(result.get("session_id", ""))
        res.event_id = str(result.get("event_id", ""))
        res.path = str(result.get("path", ""))
        res.episodes = int(result.get("episodes", 0))
        res.marks = int(result.get("marks", 0))
        return res

    def _task_start(self, req: Any, res: Any) -> Any:
        args = {"task": req.task, "instruction": req.instruction}
        result = _fill(res, self._command(req.request_id, "task.start", args))
        res.episode_index = int(result.get("episode_index", -1))
        res.event_id = str(result.get("event_id", ""))
        return res

    def _task_end(self, req: Any, res: Any) -> Any:
        args = {"outcome": req.outcome, "note": req.note}
        result = _fill(res, self._command(req.request_id, "task.end", args))
        res.episode_index = int(result.get("episode_index", -1))
        res.event_id = str(result.get("event_id", ""))
        res.duration_sec = float(result.get("duration_sec", 0.0))
        res.verdict = str((result.get("quality") or {}).get("verdict", ""))
        return res

    def _task_discard(self, req: Any, res: Any) -> Any:
        args: dict[str, Any] = {"note": req.note}
        if req.episode_index >= 0:
            args["episode_index"] = req.episode_index
        result = _fill(res, self._command(req.request_id, "task.discard", args))
        res.episode_index = int(result.get("episode_index", -1))
        res.event_id = str(result.get("event_id", ""))
        res.already_discarded = bool(result.get("already_discarded", False))
        return res

    def _mark(self, req: Any, res: Any) -> Any:
        args = {"label": req.label, "note": req.note}
        result = _fill(res, self._command(req.request_id, "mark", args))
        res.event_id = str(result.get("event_id", ""))
        res.episode_index = int(result.get("episode_index", -1))
        return res

    def _privacy(self, req: Any, res: Any) -> Any:
        cmd = "privacy.pause" if req.paused else "privacy.resume"
        result = _fill(res, self._command(req.request_id, cmd, {"note": req.note}))
        res.paused = bool(result.get("paused", False))
        res.changed = bool(result.get("changed", False))
        return res

    def _tablet_command(self, req: Any, res: Any) -> Any:
        """A frame forwarded by the tablet bridge, answered exactly as in-process."""
        assert self.machine is not None
        res.reply = self.machine.handle_frame(bytes(req.frame), req.received_ns, req.client)
        self._maybe_publish_visit_status()
        return res

    # --- recorder services: split and pause ----------------------------------------------

    def _cached(self, request_id: str, run: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """Same id -> the first reply, no effect (as the tablet protocol's idempotency)."""
        if not request_id:
            return error_reply(None, ErrorCode.BAD_REQUEST, "request_id: required, non-empty")
        cached = self._replies.get(request_id)
        if cached is not None:
            return cached
        reply = run(self._clock())
        self._replies[request_id] = reply
        while len(self._replies) > _CACHE_SIZE:
            self._replies.popitem(last=False)
        return reply

    def _recorder_or_error(self, request_id: str) -> tuple[Recorder | None, dict[str, Any]]:
        recorder = self.node.recorder
        if recorder is None or not recorder.running:
            return None, error_reply(
                request_id, ErrorCode.INVALID_STATE, "no session is recording"
            )
        return recorder, {}

    def _split(self, req: Any, res: Any) -> Any:
        def run(now: int) -> dict[str, Any]:
            recorder, error = self._recorder_or_error(req.request_id)
            if recorder is None:
                return error
            recorder.request_split()
            return ok_reply(req.request_id, {"session_id": recorder.session_id}, now)

        result = _fill(res, self._cached(req.request_id, run))
        res.session_id = str(result.get("session_id", ""))
        return res

    def _pause(self, req: Any, res: Any, paused: bool) -> Any:
        def run(now: int) -> dict[str, Any]:
            recorder, error = self._recorder_or_error(req.request_id)
            if recorder is None:
                return error
            changed = recorder.set_writing_paused(paused, now)
            verb = "paused" if paused else "resumed"
            if changed:
                self.node.get_logger().info(f"writing {verb} (session {recorder.session_id})")
            return ok_reply(req.request_id, {"paused": paused, "changed": changed}, now)

        result = _fill(res, self._cached(req.request_id, run))
        res.paused = bool(result.get("paused", False))
        res.changed = bool(result.get("changed", False))
        self._maybe_publish_visit_status(force=True)
        return res

    # --- status ---------------------------------------------------------------------------

    def writing_paused(self) -> bool:
        recorder = self.node.recorder
        return recorder is not None and recorder.writing_pause.paused

    def _snapshot(self) -> dict[str, Any]:
        if self.machine is not None:
            return self.machine.snapshot()
        recorder = self.node.recorder
        snap = recorder.last_status if recorder is not None else None
        return {
            "state": "recording" if recorder is not None else "idle",
            "session_id": recorder.session_id if recorder is not None else "",
            "recording": recorder is not None and recorder.running,
            "bytes_written": snap.bytes_written if snap else 0,
            "messages_written": snap.totals.written if snap else 0,
            "messages_lost": snap.totals.lost if snap else 0,
            "topics": {t.topic: t.to_dict() for t in snap.topics} if snap else {},
        }

    def _status(self, _req: Any, res: Any) -> Any:
        snap = self._snapshot()
        res.ok, res.code, res.message = True, "", ""
        res.result_json = ""
        res.state = str(snap.get("state", ""))
        res.session_id = str(snap.get("session_id", ""))
        res.visit_id = str(snap.get("visit_id", ""))
        res.current_task = str(snap.get("current_task", ""))
        res.episode_index = int(snap.get("episode_index", -1))
        res.recording = bool(snap.get("recording", False))
        res.writing_paused = self.writing_paused()
        res.version = self.machine.version if self.machine is not None else 0
        res.status_json = json.dumps(snap, separators=(",", ":"))
        return res

    def _maybe_publish_visit_status(self, force: bool = False) -> None:
        if self.machine is None or self._visit_pub is None:
            return
        now = time.monotonic()
        version = self.machine.version
        if not force and version == self._published_version and (
            now - self._published_at < _VISIT_STATUS_PERIOD_S
        ):
            return
        snap = self.machine.snapshot()
        msg = self._m.VisitStatus()
        _stamp(msg, self._clock())
        msg.version = version
        msg.state = str(snap.get("state", ""))
        msg.session_id = str(snap.get("session_id", ""))
        msg.writing_paused = self.writing_paused()
        msg.status_json = json.dumps(snap, separators=(",", ":"))
        self._published_version, self._published_at = version, now
        self._visit_pub.publish(msg)

    # --- events ---------------------------------------------------------------------------

    def _watch_files(self, recorder: Recorder) -> None:
        directory = recorder.session_dir.resolve()
        session_id = recorder.session_id
        make = self._m

        def closed(entry: FileEntry, counts: dict[str, int], last: bool) -> None:
            # Writer thread: rclpy publishers may be used from any thread.
            msg = make.FileClosed()
            _stamp(msg, self._clock())
            msg.session_id = session_id
            msg.session_dir = str(directory)
            msg.closed_file = str(directory / entry.path)
            msg.session_end = last
            msg.size_bytes = entry.size
            msg.sha256 = entry.sha256
            msg.message_count = entry.message_count
            msg.start_ns, msg.end_ns = entry.start_ns, entry.end_ns
            msg.topics = [
                make.TopicCount(topic=t, message_count=n) for t, n in sorted(counts.items())
            ]
            self._split_pub.publish(msg)

        recorder.writer.on_file_closed = closed

    def _session_closed(self, manifest: SessionManifest) -> None:
        directory = self.node.session_dir or self.node.config.data_root / manifest.session_id
        msg = self._m.SessionClosed()
        _stamp(msg, self._clock())
        msg.session_id = manifest.session_id
        msg.session_dir = str(directory.resolve())
        msg.reason = manifest.close_reason or ""
        msg.complete = manifest.state == "closed"
        msg.file_count = len(manifest.files)
        msg.messages_written = sum(t.written for t in manifest.topics.values())
        msg.messages_lost = int(manifest.drops.get("lost", 0))
        self._closed_pub.publish(msg)
        self._maybe_publish_visit_status(force=True)
