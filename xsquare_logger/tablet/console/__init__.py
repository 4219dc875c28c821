"""Operator console: a local web page on the tablet that drives the robot over ZeroMQ.

``xsq tablet console --robot HOST`` serves ``static/`` and a small JSON API on
127.0.0.1; the page never talks to the robot itself, the console process does,
through one :class:`~xsquare_logger.tablet.client.TabletClient` (CURVE) and one
status subscriber. Nothing is fetched from the internet.
"""

from __future__ import annotations

from xsquare_logger.tablet.console.server import ConsoleBackend, ConsoleServer, run_console

__all__ = ["ConsoleBackend", "ConsoleServer", "run_console"]
