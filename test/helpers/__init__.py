"""Test helpers: processes that publish known messages over real rclpy."""
