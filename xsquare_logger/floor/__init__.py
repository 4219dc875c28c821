"""The training-center floor: the robot reporter, the floor service, its catalog and dashboard."""
