"""Operator tablet link: protocol, visit state machine, ZeroMQ bridge, client, console."""
