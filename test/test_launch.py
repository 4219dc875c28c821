"""Launch test of launch/logger.launch.py.

Runs only where a full ROS 2 install provides launch_pytest, launch and launch_ros
(they are not on PyPI), with xsquare_logger installed by colcon so that
`get_package_share_directory("xsquare_logger")` and the `xsq-recorder` executable
resolve. Elsewhere it is skipped.
"""

import os
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is only available in a full ROS 2 install (not on PyPI)"
)
launch = pytest.importorskip("launch", reason="launch is only available in a full ROS 2 install")
pytest.importorskip("launch_ros", reason="launch_ros is only available in a full ROS 2 install")

import rclpy  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "logger.launch.py"

# Keep the launched recorder and this test on the loopback, in a domain of their own.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", "69")


@launch_pytest.fixture
def logger_launch():
    return launch.LaunchDescription(
        [
            IncludeLaunchDescription(PythonLaunchDescriptionSource(str(LAUNCH_FILE))),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


@pytest.mark.launch(fixture=logger_launch)
def test_recorder_bridge_and_uploader_nodes_appear():
    """The three separate nodes, and the recorder's session services."""
    rclpy.init()
    try:
        node = rclpy.create_node("xsq_launch_nodes_test")
        wanted = {"xsq_recorder", "xsq_bridge", "xsq_uploader"}
        names: set[str] = set()
        services: set[str] = set()
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not (
            wanted <= names and "/xsq_recorder/start_session" in services
        ):
            rclpy.spin_once(node, timeout_sec=0.2)
            names = {name for name, _ns in node.get_node_names_and_namespaces()}
            services = {name for name, _types in node.get_service_names_and_types()}
        assert wanted <= names, f"nodes seen: {sorted(names)}"
        assert {"/xsq_recorder/start_session", "/xsq_recorder/split_bagfile",
                "/xsq_recorder/pause", "/xsq_recorder/resume"} <= services
        node.destroy_node()
    finally:
        rclpy.shutdown()


@pytest.mark.launch(fixture=logger_launch)
def test_recorder_node_appears():
    rclpy.init()
    try:
        node = rclpy.create_node("xsq_launch_test")
        found: list[str] = []
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not found:
            rclpy.spin_once(node, timeout_sec=0.2)
            found = [
                f"{ns.rstrip('/')}/{name}"
                for name, ns in node.get_node_names_and_namespaces()
                if "recorder" in name
            ]
        assert found, (
            f"no recorder node appeared; nodes seen: {node.get_node_names_and_namespaces()}"
        )
        node.destroy_node()
    finally:
        rclpy.shutdown()
