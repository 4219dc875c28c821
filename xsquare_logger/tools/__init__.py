"""Engineer tools on finished sessions: `xsq tasks`, `xsq clip`, `xsq report`.

Each tool is plain Python over a session directory (metadata.yaml, session.json,
MCAP files); :mod:`xsquare_logger.cli.tools` adapts them to the ``xsq`` command.
"""

from __future__ import annotations

__all__ = ["ToolError"]


class ToolError(Exception):
    """A session tool cannot do what was asked; the message names the problem and the path."""
