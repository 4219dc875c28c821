"""The floor catalog (SQLAlchemy 2 + Alembic): robots, tokens, status, sessions, episodes.

Needs the ``floor`` extra (``pip install xsquare_logger[floor]``); a robot never imports it.
"""

import logging

# Alembic logs each plugin it loads, at import, at INFO: quiet it before the import.
logging.getLogger("alembic").setLevel(logging.WARNING)

from xsquare_logger.floor.catalog.core import Catalog, Principal  # noqa: E402
from xsquare_logger.floor.catalog.db import (  # noqa: E402
    CatalogConflict,
    CatalogError,
    CatalogUnavailable,
    SessionIdRefused,
)
from xsquare_logger.floor.catalog.query import EpisodeFilter, parse_time_ns  # noqa: E402

__all__ = [
    "Catalog",
    "CatalogConflict",
    "CatalogError",
    "CatalogUnavailable", "EpisodeFilter", "Principal", "SessionIdRefused", "parse_time_ns",
]
