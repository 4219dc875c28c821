"""Issue 11 on the visit state machine, without the network: required visit fields,
the quality verdict, discard (re-record), pre/post-roll windows, privacy pause and
stream health in status. What the machine hands the recorder is then applied to a
session.json model by the one episode builder (session/episodes.py), as the recorder
does, so the manifest side is checked on the same events.
"""

from __future__ import annotations

import json

import pytest
from test_tablet_protocol import NOW, VISIT, Robot

from xsquare_logger.config.model import ExpectedStream, VisitConfig
from xsquare_logger.link.protocol import ErrorCode, Reply
from xsquare_logger.recording.control import ControllerError, RecordingStatus
from xsquare_logger.session.episodes import apply_event, tasks_metadata
from xsquare_logger.session.health import EpisodeQuality, StreamHealth
from xsquare_logger.session.manifest import TaskEntry

REQUIRED = VisitConfig(
    required_fields=["site", "robot_serial", "calibration_version"],
    metadata={"robot_serial": "H1-0042"},
    pre_roll_s=0.5,
    post_roll_s=0.25,
)


def manifest_of(r: Robot) -> tuple[list[TaskEntry], list[dict[str, object]]]:
    tasks: list[TaskEntry] = []
    marks: list[dict[str, object]] = []
    for e in r.rec.events:
        apply_event(tasks, marks, e, {})
    return tasks, marks


# --- required visit metadata -------------------------------------------------------------


def test_session_start_without_required_fields_is_refused_naming_them() -> None:
    r = Robot(visit=REQUIRED)
    hello = r.ok("hello")
    # The robot provides its serial itself: the console asks only for the rest.
    assert hello["required_fields"] == ["site", "calibration_version"]
    assert hello["visit_metadata"] == {"robot_serial": "H1-0042"}
    reply = r.call("session.start", VISIT)
    assert not reply["ok"]
    err = reply["error"]
    assert err["code"] == ErrorCode.MISSING_FIELDS
    assert err["missing"] == ["site", "calibration_version"]
    assert "site" in err["message"] and "calibration_version" in err["message"]
    body = Reply.model_validate(reply).error
    assert body is not None and body.missing == ["site", "calibration_version"]
    # Blank values are missing too; nothing was started.
    code, _ = r.error("session.start", {**VISIT, "site": "  ",
                                        "metadata": {"calibration_version": ""}})
    assert code == ErrorCode.MISSING_FIELDS and r.rec.sessions == []
    # Consent is checked first, as before.
    assert r.error("session.start", {**VISIT, "consent": False})[0] == ErrorCode.CONSENT_REQUIRED
    start = r.ok("session.start", {**VISIT, "site": "flat 3",
                                   "metadata": {"calibration_version": "2026-11-01"}})
    visit = r.rec.sessions[0][0]
    assert visit.site == "flat 3"
    assert visit.metadata == {"robot_serial": "H1-0042", "calibration_version": "2026-11-01"}
    assert start["session_id"] == "robot-1"


def test_tablet_metadata_wins_over_the_robot_default() -> None:
    r = Robot(visit=REQUIRED)
    r.ok("session.start", {**VISIT, "site": "lab", "metadata": {
        "robot_serial": "H1-0099", "calibration_version": "c7"}})
    assert r.rec.sessions[0][0].metadata["robot_serial"] == "H1-0099"


@pytest.mark.parametrize("bad", [{"Robot Serial": "x"}, {"robot_serial": 7},
                                 {f"k{i}": "v" for i in range(33)}])
def test_metadata_is_validated(bad: dict[str, object]) -> None:
    code, message = Robot(visit=REQUIRED).error("session.start", {**VISIT, "metadata": bad})
    assert code == ErrorCode.BAD_REQUEST and message.startswith("args.metadata")


def test_required_fields_config_names_known_fields() -> None:
    with pytest.raises(ValueError, match="Serial Number"):
        VisitConfig(required_fields=["Serial Number"])


# --- quality, windows, discard -------------------------------------------------------------


def test_task_end_carries_the_verdict_and_the_window() -> None:
    r = Robot(visit=REQUIRED)
    r.rec.verdict = EpisodeQuality(verdict="fail", reasons=["head camera stalled for 3.2 s"])
    r.ok("session.start", {**VISIT, "site": "lab", "metadata": {"calibration_version": "c"}})
    started = r.ok("task.start", {"task": "fold", "instruction": "fold it"})
    ended = r.ok("task.end", {"outcome": "success"})
    assert ended["quality"] == {"verdict": "fail", "reasons": ["head camera stalled for 3.2 s"]}
    start_ev, end_ev = r.rec.events[1], r.rec.events[2]
    # The evaluator judged exactly the tapped range and the window around it.
    span = r.rec.spans[0]
    assert (span.start_ns, span.end_ns) == (start_ev.stamp_ns, end_ev.stamp_ns)
    assert span.episode_index == started["episode_index"] == 0
    # Pre-roll clamped to the session start (the task came 1 ms after it).
    session_start = r.rec.events[0].stamp_ns
    assert ended["window_start_ns"] == span.window_start_ns == session_start
    assert ended["window_end_ns"] == end_ev.stamp_ns + 250_000_000
    assert end_ev.quality == r.rec.verdict
    tasks, _ = manifest_of(r)
    t = tasks[0]
    assert (t.start_ns, t.end_ns) == (start_ev.stamp_ns, end_ev.stamp_ns)  # taps unchanged
    assert (t.window_start_ns, t.window_end_ns) == (session_start, ended["window_end_ns"])
    assert t.quality is not None and t.quality.verdict == "fail"
    meta = json.loads(tasks_metadata(tasks, [], "robot-1")["tasks"])
    assert meta[0]["quality"] == ended["quality"] and meta[0]["discarded"] is False
    # status lists the episode with its verdict.
    recent = r.m.snapshot()["recent_episodes"]
    assert recent == [{"episode_index": 0, "task": "fold", "outcome": "success",
                       "duration_sec": ended["duration_sec"], "quality": ended["quality"],
                       "discarded": False}]


def test_pre_roll_reaches_back_within_the_session() -> None:
    r = Robot(visit=REQUIRED)
    r.ok("session.start", {**VISIT, "site": "lab", "metadata": {"calibration_version": "c"}})
    r.t += 10**9  # task.start one second into the session
    r.ok("task.start", {"task": "fold"})
    ended = r.ok("task.end", {"outcome": "success"})
    assert ended["window_start_ns"] == r.rec.events[1].stamp_ns - 500_000_000


def test_no_evaluator_or_a_failing_one_means_no_verdict() -> None:
    r = Robot()
    r.rec.fail["evaluate_episode"] = RuntimeError("evaluator bug")
    r.ok("session.start", VISIT)
    r.ok("task.start", {"task": "fold"})
    ended = r.ok("task.end", {"outcome": "success"})  # a verdict never costs the task.end
    assert ended["quality"] is None and r.rec.events[-1].quality is None
    assert manifest_of(r)[0][0].quality is None


def test_discard_marks_the_last_ended_episode_once() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    code, _ = r.error("task.discard")
    assert code == ErrorCode.INVALID_STATE  # nothing ended yet
    r.ok("task.start", {"task": "fold", "instruction": "fold the blue towel"})
    assert r.error("task.discard")[0] == ErrorCode.INVALID_STATE  # a task is open
    r.ok("task.end", {"outcome": "success"})
    assert r.error("task.discard", {"episode_index": 3})[0] == ErrorCode.INVALID_STATE
    first = r.call("task.discard", {"episode_index": 0}, rid="d1")
    assert first["ok"]
    assert first["result"] == {"episode_index": 0, "task": "fold",
                               "instruction": "fold the blue towel", "outcome": "success",
                               "event_id": "robot-1-3", "already_discarded": False}
    events = len(r.rec.events)
    # Same id: the same reply byte for byte; a new id: no second event, the same event id.
    assert r.call("task.discard", {"episode_index": 0}, rid="d1") == first
    again = r.ok("task.discard")
    assert again["already_discarded"] and again["event_id"] == first["result"]["event_id"]
    assert len(r.rec.events) == events
    # Re-record: the same task opened again, from the discard reply.
    res = first["result"]
    reopened = r.ok("task.start", {"task": res["task"], "instruction": res["instruction"]})
    assert reopened["episode_index"] == 1
    r.ok("task.end", {"outcome": "success"})
    tasks, _ = manifest_of(r)
    assert [(t.episode_index, t.discarded) for t in tasks] == [(0, True), (1, False)]
    assert tasks[0].event_ids[-1] == res["event_id"]
    assert r.m.snapshot()["recent_episodes"][0]["discarded"] is True


def test_discard_refused_by_the_recorder_changes_nothing() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    r.ok("task.start", {"task": "fold"})
    r.ok("task.end", {"outcome": "success"})
    r.rec.fail["record_event"] = ControllerError("disk full")
    assert r.error("task.discard")[0] == ErrorCode.RECORDER_ERROR
    del r.rec.fail["record_event"]
    assert not r.ok("task.discard")["already_discarded"]


# --- privacy pause -------------------------------------------------------------------------


def test_privacy_pause_is_idempotent_and_ranges_reach_the_episode() -> None:
    r = Robot(visit=VisitConfig(pre_roll_s=0, post_roll_s=0))
    r.ok("session.start", VISIT)
    assert r.ok("privacy.resume") == {"paused": False, "changed": False, "event_id": None,
                                      "paused_since_ns": None}
    r.ok("task.start", {"task": "fold"})
    pause = r.ok("privacy.pause", {"note": "a visitor walked in"})
    assert pause["changed"] and pause["paused"] and pause["event_id"] == "robot-1-2"
    since = pause["paused_since_ns"]
    assert r.rec.camera_paused == [(True, since)]
    again = r.ok("privacy.pause")  # a second tap: nothing recorded, nothing asked
    assert again == {"paused": True, "changed": False, "event_id": None, "paused_since_ns": since}
    assert r.rec.camera_paused == [(True, since)]
    snap = r.m.snapshot()
    assert snap["privacy_paused"] is True and snap["privacy_paused_sec"] == (NOW - since) / 1e9
    resume = r.ok("privacy.resume")
    assert resume["changed"] and not resume["paused"] and resume["paused_since_ns"] is None
    until = r.rec.events[-1].stamp_ns
    assert r.rec.camera_paused[-1] == (False, until)
    second = r.ok("privacy.pause")["paused_since_ns"]  # still paused at task.end
    ended = r.ok("task.end", {"outcome": "success"})
    end_ns = r.rec.events[-1].stamp_ns
    assert r.rec.events[-1].paused == ((since, until), (second, end_ns))
    tasks, _ = manifest_of(r)
    assert tasks[0].privacy_paused == [(since, until), (second, end_ns)]
    assert ended["window_end_ns"] == end_ns
    kinds = [e.kind for e in r.rec.events]
    assert kinds == ["session_start", "task_start", "privacy_pause", "privacy_resume",
                     "privacy_pause", "task_end"]
    assert r.rec.events[2].note == "a visitor walked in" and r.rec.events[2].episode_index == 0
    assert r.m.snapshot()["privacy_paused"] is True
    r.ok("session.stop")
    assert r.m.snapshot()["privacy_paused"] is False


def test_privacy_pause_refused_when_the_recorder_cannot_pause() -> None:
    r = Robot()
    r.ok("session.start", VISIT)
    r.rec.fail["set_camera_paused"] = ControllerError("camera lanes busy")
    code, message = r.error("privacy.pause")
    assert code == ErrorCode.RECORDER_ERROR and "camera lanes busy" in message
    del r.rec.fail["set_camera_paused"]
    # The event cannot be recorded: the cameras are un-paused again, nothing changed.
    r.rec.fail["record_event"] = ControllerError("disk full")
    assert r.error("privacy.pause")[0] == ErrorCode.RECORDER_ERROR
    assert [p for p, _ in r.rec.camera_paused] == [True, False]


def test_privacy_pause_needs_a_camera_pauser() -> None:
    class NoPause:
        """The base contract only (an older recorder)."""

        def __init__(self) -> None:
            self.active = ""

        def start_session(self, visit: object, stamp_ns: int) -> str:
            self.active = "s"
            return "s"

        def record_event(self, event: object) -> None:
            pass

        def stop_session(self, stamp_ns: int) -> str:
            return ""

        def status(self) -> RecordingStatus:
            return RecordingStatus(recording=bool(self.active), session_id=self.active)

    from xsquare_logger.link.visit import VisitStateMachine

    m = VisitStateMachine(NoPause(), "robot", clock=lambda: NOW)
    frame = b'{"v":1,"id":"a","cmd":"session.start","args":' + json.dumps(VISIT).encode() + b"}"
    assert json.loads(m.handle_frame(frame, NOW, ""))["ok"]
    reply = json.loads(m.handle_frame(b'{"v":1,"id":"b","cmd":"privacy.pause"}', NOW, ""))
    assert reply["error"]["code"] == "RECORDER_ERROR"
    assert "cannot pause" in reply["error"]["message"]
    assert m.snapshot()["privacy_paused"] is False


# --- stream health ---------------------------------------------------------------------------

STREAMS = [ExpectedStream(name="head camera", topic="/camera/head/image_raw", nominal_hz=30),
           ExpectedStream(name="joints", topic="/joint_states", nominal_hz=500)]


def test_streams_are_unknown_until_the_recorder_measures() -> None:
    r = Robot(streams=STREAMS)
    r.ok("session.start", VISIT)
    snap = r.m.snapshot()
    assert [(s["name"], s["state"], s["nominal_hz"], s["rate_hz"]) for s in snap["streams"]] == [
        ("head camera", "unknown", 30.0, None), ("joints", "unknown", 500.0, None)]
    assert snap["stream_alert"] == ""


def test_a_stalled_stream_during_a_task_is_the_error_banner() -> None:
    r = Robot(streams=STREAMS)
    health = [StreamHealth(name="head camera", topic="/camera/head/image_raw", kind="camera",
                           state="stalled", rate_hz=0.0, nominal_hz=30, lost=0, last_seen_s=4.2),
              StreamHealth(name="joints", topic="/joint_states", state="ok", rate_hz=499.7,
                           nominal_hz=500, last_seen_s=0.002)]
    r.rec.stream_health = lambda: health  # type: ignore[attr-defined]
    r.ok("session.start", VISIT)
    snap = r.m.snapshot()
    assert snap["streams"][0] == {"name": "head camera", "topic": "/camera/head/image_raw",
                                  "kind": "camera", "state": "stalled", "rate_hz": 0.0,
                                  "nominal_hz": 30.0, "lost": 0, "last_seen_s": 4.2,
                                  "paused": False}
    assert snap["stream_alert"] == ""  # no task open: a tile, not a banner
    r.ok("task.start", {"task": "fold"})
    assert r.m.snapshot()["stream_alert"] == "head camera stalled"
