"""rosbag2 ``metadata.yaml`` (version 9), so `ros2 bag`, rosbags and Foxglove open sessions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xsquare_logger.bag.qos import QosDict
from xsquare_logger.session.fsutil import atomic_write

__all__ = ["METADATA_NAME", "BagFile", "BagTopic", "build_metadata", "write_metadata_yaml"]

METADATA_NAME = "metadata.yaml"
ROS_DISTRO = "kilted"


@dataclass
class BagTopic:
    name: str
    type: str
    type_description_hash: str
    offered_qos_profiles: list[QosDict]
    message_count: int = 0


@dataclass
class BagFile:
    path: str
    starting_time_ns: int
    duration_ns: int
    message_count: int


@dataclass
class BagSummary:
    topics: list[BagTopic]
    files: list[BagFile]
    custom_data: dict[str, str] = field(default_factory=dict)


def build_metadata(
    topics: list[BagTopic], files: list[BagFile], custom_data: dict[str, str]
) -> dict[str, Any]:
    """The ``rosbag2_bagfile_information`` document for the given files and topics."""
    starts = [f.starting_time_ns for f in files if f.message_count]
    ends = [f.starting_time_ns + f.duration_ns for f in files if f.message_count]
    start = min(starts) if starts else 0
    duration = (max(ends) - start) if ends else 0
    return {
        "rosbag2_bagfile_information": {
            "version": 9,
            "storage_identifier": "mcap",
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(f.message_count for f in files),
            "topics_with_message_count": [
                {
                    "topic_metadata": {
                        "name": t.name,
                        "type": t.type,
                        "serialization_format": "cdr",
                        "offered_qos_profiles": t.offered_qos_profiles,
                        "type_description_hash": t.type_description_hash,
                    },
                    "message_count": t.message_count,
                }
                for t in topics
            ],
            # MCAP chunk compression is internal to the storage plugin; rosbag2's
            # own file/message compression is not used, as with `ros2 bag record
            # --storage mcap --storage-preset-profile zstd_fast`.
            "compression_format": "",
            "compression_mode": "",
            "relative_file_paths": [f.path for f in files],
            "files": [
                {
                    "path": f.path,
                    "starting_time": {"nanoseconds_since_epoch": f.starting_time_ns},
                    "duration": {"nanoseconds": f.duration_ns},
                    "message_count": f.message_count,
                }
                for f in files
            ],
            "custom_data": dict(custom_data) or None,
            "ros_distro": ROS_DISTRO,
        }
    }


def metadata_text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def write_metadata_yaml(directory: Path, doc: dict[str, Any]) -> Path:
    """Atomically write ``metadata.yaml`` (a half-written file would hide the whole bag)."""
    return atomic_write(directory / METADATA_NAME, metadata_text(doc))


def read_metadata_yaml(directory: Path) -> dict[str, Any]:
    with open(directory / METADATA_NAME, encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    return dict(doc["rosbag2_bagfile_information"])
