"""`xsq export lerobot`: tagged episodes of finished sessions as a LeRobot v3 dataset.

``mapping`` (which topic becomes which feature), ``source`` (reading a session's MCAP
files through seekable file objects), ``messages`` (the few CDR layouts read), ``align``
(frame grid and sampling, pure numpy), ``video`` (remux / encode with PyAV), ``episode``
(the per-episode function), ``dataset`` (the v3 writer: staging and commit), ``run``
(filters, process pool, progress, summary). See docs/export.md.
"""

from __future__ import annotations

from xsquare_logger.errors import XsqError

__all__ = ["ExportError"]


class ExportError(XsqError):
    """The export cannot go on; the message names the session, file or field."""
