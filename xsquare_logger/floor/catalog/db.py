"""Opening the catalog database and bringing its schema up to date (Alembic, in code).

``sqlite:///PATH`` (WAL, so readers never block the writer) or ``postgresql://...``
(psycopg 3). ``upgrade`` runs every migration not yet applied, inside a transaction:
an upgrade adds to the catalog and never drops it.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from xsquare_logger.errors import XsqError

__all__ = [
    "HEAD",
    "CatalogConflict",
    "CatalogError",
    "CatalogUnavailable",
    "SessionIdRefused",
    "open_engine",
    "open_fast_engine",
    "parse_url",
    "safe_url",
    "upgrade",
]

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)
HEAD = "0002"
#: Connections each service process keeps to PostgreSQL (docs/floor.md, Replicas).
PG_POOL = 20
#: ... plus these for token checks and heartbeats (open_fast_engine).
PG_FAST_POOL = 10  # the newest migration (test_floor_catalog checks it is the head)


class CatalogError(XsqError):
    """A request the catalog refuses (bad value, bad URL); the API answers 422."""


class CatalogUnavailable(CatalogError):
    """The database does not answer or cannot be opened (API: 503)."""


class CatalogConflict(CatalogError):
    """The request contradicts what is catalogued (API: 409)."""


class SessionIdRefused(CatalogError):
    """A session id outside its robot's namespace (``protocol.session_id_prefix``); API: 422."""


def parse_url(url: str) -> URL:
    """Check and normalize a database URL; ``postgresql://`` means psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CatalogError(
            f"database URL {url!r} is not a URL (sqlite:///PATH or postgresql://HOST/DB)"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgresql":
        if driver not in ("", "psycopg"):
            raise CatalogError(f"database URL driver {driver!r}: only psycopg (3) is supported")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise CatalogError("a SQLite catalog needs a file: sqlite:///PATH")
        return parsed
    raise CatalogError(
        f"database URL {safe_url(parsed)!r}: unsupported database {backend!r} "
        "(use sqlite:///PATH or postgresql://...)"
    )


def safe_url(url: URL) -> str:
    """The URL for messages: never with its password."""
    return url.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at each checkpoint
    cur.close()


def open_engine(url: str) -> Engine:
    parsed = parse_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.drivername == "sqlite":
        assert parsed.database is not None
        path = Path(parsed.database).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
        parsed = parsed.set(database=str(path))
        # Several uvicorn workers / CLI processes share the file: wait for the lock.
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        # Requests run on the server's thread pool (40 threads): with SQLAlchemy's default
        # pool (5 kept + 10 overflow) every connection past the 5th was closed when given
        # back and opened again at the next burst, a new PostgreSQL backend each time.
        # Keep PG_POOL open; beyond it requests wait for a connection instead.
        kwargs.update(pool_size=PG_POOL, max_overflow=0, pool_timeout=30)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise CatalogError(f"database {safe_url(parsed)}: {exc}") from None
    if parsed.drivername == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def open_fast_engine(engine: Engine) -> Engine:
    """The engine for single statements in autocommit (token checks, heartbeats).

    PostgreSQL: a pool of its own (PG_FAST_POOL), no pre-ping, and
    ``synchronous_commit=off`` for its sessions: a statement there is one round trip
    and its commit does not wait for the WAL flush. Only heartbeats write through it
    (rewritten every few seconds; a database crash may lose the last ones). SQLite:
    the main engine in autocommit (no round trips to save)."""
    if engine.dialect.name != "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return create_engine(
        engine.url, isolation_level="AUTOCOMMIT", pool_size=PG_FAST_POOL, max_overflow=0,
        pool_timeout=30, connect_args={"options": "-c synchronous_commit=off"})


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (no-op when the schema is current)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    before = None
    with contextlib.suppress(SQLAlchemyError):  # unreachable: the upgrade says why
        before = current_revision(engine)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    except DBAPIError as exc:
        raise CatalogUnavailable(
            f"database {safe_url(engine.url)}: cannot open or migrate: {_first_line(exc)}"
        ) from None
    except SQLAlchemyError as exc:
        raise CatalogError(f"database {safe_url(engine.url)}: {_first_line(exc)}") from None
    if before != HEAD:
        log.info("floor catalog %s: schema %s -> %s", safe_url(engine.url), before, HEAD)


def current_revision(engine: Engine) -> str | None:
    """The applied migration, or ``None`` for an empty database."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
        return None if row is None else str(row[0])
