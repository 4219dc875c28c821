"""End to end: real publisher processes, the real `xsq record`, readers we did not write."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from conftest import pymcap_doctor, xsq
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from support import known

pytestmark = pytest.mark.ros

PUB = ["-m", "support.known_publisher"]
REC = ["-m", "xsquare_logger.cli.main", "record"]


def read_all(session: Path) -> dict[str, list[bytes]]:
    """Every message per topic, in log-time order, via the official mcap reader."""
    out: dict[str, list[bytes]] = {}
    meta = (session / "metadata.yaml").read_text()
    import yaml

    files = yaml.safe_load(meta)["rosbag2_bagfile_information"]["relative_file_paths"]
    for name in files:
        with open(session / name, "rb") as fh:
            for _schema, channel, message in make_reader(fh).iter_messages(log_time_order=True):
                out.setdefault(channel.topic, []).append(message.data)
    return out


def same_payloads(got: list[bytes], sent: list[bytes]) -> bool:
    """Recorded bytes are what was sent, allowing the <4 zero bytes Fast DDS appends
    to align a serialized payload on the wire (ros2 bag records the same)."""
    if len(got) != len(sent):
        return False
    for g, s in zip(got, sent, strict=True):
        tail = g[len(s) :]
        if g[: len(s)] != s or len(tail) > 3 or tail.strip(b"\0") or (len(g) % 4 and tail):
            return False
    return True


def record_known(procs, env, out: Path, *extra: str, images: int = 30, joints: int = 200):
    """Start the recorder, then (late-joining) publishers of known data; stop; return session."""
    dump_events, dump_data = out.parent / "events.pkl", out.parent / "data.pkl"
    latched = procs(
        [*PUB, f"{known.EVENT_TOPIC}=6", "--latched", "--hold", "60", "--dump", str(dump_events)],
        env,
        "latched",
    )
    rec = procs([*REC, "-a", "-o", str(out), *extra], env, "recorder")
    rec.wait_for(r"recording .*/known/task_events")
    pub = procs(
        [
            *PUB,
            f"{known.IMAGE_TOPIC}={images}@30",
            f"{known.JOINT_TOPIC}={joints}@200",
            "--dump",
            str(dump_data),
        ],
        env,
        "publisher",
    )
    assert pub.wait(90) == 0, pub.stderr()
    published = json.loads(pub.stdout().strip().splitlines()[-1])["published"]
    assert rec.stop() == 0, rec.stderr()
    latched.stop()
    assert rec.stdout().strip().splitlines()[-1] == str(out)
    sent = {}
    for dump in (dump_events, dump_data):
        with open(dump, "rb") as fh:
            sent.update(pickle.load(fh))
    return published, sent


def test_record_roundtrip_byte_identical(procs, env, tmp_path: Path) -> None:
    out = tmp_path / "session"
    published, sent = record_known(procs, env, out)
    assert published == {known.IMAGE_TOPIC: 30, known.JOINT_TOPIC: 200}

    got = read_all(out)
    # Byte-identical, complete and in order, for a best-effort camera, a reliable
    # joint stream and a transient-local custom interface published before we started.
    assert got[known.IMAGE_TOPIC] == sent[known.IMAGE_TOPIC]
    assert got[known.JOINT_TOPIC] == sent[known.JOINT_TOPIC]
    assert same_payloads(got[known.EVENT_TOPIC], sent[known.EVENT_TOPIC])
    assert len(got[known.IMAGE_TOPIC]) == 30 and len(got[known.EVENT_TOPIC]) == 6
    assert "/xsquare/session_status" in got

    # Decoding with mcap_ros2 from the schemas we embedded gives the original values.
    mcap_file = next(out.glob("*.mcap"))
    with open(mcap_file, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        decoded = {}
        for schema, channel, _m, msg in reader.iter_decoded_messages():
            decoded.setdefault(channel.topic, []).append((schema.name, msg))
        summary = reader.get_summary()
    name, js = decoded[known.JOINT_TOPIC][17]
    assert name == "sensor_msgs/msg/JointState"
    assert list(js.name) == known.JOINT_NAMES
    assert list(js.position) == pytest.approx(known.joint_state(17).position)
    _, ev = decoded[known.EVENT_TOPIC][3]
    assert (ev.event_id, ev.note, ev.outcome) == ("evt-3", "note 3 ü", "success")
    _, status = decoded["/xsquare/session_status"][-1]
    assert status.session_id == "session"
    assert summary is not None and summary.statistics is not None
    assert len(summary.chunk_indexes) >= 1

    # QoS follows the publishers and lands in channel metadata and metadata.yaml.
    import yaml

    qos = {
        c.topic: yaml.safe_load(c.metadata["offered_qos_profiles"])[0]
        for c in summary.channels.values()
    }
    assert qos[known.IMAGE_TOPIC]["reliability"] == "best_effort"
    assert qos[known.JOINT_TOPIC]["reliability"] == "reliable"
    assert qos[known.EVENT_TOPIC]["durability"] == "transient_local"

    # A strict validator we did not write.
    doctor = pymcap_doctor(mcap_file)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr

    # rosbags opens the directory as a rosbag2 bag and agrees on counts and types.
    from rosbags.rosbag2 import Reader

    with Reader(out) as bag:
        counts = {c.topic: c.msgcount for c in bag.connections}
        types = {c.topic: c.msgtype for c in bag.connections}
        raw = [d for c, _t, d in bag.messages() if c.topic == known.IMAGE_TOPIC]
    assert counts[known.IMAGE_TOPIC] == 30 and counts[known.JOINT_TOPIC] == 200
    assert types[known.EVENT_TOPIC] == "xsquare_logger_msgs/msg/TaskEvent"
    assert raw == sent[known.IMAGE_TOPIC]

    # session.json: counts, no losses, and each file's sha256 matches its bytes.
    manifest = json.loads((out / "session.json").read_text())
    assert manifest["state"] == "closed"
    assert manifest["topics"][known.JOINT_TOPIC]["written"] == 200
    assert manifest["drops"]["total"] == 0
    import hashlib

    for f in manifest["files"]:
        data = (out / f["path"]).read_bytes()
        assert f["size"] == len(data)
        assert f["sha256"] == hashlib.sha256(data).hexdigest()

    # `xsq info --json` reports the same.
    info = json.loads(xsq("info", str(out), "--json").stdout)
    assert {t["name"]: t["count"] for t in info["topics"]}[known.JOINT_TOPIC] == 200
    assert info["session"]["drops"]["total"] == 0


def test_split_by_size_lists_files_in_order(procs, env, tmp_path: Path) -> None:
    out = tmp_path / "split"
    _, sent = record_known(
        procs, env, out, "-b", "150000", "--set", "recording.chunk_size=65536", images=60
    )
    import yaml

    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    files = meta["relative_file_paths"]
    assert len(files) >= 3
    assert files == [f"split_{i}.mcap" for i in range(len(files))]
    assert not list(out.glob("*.active"))
    for name in files:
        doctor = pymcap_doctor(out / name)
        assert doctor.returncode == 0, doctor.stdout
    got = read_all(out)
    assert got[known.IMAGE_TOPIC] == sent[known.IMAGE_TOPIC]
    assert got[known.JOINT_TOPIC] == sent[known.JOINT_TOPIC]
    assert len(got[known.IMAGE_TOPIC]) == 60
    assert sum(f["message_count"] for f in meta["files"]) == meta["message_count"]


def test_output_directory_that_exists_is_refused(tmp_path: Path, env) -> None:
    out = tmp_path / "exists"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    res = xsq("record", "-a", "-o", str(out), env=env)
    assert res.returncode == 2
    assert "exists already" in res.stderr and str(out) in res.stderr
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_invalid_config_names_the_field(tmp_path: Path, env) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("robot_id: ok\nrecording:\n  max_bag_size: -5\n  compresion: zstd\n")
    res = xsq("record", "--config", str(cfg), "-o", str(tmp_path / "s"), env=env)
    assert res.returncode == 2
    assert "recording.max_bag_size" in res.stderr
    assert "recording.compresion" in res.stderr
    assert str(cfg) in res.stderr
    assert not (tmp_path / "s").exists()


def test_ros_parameters_override_config_and_default_session_name(procs, env, tmp_path) -> None:
    """Without -o a session is created under data_root, named <robot_id>_<UTC>_<id>;
    ROS parameters (as a launch file passes them) override the YAML config."""
    cfg = tmp_path / "robot.yaml"
    cfg.write_text(f"robot_id: yaml-bot\ndata_root: {tmp_path / 'root'}\n")
    rec = procs(
        [*REC, "--config", str(cfg), "--ros-args", "-p", "robot_id:=param-bot",
         "-p", "recording.compression:=lz4"],
        env,
        "recorder",
    )
    rec.wait_for("recording session")
    assert rec.stop() == 0, rec.stderr()
    session = Path(rec.stdout().strip().splitlines()[-1])
    assert session.parent == tmp_path / "root"
    import re

    assert re.fullmatch(r"param-bot_\d{8}T\d{6}Z_[0-9a-f]{6}", session.name)
    manifest = json.loads((session / "session.json").read_text())
    assert manifest["robot_id"] == "param-bot"
    with open(next(session.glob("*.mcap")), "rb") as fh:
        summary = make_reader(fh).get_summary()
    assert summary is not None
    assert {c.compression for c in summary.chunk_indexes} == {"lz4"}
