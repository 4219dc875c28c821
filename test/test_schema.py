"""ros2msg schema text built from installed .msg files, decoded by mcap_ros2."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import WrenchStamped
from mcap.reader import make_reader
from mcap_ros2._dynamic import serialize_dynamic
from mcap_ros2.decoder import DecoderFactory
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from xsquare_logger.bag import schema as schema_mod
from xsquare_logger.bag.mcap_writer import McapWriter
from xsquare_logger.bag.schema import (
    SchemaNotFoundError,
    normalize_type_name,
    ros2msg_schema,
    type_description_hash,
)

SEP = "\n" + "=" * 80 + "\n"
SHARE = Path(sys.prefix, "share")


def msg_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("MSG: ")]


def decode_via_mcap(tmp_path: Path, type_name: str, schema: bytes, cdr: bytes) -> object:
    """Write one message with our writer and decode it with mcap_ros2's decoder."""
    path = tmp_path / f"{type_name.replace('/', '_')}.mcap"
    with McapWriter(path) as w:
        sid = w.register_schema(type_name, "ros2msg", schema)
        cid = w.register_channel("/t", "cdr", sid)
        w.add_message(cid, 1, 1, cdr)
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        [(_s, _c, _m, decoded)] = list(reader.iter_decoded_messages())
    return decoded


def test_image_schema_matches_rosbag2_layout() -> None:
    text = ros2msg_schema("sensor_msgs/msg/Image").decode()
    image_msg = (SHARE / "sensor_msgs/msg/Image.msg").read_text()
    header_msg = (SHARE / "std_msgs/msg/Header.msg").read_text()
    time_msg = (SHARE / "builtin_interfaces/msg/Time.msg").read_text()
    # Exactly what rosbag2's LocalMessageDefinitionSource produces: file texts verbatim,
    # dependencies named as referenced (no /msg/), depth first.
    assert text == (
        image_msg
        + SEP
        + "MSG: std_msgs/Header\n"
        + header_msg
        + SEP
        + "MSG: builtin_interfaces/Time\n"
        + time_msg
    )
    assert ros2msg_schema("sensor_msgs/Image") == text.encode()


def test_dependencies_sorted_and_not_repeated() -> None:
    text = ros2msg_schema("geometry_msgs/msg/WrenchStamped").decode()
    assert msg_lines(text) == [
        "MSG: geometry_msgs/Wrench",
        "MSG: geometry_msgs/Vector3",
        "MSG: std_msgs/Header",
        "MSG: builtin_interfaces/Time",
    ]
    # A type referenced without package belongs to the referencing package.
    assert "MSG: sensor_msgs/RegionOfInterest" in msg_lines(
        ros2msg_schema("sensor_msgs/msg/CameraInfo").decode()
    )


def test_image_decodes_with_mcap_ros2(tmp_path: Path) -> None:
    msg = Image()
    msg.header.stamp = Time(sec=12, nanosec=34)
    msg.header.frame_id = "cam"
    msg.height, msg.width, msg.encoding, msg.step = 2, 3, "rgb8", 9
    msg.data = bytes(range(18))
    decoded = decode_via_mcap(
        tmp_path,
        "sensor_msgs/msg/Image",
        ros2msg_schema("sensor_msgs/msg/Image"),
        serialize_message(msg),
    )
    assert decoded.header.stamp.sec == 12 and decoded.header.stamp.nanosec == 34
    assert decoded.header.frame_id == "cam"
    assert (decoded.height, decoded.width, decoded.encoding, decoded.step) == (2, 3, "rgb8", 9)
    assert bytes(decoded.data) == bytes(range(18))


def test_wrench_stamped_decodes_with_mcap_ros2(tmp_path: Path) -> None:
    msg = WrenchStamped()
    msg.header.frame_id = "left_wrist_ft"
    msg.wrench.force.x, msg.wrench.force.y, msg.wrench.force.z = 1.5, -2.0, 9.81
    msg.wrench.torque.z = 0.25
    decoded = decode_via_mcap(
        tmp_path,
        "geometry_msgs/msg/WrenchStamped",
        ros2msg_schema("geometry_msgs/msg/WrenchStamped"),
        serialize_message(msg),
    )
    assert decoded.header.frame_id == "left_wrist_ft"
    force = decoded.wrench.force
    assert (force.x, force.y, force.z) == (1.5, -2.0, 9.81)
    assert decoded.wrench.torque.z == 0.25


@pytest.fixture
def custom_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An install prefix with a custom interface package, found through AMENT_PREFIX_PATH."""
    prefix = tmp_path / "install"
    msg_dir = prefix / "share" / "demo_msgs" / "msg"
    msg_dir.mkdir(parents=True)
    (msg_dir / "Thing.msg").write_text(
        "# A thing with parts\n"
        "int32 FOO=3\n"
        "std_msgs/Header header\n"
        "Part[] parts  # same-package type, no package prefix\n"
        "geometry_msgs/Vector3 offset\n"
        "float64[3] xyz\n"
        "string<=8 label\n"
    )
    (msg_dir / "Part.msg").write_text("float32 weight\nbuiltin_interfaces/Time seen\n")
    (msg_dir / "Broken.msg").write_text("demo_msgs/Missing m\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", f"{prefix}:/nonexistent/prefix")
    return prefix


def test_custom_package_from_ament_prefix_path(tmp_path: Path, custom_prefix: Path) -> None:
    text = ros2msg_schema("demo_msgs/msg/Thing").decode()
    assert text.startswith("# A thing with parts\n")
    assert msg_lines(text) == [
        "MSG: demo_msgs/Part",
        "MSG: builtin_interfaces/Time",
        "MSG: geometry_msgs/Vector3",
        "MSG: std_msgs/Header",  # its Time dependency is not repeated
    ]
    # Encode with mcap_ros2's own encoder, then decode what our file holds.
    encode = serialize_dynamic("demo_msgs/msg/Thing", text)["demo_msgs/msg/Thing"]
    cdr = encode(
        {
            "header": {"stamp": {"sec": 5, "nanosec": 6}, "frame_id": "base"},
            "parts": [{"weight": 1.5, "seen": {"sec": 1, "nanosec": 2}}],
            "offset": {"x": 1.0, "y": 2.0, "z": 3.0},
            "xyz": [4.0, 5.0, 6.0],
            "label": "abc",
        }
    )
    decoded = decode_via_mcap(tmp_path, "demo_msgs/msg/Thing", text.encode(), cdr)
    assert decoded.header.frame_id == "base"
    assert decoded.parts[0].weight == 1.5 and decoded.parts[0].seen.nanosec == 2
    assert decoded.offset.z == 3.0 and list(decoded.xyz) == [4.0, 5.0, 6.0]
    assert decoded.label == "abc"


def test_not_found_names_type_and_paths(custom_prefix: Path) -> None:
    with pytest.raises(SchemaNotFoundError) as info:
        ros2msg_schema("nope_msgs/msg/Nothing")
    message = str(info.value)
    assert "'nope_msgs/msg/Nothing'" in message
    assert "share/nope_msgs/msg/Nothing.msg" in message
    assert str(custom_prefix) in message and "/nonexistent/prefix" in message
    assert sys.prefix in message
    assert info.value.type_name == "nope_msgs/msg/Nothing"

    # A missing dependency names the dependency and what needed it.
    with pytest.raises(SchemaNotFoundError, match=r"'demo_msgs/Missing' \(needed by "):
        ros2msg_schema("demo_msgs/msg/Broken")


def test_bad_type_name() -> None:
    with pytest.raises(ValueError, match="not a ROS message type name"):
        ros2msg_schema("Image")
    assert normalize_type_name("std_msgs/String") == "std_msgs/msg/String"


def test_results_are_cached() -> None:
    first = ros2msg_schema("sensor_msgs/msg/JointState")
    assert ros2msg_schema("sensor_msgs/msg/JointState") is first
    assert schema_mod._schema.cache_info().hits >= 1


def test_type_description_hash() -> None:
    expected = json.loads((SHARE / "sensor_msgs/msg/Image.json").read_text())["type_hashes"][0]
    assert expected["type_name"] == "sensor_msgs/msg/Image"
    got = type_description_hash("sensor_msgs/msg/Image")
    assert got == expected["hash_string"]
    assert re.fullmatch(r"RIHS01_[0-9a-f]{64}", got or "")
    assert type_description_hash("sensor_msgs/Image") == got
    assert type_description_hash("nope_msgs/msg/Nothing") is None


def test_rosbags_typesys_parses_the_schema() -> None:
    """rosbags (a second, independent ros2msg parser) accepts the text and decodes with it."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    types = get_types_from_msg(
        ros2msg_schema("geometry_msgs/msg/WrenchStamped").decode(),
        "geometry_msgs/msg/WrenchStamped",
    )
    assert set(types) >= {"geometry_msgs/msg/Wrench", "std_msgs/msg/Header"}
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    msg = WrenchStamped()
    msg.header.frame_id = "ft"
    msg.wrench.torque.y = -3.5
    decoded = store.deserialize_cdr(serialize_message(msg), "geometry_msgs/msg/WrenchStamped")
    assert decoded.header.frame_id == "ft" and decoded.wrench.torque.y == -3.5
