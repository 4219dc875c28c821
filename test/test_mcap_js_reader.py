"""A recorded session read by @mcap/core, the TypeScript MCAP library Foxglove and Lichtblick
use: raw camera chunks stored uncompressed, joint-state chunks zstd, no data-section CRC.

The reader (test/js/read_mcap.mjs) is installed by ``make setup`` when npm is available
(``npm ci --prefix test/js``); without Node or those modules this test skips and says why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rclpy.serialization import serialize_message
from support import known

from xsquare_logger.bag.qos import make_qos
from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.recording.recorder import Recorder

JS = Path(__file__).parent / "js"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Debian: apt-get install nodejs)")
    if not (JS / "node_modules" / "@mcap" / "core").is_dir():
        pytest.skip("test/js readers not installed (make setup runs npm ci --prefix test/js)")
    return node


def _info(seq: int, t: int) -> dict:
    return {
        "source_timestamp": t,
        "received_timestamp": t + 500,
        "publication_sequence_number": seq,
        "reception_sequence_number": None,
        "publisher_gid": {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"A" * 16},
    }


def test_foxglove_mcap_library_reads_a_raw_camera_session(tmp_path: Path) -> None:
    node = _node()
    cfg = apply_overrides(
        LoggerConfig(),
        {"recording.disk_reserve_bytes": 0, "recording.chunk_size": 4 * 1024 * 1024},
        "test",
    )
    rec = Recorder(cfg, tmp_path / "s", "s")
    image_type, joint_type = "sensor_msgs/msg/Image", "sensor_msgs/msg/JointState"
    image_cb = rec.add_topic(known.IMAGE_TOPIC, image_type, [make_qos("best_effort")])
    joint_cb = rec.add_topic(known.JOINT_TOPIC, joint_type, [make_qos("reliable")])
    rec.start()
    frames = [serialize_message(known.image(i, 1280, 720)) for i in range(6)]  # noise: stored
    joints = [serialize_message(known.joint_state(i)) for i in range(600)]  # compresses well
    t = 1_000_000_000
    for i, cdr in enumerate(joints):
        joint_cb(cdr, _info(i + 1, t + i * 2_000_000))
        if i % 100 == 0:
            image_cb(frames[i // 100], _info(i // 100 + 1, t + i * 2_000_000 + 1))
    manifest = rec.stop()
    assert manifest.drops["total"] == 0
    files = sorted((tmp_path / "s").glob("*.mcap"))
    run = subprocess.run(
        [node, str(JS / "read_mcap.mjs"), *map(str, files)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    docs = [json.loads(line) for line in run.stdout.splitlines()]
    got: dict[str, dict] = {}
    chunks: list[str] = []
    for doc in docs:
        assert doc["stream_done"] and doc["stream_records"] > 0  # every CRC checked
        chunks += doc["chunks"]
        got.update(doc["topics"])
    for topic, sent in ((known.IMAGE_TOPIC, frames), (known.JOINT_TOPIC, joints)):
        assert got[topic]["count"] == len(sent), topic
        assert got[topic]["sha256"] == hashlib.sha256(b"".join(sent)).hexdigest(), topic
    # Both storage kinds were read: raw frames plainly, joint states compressed.
    assert "" in chunks and "zstd" in chunks, chunks
