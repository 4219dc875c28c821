"""The floor catalog (SQLAlchemy 2 + Alembic): robots, tokens, status, sessions, episodes.

Needs the ``floor`` extra (``pip install xsquare_logger[floor]``); a robot never imports it.
"""

from xsquare_logger.floor.catalog.core import Catalog, Principal
from xsquare_logger.floor.catalog.db import CatalogError
from xsquare_logger.floor.catalog.query import EpisodeFilter, parse_time_ns

__all__ = ["Catalog", "CatalogError", "EpisodeFilter", "Principal", "parse_time_ns"]
