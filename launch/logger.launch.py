"""Start the xsquare_logger robot stack as separate nodes.

ros2 launch xsquare_logger logger.launch.py [config:=/path/to/robot.yaml]
    [bridge:=true] [uploader:=true] [record:=false]

record:=false (default): recorder (idle until a visit: xsq node recorder), tablet
bridge (xsq node bridge) and uploader (xsq node uploader) as three processes; a
crash of the bridge or the uploader never stops a recording, and each is respawned.
record:=true: one `xsq record` session at once instead (no bridge, no uploader).
`xsq run` is the same stack in one process. docs/ros-interface.md.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(
        get_package_share_directory("xsquare_logger"), "config", "robot.yaml"
    )
    config = LaunchConfiguration("config")
    record = LaunchConfiguration("record")
    args = [
        DeclareLaunchArgument("config", default_value=default_config,
                              description="Robot configuration file (YAML)"),
        DeclareLaunchArgument("bridge", default_value="true",
                              description="Start the tablet bridge node"),
        DeclareLaunchArgument("uploader", default_value="true",
                              description="Start the uploader node"),
        DeclareLaunchArgument("record", default_value="false",
                              description="Record one session at once (xsq record) instead"),
    ]
    common = {"output": "screen", "emulate_tty": True, "respawn": True, "respawn_delay": 2.0}
    recorder = Node(
        package="xsquare_logger", executable="xsq-recorder-node", name="xsq_recorder",
        arguments=["--config", config], condition=UnlessCondition(record), **common,
    )
    bridge = Node(
        package="xsquare_logger", executable="xsq-bridge", name="xsq_bridge",
        arguments=["--config", config],
        condition=IfCondition(PythonExpression(
            ["'", LaunchConfiguration("bridge"), "' == 'true' and '", record, "' != 'true'"]
        )),
        **common,
    )
    uploader = Node(
        package="xsquare_logger", executable="xsq-uploader-node", name="xsq_uploader",
        arguments=["--config", config],
        condition=IfCondition(PythonExpression(
            ["'", LaunchConfiguration("uploader"), "' == 'true' and '", record, "' != 'true'"]
        )),
        **common,
    )
    single = Node(
        package="xsquare_logger", executable="xsq-recorder", name="xsq_recorder",
        arguments=["--config", config], condition=IfCondition(record), **common,
    )
    return LaunchDescription([*args, recorder, bridge, uploader, single])
