"""Alembic environment of the floor catalog, run in-process by ``db.upgrade``.

The connection comes from ``config.attributes["connection"]``: there is no
alembic.ini and no URL on disk (a PostgreSQL password must not land in a file).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from xsquare_logger.floor.catalog.models import Base

# Any constant: replicas starting at once take turns migrating instead of racing.
_PG_LOCK = 0x58535146  # "XSQF"

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
)
if connection.dialect.name == "postgresql":
    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
with context.begin_transaction():
    context.run_migrations()
