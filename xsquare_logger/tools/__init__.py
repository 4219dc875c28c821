"""Engineer tools on finished sessions: `xsq tasks`, `xsq clip`, `xsq report`.

Each tool is plain Python over a session directory (metadata.yaml, session.json,
MCAP files); :mod:`xsquare_logger.cli.tools` adapts them to the ``xsq`` command.
"""

from __future__ import annotations

from xsquare_logger.errors import XsqError

__all__ = ["ToolError"]


class ToolError(XsqError):
    """A session tool cannot do what was asked; the message names the problem and the path."""
