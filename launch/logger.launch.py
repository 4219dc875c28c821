"""Start the xsquare_logger recorder node.

ros2 launch xsquare_logger logger.launch.py [config:=/path/to/robot.yaml]
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(
        get_package_share_directory("xsquare_logger"), "config", "robot.yaml"
    )
    config = DeclareLaunchArgument(
        "config",
        default_value=default_config,
        description="Recorder configuration file (YAML)",
    )
    recorder = Node(
        package="xsquare_logger",
        executable="xsq-recorder",
        arguments=["--config", LaunchConfiguration("config")],
        output="screen",
        emulate_tty=True,
        respawn=True,
        respawn_delay=2.0,
    )
    return LaunchDescription([config, recorder])
