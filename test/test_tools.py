"""`xsq tasks`, `xsq clip`, `xsq report` and the Foxglove layout, on synthetic sessions with
KNOWN timing faults, checked with readers we did not write (rosbags, the official mcap reader,
pymcap-cli doctor).

The session (8 s, written by the real SessionWriter, split every 3 s into 3 files) holds:

* three cameras at 30 Hz; each frame is received 12 ms after its header stamp; the
  left_wrist camera's stamps run 15 ms after the head camera's (injected skew);
* /joint_states at 300 Hz, received 3 ms after their stamp, with every message stamped in
  [4.0 s, 4.6 s) dropped (injected gap of 181 periods; session.json counts them as lost);
* /gripper/left/wrench at 100 Hz received 1 ms ± 0.5 ms (alternating) after the stamp, so
  its inter-arrival times alternate 9 ms / 11 ms: jitter (std) exactly 1 ms;
* SessionStatus once a second with growing loss counters; TaskEvents and the current task;
* episodes 0 [1.0, 3.0] s, 1 [3.5, 5.5] s, and 2 from 6.0 s left open.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from rosbags.highlevel import AnyReader

from xsquare_logger.bag.qos import make_qos
from xsquare_logger.cli import tools as tools_cli
from xsquare_logger.config.model import RecordingConfig
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.manifest import SessionManifest, TaskEntry, read_manifest
from xsquare_logger.session.store import SessionWriter
from xsquare_logger.tools.clip import ClipError, clip_session
from xsquare_logger.tools.report import (
    Thresholds,
    analyze,
    evaluate,
    make_report,
    nearest_delta,
    scan_session,
)
from xsquare_logger.tools.tasks import TasksError, list_tasks, load_session

NS = 1_000_000_000
MS = 1_000_000
T0 = 1_750_000_000 * NS  # capture clock origin
DURATION_S = 8
CAMERAS = ("head", "left_wrist", "right_wrist")
CAMERA_LATENCY = 12 * MS
LEFT_SKEW = 15 * MS
JOINT_HZ = 300
JOINT_LATENCY = 3 * MS
GAP = (4_000 * MS, 4_600 * MS)  # joint stamps dropped, relative to T0
TASKS = [
    (0, "fold towel", 1_000, 3_000, "success"),
    (1, "wipe table", 3_500, 5_500, "failure"),
    (2, "open drawer", 6_000, None, None),
]
LAYOUT = Path(__file__).parents[1] / "config" / "foxglove" / "xsquare_session_layout.json"

Msg = tuple[int, int, int, bytes]  # log_time, publish_time, sequence, data


# --------------------------------------------------------------------------- session builder


def _stamped(msg: Any) -> bytearray:
    data = bytearray(serialize_message(msg))
    assert data[:2] == b"\x00\x01", "expected little-endian CDR"
    return data


def _with_stamp(template: bytearray, stamp_ns: int) -> bytes:
    struct.pack_into("<iI", template, 4, *divmod(stamp_ns, NS))
    return bytes(template)


def _messages() -> dict[str, tuple[str, list[Msg]]]:
    """topic -> (type, messages) with the injected faults described in the module doc."""
    from geometry_msgs.msg import WrenchStamped
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from xsquare_logger_msgs.msg import SessionStatus, TaskEvent

    out: dict[str, tuple[str, list[Msg]]] = {}
    rng = np.random.default_rng(7)
    for cam in CAMERAS:
        img = Image(height=48, width=64, encoding="rgb8", step=192)
        img.data = rng.integers(0, 256, 48 * 64 * 3, dtype=np.uint8).tobytes()
        template = _stamped(img)
        msgs = []
        for i in range(DURATION_S * 30):
            stamp = T0 + i * NS // 30 + (LEFT_SKEW if cam == "left_wrist" else 0)
            log = stamp + CAMERA_LATENCY
            msgs.append((log, log, i + 1, _with_stamp(template, stamp)))
        out[f"/camera/{cam}/image_raw"] = ("sensor_msgs/msg/Image", msgs)

    js = JointState(name=[f"j{i}" for i in range(28)], position=[0.1] * 28,
                    velocity=[0.0] * 28, effort=[0.0] * 28)
    template = _stamped(js)
    msgs = []
    for k in range(DURATION_S * JOINT_HZ):
        rel = k * NS // JOINT_HZ
        if GAP[0] <= rel < GAP[1]:
            continue
        log = T0 + rel + JOINT_LATENCY
        msgs.append((log, log, k + 1, _with_stamp(template, T0 + rel)))
    out["/joint_states"] = ("sensor_msgs/msg/JointState", msgs)

    template = _stamped(WrenchStamped())
    msgs = []
    for k in range(DURATION_S * 100):
        stamp = T0 + k * 10 * MS
        log = stamp + MS + (MS // 2 if k % 2 else -MS // 2)
        msgs.append((log, log, k + 1, _with_stamp(template, stamp)))
    out["/gripper/left/wrench"] = ("geometry_msgs/msg/WrenchStamped", msgs)

    msgs = []
    for s in range(DURATION_S):
        t = T0 + s * NS + 250 * MS
        st = SessionStatus(session_id="synthetic", state=1)
        st.stamp.sec, st.stamp.nanosec = divmod(t, NS)
        st.messages_lost_transport = 30 * max(0, s - 4)
        msgs.append((t, t, 0, serialize_message(st)))
    out["/xsquare/session_status"] = ("xsquare_logger_msgs/msg/SessionStatus", msgs)

    events: list[Msg] = []
    current: list[Msg] = []
    for index, task, start, end, outcome in TASKS:
        for kind, at in ((TaskEvent.TASK_START, start), (TaskEvent.TASK_END, end)):
            if at is None:
                continue
            t = T0 + at * MS
            ev = TaskEvent(session_id="synthetic", event_id=f"e{index}{kind}", kind=kind,
                           task=task, episode_index=index, outcome=outcome or "")
            ev.stamp.sec, ev.stamp.nanosec = divmod(t, NS)
            events.append((t, t, 0, serialize_message(ev)))
            label = f"#{index} {task}" if kind == TaskEvent.TASK_START else "idle"
            current.append((t, t, 0, serialize_message(String(data=label))))
    out["/xsquare/task_events"] = ("xsquare_logger_msgs/msg/TaskEvent", events)
    out["/xsquare/current_task"] = ("std_msgs/msg/String", current)
    return out


def write_session(
    directory: Path,
    streams: dict[str, tuple[str, list[Msg]]],
    tasks: list[TaskEntry],
    split_s: float = 0.0,
    lost: dict[str, int] | None = None,
) -> None:
    """Write ``streams`` in receive-time order with the real SessionWriter."""
    config = RecordingConfig(chunk_size=64 * 1024, max_bag_duration=split_s, fsync=False)
    manifest = SessionManifest(session_id=directory.name, robot_id="x2-sim",
                               software_version="test", config_digest="0" * 8, tasks=tasks)
    writer = SessionWriter(directory, manifest, config)
    merged = []
    for topic, (type_name, msgs) in streams.items():
        qos = [make_qos("best_effort" if topic.startswith("/camera") else "reliable")]
        stats = TopicStats(topic, type_name, received=len(msgs),
                           lost_transport=(lost or {}).get(topic, 0))
        index = writer.add_topic(topic, type_name, qos, stats)
        merged += [(log, index, pub, seq, data) for log, pub, seq, data in msgs]
    merged.sort(key=lambda m: (m[0], m[1]))
    for log, index, pub, seq, data in merged:
        writer.write(index, log, pub, data, seq)
    writer.close("stopped", ended_ns=merged[-1][0])


def build_session(directory: Path, split_s: float = 3.0) -> dict[str, tuple[str, list[Msg]]]:
    """Write the synthetic session (module doc); return what was written."""
    tasks = [
        TaskEntry(episode_index=i, task=name, start_ns=T0 + start * MS,
                  end_ns=None if end is None else T0 + end * MS, outcome=outcome)
        for i, name, start, end, outcome in TASKS
    ]
    streams = _messages()
    dropped = DURATION_S * JOINT_HZ - len(streams["/joint_states"][1])
    write_session(directory, streams, tasks, split_s, lost={"/joint_states": dropped})
    return streams


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sessions") / "x2-sim_20250615T000000Z_abc123"
    build_session(directory)
    return directory


@pytest.fixture(scope="module")
def report(session: Path) -> dict[str, Any]:
    return analyze(scan_session(load_session(session)))


def rosbags_messages(directory: Path) -> list[tuple[str, int, bytes]]:
    with AnyReader([directory]) as reader:
        return sorted(
            (conn.topic, ts, bytes(raw)) for conn, ts, raw in reader.messages()
        )


def mcap_messages(path: Path) -> list[tuple[str, int, int, int, bytes]]:
    with open(path, "rb") as f:
        return [
            (c.topic, m.log_time, m.publish_time, m.sequence, bytes(m.data))
            for _s, c, m in make_reader(f).iter_messages(log_time_order=False)
        ]


def doctor(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pymcap-cli")
    return subprocess.run([str(exe), "doctor", str(path)], capture_output=True, text=True)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="xsq")
    tools_cli.add_parsers(parser.add_subparsers(dest="command", required=True))
    return tools_cli.run(parser.parse_args(list(argv)))


# --------------------------------------------------------------------------- tasks


def test_session_is_split_and_valid(session: Path) -> None:
    files = sorted(session.glob("*.mcap"))
    assert len(files) == 3
    for f in files:
        assert doctor(f).returncode == 0


def test_tasks_from_manifest_and_from_mcap_record(session: Path, tmp_path: Path) -> None:
    rows = list_tasks(session)
    assert [(r["episode_index"], r["task"], r["outcome"], r["open"]) for r in rows] == [
        (0, "fold towel", "success", False),
        (1, "wipe table", "failure", False),
        (2, "open drawer", None, True),
    ]
    assert rows[0]["duration_s"] == pytest.approx(2.0)
    view = load_session(session)
    # The open episode lasts until the session's last message.
    assert rows[2]["duration_s"] == pytest.approx((view.end_ns - (T0 + 6 * NS)) / NS, abs=1e-3)
    assert view.tasks_source == "session.json"

    # Without session.json the episodes come from the last file's xsquare.tasks record.
    copy = tmp_path / session.name
    shutil.copytree(session, copy)
    (copy / "session.json").unlink()
    fallback = load_session(copy)
    assert fallback.tasks_source.startswith("mcap:") and fallback.tasks_source.endswith("_2.mcap")
    assert list_tasks(fallback) == rows


def test_xsq_tasks_output(session: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("tasks", str(session)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"session {session.name}: 3 task(s)"
    assert "fold towel" in lines[2] and "success" in lines[2]
    # Start printed as epoch seconds with ns digits, ready for Foxglove's time display.
    assert f"{(T0 + 1 * NS) // NS}.000000000" in lines[2]
    assert "open" in lines[4] and "2.0 s" in lines[3]

    assert run_cli("tasks", str(session), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["start_ns"] for t in doc["tasks"]] == [T0 + s * MS for _i, _n, s, _e, _o in TASKS]


def test_tasks_errors(tmp_path: Path, session: Path) -> None:
    with pytest.raises(TasksError, match="no such session"):
        load_session(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TasksError, match=r"metadata\.yaml"):
        load_session(tmp_path / "empty")
    with pytest.raises(TasksError, match=r"no episode 7 \(valid episode indexes: 0, 1, 2\)"):
        clip_session(session, 7, 0.0, tmp_path / "clip")
    assert not (tmp_path / "clip").exists()


# --------------------------------------------------------------------------- clip


class RecordingFile(io.FileIO):
    """A raw file that records where each read started and how much it returned."""

    def __init__(self, path: Path, reads: list[tuple[str, int, int]]) -> None:
        super().__init__(path, "rb")
        self._reads = reads
        self._name = path.name

    def readinto(self, buffer: Any) -> int | None:
        pos = self.tell()
        n = super().readinto(buffer)
        self._reads.append((self._name, pos, n or 0))
        return n


def recording_opener(reads: list[tuple[str, int, int]]) -> Callable[[Path], Any]:
    return lambda path: io.BufferedReader(RecordingFile(path, reads))


def test_clip_holds_exactly_the_range(session: Path, tmp_path: Path) -> None:
    out = tmp_path / "towel_clip"
    result = clip_session(session, 0, 0.4, out)
    lo, hi = T0 + 600 * MS, T0 + 3_400 * MS
    assert (result.start_ns, result.end_ns) == (lo, hi)
    # The range spans the first two files; the third is never opened.
    assert result.files_read == [f"{session.name}_0.mcap", f"{session.name}_1.mcap"]
    assert (out / "towel_clip_0.mcap").is_file()

    # Independent reader: a full rosbags scan of the source, filtered, equals the clip.
    expected = [m for m in rosbags_messages(session) if lo <= m[1] <= hi]
    clipped = rosbags_messages(out)
    assert clipped == expected
    assert len(clipped) == result.message_count > 500
    assert result.topics["/xsquare/task_events"] == 2

    # Publish times and sequence numbers survive too (official mcap reader).
    source = sorted(
        m for f in sorted(session.glob("*.mcap")) for m in mcap_messages(f) if lo <= m[1] <= hi
    )
    assert sorted(mcap_messages(result.mcap_path)) == source
    assert doctor(result.mcap_path).returncode == 0, doctor(result.mcap_path).stdout


def test_clip_is_a_complete_session(session: Path, tmp_path: Path) -> None:
    out = tmp_path / "wipe"
    result = clip_session(session, 1, 0.0, out)
    with open(result.mcap_path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None
        records = {m.name: m.metadata for m in reader.iter_metadata()}
    with open(session / f"{session.name}_1.mcap", "rb") as f:
        src = make_reader(f).get_summary()
    assert src is not None
    # Same schemas and channel metadata (QoS, type hash) as the source.
    by_topic = {c.topic: c for c in src.channels.values()}
    for channel in summary.channels.values():
        assert channel.metadata == by_topic[channel.topic].metadata
        assert "offered_qos_profiles" in channel.metadata
        schema = summary.schemas[channel.schema_id]
        assert schema.data == src.schemas[by_topic[channel.topic].schema_id].data
    assert "serialized_metadata" in records["rosbag2"]
    tasks = json.loads(records["xsquare.tasks"]["tasks"])
    assert [t["episode_index"] for t in tasks] == [1]
    clip_of = json.loads(records["xsquare.tasks"]["clip_of"])
    assert clip_of["session_id"] == session.name
    assert (clip_of["start_ns"], clip_of["end_ns"]) == (T0 + 3_500 * MS, T0 + 5_500 * MS)

    manifest = read_manifest(out)
    assert manifest.state == "closed" and [t.episode_index for t in manifest.tasks] == [1]
    assert manifest.model_extra and manifest.model_extra["clip_of"]["episode_index"] == 1
    import hashlib

    entry = manifest.files[0]
    assert entry.size == result.mcap_path.stat().st_size
    assert entry.sha256 == hashlib.sha256(result.mcap_path.read_bytes()).hexdigest()
    # The clip's own tools work on it: its one episode is listed.
    assert [r["episode_index"] for r in list_tasks(out)] == [1]
    # rosbags reads metadata.yaml + the file as a rosbag2 bag; counts agree.
    with AnyReader([out]) as reader:
        assert reader.message_count == result.message_count
        assert {c.topic for c in reader.connections} == set(by_topic)


def test_clip_open_episode_runs_to_session_end(session: Path, tmp_path: Path) -> None:
    result = clip_session(session, 2, 0.0, tmp_path / "drawer")
    view = load_session(session)
    assert result.end_ns == view.end_ns
    # Files split every 3 s from the first message (at +0.5 ms): the range starts in file 1.
    assert result.files_read == [f"{session.name}_1.mcap", f"{session.name}_2.mcap"]
    last = max(m[1] for m in rosbags_messages(session))
    assert max(m[1] for m in rosbags_messages(tmp_path / "drawer")) == last


def test_clip_seeks_instead_of_scanning(session: Path, tmp_path: Path) -> None:
    reads: list[tuple[str, int, int]] = []
    result = clip_session(session, 1, 0.0, tmp_path / "seek", opener=recording_opener(reads))
    lo, hi = T0 + 3_500 * MS, T0 + 5_500 * MS
    name = f"{session.name}_1.mcap"
    path = session / name
    with open(path, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None and len(summary.chunk_indexes) > 20
    wanted = [c for c in summary.chunk_indexes
              if c.message_end_time >= lo and c.message_start_time <= hi]
    others = [c for c in summary.chunk_indexes if c not in wanted]
    assert wanted and others
    # No read starts inside a chunk outside the range.
    starts = [pos for fname, pos, n in reads if fname == name and n]
    for chunk in others:
        end = chunk.chunk_start_offset + chunk.chunk_length
        assert not [p for p in starts if chunk.chunk_start_offset < p < end], chunk
    total = sum(n for fname, _pos, n in reads if fname == name)
    assert total < path.stat().st_size * 0.8
    assert result.bytes_read is None  # custom opener: counting is the caller's

    # The built-in counter agrees that far less than the session was read.
    again = clip_session(session, 1, 0.0, tmp_path / "seek2")
    assert again.bytes_read is not None and again.bytes_read < again.source_bytes / 2
    assert again.chunks_read < again.chunks_total


def _h264_stream(name: str, seconds: int, phase_ms: int) -> list[Msg]:
    """Real libx264 frames (30 Hz, a keyframe each second) as recorded CompressedVideo."""
    from sensor_msgs.msg import Image

    from xsquare_logger.camera.cdr import parse_image
    from xsquare_logger.camera.encoders import H264Encoder
    from xsquare_logger.sim.frames import render_frames
    from xsquare_logger.sim.profiles import QOS_SENSOR, ImageStream

    frames = render_frames(ImageStream(
        topic=f"/camera/{name}/image_raw", type_name="sensor_msgs/msg/Image", rate_hz=30.0,
        qos=QOS_SENSOR, camera=name, width=64, height=48,
    ))

    encoder = H264Encoder(64, 48, fps=30, keyframe_interval_s=1.0)
    msgs: list[Msg] = []
    for i in range(seconds * 30):
        stamp = T0 + phase_ms * MS + i * NS // 30
        img = Image(height=48, width=64, encoding="rgb8", step=192,
                    data=frames[i % 30].tobytes())
        img.header.stamp.sec, img.header.stamp.nanosec = divmod(stamp, NS)
        cdr = encoder.encode(parse_image(serialize_message(img)))
        msgs.append((stamp + CAMERA_LATENCY, stamp, i + 1, cdr))
    encoder.close()
    return msgs


def _video_data(cdr: bytes) -> bytes:
    """The ``data`` field, decoded by rosbags from the embedded schema (not our parser)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from xsquare_logger.bag.embedded import COMPRESSED_VIDEO, embedded_schema

    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg(embedded_schema(COMPRESSED_VIDEO).decode(),
                                      COMPRESSED_VIDEO))
    return bytes(store.deserialize_cdr(cdr, COMPRESSED_VIDEO).data)


def test_clip_of_h264_starts_each_video_topic_at_a_keyframe(tmp_path: Path) -> None:
    """An episode starting mid-GOP: the clip carries each CompressedVideo topic from the
    keyframe at or before the clip start (and says so), so a player shows the cameras at
    once; every other topic starts at the clip start."""
    av = pytest.importorskip("av")
    from xsquare_logger.camera.h264 import nal_unit_types

    streams = {
        "/camera/head/image_raw/h264": ("foxglove_msgs/msg/CompressedVideo",
                                        _h264_stream("head", 4, 0)),
        "/camera/left_wrist/image_raw/h264": ("foxglove_msgs/msg/CompressedVideo",
                                              _h264_stream("left_wrist", 4, 400)),
        "/joint_states": _messages()["/joint_states"],
    }
    episode = TaskEntry(episode_index=0, task="fold towel", start_ns=T0 + 2_300 * MS,
                        end_ns=T0 + 3_000 * MS, outcome="success")
    write_session(tmp_path / "h264", streams, [episode])
    result = clip_session(tmp_path / "h264", 0, 0.0, tmp_path / "clip")
    start = result.start_ns
    assert start == T0 + 2_300 * MS

    by_topic: dict[str, list[tuple[int, bytes]]] = {}
    for topic, log_time, _pub, _seq, data in sorted(mcap_messages(result.mcap_path),
                                                   key=lambda m: m[1]):
        by_topic.setdefault(topic, []).append((log_time, data))
    preroll = {}
    for topic, (_type, source) in streams.items():
        clipped = by_topic[topic]
        if topic == "/joint_states":
            assert clipped[0][0] >= start
            continue
        # The keyframe at or before the start: 2.0 s (+ phase), received 12 ms later.
        keyframe_log = max(log for log, _p, _s, data in source
                           if log <= start and 5 in nal_unit_types(_video_data(data)))
        assert clipped[0][0] == keyframe_log < start
        assert [m[0] for m in clipped] == [log for log, *_ in source
                                           if keyframe_log <= log <= result.end_ns]
        first = _video_data(clipped[0][1])
        assert {5, 7, 8} <= set(nal_unit_types(first)), nal_unit_types(first)
        decoder = av.CodecContext.create("h264", "r")
        for log_time, data in clipped:  # every frame decodes, from the first message on
            assert len(decoder.decode(av.Packet(_video_data(data)))) == 1, log_time
        preroll[topic] = keyframe_log

    # Said in all three places a clip describes itself.
    manifest_clip_of = read_manifest(tmp_path / "clip").model_extra["clip_of"]
    assert manifest_clip_of["preroll_start_ns"] == preroll
    import yaml

    meta = yaml.safe_load((tmp_path / "clip" / "metadata.yaml").read_text())
    custom = meta["rosbag2_bagfile_information"]["custom_data"]
    assert json.loads(custom["xsquare.clip_of"])["preroll_start_ns"] == preroll
    with open(result.mcap_path, "rb") as f:
        records = {m.name: m.metadata for m in make_reader(f).iter_metadata()}
    assert json.loads(records["xsquare.tasks"]["clip_of"])["preroll_start_ns"] == preroll
    assert doctor(result.mcap_path).returncode == 0


def test_clip_refuses_to_overwrite_and_bad_pad(session: Path, tmp_path: Path) -> None:
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ClipError, match="exists already"):
        clip_session(session, 0, 0.0, existing)
    assert (existing / "keep.txt").read_text() == "mine"
    with pytest.raises(ClipError, match="non-negative"):
        clip_session(session, 0, -1.0, tmp_path / "neg")


def test_xsq_clip_cli(session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli_clip"
    assert run_cli("clip", str(session), "--task", "1", "--pad", "0.1", "-o", str(out)) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert run_cli("clip", str(session), "--task", "9", "-o", str(tmp_path / "x")) == 1
    assert "valid episode indexes: 0, 1, 2" in capsys.readouterr().err


# --------------------------------------------------------------------------- report


def test_nearest_delta() -> None:
    ref = np.array([0, 100, 200, 300])
    other = np.array([10, 95, 260])
    assert nearest_delta(ref, other).tolist() == [10, -5, 60, -40]


def test_report_rates_jitter_and_gap(report: dict[str, Any]) -> None:
    topics = report["topics"]
    for cam in CAMERAS:
        t = topics[f"/camera/{cam}/image_raw"]
        assert t["count"] == DURATION_S * 30
        assert t["rate_hz"] == pytest.approx(30.0, rel=1e-3)
        assert t["gap_count"] == 0
    joints = topics["/joint_states"]
    dropped = (GAP[1] - GAP[0]) * JOINT_HZ // NS
    assert joints["count"] == DURATION_S * JOINT_HZ - dropped
    assert joints["nominal_hz"] == pytest.approx(JOINT_HZ, rel=1e-3)
    assert joints["rate_hz"] == pytest.approx(
        (joints["count"] - 1) / ((DURATION_S * JOINT_HZ - 1) / JOINT_HZ), rel=1e-3
    )
    assert joints["gap_count"] == 1
    gap = joints["gaps"][0]
    session_start = T0 + MS // 2  # the first wrench message
    last_before = T0 + (GAP[0] - NS // JOINT_HZ) // 1 + JOINT_LATENCY
    assert gap["offset_s"] == pytest.approx((last_before - session_start) / NS, abs=2e-3)
    assert gap["duration_s"] == pytest.approx((GAP[1] - GAP[0]) / NS + 1 / JOINT_HZ, abs=1e-3)
    assert gap["missing"] == dropped
    assert joints["jitter_ms"] == pytest.approx(0.0, abs=0.01)
    assert topics["/gripper/left/wrench"]["jitter_ms"] == pytest.approx(1.0, abs=0.01)
    # Event topics get counts only.
    assert topics["/xsquare/task_events"] == {
        "type": "xsquare_logger_msgs/msg/TaskEvent", "periodic": False, "count": 5,
        "latency_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0, "negative": 0},
    }


def test_report_latency_and_skew(report: dict[str, Any]) -> None:
    topics = report["topics"]
    for cam in CAMERAS:
        assert topics[f"/camera/{cam}/image_raw"]["latency_ms"]["p50"] == pytest.approx(12.0)
    assert topics["/joint_states"]["latency_ms"]["p50"] == pytest.approx(3.0)
    assert topics["/joint_states"]["latency_ms"]["max"] == pytest.approx(3.0)

    skew = report["skew_ms"]
    assert skew["reference_camera"] == "head"
    assert skew["cameras"]["left_wrist"]["p50"] == pytest.approx(15.0, abs=1e-3)
    assert skew["cameras"]["left_wrist"]["median_signed"] == pytest.approx(15.0, abs=1e-3)
    assert skew["cameras"]["right_wrist"]["p50"] == pytest.approx(0.0, abs=1e-3)
    assert skew["cameras"]["right_wrist"]["max"] == pytest.approx(0.0, abs=1e-3)
    # Joint stamps fall on every 10th camera stamp; during the joint gap the nearest joint
    # is up to 300 ms away.
    head_joint = skew["camera_joint"]["head"]
    assert head_joint["p50"] == pytest.approx(0.0, abs=1e-3)
    assert head_joint["max"] == pytest.approx(300.0, abs=35.0)
    assert skew["camera_joint"]["left_wrist"]["p50"] == pytest.approx(5 / 3, abs=1e-3)


def test_report_losses(report: dict[str, Any]) -> None:
    losses = report["losses"]
    dropped = (GAP[1] - GAP[0]) * JOINT_HZ // NS
    assert losses["source"] == "session.json"
    assert losses["per_topic"]["/joint_states"]["lost_total"] == dropped
    assert losses["total"] == dropped
    assert losses["status_decoded"] and losses["status_messages"] == DURATION_S
    assert [row[1] for row in losses["timeline"]] == [30 * max(0, s - 4) for s in range(8)]
    assert [t["episode_index"] for t in report["tasks"]] == [0, 1, 2]


def test_report_verdicts(report: dict[str, Any]) -> None:
    default = evaluate(report, Thresholds())
    assert default["verdict"] == "FAIL"
    failed = {(c["check"], c["subject"]) for c in default["checks"] if not c["ok"]}
    assert ("gap", "/joint_states") in failed
    assert ("loss", "/joint_states") in failed
    assert ("camera_joint_skew", "head") in failed  # frames during the joint gap
    # The injected 15 ms camera skew is 0.45 of a 30 Hz frame: over the default 0.25.
    assert ("camera_skew", "left_wrist") in failed
    assert not {k for k in failed if k[0] in ("camera_rate", "latency")
                or k == ("camera_skew", "right_wrist")}
    assert report["skew_ms"]["frame_period_ms"] == pytest.approx(1000 / 30, abs=1e-3)

    strict = evaluate(report, Thresholds(max_skew_frames=0.4))
    skew_checks = {c["subject"]: c for c in strict["checks"] if c["check"] == "camera_skew"}
    assert not skew_checks["left_wrist"]["ok"]
    assert skew_checks["left_wrist"]["value"] == pytest.approx(15.0, abs=1e-3)
    assert skew_checks["left_wrist"]["limit"] == pytest.approx(0.4 * 1000 / 30, abs=1e-3)
    assert skew_checks["right_wrist"]["ok"]
    assert any("left_wrist" in r and "15.0 ms (0.45 frames) > 0.4 frames" in r
               for r in strict["reasons"])
    joint = evaluate(report, Thresholds(max_skew_ms=1))  # camera vs joints: absolute ms
    assert not {c["subject"] for c in joint["checks"]
                if c["check"] == "camera_joint_skew" and c["ok"]}

    slow = evaluate(report, Thresholds(camera_min_hz=31))
    assert {c["subject"] for c in slow["checks"] if c["check"] == "camera_rate"
            and not c["ok"]} == {f"/camera/{c}/image_raw" for c in CAMERAS}

    lenient = Thresholds(max_skew_ms=400, max_skew_frames=0.5, max_gap_s=1.0,
                         max_loss_fraction=0.1)
    assert evaluate(report, lenient)["verdict"] == "PASS"


def test_xsq_report_files_and_exit_codes(session: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert run_cli("report", str(session), "-o", str(out), "--max-skew-ms", "10") == 4
    text = capsys.readouterr().out
    assert "FAIL" in text and "left_wrist" in text
    doc = json.loads((out / "report.json").read_text())
    assert doc["verdict"] == "FAIL" and doc["thresholds"]["max_skew_ms"] == 10
    assert set(doc["plots"]) == {"rate.png", "latency.png", "skew.png", "losses.png"}
    for name in doc["plots"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "FAIL" in page and 'src="skew.png"' in page

    passing = ["--max-skew-ms", "400", "--max-skew-frames", "0.5", "--max-gap-s", "1",
               "--max-loss-fraction", "0.1"]
    assert run_cli("report", str(session), "-o", str(out), "--json", *passing) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "PASS"
    assert run_cli("report", str(session), "--max-skew-ms", "-1") == 1
    assert "--max-skew-ms" in capsys.readouterr().err


def test_report_judges_compressed_cameras(tmp_path: Path) -> None:
    """Cameras recorded as JPEG (CompressedImage) or H.264 (CompressedVideo, whose first
    field is a bare Time) are found and their stamps read like raw ones."""
    from sensor_msgs.msg import CompressedImage

    from xsquare_logger.camera.cdr import serialize_compressed_video

    head, left = [], []
    for i in range(60):
        stamp = T0 + i * NS // 30
        jpeg = CompressedImage(format="jpeg", data=b"\xff\xd8" + bytes(200) + b"\xff\xd9")
        jpeg.header.stamp.sec, jpeg.header.stamp.nanosec = divmod(stamp, NS)
        head.append((stamp + CAMERA_LATENCY, stamp, i, serialize_message(jpeg)))
        video = serialize_compressed_video(divmod(stamp + LEFT_SKEW, NS), "left", bytes(300))
        left.append((stamp + LEFT_SKEW + 2 * CAMERA_LATENCY, stamp, i, video))
    streams = {
        "/camera/head/image_raw/compressed": ("sensor_msgs/msg/CompressedImage", head),
        "/camera/left_wrist/image_raw/h264": ("foxglove_msgs/msg/CompressedVideo", left),
    }
    write_session(tmp_path / "compressed", streams, [])
    numbers = analyze(scan_session(load_session(tmp_path / "compressed")))
    assert numbers["cameras"] == {"head": "/camera/head/image_raw/compressed",
                                  "left_wrist": "/camera/left_wrist/image_raw/h264"}
    topics = numbers["topics"]
    assert topics["/camera/head/image_raw/compressed"]["latency_ms"]["p50"] == pytest.approx(12)
    assert topics["/camera/left_wrist/image_raw/h264"]["latency_ms"]["p50"] == pytest.approx(24)
    assert numbers["skew_ms"]["cameras"]["left_wrist"]["median_signed"] == pytest.approx(15.0)
    assert evaluate(numbers, Thresholds(max_skew_frames=0.5))["verdict"] == "PASS"


def test_report_scan_memory_is_bounded(session: Path) -> None:
    """The scan keeps timestamps, not messages: its peak stays far below the data size."""
    import tracemalloc

    view = load_session(session)
    scan_session(view)  # imports (rclpy, message classes) happen outside the measurement
    data = sum(f.stat().st_size for f in session.glob("*.mcap"))
    tracemalloc.start()
    try:
        scan_session(view)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < data / 4, (peak, data)


def test_make_report_without_files(session: Path) -> None:
    doc = make_report(session)
    assert "plots" not in doc and doc["verdict"] == "FAIL"


# --------------------------------------------------------------------------- Foxglove layout


def _layout_paths(layout: dict[str, Any]) -> list[str]:
    paths = []
    for config in layout["configById"].values():
        if "imageMode" in config:
            paths.append(config["imageMode"]["imageTopic"])
            paths.append(config["imageMode"]["calibrationTopic"])
        paths += [p["value"] for p in config.get("paths", [])]
        if config.get("topicPath"):
            paths.append(config["topicPath"])
    return paths


def _panel_ids(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    return _panel_ids(node["first"]) + _panel_ids(node["second"])


def _resolve(type_name: str, fields: list[str]) -> None:
    """Walk ``a.b[0].c`` through the ROS message classes; raise if a field does not exist."""
    from xsquare_logger.sim.frames import message_class

    cls: Any = message_class(type_name)
    for part in fields:
        name = part.split("[", 1)[0]
        types = cls.get_fields_and_field_types()
        assert name in types, f"{type_name}: no field {name!r} (has {sorted(types)})"
        ftype = types[name]
        if "[" in part:
            assert ftype.startswith("sequence<") or ftype.endswith("]"), (name, ftype)
            ftype = ftype.removeprefix("sequence<").rstrip(">").split("[")[0]
        if "/" in ftype:
            pkg, typ = ftype.split("/")
            cls = message_class(f"{pkg}/msg/{typ}")


def test_foxglove_layout_topics_exist_in_a_sim_session() -> None:
    from xsquare_logger.recording.recorder import (
        CURRENT_TASK_TOPIC,
        CURRENT_TASK_TYPE,
        STATUS_TOPIC,
        STATUS_TYPE,
        TASK_EVENTS_TOPIC,
        TASK_EVENTS_TYPE,
    )
    from xsquare_logger.sim.profiles import get_profile

    layout = json.loads(LAYOUT.read_text())
    assert {"configById", "layout", "globalVariables", "userNodes", "playbackConfig"} <= set(
        layout
    )
    # Every panel in the tree is configured, and every configured panel is shown.
    assert sorted(_panel_ids(layout["layout"])) == sorted(layout["configById"])
    types = {s.topic: s.type_name for s in get_profile("humanoid")}
    types |= {CURRENT_TASK_TOPIC: CURRENT_TASK_TYPE, STATUS_TOPIC: STATUS_TYPE,
              TASK_EVENTS_TOPIC: TASK_EVENTS_TYPE}
    kinds = [panel.split("!")[0] for panel in layout["configById"]]
    assert kinds.count("Image") == 3 and "StateTransitions" in kinds and "Plot" in kinds
    images = {c["imageMode"]["imageTopic"] for c in layout["configById"].values()
              if "imageMode" in c}
    assert images == {f"/camera/{c}/image_raw" for c in CAMERAS}
    paths = _layout_paths(layout)
    assert "/xsquare/current_task.data" in paths
    assert any(p.startswith("/xsquare/task_events") for p in paths)
    for path in paths:
        topic = next((t for t in types if path == t or path.startswith(t + ".")), None)
        assert topic is not None, f"{path}: no such topic in a sim session"
        rest = path[len(topic) + 1:]
        if rest:
            _resolve(types[topic], rest.split("."))


def test_foxglove_layouts_title_panels_for_lichtblick_too() -> None:
    """Foxglove reads ``foxglovePanelTitle``, Lichtblick (the open fork) ``lichtblickPanelTitle``:
    every layout file sets both, equal, on every titled panel."""
    layouts = sorted(LAYOUT.parent.glob("*.json"))
    assert len(layouts) >= 2
    for path in layouts:
        titled = 0
        for panel, config in json.loads(path.read_text())["configById"].items():
            names = {k: config[k] for k in ("foxglovePanelTitle", "lichtblickPanelTitle")
                     if k in config}
            if names:
                titled += 1
                assert len(names) == 2 and len(set(names.values())) == 1, (path.name, panel, names)
        assert titled, path.name


def test_rate_plot_bins_stay_bounded_when_stamps_span_decades() -> None:
    """A clock jump (1970 stamps next to real ones) once made the rate plot allocate one
    bin per second of the span: 23 GB for a 56-year 'session'."""
    from xsquare_logger.tools.report_plots import _MAX_BINS, rate_bins

    bin_s, edges = rate_bins(56 * 365 * 86400.0)
    assert edges.size <= _MAX_BINS + 2
    assert edges[-1] == 56 * 365 * 86400.0
    bin_s, edges = rate_bins(4 * 3600.0)  # a 4 h session keeps 1 s bins
    assert bin_s == 1.0 and edges.size == 4 * 3600 + 1
