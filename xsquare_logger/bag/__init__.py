"""MCAP and rosbag2 files only: streaming writer, recovery, ros2msg schemas, QoS profiles."""
