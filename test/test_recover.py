"""Crash recovery: files cut short at every kind of point come back valid and lossless
up to the last flush. Checked with the official mcap reader and pymcap-cli doctor."""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
from pathlib import Path

import pytest
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer
from rclpy.serialization import serialize_message
from test_mcap_writer import QOS, doctor, make_image, make_joints

from xsquare_logger.bag.mcap_writer import McapWriter
from xsquare_logger.bag.recover import RecoveryError, recover_mcap
from xsquare_logger.bag.schema import ros2msg_schema

Msg = tuple[str, int, int, int, bytes]  # topic, log_time, publish_time, sequence, data


class Session:
    """A recording in progress: remembers what was flushed, and where each batch ended."""

    def __init__(self, path: Path, compression: str = "zstd") -> None:
        self.path = path
        self.w = McapWriter(path, compression=compression, chunk_size=8 * 1024 * 1024)
        img = self.w.register_schema(
            "sensor_msgs/msg/Image", "ros2msg", ros2msg_schema("sensor_msgs/msg/Image")
        )
        js = self.w.register_schema(
            "sensor_msgs/msg/JointState", "ros2msg", ros2msg_schema("sensor_msgs/msg/JointState")
        )
        meta = {"offered_qos_profiles": QOS, "topic_type_hash": "RIHS01_" + "0" * 64}
        self.img = self.w.register_channel("/camera/image_raw", "cdr", img, meta)
        self.js = self.w.register_channel("/joint_states", "cdr", js, meta)
        self.w.add_metadata("session", {"robot": "x2", "operator": "ana"})
        self.sent: list[Msg] = []
        self.flushed: list[Msg] = []
        self.boundaries: list[int] = []  # file size after each flush
        self.seq = 0

    def batch(self, n: int = 8) -> None:
        """Add n joint states and an image every 4th; not flushed."""
        for _ in range(n):
            self.seq += 1
            t = 1_700_000_000_000_000_000 + self.seq * 2_000_000
            if self.seq % 4 == 0:
                data = serialize_message(make_image(self.seq, 32, 24))
                self.w.add_message(self.img, t, t - 10, data, self.seq)
                self.sent.append(("/camera/image_raw", t, t - 10, self.seq, data))
            data = serialize_message(make_joints(self.seq))
            self.w.add_message(self.js, t + 1, t, data, self.seq)
            self.sent.append(("/joint_states", t + 1, t, self.seq, data))

    def flush(self) -> None:
        self.w.flush(fsync=False)
        self.flushed = list(self.sent)
        self.boundaries.append(self.w.bytes_written)


def read_messages(path: Path) -> list[Msg]:
    with open(path, "rb") as f:
        return [
            (c.topic, m.log_time, m.publish_time, m.sequence, m.data)
            for _s, c, m in make_reader(f).iter_messages(log_time_order=False)
        ]


def counts(messages: list[Msg]) -> dict[str, int]:
    out: dict[str, int] = {}
    for topic, *_ in messages:
        out[topic] = out.get(topic, 0) + 1
    return out


def check_result(  # type: ignore[no-untyped-def]
    result, out: Path, expected: list[Msg], *, run_doctor: bool = True
) -> None:
    assert result.out_path == out
    assert read_messages(out) == expected  # byte-identical, same times and sequences, in order
    assert result.messages_recovered == len(expected)
    assert {k: v for k, v in result.message_counts.items() if v} == counts(expected)
    assert result.message_start_time == min(m[1] for m in expected)
    assert result.message_end_time == max(m[1] for m in expected)
    assert result.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert result.size == out.stat().st_size
    assert result.topics["/camera/image_raw"][:2] == ("sensor_msgs/msg/Image", "cdr")
    assert result.topics["/joint_states"][2]["offered_qos_profiles"] == QOS
    assert result.metadata["session"] == {"robot": "x2", "operator": "ana"}
    if run_doctor:
        doctor(out)


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_crash_between_flushes(tmp_path: Path, compression: str) -> None:
    s = Session(tmp_path / "rec.mcap", compression)
    for _ in range(3):
        s.batch()
        s.flush()
    s.batch()  # in the writer's memory only: lost in the crash
    active = tmp_path / "run_0.mcap.active"
    shutil.copyfile(s.path, active)  # the file as a killed process leaves it
    s.w.close()

    result = recover_mcap(active)
    out = tmp_path / "run_0.mcap"
    check_result(result, out, s.flushed)
    assert len(s.flushed) < len(s.sent)
    assert (result.chunks_recovered, result.chunks_dropped, result.bytes_discarded) == (3, 0, 0)
    assert not result.was_complete
    assert not active.exists()  # removed only after the new file was complete
    with open(out, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None
    expected = "" if compression == "none" else compression
    assert {ci.compression for ci in summary.chunk_indexes} == {expected}


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_truncated_inside_last_chunk(tmp_path: Path, compression: str) -> None:
    s = Session(tmp_path / "rec.mcap", compression)
    for _ in range(4):
        s.batch()
        s.flush()
        if len(s.boundaries) == 3:
            kept = list(s.flushed)
    s.w.close()
    data = s.path.read_bytes()
    # The 4th chunk record starts where the 3rd flush ended; cut it anywhere inside.
    start = s.boundaries[2]
    opcode, length = struct.unpack_from("<BQ", data, start)
    assert opcode == 0x06
    rng = random.Random(f"{compression}-seed")
    random_cut = rng.randrange(start + 2, start + 9 + length)
    # Edges: inside the record header, right after it, one byte short; plus a random offset.
    for cut in sorted({start + 1, start + 9, start + 9 + length - 1, random_cut}):
        active = tmp_path / f"cut{cut}.mcap.active"
        active.write_bytes(data[:cut])
        result = recover_mcap(active)
        # One doctor run per compression keeps the suite fast; the reader checks run on all.
        check_result(result, tmp_path / f"cut{cut}.mcap", kept, run_doctor=cut == random_cut)
        assert (result.chunks_recovered, result.chunks_dropped) == (3, 1)
        assert result.bytes_discarded == cut - start


def test_truncated_inside_message_index_keeps_the_chunk(tmp_path: Path) -> None:
    s = Session(tmp_path / "rec.mcap")
    for _ in range(2):
        s.batch()
        s.flush()
    s.w.close()
    data = s.path.read_bytes()
    _, length = struct.unpack_from("<BQ", data, s.boundaries[0])
    chunk_end = s.boundaries[0] + 9 + length
    cut = (chunk_end + s.boundaries[1]) // 2  # inside the MessageIndex records
    active = tmp_path / "x.mcap.active"
    active.write_bytes(data[:cut])
    result = recover_mcap(active)
    check_result(result, tmp_path / "x.mcap", s.flushed)
    assert (result.chunks_recovered, result.chunks_dropped) == (2, 0)
    assert result.bytes_discarded == cut - chunk_end


def test_corrupt_chunk_in_the_middle_is_dropped(tmp_path: Path) -> None:
    s = Session(tmp_path / "rec.mcap")
    batches: list[list[Msg]] = []
    for _ in range(3):
        before = len(s.sent)
        s.batch()
        s.flush()
        batches.append(s.sent[before:])
    s.w.close()
    data = bytearray(s.path.read_bytes())
    start = s.boundaries[0]
    _, length = struct.unpack_from("<BQ", data, start)
    data[start + 9 + length - 20] ^= 0xFF  # a bit flip in the compressed payload
    active = tmp_path / "y.mcap.active"
    active.write_bytes(bytes(data))
    result = recover_mcap(active)
    check_result(result, tmp_path / "y.mcap", batches[0] + batches[2])
    assert (result.chunks_recovered, result.chunks_dropped) == (2, 1)
    assert result.bytes_discarded == 9 + length


def test_zero_filled_tail_after_power_loss(tmp_path: Path) -> None:
    s = Session(tmp_path / "rec.mcap")
    s.batch()
    s.flush()
    active = tmp_path / "z.mcap.active"
    active.write_bytes(s.path.read_bytes() + bytes(4096))
    s.w.close()
    result = recover_mcap(active)
    check_result(result, tmp_path / "z.mcap", s.flushed)
    assert result.bytes_discarded == 4096


def test_aborted_writer(tmp_path: Path) -> None:
    active = tmp_path / "full_disk.mcap.active"
    s = Session(active)
    s.batch()
    s.flush()
    s.batch()
    s.w.abort()
    result = recover_mcap(active)
    check_result(result, tmp_path / "full_disk.mcap", s.flushed)


def test_complete_file_is_renamed_unchanged(tmp_path: Path) -> None:
    active = tmp_path / "done.mcap.active"
    s = Session(active)
    s.batch()
    s.flush()
    s.batch()
    s.w.close()
    digest = hashlib.sha256(active.read_bytes()).hexdigest()
    result = recover_mcap(active)
    out = tmp_path / "done.mcap"
    assert result.was_complete and not active.exists()
    assert result.sha256 == digest == s.w.sha256_hexdigest()
    check_result(result, out, s.sent)
    assert (result.chunks_recovered, result.chunks_dropped, result.bytes_discarded) == (2, 0, 0)


def test_complete_file_with_damaged_data_is_rebuilt(tmp_path: Path) -> None:
    """A footer alone is not trusted: every chunk CRC must match too (the writer leaves
    the data-section CRC at 0, so recovery checks the chunks)."""
    s = Session(tmp_path / "rec.mcap")
    batches: list[list[Msg]] = []
    for _ in range(2):
        before = len(s.sent)
        s.batch()
        s.flush()
        batches.append(s.sent[before:])
    s.w.close()
    data = bytearray(s.path.read_bytes())
    _, length = struct.unpack_from("<BQ", data, s.boundaries[0])
    data[s.boundaries[0] + 9 + length - 20] ^= 0x01
    active = tmp_path / "d.mcap.active"
    active.write_bytes(bytes(data))
    result = recover_mcap(active)
    assert not result.was_complete
    check_result(result, tmp_path / "d.mcap", batches[0])


def test_refuses_existing_output(tmp_path: Path) -> None:
    s = Session(tmp_path / "rec.mcap")
    s.batch()
    s.flush()
    active = tmp_path / "a.mcap.active"
    shutil.copyfile(s.path, active)
    s.w.close()
    (tmp_path / "a.mcap").write_bytes(b"older recording")
    with pytest.raises(RecoveryError, match=r"a\.mcap exists already"):
        recover_mcap(active)
    assert active.exists() and (tmp_path / "a.mcap").read_bytes() == b"older recording"
    assert not list(tmp_path.glob("*.recovering"))


def test_unrecoverable_headers(tmp_path: Path) -> None:
    good = tmp_path / "good.mcap"
    McapWriter(good).close()
    header_end = 8 + 9 + struct.unpack_from("<Q", good.read_bytes(), 9)[0]
    cases = {
        "empty": b"",
        "magic_only": good.read_bytes()[:8],
        "in_header": good.read_bytes()[: header_end - 3],
        "not_mcap": b"PK\x03\x04 this is a zip file",
    }
    for name, content in cases.items():
        active = tmp_path / f"{name}.mcap.active"
        active.write_bytes(content)
        with pytest.raises(RecoveryError, match=rf"{name}\.mcap\.active"):
            recover_mcap(active)
        assert active.exists() and not (tmp_path / f"{name}.mcap").exists()
    with pytest.raises(RecoveryError, match=r"missing\.mcap\.active: cannot read"):
        recover_mcap(tmp_path / "missing.mcap.active")


def test_header_only_file_becomes_empty_valid_mcap(tmp_path: Path) -> None:
    good = tmp_path / "good.mcap"
    McapWriter(good).close()
    header_end = 8 + 9 + struct.unpack_from("<Q", good.read_bytes(), 9)[0]
    active = tmp_path / "h.mcap.active"
    active.write_bytes(good.read_bytes()[:header_end])
    result = recover_mcap(active)
    assert result.messages_recovered == 0 and result.message_start_time is None
    doctor(tmp_path / "h.mcap")


def test_other_names_keep_the_source(tmp_path: Path) -> None:
    s = Session(tmp_path / "rec.mcap")
    s.batch()
    s.flush()
    broken = tmp_path / "broken.mcap"
    shutil.copyfile(s.path, broken)
    s.w.close()
    result = recover_mcap(broken)
    assert result.out_path == tmp_path / "broken.recovered.mcap"
    assert broken.exists()
    check_result(result, result.out_path, s.flushed)


def test_file_from_the_official_writer(tmp_path: Path) -> None:
    """Schemas and channels inside chunks (mcap.writer.Writer's layout) are recovered too."""
    path = tmp_path / "official.mcap"
    with open(path, "wb") as f:
        w = Writer(f, chunk_size=2000, compression=CompressionType.LZ4)
        w.start(profile="ros2", library="mcap-python")
        sid = w.register_schema("std_msgs/msg/String", "ros2msg", b"string data\n")
        cid = w.register_channel("/chatter", "cdr", sid)
        payloads = [b"\x00\x01\x00\x00" + struct.pack("<I", 200) + bytes(200) for _ in range(30)]
        for i, p in enumerate(payloads):
            w.add_message(cid, log_time=i, data=p, publish_time=i, sequence=i)
        w.finish()
    data = path.read_bytes()
    with open(path, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None
    last = summary.chunk_indexes[-1]
    whole = [ci for ci in summary.chunk_indexes if ci is not last]
    active = tmp_path / "cut.mcap.active"
    active.write_bytes(data[: last.chunk_start_offset + 50])
    result = recover_mcap(active)
    out = tmp_path / "cut.mcap"
    got = read_messages(out)
    expected = sum(
        1
        for i in range(30)
        if any(ci.message_start_time <= i <= ci.message_end_time for ci in whole)
    )
    assert len(got) == expected > 0
    assert [m[4] for m in got] == payloads[:expected]
    assert result.chunks_dropped == 1 and result.topics["/chatter"][0] == "std_msgs/msg/String"
    doctor(out)


def test_keeps_compression_when_first_chunk_was_stored_raw(tmp_path: Path) -> None:
    """An incompressible first chunk is stored raw; the recording is still lz4."""
    active = tmp_path / "n.mcap.active"
    w = McapWriter(active, compression="lz4")
    cid = w.register_channel("/noise", "application/octet-stream", 0)
    w.add_metadata("session", {"robot": "x2"})
    w.add_message(cid, 1, 1, random.Random(5).randbytes(50_000))
    w.flush()
    w.add_message(cid, 2, 2, bytes(50_000))
    w.flush()
    w.abort()
    result = recover_mcap(active)
    with open(result.out_path, "rb") as f:
        summary = make_reader(f).get_summary()
    assert summary is not None
    # Rewritten into one (compressible) chunk: lz4 was picked, not the raw first chunk's "".
    assert [ci.compression for ci in summary.chunk_indexes] == ["lz4"]
    assert result.messages_recovered == 2 and result.metadata == {"session": {"robot": "x2"}}
    doctor(result.out_path)
