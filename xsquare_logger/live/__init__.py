"""Live view: a Foxglove WebSocket server on the robot fed by the recorder."""
