"""The one exception root of xsquare_logger.

Every error a user can cause (bad config, unreadable session, busy port, missing
key, refused credentials...) derives from :class:`XsqError`, so the command line
reports any of them as one clear line with exit code 2 and no traceback. Bugs
stay ordinary exceptions and keep their traceback.
"""

from __future__ import annotations

__all__ = ["XsqError"]


class XsqError(Exception):
    """An error the user can act on; ``str(exc)`` is the one-line message."""
