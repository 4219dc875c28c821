"""Robot side of the tablet link: protocol v1, visit state machine, CURVE server, keys."""
