"""Tablet protocol parsing and the visit state machine, without the network.

The controller here is an in-process stand-in for the recorder (the contract's
other side); test_tablet_link.py runs the same code over real CURVE sockets,
and the lead's full-flow test runs it against the real recorder.
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from xsquare_logger.link.protocol import (
    MAX_MESSAGE_BYTES,
    ErrorCode,
    MarkArgs,
    ProtocolError,
    Reply,
    SessionStartArgs,
    parse_request,
)
from xsquare_logger.link.visit import AUTO_ABORT_NOTE, VisitStateMachine
from xsquare_logger.recording.control import ControllerError, RecordingStatus
from xsquare_logger.session.events import TaskEventData, VisitInfo
from xsquare_logger.session.health import EpisodeQuality, EpisodeSpan

NOW = 1_800_000_000_000_000_000
VISIT = {"visit_id": "v-17", "operator": "ana", "consent": True}


@dataclass
class FakeRecorder:
    """SessionController over plain lists; ``fail`` makes the named methods raise."""

    events: list[TaskEventData] = field(default_factory=list)
    sessions: list[tuple[VisitInfo, int]] = field(default_factory=list)
    stops: list[int] = field(default_factory=list)
    active: str = ""
    fail: dict[str, Exception] = field(default_factory=dict)
    # Camera pause calls (paused, stamp_ns) and the verdicts asked for.
    camera_paused: list[tuple[bool, int]] = field(default_factory=list)
    spans: list[EpisodeSpan] = field(default_factory=list)
    verdict: EpisodeQuality | None = None

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def start_session(self, visit: VisitInfo, stamp_ns: int) -> str:
        self._maybe_fail("start_session")
        self.sessions.append((visit, stamp_ns))
        self.active = f"robot-{len(self.sessions)}"
        return self.active

    def record_event(self, event: TaskEventData) -> None:
        self._maybe_fail("record_event")
        assert self.active == event.session_id
        self.events.append(event)

    def stop_session(self, stamp_ns: int) -> str:
        self._maybe_fail("stop_session")
        self.stops.append(stamp_ns)
        path, self.active = f"/data/{self.active}", ""
        return path

    def status(self) -> RecordingStatus:
        self._maybe_fail("status")
        return RecordingStatus(recording=bool(self.active), session_id=self.active)

    def set_camera_paused(self, paused: bool, stamp_ns: int) -> None:
        self._maybe_fail("set_camera_paused")
        self.camera_paused.append((paused, stamp_ns))

    def evaluate_episode(self, span: EpisodeSpan) -> EpisodeQuality | None:
        self._maybe_fail("evaluate_episode")
        self.spans.append(span)
        return self.verdict


_ids = itertools.count()


def frame(
    cmd: str, args: dict[str, Any] | None = None, rid: str | None = None, **extra: Any
) -> bytes:
    doc: dict[str, Any] = {"v": 1, "id": rid or f"id-{next(_ids)}", "cmd": cmd}
    if args is not None:
        doc["args"] = args
    doc.update(extra)
    return json.dumps(doc).encode()


class Robot:
    """A state machine with a fake recorder and a fixed clock."""

    def __init__(self, **kwargs: Any) -> None:
        self.rec = FakeRecorder()
        self.m = VisitStateMachine(self.rec, "robot", clock=lambda: NOW, tasks=["fold"], **kwargs)
        self.t = NOW

    def raw(self, data: bytes, client: str = "") -> bytes:
        self.t += 1_000_000
        return self.m.handle_frame(data, self.t, client)

    def call(self, cmd: str, args: dict[str, Any] | None = None, rid: str | None = None) -> dict:
        reply = json.loads(self.raw(frame(cmd, args, rid)))
        Reply.model_validate(reply)
        return reply

    def ok(self, cmd: str, args: dict[str, Any] | None = None, rid: str | None = None) -> dict:
        reply = self.call(cmd, args, rid)
        assert reply["ok"], reply
        return reply["result"]

    def error(self, cmd: str, args: dict[str, Any] | None = None) -> tuple[str, str]:
        before = (self.m.snapshot(), self.m.version, len(self.rec.events), self.rec.active)
        reply = self.call(cmd, args)
        assert not reply["ok"], reply
        # An error changes no state.
        assert (self.m.snapshot(), self.m.version, len(self.rec.events), self.rec.active) == before
        return reply["error"]["code"], reply["error"]["message"]


# --- parsing ---------------------------------------------------------------------------


def test_parse_valid_requests() -> None:
    req = parse_request(frame("session.start", {**VISIT, "site": "lab", "notes": "a\nb"}, "r1"))
    assert req.id == "r1" and req.cmd == "session.start"
    assert isinstance(req.args, SessionStartArgs)
    assert req.args.visit_id == "v-17" and req.args.notes == "a\nb"
    req = parse_request(frame("mark", {"label": "  spill  "}))
    assert isinstance(req.args, MarkArgs) and req.args.label == "spill"
    for cmd in ("hello", "status", "session.stop"):
        assert parse_request(frame(cmd)).cmd == cmd
        assert parse_request(frame(cmd, {})).cmd == cmd


def code_of(data: bytes) -> tuple[ErrorCode, str, str | None]:
    with pytest.raises(ProtocolError) as info:
        parse_request(data)
    return info.value.code, info.value.message, info.value.request_id


BAD = {
    "not json": b"hello robot",
    "invalid utf-8": b'{"v":1,"id":"\xff"}',
    "empty": b"",
    "array": b"[1, 2]",
    "string": b'"hello"',
    "missing id": b'{"v":1,"cmd":"hello"}',
    "id number": b'{"v":1,"id":5,"cmd":"hello"}',
    "id empty": b'{"v":1,"id":"","cmd":"hello"}',
    "id too long": json.dumps({"v": 1, "id": "x" * 129, "cmd": "hello"}).encode(),
    "NaN": b'{"v":1,"id":"a","cmd":"mark","args":{"label":NaN}}',
    "deep nesting": b"[" * 60_000,
    "huge int": b'{"v":1,"id":"a","n":' + b"9" * 50_000 + b"}",
}


@pytest.mark.parametrize("name", list(BAD))
def test_undecodable_requests_are_bad_request(name: str) -> None:
    code, message, _ = code_of(BAD[name])
    assert code == ErrorCode.BAD_REQUEST
    assert message


BAD_WITH_ID = {
    "missing v": ({"id": "a", "cmd": "hello"}, "v"),
    "v string": ({"v": "1", "id": "a", "cmd": "hello"}, "v"),
    "v bool": ({"v": True, "id": "a", "cmd": "hello"}, "v"),
    "extra top-level": ({"v": 1, "id": "a", "cmd": "hello", "arg": {}}, "arg"),
    "cmd missing": ({"v": 1, "id": "a"}, "cmd"),
    "cmd number": ({"v": 1, "id": "a", "cmd": 3}, "cmd"),
    "args list": ({"v": 1, "id": "a", "cmd": "mark", "args": ["x"]}, "args"),
    "extra arg": ({"v": 1, "id": "a", "cmd": "hello", "args": {"x": 1}}, "args.x"),
    "extra start arg": (
        {"v": 1, "id": "a", "cmd": "session.start", "args": {**VISIT, "sight": "x"}},
        "args.sight",
    ),
    "missing arg": ({"v": 1, "id": "a", "cmd": "session.start", "args": {}}, "args.visit_id"),
    "int for str": ({"v": 1, "id": "a", "cmd": "task.start", "args": {"task": 5}}, "args.task"),
    "str for bool": (
        {"v": 1, "id": "a", "cmd": "session.start", "args": {**VISIT, "consent": "yes"}},
        "args.consent",
    ),
    "bad outcome": (
        {"v": 1, "id": "a", "cmd": "task.end", "args": {"outcome": "ok"}},
        "args.outcome",
    ),
    "name too long": (
        {"v": 1, "id": "a", "cmd": "task.start", "args": {"task": "t" * 257}},
        "args.task",
    ),
    "note too long": (
        {"v": 1, "id": "a", "cmd": "mark", "args": {"label": "x", "note": "n" * 4097}},
        "args.note",
    ),
    "blank name": ({"v": 1, "id": "a", "cmd": "mark", "args": {"label": "   "}}, "args.label"),
    "control char": (
        {"v": 1, "id": "a", "cmd": "session.start", "args": {**VISIT, "operator": "a\nb"}},
        "args.operator",
    ),
    "NUL in note": (
        {"v": 1, "id": "a", "cmd": "mark", "args": {"label": "x", "note": "a\x00b"}},
        "args.note",
    ),
}


@pytest.mark.parametrize("name", list(BAD_WITH_ID))
def test_invalid_requests_name_the_field(name: str) -> None:
    doc, field_name = BAD_WITH_ID[name]
    code, message, rid = code_of(json.dumps(doc).encode())
    assert code == ErrorCode.BAD_REQUEST
    assert rid == "a"
    assert message.startswith(field_name + ":"), message


def test_version_command_consent_and_size() -> None:
    for v in (0, 2, 99):
        assert code_of(frame("hello", v=v))[0] == ErrorCode.UNSUPPORTED_VERSION
    code, message, _ = code_of(frame("dance"))
    assert code == ErrorCode.UNKNOWN_COMMAND and "session.start" in message
    assert code_of(frame("session.start", {**VISIT, "consent": False}))[0] == (
        ErrorCode.CONSENT_REQUIRED
    )
    no_consent = {k: v for k, v in VISIT.items() if k != "consent"}
    assert code_of(frame("session.start", no_consent))[0] == ErrorCode.CONSENT_REQUIRED
    # Exactly at the limit is fine (JSON allows trailing blanks); one byte more is not.
    base = frame("hello", rid="big")
    assert parse_request(base + b" " * (MAX_MESSAGE_BYTES - len(base))).cmd == "hello"
    code, message, rid = code_of(base + b" " * (MAX_MESSAGE_BYTES - len(base) + 1))
    assert code == ErrorCode.TOO_LARGE and rid is None and "65536" in message


# --- state machine ---------------------------------------------------------------------


def test_full_visit_flow() -> None:
    r = Robot()
    hello = r.ok("hello")
    assert hello == {
        "robot_id": "robot",
        "protocol_version": 1,
        "state": "idle",
        "session_id": "",
        "current_task": "",
        "episode_index": -1,
        "tasks": ["fold"],
        "required_fields": [],
        "visit_metadata": {},
    }
    start = r.ok("session.start", {**VISIT, "site": "home 3"})
    sid = start["session_id"]
    assert sid == "robot-1" and start["event_id"] == f"{sid}-0"
    assert r.rec.sessions[0][0] == VisitInfo("v-17", "ana", True, "home 3", "")
    for i, outcome in enumerate(["success", "failure", "aborted"]):
        t = r.ok("task.start", {"task": f"task {i}", "instruction": "go"})
        assert t["episode_index"] == i
        if i == 1:
            assert r.ok("mark", {"label": "slip"})["episode_index"] == 1
        snap = r.m.snapshot()
        assert snap["current_task"] == f"task {i}" and snap["episode_index"] == i
        assert r.ok("task.end", {"outcome": outcome, "note": "n"})["outcome"] == outcome
    assert r.ok("mark", {"label": "between"})["episode_index"] == -1
    stop = r.ok("session.stop")
    assert stop["path"] == "/data/robot-1" and stop["episodes"] == 3 and stop["marks"] == 2
    assert stop["auto_ended_task"] is None and not stop["recording_had_ended"]
    kinds = [e.kind for e in r.rec.events]
    assert kinds == [
        "session_start",
        "task_start",
        "task_end",
        "task_start",
        "mark",
        "task_end",
        "task_start",
        "task_end",
        "mark",
        "session_end",
    ]
    ids = [e.event_id for e in r.rec.events]
    assert len(set(ids)) == len(ids)
    stamps = [e.stamp_ns for e in r.rec.events]
    assert stamps == sorted(stamps)
    assert r.rec.events[4].task == "slip"  # a mark's label travels in ``task``
    # The next session counts episodes from 0 again.
    r.ok("session.start", {**VISIT, "visit_id": "v-18"})
    assert r.ok("task.start", {"task": "again"})["episode_index"] == 0
    assert r.m.snapshot()["session_id"] == "robot-2"


def test_reply_time_is_the_receive_time_recorded_in_the_event() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    reply = json.loads(r.m.handle_frame(frame("mark", {"label": "x"}), 42_000, ""))
    assert reply["robot_time_ns"] == 42_000 == r.rec.events[-1].stamp_ns


def test_invalid_state_errors_change_nothing() -> None:
    r = Robot()
    for cmd, args in [
        ("task.start", {"task": "t"}),
        ("task.end", {"outcome": "success"}),
        ("mark", {"label": "m"}),
        ("session.stop", None),
    ]:
        code, message = r.error(cmd, args)
        assert code == "INVALID_STATE" and "session.start" in message
    r.ok("session.start", VISIT)
    assert r.error("session.start", VISIT) == (
        "INVALID_STATE",
        "session robot-1 is running; send session.stop first",
    )
    assert r.error("task.end", {"outcome": "success"})[0] == "INVALID_STATE"
    r.ok("task.start", {"task": "t"})
    code, message = r.error("task.start", {"task": "u"})
    assert code == "INVALID_STATE" and "task.end" in message
    for name in BAD_WITH_ID:
        doc, _ = BAD_WITH_ID[name]
        before = len(r.rec.events)
        assert not json.loads(r.raw(json.dumps({**doc, "id": name}).encode()))["ok"]
        assert len(r.rec.events) == before
    assert r.error("dance")[0] == "UNKNOWN_COMMAND"


def test_recorder_failures_change_nothing() -> None:
    r = Robot()
    r.rec.fail["start_session"] = ControllerError("disk full")
    code, message = r.error("session.start", VISIT)
    assert code == "RECORDER_ERROR" and "disk full" in message
    del r.rec.fail["start_session"]
    # session_start event refused: the started recording is stopped again.
    r.rec.fail["record_event"] = ControllerError("no publisher")
    assert r.error("session.start", VISIT)[0] == "RECORDER_ERROR"
    assert r.rec.stops and r.m.state == "idle"
    del r.rec.fail["record_event"]
    r.ok("session.start", VISIT)
    r.rec.fail["record_event"] = ControllerError("queue full")
    assert r.error("task.start", {"task": "t"})[0] == "RECORDER_ERROR"
    assert r.error("mark", {"label": "m"})[0] == "RECORDER_ERROR"
    # A bug (not a ControllerError) costs one INTERNAL reply, nothing else.
    r.rec.fail["record_event"] = RuntimeError("bug")
    code, message = r.error("task.start", {"task": "t"})
    assert code == "INTERNAL" and "bug" not in message
    del r.rec.fail["record_event"]
    assert r.ok("task.start", {"task": "t"})["episode_index"] == 0


def test_stop_with_open_task_aborts_it() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    r.ok("task.start", {"task": "fold"})
    stop = r.ok("session.stop")
    assert stop["auto_ended_task"]["task"] == "fold"
    assert stop["auto_ended_task"]["outcome"] == "aborted"
    end = r.rec.events[-2]
    assert (end.kind, end.outcome, end.note, end.episode_index) == (
        "task_end",
        "aborted",
        AUTO_ABORT_NOTE,
        0,
    )
    assert end.event_id == stop["auto_ended_task"]["event_id"]
    assert r.rec.events[-1].kind == "session_end"
    assert r.m.state == "idle"


def test_stop_after_recorder_ended_the_session() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    r.ok("task.start", {"task": "fold"})
    r.rec.active = ""  # e.g. the disk reserve was reached
    r.rec.fail["record_event"] = ControllerError("no session")
    r.rec.fail["stop_session"] = ControllerError("no session")
    stop = r.ok("session.stop")
    assert stop["recording_had_ended"] and stop["path"] == ""
    assert r.m.state == "idle"


def test_session_lost_returns_to_idle() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    r.ok("task.start", {"task": "fold"})
    # A late or foreign notice does nothing while the recorder still records our session.
    version = r.m.version
    r.m.session_lost("about an older session")
    r.m.session_lost("disk reserve reached", session_id="robot-0")
    assert r.m.state == "recording" and r.m.version == version
    r.rec.active = ""  # the recorder closed the session itself
    r.m.session_lost("disk reserve reached")
    assert r.m.state == "idle" and r.m.version == version + 1
    snap = r.ok("status")
    assert snap["session_lost_reason"] == "disk reserve reached" and snap["current_task"] == ""
    assert r.call("task.end", {"outcome": "success"})["error"]["code"] == "INVALID_STATE"
    r.ok("session.start", VISIT)
    assert r.ok("status")["session_lost_reason"] == ""


def test_stop_failure_keeps_the_session() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    r.rec.fail["stop_session"] = ControllerError("cannot finalize")
    assert r.call("session.stop")["error"]["code"] == "RECORDER_ERROR"
    assert r.m.state == "recording"
    del r.rec.fail["stop_session"]
    r.ok("session.stop")
    end_ids = [e.event_id for e in r.rec.events if e.kind == "session_end"]
    assert len(end_ids) == 2 and len(set(end_ids)) == 2


def test_duplicate_ids_return_the_first_reply_and_do_nothing() -> None:
    r = Robot()
    r.ok("session.start", VISIT, rid="s1")
    first = r.raw(frame("mark", {"label": "a"}, "m1"))
    version, events = r.m.version, len(r.rec.events)
    assert r.raw(frame("mark", {"label": "a"}, "m1")) == first
    # Even with a different body (documented): the id decides.
    assert r.raw(frame("task.start", {"task": "x"}, "m1")) == first
    assert r.raw(b'{"id":"m1","garbage":true}') == first
    assert (r.m.version, len(r.rec.events)) == (version, events)
    # Error replies are kept too: a retried session.start stays an error.
    err = r.raw(frame("session.start", VISIT, "s2"))
    r.ok("session.stop")
    assert r.raw(frame("session.start", VISIT, "s2")) == err
    assert r.m.state == "idle"
    # Another client's id space is its own.
    other = json.loads(r.raw(frame("session.start", VISIT, "m1"), client="tablet-b"))
    assert other["ok"] and r.m.state == "recording"


def test_idempotency_cache_is_bounded() -> None:
    r = Robot(cache_size=3)
    r.ok("session.start", VISIT, rid="s")
    first = r.raw(frame("mark", {"label": "a"}, "m0"))
    for i in range(1, 4):
        r.ok("mark", {"label": "a"}, rid=f"m{i}")
    # m0 was evicted: the id is new again (tablets use fresh ids; 10,000 by default).
    again = r.raw(frame("mark", {"label": "a"}, "m0"))
    assert again != first and json.loads(again)["ok"]


def test_version_counts_changes_only() -> None:
    r = Robot()
    v0 = r.m.version
    r.ok("hello")
    r.ok("status")
    r.error("task.start", {"task": "t"})
    assert r.m.version == v0
    r.ok("session.start", VISIT)
    r.ok("task.start", {"task": "t"})
    r.ok("mark", {"label": "m"})
    r.ok("task.end", {"outcome": "success"})
    r.ok("session.stop")
    assert r.m.version == v0 + 5


def test_status_snapshot_survives_a_failing_controller() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    r.rec.fail["status"] = RuntimeError("ros down")
    snap = r.ok("status")
    assert snap["state"] == "recording" and snap["recording"] is False
    assert "ros down" in snap["last_error"]


# --- fuzz ------------------------------------------------------------------------------

COMMAND_NAMES = ["hello", "session.start", "task.start", "task.end", "mark", "session.stop",
                 "task.discard", "privacy.pause", "privacy.resume"]
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**70,
    1.5,
    "",
    "x",
    "success",
    "é" * 300,
    [],
    {},
    {"a": 1},
]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.1:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and roll < 0.2:
        return {str(rng.random()): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(VALUES)


def _valid_args(rng: random.Random, cmd: str) -> dict[str, Any]:
    if cmd == "session.start":
        return {"visit_id": f"v{rng.randint(0, 9)}", "operator": "op", "consent": True}
    if cmd == "task.start":
        return {"task": rng.choice(["fold", "wipe"])}
    if cmd == "task.end":
        return {"outcome": rng.choice(["success", "failure", "aborted"])}
    if cmd == "mark":
        return {"label": "m"}
    if cmd == "task.discard" and rng.random() < 0.3:
        return {"episode_index": rng.randint(0, 3)}
    return {}


def _random_frame(rng: random.Random, ids: list[str]) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    if roll < 0.08:
        return b"x" * (MAX_MESSAGE_BYTES + rng.randint(1, 5000))
    cmd = rng.choice(COMMAND_NAMES) if rng.random() < 0.9 else rng.choice(["", "Hello", "x.y"])
    args: Any = _valid_args(rng, cmd)
    if rng.random() < 0.25:  # damage the arguments
        damage = rng.random()
        if damage < 0.3 and args:
            args[rng.choice(list(args))] = _random_value(rng)
        elif damage < 0.5:
            args[rng.choice(["extra", "notes", "note", "site"])] = _random_value(rng)
        elif damage < 0.7 and args:
            args.pop(rng.choice(list(args)))
        else:
            args = _random_value(rng)
    rid = rng.choice(ids) if ids and rng.random() < 0.15 else f"f{rng.getrandbits(40)}"
    doc: dict[str, Any] = {"v": 1, "id": rid, "cmd": cmd, "args": args}
    if rng.random() < 0.05:
        doc["v"] = rng.choice([2, "1", None, 1.0])
    if rng.random() < 0.05:
        doc.pop(rng.choice(list(doc)))
    data = json.dumps(doc).encode()
    if rng.random() < 0.05:
        data = data[: rng.randint(0, len(data))]
    return data


def _check_event_grammar(events: list[TaskEventData]) -> None:
    """Sessions are well nested: start, (task_start, task_end | mark)*, end; episodes 0, 1, ..."""
    session = ""
    open_episode = -1
    next_episode = 0
    paused = False
    discarded: set[int] = set()
    for e in events:
        if e.kind == "session_start":
            assert not session
            session, next_episode, paused, discarded = e.session_id, 0, False, set()
            continue
        assert e.session_id == session
        if e.kind == "task_start":
            assert open_episode == -1 and e.episode_index == next_episode
            open_episode, next_episode = e.episode_index, next_episode + 1
        elif e.kind == "task_end":
            assert e.episode_index == open_episode != -1
            open_episode = -1
        elif e.kind == "mark":
            assert e.episode_index == open_episode
        elif e.kind == "task_discard":
            # Only the last ended episode, once, with no task open.
            assert open_episode == -1 and e.episode_index == next_episode - 1
            assert e.episode_index not in discarded
            discarded.add(e.episode_index)
        elif e.kind in ("privacy_pause", "privacy_resume"):
            assert paused == (e.kind == "privacy_resume")
            paused = not paused
        else:
            assert e.kind == "session_end" and open_episode == -1
            session = ""
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)


def test_fuzzed_request_stream() -> None:
    rng = random.Random(20261122)
    r = Robot()
    ids: list[str] = []
    first_reply: dict[tuple[str, str], bytes] = {}
    oks = 0
    for _ in range(2000):
        data = _random_frame(rng, ids)
        client = rng.choice(["", "tablet-b"])
        before = (r.m.version, len(r.rec.events), r.m.state)
        out = r.raw(data, client)
        assert len(out) <= MAX_MESSAGE_BYTES
        reply = Reply.model_validate_json(out)
        try:
            doc = json.loads(data)
            rid = doc.get("id") if isinstance(doc, dict) else None
        except ValueError:
            rid = None
        if len(data) <= MAX_MESSAGE_BYTES and isinstance(rid, str) and 0 < len(rid) <= 128:
            assert reply.id == rid
            ids.append(rid)
            key = (client, rid)
            if key in first_reply:
                assert out == first_reply[key]
                assert (r.m.version, len(r.rec.events), r.m.state) == before
            first_reply.setdefault(key, out)
        else:
            assert reply.id is None and not reply.ok
        if not reply.ok:
            assert reply.error is not None and reply.error.code in ErrorCode.__members__
            assert (r.m.version, len(r.rec.events), r.m.state) == before
        else:
            oks += 1
        # The machine and the recorder agree on whether a session runs.
        assert (r.m.state == "recording") == bool(r.rec.active)
    assert oks > 200  # the stream did exercise real transitions
    assert {e.kind for e in r.rec.events} >= {
        "session_start", "task_start", "task_end", "mark", "task_discard", "privacy_pause"
    }
    if r.m.state == "recording":
        r.ok("session.stop")
    _check_event_grammar(r.rec.events)
