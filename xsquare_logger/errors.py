"""The one exception root of xsquare_logger.

Every error a user can cause (bad config, unreadable session, busy port, missing
key, refused credentials...) derives from :class:`XsqError`, so the command line
reports any of them as one clear line with exit code 2 and no traceback. Bugs
stay ordinary exceptions and keep their traceback.
"""

from __future__ import annotations

__all__ = ["XsqError", "one_line"]


class XsqError(Exception):
    """An error the user can act on; ``str(exc)`` is the one-line message."""


def one_line(exc: BaseException) -> str:
    """``str(exc)`` on one line: parsers (YAML, pydantic) put line/column marks on extra lines."""
    return " ".join(str(exc).split())
