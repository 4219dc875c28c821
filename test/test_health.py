"""Live stream health (recording/health.py): the classification a console tile shows."""

from __future__ import annotations

import struct

import pytest

from xsquare_logger.config.model import HealthConfig
from xsquare_logger.recording.health import HealthTracker, StreamMonitor
from xsquare_logger.session.health import EpisodeSpan

S = 1_000_000_000
T0 = 1_700_000_000 * S


def frame(stamp_ns: int) -> bytes:
    sec, nsec = divmod(stamp_ns, S)
    return b"\x00\x01\x00\x00" + struct.pack("<iI", sec, nsec) + b"\x00" * 16


def feed(m: StreamMonitor, hz: float, start: float, end: float) -> None:
    t = T0 + int(start * S)
    while t < T0 + int(end * S):
        m.arrive(t, frame(t - 1000))
        t += int(S / hz)


def tracker() -> HealthTracker:
    cfg = HealthConfig()
    tr = HealthTracker(cfg.streams, cfg, T0)
    for m in tr.monitors.values():
        kind = "Image" if m.kind == "camera" else "JointState"
        m.subscribed(T0, f"sensor_msgs/msg/{kind}")
    return tr


def states(tr: HealthTracker, at: float, lost: dict[str, int] | None = None,
           paused: bool = False) -> dict[str, str]:
    return {h.name: h.state for h in tr.health(T0 + int(at * S), lost or {}, paused)}


def test_ok_degraded_stalled_missing() -> None:
    tr = tracker()
    mons = tr.monitors
    feed(mons["/camera/head/image_raw"], 30, 0, 10)
    feed(mons["/camera/left_wrist/image_raw"], 20, 0, 10)  # below 80% of 30 Hz
    feed(mons["/camera/right_wrist/image_raw"], 30, 0, 6)  # stops at 6 s
    feed(mons["/joint_states"], 500, 0, 10)
    feed(mons["/gripper/left/wrench"], 500, 0, 10)
    got = states(tr, 10.0)
    assert got == {
        "head camera": "ok", "left wrist camera": "degraded", "right wrist camera": "stalled",
        "joints": "ok", "left wrench": "ok", "right wrench": "missing",
    }
    by_name = {h.name: h for h in tr.health(T0 + 10 * S, {})}
    assert by_name["head camera"].rate_hz == 30.0 and by_name["head camera"].kind == "camera"
    assert by_name["left wrist camera"].rate_hz == 20.0
    assert by_name["right wrist camera"].last_seen_s is not None
    assert by_name["right wrist camera"].last_seen_s >= 3.9
    assert by_name["right wrench"].last_seen_s is None and by_name["joints"].kind == "joints"


def test_losses_in_the_window_degrade_then_heal() -> None:
    tr = tracker()
    cam = tr.monitors["/camera/head/image_raw"]
    feed(cam, 30, 0, 20)
    for second in range(0, 11):
        tr.sample_losses(T0 + second * S, {cam.topic: 0 if second < 9 else 5})
    assert states(tr, 10.0, {cam.topic: 5})["head camera"] == "degraded"
    for second in range(11, 16):
        tr.sample_losses(T0 + second * S, {cam.topic: 5})
    assert states(tr, 15.0, {cam.topic: 5})["head camera"] == "ok"  # window moved past them


def test_privacy_pause_silence_is_not_a_stall() -> None:
    tr = tracker()
    cam = tr.monitors["/camera/head/image_raw"]
    feed(cam, 30, 0, 2)
    assert states(tr, 5.0)["head camera"] == "stalled"
    health = {h.name: h for h in tr.health(T0 + 5 * S, {}, True)}
    assert health["head camera"].state == "ok" and health["head camera"].paused
    assert health["joints"].state == "missing" and not health["joints"].paused


def test_history_is_bounded_and_episode_verdict_reads_it() -> None:
    cfg = HealthConfig(history_s=5)
    tr = HealthTracker(cfg.streams[:1], cfg, T0)
    cam = tr.monitors["/camera/head/image_raw"]
    cam.subscribed(T0, "sensor_msgs/msg/Image")
    feed(cam, 30, 0, 60)
    assert len(cam._buckets) <= 7  # 5 s of history plus the live bucket and one spare
    recv, stamp = cam.arrivals(T0 + 57 * S, T0 + 58 * S)
    assert len(recv) == 30 and (recv - stamp == 1000).all()
    span = EpisodeSpan(session_id="s", episode_index=0, task="t", start_ns=T0 + 56 * S,
                       end_ns=T0 + 60 * S, window_start_ns=T0 + 56 * S,
                       window_end_ns=T0 + 61 * S)
    assert tr.evaluate(span, T0 + 60 * S, {}).verdict == "pass"
    feed(cam, 30, 60, 61)  # then silent: the episode ends at 65 s (post-roll to 70 s)
    span = span.model_copy(update={"end_ns": T0 + 65 * S, "window_end_ns": T0 + 70 * S})
    q = tr.evaluate(span, T0 + 65 * S, {}, paused=[(T0 + 61 * S, 0)])  # an open pause
    assert q.verdict == "pass", q.reasons
    q = tr.evaluate(span, T0 + 65 * S, {})
    assert q.verdict == "fail" and q.reasons[0].startswith("head camera stalled"), q.reasons


def test_sim_controls_slow_camera_and_halt() -> None:
    from xsquare_logger.sim.profiles import get_profile

    prof = get_profile("humanoid").with_camera_rate("head", 20)
    rates = {s.topic: s.rate_hz for s in prof.streams}
    assert rates["/camera/head/image_raw"] == rates["/camera/head/camera_info"] == 20
    assert rates["/camera/left_wrist/image_raw"] == 30
    with pytest.raises(ValueError, match="no camera 'nose'"):
        prof.with_camera_rate("nose", 20)
