"""`xsq export lerobot`: sessions written by the real SessionWriter with real CDR messages
(rclpy serialization; real libx264 frames for the H.264 camera) exported to LeRobot v3, read
back with pyarrow and PyAV (readers we did not write), against the format as LeRobot's own
code defines it (lerobot/datasets/utils.py, dataset_writer.py, compute_stats.py).

Session (8 s): cameras head (raw rgb8), left_wrist (JPEG), right_wrist (H.264, keyframe every
second) at 30 Hz, 64x48; /joint_states (28 named joints) and /leader/joint_states (14 arm
joints) at 300 Hz; two wrenches at 100 Hz. Joint values are a known function of the stamp.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from rclpy.serialization import serialize_message
from test_tools import _h264_stream, write_session

from xsquare_logger.cli.main import main as xsq_main
from xsquare_logger.export import align
from xsquare_logger.export.mapping import load_mapping
from xsquare_logger.export.run import EpisodeFilter, run_export
from xsquare_logger.session.manifest import TaskEntry
from xsquare_logger.sim.profiles import HUMANOID_JOINT_NAMES

av = pytest.importorskip("av")

NS = 1_000_000_000
MS = 1_000_000
T0 = 1_750_000_000 * NS
DURATION_S = 8
ARMS = [j for j in HUMANOID_JOINT_NAMES if any(k in j for k in ("shoulder", "elbow", "wrist"))]
TASKS = [
    (0, "fold towel", 1_000, 3_000, "success", "ana"),
    (1, "fold towel", 3_200, 4_200, "failure", "ana"),
    (2, "wipe table", 4_500, 7_000, "success", "ben"),
]
Msg = tuple[int, int, int, bytes]


def joint_value(stamp_ns: int, j: int) -> float:
    t = (stamp_ns - T0) / NS
    return float(np.sin(1.3 * t + 0.2 * j))


def _joint_msgs(names: list[str], hz: int, skip: tuple[int, int] | None = None) -> list[Msg]:
    from sensor_msgs.msg import JointState

    out = []
    for k in range(DURATION_S * hz):
        stamp = T0 + k * NS // hz
        if skip and skip[0] <= stamp - T0 < skip[1]:
            continue
        # Recorded in a different order than the mapping's: taken by name.
        order = list(reversed(range(len(names))))
        js = JointState(name=[names[i] for i in order],
                        position=[joint_value(stamp, i) for i in order],
                        velocity=[0.0] * len(names), effort=[0.5 * i for i in order])
        js.header.stamp.sec, js.header.stamp.nanosec = divmod(stamp, NS)
        out.append((stamp + MS, stamp + MS, k + 1, serialize_message(js)))
    return out


def _frames(cam: str) -> list[np.ndarray]:
    rng = np.random.default_rng(hash(cam) % 1000)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return [np.roll(base, i, axis=1) for i in range(30)]


def _silent(msgs: list[Msg], quiet: tuple[int, int] | None) -> list[Msg]:
    """Without the messages a recorder would not write in ``quiet`` (receive times, ns)."""
    if quiet is None:
        return msgs
    return [msg for msg in msgs if not quiet[0] <= msg[0] <= quiet[1]]


def _camera_msgs(cam: str, kind: str, drop: set[int] | None = None) -> list[Msg]:
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    frames = _frames(cam)
    out = []
    for i in range(DURATION_S * 30):
        if drop and i in drop:
            continue
        stamp = T0 + i * NS // 30
        if kind == "raw":
            msg: Any = Image(height=48, width=64, encoding="rgb8", step=192,
                             data=frames[i % 30].tobytes())
        else:
            _ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frames[i % 30], cv2.COLOR_RGB2BGR))
            msg = CompressedImage(format="jpeg", data=jpeg.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, NS)
        out.append((stamp + 12 * MS, stamp + 12 * MS, i + 1, serialize_message(msg)))
    return out


def _wrench_msgs(side: str) -> list[Msg]:
    from geometry_msgs.msg import WrenchStamped

    out = []
    for k in range(DURATION_S * 100):
        stamp = T0 + k * 10 * MS
        w = WrenchStamped()
        w.header.stamp.sec, w.header.stamp.nanosec = divmod(stamp, NS)
        w.wrench.force.z = float(k)
        out.append((stamp, stamp, k + 1, serialize_message(w)))
    return out


def build(directory: Path, *, names: list[str] | None = None, drop_head: set[int] | None = None,
          joint_gap: tuple[int, int] | None = None, tasks: list[TaskEntry] | None = None,
          cameras_paused: tuple[int, int] | None = None) -> Path:
    """The session; ``cameras_paused``: a privacy pause (receive times): no camera message
    was written then, the joints and wrenches go on."""
    names = names or list(HUMANOID_JOINT_NAMES)
    quiet = cameras_paused
    streams = {
        "/camera/head/image_raw": ("sensor_msgs/msg/Image",
                                   _silent(_camera_msgs("head", "raw", drop_head), quiet)),
        "/camera/left_wrist/image_raw/compressed": (
            "sensor_msgs/msg/CompressedImage", _silent(_camera_msgs("left_wrist", "jpeg"),
                                                       quiet)),
        "/camera/right_wrist/image_raw/h264": (
            "foxglove_msgs/msg/CompressedVideo",
            _silent(_h264_stream("right_wrist", DURATION_S, 0), quiet)),
        "/joint_states": ("sensor_msgs/msg/JointState", _joint_msgs(names, 300, joint_gap)),
        "/leader/joint_states": ("sensor_msgs/msg/JointState", _joint_msgs(ARMS, 300)),
        "/gripper/left/wrench": ("geometry_msgs/msg/WrenchStamped", _wrench_msgs("left")),
        "/gripper/right/wrench": ("geometry_msgs/msg/WrenchStamped", _wrench_msgs("right")),
    }
    if tasks is None:
        tasks = [TaskEntry(episode_index=i, task=t, start_ns=T0 + a * MS, end_ns=T0 + b * MS,
                           outcome=o, operator=op) for i, t, a, b, o, op in TASKS]
    write_session(directory, streams, tasks, split_s=3.0)
    return directory


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("s") / "x2-sim_20250615T000000Z_aaaaaa")


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The default humanoid mapping, with H.264 as the encoder (fast on this machine).
    text = Path("config/export/humanoid.yaml").read_text().replace("video_codec: auto",
                                                                   "video_codec: h264")
    path = tmp_path_factory.mktemp("m") / "mapping.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def dataset(session: Path, mapping_file: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Path:
    out = tmp_path_factory.mktemp("d") / "ds"
    run_export(out, [str(session)], load_mapping(mapping_file), EpisodeFilter(), workers=2)
    return out


def _episodes(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def _data(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((root / "data").glob("chunk-*/file-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ align


def test_grid_slots_insert_missing_frames() -> None:
    t = np.array([0, 33, 66, 166, 200]) * MS
    slot_t, frame = align.grid_slots(t, 30)
    assert frame.tolist() == [0, 1, 2, -1, -1, 3, 4]
    assert len(slot_t) == 7


def test_sample_nearest_linear_and_tolerance() -> None:
    src = np.array([0, 10, 20]) * MS
    vals = np.array([[0.0], [1.0], [2.0]])
    out, ok = align.sample(src, vals, np.array([4, 15, 60]) * MS, "linear", 5 * MS)
    assert ok.tolist() == [True, True, False]
    assert out[0, 0] == pytest.approx(0.4) and out[1, 0] == pytest.approx(1.5)
    out, ok = align.sample(src, vals, np.array([4, 16]) * MS, "nearest", 5 * MS)
    assert out[:, 0].tolist() == [0.0, 2.0]


def test_plan_policies() -> None:
    ok = {"a": np.array([True, True, False, True, True, True]), "b": np.ones(6, bool)}
    assert align.plan(ok, "drop", 2).segments == []
    split = align.plan(ok, "split", 2)
    assert [(s.lo, s.hi) for s in split.segments] == [(0, 2), (3, 6)]
    hold = align.plan(ok, "hold", 2)
    assert [(s.lo, s.hi) for s in hold.segments] == [(0, 6)]
    assert hold.source["a"].tolist() == [0, 1, 1, 3, 4, 5] and hold.held.tolist()[2]


# ------------------------------------------------------------------------------ round trip


def test_layout_and_info_agree_with_files(dataset: Path) -> None:
    info = json.loads((dataset / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 30
    assert info["robot_type"] == "xsquare_humanoid"
    eps = _episodes(dataset)
    data = _data(dataset)
    # Outcome success only (default): episodes 0 and 2.
    assert [e["source/episode_index"] for e in eps] == [0, 2]
    assert info["total_episodes"] == len(eps) == 2
    assert info["total_frames"] == len(data) == sum(e["length"] for e in eps)
    assert info["splits"] == {"train": "0:2"}
    assert info["total_tasks"] == 2
    tasks = pq.read_table(dataset / "meta" / "tasks.parquet")
    assert tasks.to_pydict() == {"task_index": [0, 1], "task": ["fold towel", "wipe table"]}
    # LeRobot reads it with pandas, as a frame indexed by the task string.
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    try:
        frame = tasks.to_pandas()
    except ImportError:  # pandas is not a dependency; checked where it is installed
        frame = None
    if frame is not None:
        assert frame.index.name == "task"
        assert dict(frame["task_index"]) == {"fold towel": 0, "wipe table": 1}
    assert info["features"]["observation.state"]["names"] == list(HUMANOID_JOINT_NAMES)
    assert info["features"]["action"]["shape"] == [14]
    for feat, spec in info["features"].items():
        assert {"dtype", "shape", "names"} <= set(spec), feat
    start = 0
    for e in eps:
        assert e["dataset_from_index"] == start
        start = e["dataset_to_index"] = e["dataset_from_index"] + e["length"]
        rows = [r for r in data if r["episode_index"] == e["episode_index"]]
        assert len(rows) == e["length"]
        assert [r["index"] for r in rows] == list(range(e["dataset_from_index"],
                                                        e["dataset_to_index"]))
        assert [r["frame_index"] for r in rows] == list(range(e["length"]))
        assert rows[0]["timestamp"] == 0.0
        assert rows[-1]["timestamp"] == pytest.approx((e["length"] - 1) / 30)
        assert e["source/robot_id"] == "x2-sim"
        assert e["source/operator"] in ("ana", "ben")
        assert e["data/chunk_index"] == 0 and e["data/file_index"] == 0
    # Provenance: the source time range is inside the tagged episode.
    for e in eps:
        _i, _t, a, b, *_ = TASKS[e["source/episode_index"]]
        assert T0 + a * MS - 20 * MS <= e["source/start_ns"] < e["source/end_ns"] <= T0 + b * MS


def test_joint_values_are_the_recorded_ones_at_frame_times(dataset: Path) -> None:
    info = json.loads((dataset / "meta" / "info.json").read_text())
    state_names = info["features"]["observation.state"]["names"]
    for r in _data(dataset):
        t = r["capture_time_ns"]
        # Nearest joint sample (300 Hz from T0) to the frame's capture time.
        nearest = T0 + round((t - T0) * 300 / NS) * NS // 300
        expect = [joint_value(nearest, HUMANOID_JOINT_NAMES.index(n)) for n in state_names]
        assert r["observation.state"] == pytest.approx(expect, abs=1e-6)
        arms = [joint_value(nearest, ARMS.index(n)) for n in ARMS]
        assert r["action"] == pytest.approx(arms, abs=1e-6)
        assert r["observation.effort"] == pytest.approx(
            [0.5 * HUMANOID_JOINT_NAMES.index(n) for n in state_names])
        assert r["observation.wrench.left_gripper"][2] == round((t - T0) / (10 * MS))
        assert r["held"] is False
        assert (t - T0) % (NS // 30) < MS  # a real camera stamp, not the grid


def test_videos_decode_to_the_episode_frames(dataset: Path) -> None:
    info = json.loads((dataset / "meta" / "info.json").read_text())
    eps = _episodes(dataset)
    for key in ("observation.images.head", "observation.images.left_wrist",
                "observation.images.right_wrist"):
        feat = info["features"][key]
        assert feat["dtype"] == "video" and feat["shape"] == [48, 64, 3]
        path = dataset / info["video_path"].format(video_key=key, chunk_index=0, file_index=0)
        with av.open(str(path)) as c:
            frames = list(c.decode(video=0))
        assert len(frames) == sum(e["length"] for e in eps)
        assert (frames[0].height, frames[0].width) == (48, 64)
        for e in eps:
            lo = e[f"videos/{key}/from_timestamp"]
            hi = e[f"videos/{key}/to_timestamp"]
            assert hi - lo == pytest.approx(e["length"] / 30)
            # LeRobot's rule: the frame for timestamp ts is within 1e-4 s of from + ts.
            times = [f.time for f in frames if lo - 1e-4 <= f.time < hi - 1e-4]
            assert len(times) == e["length"]
            assert times == pytest.approx([lo + k / 30 for k in range(e["length"])], abs=1e-4)
        assert feat["info"]["video.codec"] == "h264"


def _nal_units(data: bytes, annexb: bool) -> list[bytes]:
    if annexb:
        parts = data.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
        return [p for p in parts if p]
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def test_h264_camera_is_remuxed_not_reencoded(dataset: Path) -> None:
    from test_tools import _video_data

    recorded = {}
    for _log, pub, _seq, cdr in _h264_stream("right_wrist", DURATION_S, 0):
        recorded[pub] = _nal_units(_video_data(cdr), annexb=True)
    eps = _episodes(dataset)
    data = _data(dataset)
    key = "observation.images.right_wrist"
    path = dataset / f"videos/{key}/chunk-000/file-000.mp4"
    with av.open(str(path)) as c:
        packets = [bytes(p) for p in c.demux(video=0) if p.size]
    assert len(packets) == len(data)
    for row, packet in zip(data, packets, strict=True):
        # The same NAL units (MP4 frames them with lengths instead of start codes).
        assert _nal_units(packet, annexb=False) == recorded[row["capture_time_ns"]]
    for e in eps:
        assert key in e["source/remuxed"]
        first = next(r for r in data if r["index"] == e["dataset_from_index"])
        assert 5 in [n[0] & 0x1F for n in recorded[first["capture_time_ns"]]]  # a keyframe


def test_stats_match_a_recomputation(dataset: Path) -> None:
    stats = json.loads((dataset / "meta" / "stats.json").read_text())
    data = _data(dataset)
    for key in ("observation.state", "action", "timestamp", "index"):
        v = np.asarray([r[key] for r in data], np.float64)
        v = v.reshape(len(v), -1)
        assert stats[key]["mean"] == pytest.approx(v.mean(0).tolist(), abs=1e-6)
        assert stats[key]["std"] == pytest.approx(v.std(0).tolist(), abs=1e-6)
        assert stats[key]["min"] == pytest.approx(v.min(0).tolist())
        assert stats[key]["max"] == pytest.approx(v.max(0).tolist())
        assert stats[key]["count"] == [len(v)]
        assert {"q01", "q10", "q50", "q90", "q99"} <= set(stats[key])
    img = stats["observation.images.head"]
    assert np.asarray(img["mean"]).shape == (3, 1, 1)
    assert 0 <= np.min(img["min"]) <= np.max(img["max"]) <= 1


# ------------------------------------------------------------------------------ behaviour


def test_filters(session: Path, mapping_file: Path, tmp_path: Path) -> None:
    m = load_mapping(mapping_file)
    s = run_export(tmp_path / "a", [str(session)], m, EpisodeFilter(outcome=None,
                                                                    task="fold towel"), 1)
    assert s.written == 2
    s = run_export(tmp_path / "b", [str(session)], m, EpisodeFilter(operator="ben"), 1)
    assert s.written == 1
    assert [e["source/operator"] for e in _episodes(tmp_path / "b")] == ["ben"]
    s = run_export(tmp_path / "c", [str(session)], m,
                   EpisodeFilter(since_ns=T0 + 4 * NS), 1)
    assert [e["source/episode_index"] for e in _episodes(tmp_path / "c")] == [2]


def test_missing_frame_policies(tmp_path: Path, mapping_file: Path) -> None:
    # Head frames 50..52 (1.67-1.73 s, inside episode 0) never arrived.
    src = build(tmp_path / "x2-sim_20250615T000000Z_bbbbbb", drop_head={50, 51, 52})
    base = mapping_file.read_text()
    results = {}
    for policy in ("drop", "split", "hold"):
        mp = tmp_path / f"{policy}.yaml"
        mp.write_text(base.replace("missing: drop", f"missing: {policy}"))
        out = tmp_path / policy
        results[policy] = run_export(out, [str(src)], load_mapping(mp),
                                     EpisodeFilter(task="fold towel"), 1)
    assert results["drop"].written == 0
    assert results["drop"].skipped[0][1] == 0
    assert "missing inputs" in results["drop"].skipped[0][2]
    split = _episodes(tmp_path / "split")
    assert len(split) == 2 and [e["source/part"] for e in split] == [0, 1]
    hold = _data(tmp_path / "hold")
    held = [r for r in hold if r["held"]]
    assert len(held) == 3
    # The right-wrist (H.264) frames are unaffected; head is held: re-encoded, still decodes.
    eps = _episodes(tmp_path / "hold")
    assert eps[0]["length"] == len(hold)
    with av.open(str(tmp_path / "hold/videos/observation.images.head/chunk-000/file-000.mp4")
                 ) as c:
        assert sum(1 for _ in c.decode(video=0)) == len(hold)


def test_window_and_privacy_pause(tmp_path: Path, mapping_file: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Cut to the window (pre/post-roll), taps kept as provenance; a privacy pause splits
    the episode and none of its camera frames is exported, under the default `drop`."""
    pause = (T0 + 1_800 * MS, T0 + 2_000 * MS)
    task = TaskEntry(episode_index=0, task="fold towel", start_ns=T0 + 1_300 * MS,
                     end_ns=T0 + 3_000 * MS, outcome="success", operator="ana",
                     window_start_ns=T0 + 900 * MS, window_end_ns=T0 + 3_400 * MS,
                     privacy_paused=[pause])
    src = build(tmp_path / "x2-sim_20250615T000000Z_dddddd", tasks=[task],
                cameras_paused=pause)
    out = tmp_path / "ds"
    code = xsq_main(["export", "lerobot", str(out), str(src), "--mapping", str(mapping_file),
                     "--workers", "1"])
    assert code == 0
    report = capsys.readouterr().out
    assert "2 episodes written (from 1 source episodes)" in report
    assert "privacy-paused 0.20 s cut (1 range(s)): split there" in report
    eps, data = _episodes(out), _data(out)
    assert [(e["source/episode_index"], e["source/part"]) for e in eps] == [(0, 0), (0, 1)]
    for e in eps:
        assert (e["source/tap_start_ns"], e["source/tap_end_ns"]) == (task.start_ns,
                                                                      task.end_ns)
        assert (e["source/window_start_ns"], e["source/window_end_ns"]) == (
            task.window_start_ns, task.window_end_ns)
    # The pre-roll reaches back to the keyframe at 1.0 s, before the tap at 1.3 s; the
    # post-roll past the tap at 3.0 s.
    assert eps[0]["source/start_ns"] == T0 + NS < task.start_ns
    assert eps[1]["source/end_ns"] > task.end_ns
    # Nothing captured in the pause: the frame stamped 2.0 s (written just after the
    # resume) is not used either, so the part after it starts at the next keyframe.
    times = [r["capture_time_ns"] for r in data]
    assert not [t for t in times if pause[0] <= t <= pause[1]]
    assert max(t for t in times if t < pause[0]) < pause[0]
    assert eps[1]["source/start_ns"] == T0 + 3 * NS
    assert [e["length"] for e in eps] == [24, 12]
    assert not any(r["held"] for r in data)
    for key in ("observation.images.head", "observation.images.left_wrist",
                "observation.images.right_wrist"):
        with av.open(str(out / f"videos/{key}/chunk-000/file-000.mp4")) as c:
            assert sum(1 for _ in c.decode(video=0)) == len(data), key
    assert all("observation.images.right_wrist" in e["source/remuxed"] for e in eps)

    # The other policy: the episode is dropped, with the reason in the report.
    drop = tmp_path / "drop.yaml"
    drop.write_text(mapping_file.read_text() + "privacy: drop\n")
    s = run_export(tmp_path / "dropped", [str(src)], load_mapping(drop), EpisodeFilter(), 1)
    assert s.written == 0
    assert s.skipped == [(src.name, 0, "privacy-paused 1 time(s) (privacy: drop)")]


def test_different_joint_names_refused(tmp_path: Path, mapping_file: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    names = [n.replace("knee", "shin") for n in HUMANOID_JOINT_NAMES]
    src = build(tmp_path / "x2-other_20250615T000000Z_cccccc", names=names)
    out = tmp_path / "ds"
    code = xsq_main(["export", "lerobot", str(out), str(src), "--mapping", str(mapping_file),
                     "--workers", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "x2-other_20250615T000000Z_cccccc" in err[0] and "left_knee_joint" in err[0]
    assert not out.exists()


def test_append_keeps_existing_files(session: Path, mapping_file: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    m = load_mapping(mapping_file)
    run_export(out, [str(session)], m, EpisodeFilter(task="fold towel"), 1)
    before = _tree(out)
    code = xsq_main(["export", "lerobot", str(out), str(session), "--mapping",
                     str(mapping_file), "--task", "wipe table", "--workers", "1"])
    assert code == 0
    assert "1 episodes written" in capsys.readouterr().out
    after = _tree(out)
    rewritten = {k for k in before if after.get(k) != before[k]}
    assert rewritten == {"meta/info.json", "meta/stats.json", "meta/tasks.parquet"}
    eps = _episodes(out)
    assert [e["episode_index"] for e in eps] == [0, 1]
    assert eps[1]["data/file_index"] == 1 and eps[1]["meta/episodes/file_index"] == 1
    assert eps[1]["dataset_from_index"] == eps[0]["dataset_to_index"]
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_tasks"] == 2


def test_killed_export_leaves_dataset_unchanged(session: Path, mapping_file: Path,
                                                tmp_path: Path) -> None:
    out = tmp_path / "ds"
    m = load_mapping(mapping_file)
    run_export(out, [str(session)], m, EpisodeFilter(task="fold towel"), 1)
    before = _tree(out)
    staging = tmp_path / ".ds.xsq-staging"
    cmd = [sys.executable, "-m", "xsquare_logger.cli.main", "export", "lerobot", str(out),
           str(session), str(session), str(session), "--outcome", "any",
           "--mapping", str(mapping_file), "--workers", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
    deadline = time.monotonic() + 60
    while not any(staging.glob("job*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert any(staging.glob("job*")), "the export never started staging"
    assert _tree(out) == before
    # The next export clears what was staged and works.
    s = run_export(out, [str(session)], m, EpisodeFilter(task="wipe table"), 1)
    assert s.written == 1 and not staging.exists()


def test_default_mapping_encodes_av1_when_available(session: Path, tmp_path: Path) -> None:
    """config/export/humanoid.yaml as shipped (video_codec auto); episodes concatenated."""
    from xsquare_logger.export.video import codec_for

    run_export(tmp_path / "ds", [str(session)], load_mapping(), EpisodeFilter(), 2)
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    expect = "av1" if codec_for("auto") == "libsvtav1" else "h264"
    key = "observation.images.head"
    assert info["features"][key]["info"]["video.codec"] == expect
    assert info["features"]["observation.images.right_wrist"]["info"]["video.codec"] == "h264"
    with av.open(str(tmp_path / f"ds/videos/{key}/chunk-000/file-000.mp4")) as c:
        times = [f.time for f in c.decode(video=0)]
    assert times == pytest.approx([k / 30 for k in range(info["total_frames"])], abs=1e-4)
