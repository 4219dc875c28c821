"""Embedded ``ros2msg`` schema text for message types no installed package defines.

``foxglove_msgs`` is not among the PyPI ROS wheels, yet a bag with H.264 topics must describe
``foxglove_msgs/msg/CompressedVideo`` itself so Foxglove, ``mcap_ros2`` and ``rosbags`` decode
it. The text follows the layout ``xsquare_logger.bag.schema.ros2msg_schema`` produces (the
rosbag2 layout): the type's definition, then per dependency a newline, a line of 80 ``=``, a
``MSG: pkg/Type`` line and the dependency's definition.

The fields and their order are those of Foxglove's ROS 2 ``CompressedVideo.msg``
(github.com/foxglove/schemas, ``ros_foxglove_msgs/ros2``); the comments are ours. Only the
field lines matter to a decoder, so comments may differ from an installed ``foxglove_msgs``.
"""

from __future__ import annotations

__all__ = ["COMPRESSED_VIDEO", "EMBEDDED_SCHEMAS", "embedded_schema"]

COMPRESSED_VIDEO = "foxglove_msgs/msg/CompressedVideo"

_DELIMITER = "=" * 80 + "\n"

_COMPRESSED_VIDEO_MSG = """\
# One frame of a compressed video bitstream (Foxglove's CompressedVideo schema).
# https://docs.foxglove.dev/docs/sdk/schemas/compressed-video

# Time of the frame: the header.stamp of the camera image it was encoded from.
builtin_interfaces/Time timestamp

# Frame of reference: the camera's optical frame (the source image's header.frame_id).
string frame_id

# The bytes of exactly one frame. For format h264: Annex B NAL units (start codes), no
# B-frames, and every keyframe (IDR) message also carries the SPS and PPS.
uint8[] data

# Codec: h264, h265, vp9 or av1.
string format
"""

_TIME_MSG = """\
# A point in time: seconds and nanoseconds (ROS time).

# Seconds; any int32 value.
int32 sec

# Nanoseconds added to sec, in [0, 1e9).
uint32 nanosec
"""


def _with_dependencies(text: str, deps: list[tuple[str, str]]) -> bytes:
    parts = [text]
    for name, dep_text in deps:
        parts.append(f"\n{_DELIMITER}MSG: {name}\n")
        parts.append(dep_text)
    return "".join(parts).encode("utf-8")


EMBEDDED_SCHEMAS: dict[str, bytes] = {
    COMPRESSED_VIDEO: _with_dependencies(
        _COMPRESSED_VIDEO_MSG, [("builtin_interfaces/Time", _TIME_MSG)]
    ),
}
"""``ros2msg`` schema data by canonical type name (``pkg/msg/Type``)."""


def embedded_schema(type_name: str) -> bytes | None:
    """The embedded schema of ``type_name`` (``pkg/msg/Type`` or ``pkg/Type``), or None."""
    parts = type_name.split("/")
    if len(parts) == 2:
        type_name = f"{parts[0]}/msg/{parts[1]}"
    return EMBEDDED_SCHEMAS.get(type_name)
