"""The per-episode verdict (recording/quality.py): each check can pass, warn and fail."""

from __future__ import annotations

import numpy as np

from xsquare_logger.recording.quality import QualityThresholds, StreamSeries, judge

S = 1_000_000_000
T0 = 1_700_000_000 * S
THR = QualityThresholds()


def series(
    name: str,
    hz: float,
    seconds: float = 5.0,
    kind: str = "camera",
    latency_ns: int = 1_000_000,
    drop: tuple[float, float] | None = None,
    actual_hz: float | None = None,
    lost: int = 0,
) -> StreamSeries:
    period = int(S / (actual_hz or hz))
    recv = np.arange(T0, T0 + int(seconds * S), period, dtype=np.int64)
    if drop is not None:
        a, b = T0 + int(drop[0] * S), T0 + int(drop[1] * S)
        recv = recv[(recv < a) | (recv >= b)]
    return StreamSeries(
        name=name, topic=f"/{name.replace(' ', '_')}", kind=kind, nominal_hz=hz,  # type: ignore[arg-type]
        start_ns=T0, end_ns=T0 + int(seconds * S), recv_ns=recv,
        stamp_ns=recv - latency_ns, lost=lost,
    )


def humanoid(**overrides: StreamSeries) -> list[StreamSeries]:
    out = {
        "head camera": series("head camera", 30),
        "left camera": series("left camera", 30),
        "joints": series("joints", 500, kind="joints"),
        "left wrench": series("left wrench", 500, kind="wrench"),
    }
    out.update({k.replace("_", " "): v for k, v in overrides.items()})
    return list(out.values())


def test_clean_episode_passes() -> None:
    q = judge(humanoid(), THR)
    assert q.verdict == "pass" and q.reasons == []


def test_camera_stopping_mid_episode_fails_with_its_stall() -> None:
    q = judge(humanoid(head_camera=series("head camera", 30, drop=(2.0, 4.5))), THR)
    assert q.verdict == "fail"
    assert any(r.startswith("head camera stalled 2.5 s") for r in q.reasons), q.reasons


def test_camera_never_seen_in_the_episode_is_missing() -> None:
    empty = StreamSeries(**{**series("head camera", 30, drop=(0, 10)).__dict__, "seen": False})
    q = judge(humanoid(head_camera=empty), THR)
    assert q.verdict == "fail" and "head camera missing: no message in the episode" in q.reasons
    # Seen before the episode, silent all through it: a stall as long as the episode.
    dead = StreamSeries(**{**empty.__dict__, "seen": True})
    assert judge([dead], THR).reasons == ["head camera stalled 5.0 s"]
    never = StreamSeries(**{**empty.__dict__, "subscribed": False})
    assert judge([never], THR).reasons == ["head camera missing: /head_camera never appeared"]


def test_20hz_camera_warns_and_10hz_fails() -> None:
    q = judge(humanoid(head_camera=series("head camera", 30, actual_hz=20)), THR)
    assert q.verdict == "warn" and q.reasons[0] == "head camera rate 20.0 Hz, nominal 30 Hz"
    q = judge(humanoid(head_camera=series("head camera", 30, actual_hz=10)), THR)
    assert q.verdict == "fail" and "head camera rate 10.0 Hz, nominal 30 Hz" in q.reasons


def test_short_gap_warns() -> None:
    q = judge(humanoid(joints=series("joints", 500, kind="joints", drop=(1.0, 1.3))), THR)
    assert q.verdict == "warn" and q.reasons[0].startswith("joints gap 0.30 s"), q.reasons


def test_losses_warn_then_fail() -> None:
    q = judge(humanoid(joints=series("joints", 500, kind="joints", lost=3)), THR)
    assert q.verdict == "warn"
    q = judge(humanoid(joints=series("joints", 500, kind="joints", lost=100)), THR)
    assert q.verdict == "fail" and q.reasons == ["joints lost 100 messages (3.8%)"]


def test_skew_between_cameras_and_to_joints() -> None:
    def shifted(name: str, offset_ms: float) -> StreamSeries:
        s = series(name, 30)
        return StreamSeries(**{**s.__dict__, "stamp_ns": s.stamp_ns + int(offset_ms * 1e6)})

    # Triggered 12 ms after the head camera: more than a quarter frame (8.3 ms) apart.
    # (Its stamps are 12 ms closer to its receive times too: below the joint threshold.)
    q = judge(humanoid(left_camera=shifted("left camera", 12)), THR)
    assert q.verdict == "warn" and q.reasons == ["left camera vs head camera skew 12 ms"]
    # Stamped by a clock 50 ms behind (latency 51 ms vs 1 ms): nearest-frame pairing
    # sees 50 mod 33 ms; the latency against the joints sees it all.
    q = judge(humanoid(left_camera=series("left camera", 30, latency_ns=51_000_000)), THR)
    assert q.verdict == "warn" and "left camera vs joints skew 50 ms" in q.reasons, q.reasons
    q = judge(humanoid(head_camera=series("head camera", 30, latency_ns=201_000_000)), THR)
    assert q.verdict == "fail" and "head camera vs joints skew 200 ms" in q.reasons


def test_header_stamps_going_backwards_warn() -> None:
    s = series("joints", 500, kind="joints")
    stamps = s.stamp_ns.copy()
    stamps[10], stamps[11] = stamps[11], stamps[10]
    q = judge([StreamSeries(**{**s.__dict__, "stamp_ns": stamps})], THR)
    assert q.verdict == "warn" and q.reasons == ["joints header stamps went backwards 1 times"]


def test_privacy_pause_is_not_a_camera_stall_but_is_for_joints() -> None:
    pause = [(T0 + 1 * S, T0 + 4 * S)]
    cams = series("head camera", 30, drop=(1.0, 4.0))
    assert judge([cams], THR, pause).verdict == "pass"
    assert judge([cams], THR).verdict == "fail"
    joints = series("joints", 500, kind="joints", drop=(1.0, 4.0))
    assert judge([joints], THR, pause).verdict == "fail"  # the pause is for cameras only
