"""Thin rclpy adapters and the composition root: recorder node, robot stack (xsq run), sim node."""
