"""Reading sessions straight from S3 for export: only the bytes an episode needs.

A real session (written by the real SessionWriter: a raw camera at 30 Hz and joint
states at 200 Hz, zstd chunks of 256 KiB, split into two files, three episodes in
session.json) is uploaded by the real Uploader to a real S3 server (``rclone serve s3``
on 127.0.0.1). Episodes are then read through the official ``mcap`` reader over
:class:`RangedObject` and compared with the same reads of the local files; the byte
ranges fetched are held against the chunk indexes of the local files.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcap.reader import make_reader
from rclpy.serialization import serialize_message
from support.localserver import LocalS3Server, free_port

from xsquare_logger.bag.qos import make_qos
from xsquare_logger.config.model import LoggerConfig, RecordingConfig, apply_overrides
from xsquare_logger.config.upload import S3Config
from xsquare_logger.errors import XsqError
from xsquare_logger.export.remote import (
    BlockCache,
    RangedObject,
    RemoteSessionError,
    open_remote_session,
    open_session,
)
from xsquare_logger.export.source import LocalSession, SessionSource, iter_messages
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.manifest import SessionManifest, TaskEntry
from xsquare_logger.session.store import SessionWriter
from xsquare_logger.upload.backends import PermanentError, TransientError, remote_url
from xsquare_logger.upload.backends.s3 import S3Backend
from xsquare_logger.upload.uploader import Uploader

NS = 1_000_000_000
MS = 1_000_000
T0 = 1_760_000_000 * NS
DURATION_S = 8
SPLIT_S = 4.0
BUCKET = "sessions"
EPISODES = [(0, "fold towel", 1_000, 2_000), (1, "wipe table", 3_000, 5_000),
            (2, "open drawer", 6_500, 7_500)]

Row = tuple[str, int, int, int, bytes]  # topic, log_time, publish_time, sequence, data


# --------------------------------------------------------------------------- the session


def _with_stamp(msg: Any, stamp_ns: int) -> bytes:
    data = bytearray(serialize_message(msg))
    struct.pack_into("<iI", data, 4, *divmod(stamp_ns, NS))  # header.stamp (CDR LE)
    return bytes(data)


def write_session(directory: Path) -> None:
    """8 s of a 128x96 rgb8 camera (noise: incompressible, ~1.1 MB/s) + 28 joints."""
    from sensor_msgs.msg import Image, JointState

    rng = np.random.default_rng(3)
    frames = []
    for _ in range(16):
        img = Image(height=96, width=128, encoding="rgb8", step=384)
        img.data = rng.integers(0, 256, 96 * 384, dtype=np.uint8).tobytes()
        frames.append(img)
    js = JointState(name=[f"joint_{i}" for i in range(28)])
    streams: list[tuple[int, int, int, bytes]] = []  # log, topic index, seq, data
    for i in range(DURATION_S * 30):
        stamp = T0 + i * NS // 30
        streams.append((stamp + 10 * MS, 0, i + 1, _with_stamp(frames[i % 16], stamp)))
    for k in range(DURATION_S * 200):
        stamp = T0 + k * 5 * MS
        js.position = [float(k + j) / 1000 for j in range(28)]
        streams.append((stamp + 2 * MS, 1, k + 1, _with_stamp(js, stamp)))
    streams.sort()
    tasks = [
        TaskEntry(episode_index=i, task=name, start_ns=T0 + a * MS, end_ns=T0 + b * MS,
                  outcome="success", operator="ana")
        for i, name, a, b in EPISODES
    ]
    manifest = SessionManifest(session_id=directory.name, robot_id="x2-sim",
                               software_version="test", config_digest="0" * 8,
                               started_ns=T0, tasks=tasks)
    config = RecordingConfig(chunk_size=256 * 1024, max_bag_duration=SPLIT_S, fsync=False)
    writer = SessionWriter(directory, manifest, config)
    topics = [("/camera/head/image_raw", "sensor_msgs/msg/Image"),
              ("/joint_states", "sensor_msgs/msg/JointState")]
    index: list[int] = []
    for name, type_name in topics:
        n = sum(1 for s in streams if s[1] == len(index))
        stats = TopicStats(name, type_name, received=n)
        index.append(writer.add_topic(name, type_name, [make_qos("reliable")], stats))
    for log, topic, seq, data in streams:
        writer.write(index[topic], log, log, data, seq)
    writer.close("stopped", ended_ns=streams[-1][0])


@dataclass
class Bucket:
    server: LocalS3Server
    s3: S3Config  # endpoint + credentials file, as an export would be configured
    session: Path  # the local copy
    url: str  # s3://sessions/fleet/x2-sim/<day>/<session>
    key_prefix: str

    def client(self) -> Any:
        return self.server.client()


def _credentials(path: Path, access: str, secret: str) -> Path:
    path.write_text(f"[default]\naws_access_key_id = {access}\naws_secret_access_key = {secret}\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bucket]:
    tmp = tmp_path_factory.mktemp("remote")
    server = LocalS3Server(tmp / "s3", buckets=(BUCKET,)).start()
    try:
        creds = _credentials(tmp / "s3-credentials", server.access_key, server.secret_key)
        data_root = tmp / "data"
        session = data_root / "x2-sim_20251009T090000Z_a1b2c3"
        write_session(session)
        sysfs = tmp / "sys" / "class" / "net" / "wlan0"
        (sysfs / "wireless").mkdir(parents=True)
        (sysfs / "operstate").write_text("up\n")
        cfg = apply_overrides(LoggerConfig(), {
            "data_root": str(data_root),
            "upload.destination": f"s3://{BUCKET}/fleet",
            "upload.s3.endpoint_url": server.endpoint,
            "upload.s3.credentials_file": str(creds),
            "upload.gate.sysfs_root": str(tmp / "sys"),
            "upload.retention.free_disk_reserve": 0,
            "upload.retention.delete_after": None,
        }, "test")
        with Uploader(cfg) as up:
            assert up.run_once() == "verified"
            row = up.queue.session(session.name)
            assert row is not None
            url = remote_url(row.destination, row.remote_prefix)
        s3 = S3Config(endpoint_url=server.endpoint, credentials_file=creds)
        yield Bucket(server, s3, session, url, row.remote_prefix)
    finally:
        server.stop()


def rows(reader_source: Any, start_ns: int | None = None, end_ns: int | None = None) -> list[Row]:
    return [
        (c.topic, m.log_time, m.publish_time, m.sequence, bytes(m.data))
        for _s, c, m in make_reader(reader_source).iter_messages(
            starting_at=start_ns, ending_at=end_ns
        )
    ]


def needed_ranges(path: Path, start_ns: int, end_ns: int) -> tuple[list[tuple[int, int]], int]:
    """(byte ranges of the chunks overlapping [start, end], summary start) of a local file."""
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None and len(summary.chunk_indexes) > 4
        f.seek(-(8 + 20), 2)  # footer body: summary_start u64, summary_offset_start u64, crc
        summary_start = struct.unpack("<Q", f.read(8))[0]
    chunks = [
        (c.chunk_start_offset, c.chunk_start_offset + c.chunk_length)
        for c in summary.chunk_indexes
        if c.message_end_time >= start_ns and c.message_start_time <= end_ns
    ]
    return chunks, summary_start


def covered(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    pos = start
    for a, b in sorted(ranges):
        if a <= pos < b:
            pos = b
        if pos >= end:
            return True
    return pos >= end


def overlap(ranges: list[tuple[int, int]], start: int, end: int) -> int:
    return sum(max(0, min(b, end) - max(a, start)) for a, b in ranges)


# --------------------------------------------------------------------------- reading


def test_uploaded_session_opens_from_its_marker(bucket: Bucket) -> None:
    remote = open_remote_session(bucket.url, bucket.s3)
    local = json.loads((bucket.session / "session.json").read_text())
    assert remote.manifest.session_id == bucket.session.name
    assert [t.task for t in remote.manifest.tasks] == [name for _i, name, _a, _b in EPISODES]
    assert [f.name for f in remote.files] == [f["path"] for f in local["files"]]
    assert remote.sizes == {f["path"]: f["size"] for f in local["files"]}
    assert len(remote.files) == 2  # split at 4 s
    assert remote.topics() == {"/camera/head/image_raw": "sensor_msgs/msg/Image",
                               "/joint_states": "sensor_msgs/msg/JointState"}
    assert remote.total_requests == 2  # the marker and one listing: no MCAP byte yet
    # The same session by its marker's URL, or with a trailing slash.
    assert open_remote_session(bucket.url + "/session.json", bucket.s3).spec == bucket.url
    assert open_remote_session(bucket.url + "/", bucket.s3).spec == bucket.url


@pytest.mark.parametrize("episode", [0, 1, 2])
def test_episode_reads_equal_local_and_fetch_only_the_overlapping_chunks(
    bucket: Bucket, episode: int
) -> None:
    remote = open_remote_session(bucket.url, bucket.s3)
    task = remote.manifest.tasks[episode]
    assert task.end_ns is not None
    start, end = task.start_ns, task.end_ns
    files = [f for f in remote.files if f.overlaps(start, end)]
    assert files, "the episode lies in the session"
    if episode == 1:
        assert len(files) == 2  # 3 s .. 5 s spans the split at 4 s
    total_size = sum(remote.sizes.values())
    fetched_needed = 0
    for entry in files:
        local_path = bucket.session / entry.name
        size = remote.sizes[entry.name]
        with open(local_path, "rb") as f:
            expected = rows(f, start, end)
        obj = remote.open_ranged(entry.name)
        got = rows(obj, start, end)
        assert got == expected and len(got) > 100

        chunks, summary_start = needed_ranges(local_path, start, end)
        # Every overlapping chunk (after its opcode + length, which the reader seeks past)
        # and the whole summary were fetched ...
        for a, b in chunks:
            assert covered(obj.ranges, a + 9, b), f"chunk {a}..{b} not fetched: {obj.ranges}"
        assert covered(obj.ranges, summary_start, size)
        # ... and little else: per file at most the first read-ahead window at the magic
        # and the tail window before the summary (64 KiB), never a chunk that lies outside.
        needed = [*chunks, (summary_start, size), (0, 8)]
        needed_bytes = sum(b - a for a, b in needed)
        extra = obj.bytes_fetched - sum(
            overlap(obj.ranges, a, b) for a, b in needed
        )
        assert extra <= 4 * 1024 + 64 * 1024, (extra, obj.ranges)
        assert obj.bytes_fetched <= needed_bytes + 68 * 1024
        # Few requests: two per chunk (its header fields, then the rest exactly), plus
        # the magic, the tail and a few for the summary.
        assert obj.requests <= 2 * len(chunks) + 6, obj.ranges
        fetched_needed += needed_bytes
    # A small fraction of the session: an episode of 1-2 s out of 8 s.
    assert remote.total_bytes_fetched < 0.4 * total_size
    assert remote.total_bytes_fetched <= fetched_needed + len(files) * 68 * 1024 + 16 * 1024


def test_next_episode_reopening_a_file_fetches_its_summary_once(bucket: Bucket) -> None:
    """The exporter opens and closes a file per episode: the summary is fetched once."""
    remote = open_remote_session(bucket.url, bucket.s3)
    name = remote.files[0].name
    with remote.open(name) as f:
        assert make_reader(f).get_summary() is not None
    first = remote.total_requests
    with remote.open(name) as f:
        summary = make_reader(f).get_summary()
    assert summary is not None and remote.total_requests == first
    assert remote.opened[0].closed and remote.opened[1].closed


def test_session_from_the_environment_alone(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `xsq export lerobot OUT s3://...` and its pool workers do: endpoint and
    credentials from the AWS_* environment, no config."""
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in bucket.server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bucket.server.endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    source: SessionSource = open_session(bucket.url)
    task = source.manifest.tasks[0]
    assert task.end_ns is not None
    topics = ["/joint_states", "/camera/head/image_raw"]
    got = list(iter_messages(source, topics, task.start_ns, task.end_ns))
    local = list(iter_messages(LocalSession(bucket.session), topics, task.start_ns, task.end_ns))
    assert got == local and len(got) == 200 + 30  # 1 s of joints at 200 Hz, camera at 30 Hz


def test_ranged_object_reads_like_a_local_file(bucket: Bucket) -> None:
    """Random seeks and reads of every size (across block edges, past EOF) match the file."""
    name = open_remote_session(bucket.url, bucket.s3).files[1].name
    data = (bucket.session / name).read_bytes()
    backend = S3Backend(f"s3://{BUCKET}", bucket.s3)
    obj = RangedObject(backend, f"{bucket.key_prefix}/{name}",  # size by HEAD
                       readahead=4096, max_readahead=32768, tail=8192,
                       cache=BlockCache(65536))
    assert obj.size == len(data) and obj.seekable() and obj.readable()
    rng = random.Random(5)
    for _ in range(300):
        pos = rng.choice([rng.randrange(len(data)), len(data) - rng.randrange(64),
                          rng.randrange(0, 64), obj.tell()])
        n = rng.choice([1, 4, 8, 100, 5000, 70000, -1 if rng.random() < 0.02 else 17])
        assert obj.seek(pos) == pos
        want = data[pos:] if n < 0 else data[pos : pos + n]
        assert obj.read(n) == want
        assert obj.tell() == pos + len(want)
    obj.seek(-10, 2)
    buf = bytearray(32)
    assert obj.readinto(buf) == 10 and bytes(buf[:10]) == data[-10:]
    assert obj.read(5) == b""
    with pytest.raises(ValueError):
        obj.seek(-1)
    obj.close()
    with pytest.raises(ValueError):
        obj.read(1)


# --------------------------------------------------------------------------- refusals


def _copy_session(bucket: Bucket, dest_prefix: str, skip: set[str]) -> str:
    """Server-side copy of the uploaded session to another prefix, leaving out ``skip``."""
    c = bucket.client()
    for obj in c.list_objects_v2(Bucket=BUCKET, Prefix=bucket.key_prefix + "/")["Contents"]:
        name = obj["Key"].rsplit("/", 1)[1]
        if name not in skip:
            c.copy_object(Bucket=BUCKET, Key=f"{dest_prefix}/{name}",
                          CopySource={"Bucket": BUCKET, "Key": obj["Key"]})
    return f"s3://{BUCKET}/{dest_prefix}"


def _one_line(exc: BaseException, *absent: str) -> str:
    text = str(exc)
    assert isinstance(exc, XsqError) and text and "\n" not in text
    for secret in absent:
        assert secret not in text
    return text


def test_missing_session_is_one_line(bucket: Bucket) -> None:
    url = bucket.url.rsplit("/", 1)[0] + "/x2-sim_20251009T090000Z_ffffff"
    with pytest.raises(RemoteSessionError) as exc:
        open_remote_session(url, bucket.s3)
    assert _one_line(exc.value) == f"{url}: no such session (nothing stored there)"


def test_session_without_marker_is_refused_as_not_committed(bucket: Bucket) -> None:
    url = _copy_session(bucket, "partial/x2-sim/s1", {"session.json"})
    with pytest.raises(RemoteSessionError) as exc:
        open_remote_session(url, bucket.s3)
    assert _one_line(exc.value).startswith(f"{url}: not committed: no session.json")


def test_marker_without_a_file_is_refused_as_incomplete(bucket: Bucket) -> None:
    last = json.loads((bucket.session / "session.json").read_text())["files"][-1]["path"]
    url = _copy_session(bucket, "torn/x2-sim/s2", {last})
    with pytest.raises(RemoteSessionError) as exc:
        open_remote_session(url, bucket.s3)
    assert _one_line(exc.value) == (
        f"{url}: incomplete: {last} listed in session.json but not in the bucket"
    )


def test_changed_object_is_refused_on_first_read(bucket: Bucket) -> None:
    first = json.loads((bucket.session / "session.json").read_text())["files"][0]["path"]
    url = _copy_session(bucket, "changed/x2-sim/s3", set())
    bucket.client().put_object(Bucket=BUCKET, Key=f"changed/x2-sim/s3/{first}",
                               Body=(bucket.session / first).read_bytes()[:-100])
    remote = open_remote_session(url, bucket.s3)
    with pytest.raises(RemoteSessionError) as exc:
        make_reader(remote.open(first))  # the magic's GET reveals the size
    size = (bucket.session / first).stat().st_size
    assert f"holds {size - 100} bytes, expected {size}" in _one_line(exc.value)


def test_wrong_credentials_are_one_line_without_the_secret(bucket: Bucket, tmp_path: Path) -> None:
    wrong = "not-the-secret-" + "x" * 20
    creds = _credentials(tmp_path / "wrong", bucket.server.access_key, wrong)
    with pytest.raises(PermanentError) as exc:
        open_remote_session(bucket.url, S3Config(endpoint_url=bucket.s3.endpoint_url,
                                                 credentials_file=creds))
    text = _one_line(exc.value, wrong, bucket.server.secret_key)
    assert "wrong credentials" in text and "session.json" in text


def test_missing_bucket_is_one_line(bucket: Bucket) -> None:
    with pytest.raises(PermanentError) as exc:
        open_remote_session("s3://no-such-bucket/fleet/x2-sim/s", bucket.s3)
    assert "the bucket does not exist" in _one_line(exc.value, bucket.server.secret_key)


def test_dead_endpoint_is_one_line(bucket: Bucket) -> None:
    dead = S3Config(endpoint_url=f"http://127.0.0.1:{free_port()}",
                    credentials_file=bucket.s3.credentials_file, connect_timeout=1)
    with pytest.raises(TransientError) as exc:
        open_remote_session(bucket.url, dead)
    assert dead.endpoint_url in _one_line(exc.value)


@pytest.mark.parametrize("url", ["/data/session", "s3://sessions", "s3://sessions/"])
def test_url_that_names_no_session_is_refused(url: str) -> None:
    with pytest.raises(RemoteSessionError) as exc:
        open_remote_session(url)
    assert _one_line(exc.value).startswith(url)
