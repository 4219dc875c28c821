"""The floor catalog: one object over the database, used by the API, the CLI and sync.

Everything lives in the database (robots, token digests, the latest heartbeat,
sessions, episodes, files), so any number of service replicas can share one
PostgreSQL: no request depends on which replica served the one before.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, and_, delete, func, or_, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session as DbSession

from xsquare_logger.floor.catalog.db import (
    CatalogConflict,
    CatalogError,
    CatalogUnavailable,
    SessionIdRefused,
    open_engine,
    open_fast_engine,
    safe_url,
    upgrade,
)
from xsquare_logger.floor.catalog.models import (
    Episode,
    File,
    Robot,
    RobotStatus,
    Session,
    Token,
)
from xsquare_logger.floor.catalog.query import (
    EpisodeFilter,
    check_limit,
    day_range_ns,
    decode_cursor,
    encode_cursor,
)
from xsquare_logger.floor.protocol import (
    EpisodePage,
    EpisodeRow,
    FileRow,
    FloorSummary,
    Heartbeat,
    RobotTile,
    SessionDetail,
    SessionPage,
    SessionReport,
    SessionRow,
    session_id_prefix,
)
from xsquare_logger.session.health import EpisodeQuality
from xsquare_logger.session.manifest import SessionManifest, TaskEntry

__all__ = ["UPLOAD_RANK", "Catalog", "Principal", "manifest_digest"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Upload states only move forward: a late "pending" report (queued on the robot while
# sync already catalogued the verified copy) must not undo "verified".
UPLOAD_RANK = {"pending": 0, "uploading": 1, "failed": 1, "verified": 2, "deleted": 3}
DISK_LOW_FACTOR = 1.5  # RobotTile.disk_low: free disk under reserve x this
_TOKEN_PREFIX = {"robot": "xsqrobot_", "reader": "xsqread_"}


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to."""

    kind: Literal["robot", "reader"]
    name: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def manifest_digest(manifest: SessionManifest) -> str:
    doc = json.dumps(manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def _check_name(what: str, name: str) -> str:
    if not _NAME.match(name):
        raise CatalogError(
            f"{what} name {name!r}: use 1-128 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return name


def _task_lost(task: TaskEntry) -> dict[str, int]:
    # Older sessions have no per-episode losses; their tasks simply lack the field.
    lost = getattr(task, "lost", None) or {}
    if not isinstance(lost, dict):
        return {}
    return {str(k): int(v) for k, v in lost.items() if isinstance(v, int | float)}


class Catalog:
    """The catalog in the database at ``url`` (migrated to the newest schema on open)."""

    def __init__(
        self,
        url: str,
        stale_after: float = 10.0,
        migrate: bool = True,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if stale_after <= 0:
            raise CatalogError(f"stale limit {stale_after}: must be > 0 seconds")
        self.engine: Engine = open_engine(url)
        self.url = safe_url(self.engine.url)
        self.stale_after = stale_after
        self._clock = clock
        # Token checks and heartbeats (100+ a second on a full floor) are one statement
        # each: run on autocommit connections (no BEGIN/COMMIT round trips), on
        # PostgreSQL from a pool of their own without pre-ping and with
        # synchronous_commit off (open_fast_engine). Each round trip to the database
        # process costs scheduling latency on a busy machine: that, not the SQL, was
        # most of a heartbeat's time.
        self.fast_engine = open_fast_engine(self.engine)
        if migrate:
            upgrade(self.engine)

    def close(self) -> None:
        if self.fast_engine is not self.engine:
            self.fast_engine.dispose()
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Database errors as catalog errors: down = CatalogUnavailable, bad value = 422."""
        try:
            yield
        except OperationalError as exc:
            line = (str(exc.orig).strip().splitlines() or ["unavailable"])[0]
            raise CatalogUnavailable(f"database {self.url}: {line}") from None
        except (DataError, OverflowError) as exc:
            # Bad input the models let through (an integer over 2**63-1, a NUL in text):
            # refused as bad input, never a server error.
            line = (str(getattr(exc, "orig", exc)).strip().splitlines() or ["bad value"])[0]
            raise CatalogError(f"value refused by the database: {line}") from None

    @contextmanager
    def _db(self, write: bool = False) -> Iterator[DbSession]:
        """One transaction. ``write``: it reads what it then writes, so on SQLite it takes
        the write lock first (BEGIN IMMEDIATE; the driver would begin only at the first
        write, after the reads, and another writer could commit in between). PostgreSQL
        writers lock the rows they read instead (SELECT ... FOR UPDATE, upserts)."""
        with self._errors(), DbSession(self.engine, expire_on_commit=False) as db, db.begin():
            if write and self.engine.dialect.name == "sqlite":
                db.execute(text("BEGIN IMMEDIATE"))
            yield db

    # -- robots and tokens -------------------------------------------------------------------
    def _new_token(self, db: DbSession, kind: str, name: str) -> str:
        # The prefix tells a human which kind of token it is (and secret scanners find it).
        token = f"{_TOKEN_PREFIX[kind]}{secrets.token_urlsafe(32)}"
        db.add(Token(sha256=_digest(token), kind=kind, name=name, created_ns=self._clock()))
        return token

    def add_robot(self, name: str) -> str:
        """Register a robot (or re-admit a revoked one); returns its new token, shown once."""
        _check_name("robot", name)
        with self._db(write=True) as db:
            robot = db.get(Robot, name)
            if robot is not None and robot.revoked_ns is None:
                raise CatalogError(
                    f"robot {name!r} exists already (revoke it first to issue a new token)"
                )
            if robot is None:
                db.add(Robot(robot_id=name, created_ns=self._clock()))
            else:
                robot.revoked_ns = None
            return self._new_token(db, "robot", name)

    def revoke_robot(self, name: str) -> None:
        self._revoke("robot", name)

    def add_reader(self, name: str) -> str:
        """Issue a read token named ``name`` (dashboard, engineers, training jobs)."""
        _check_name("reader", name)
        with self._db(write=True) as db:
            active = db.scalar(
                select(func.count()).select_from(Token).where(
                    Token.kind == "reader", Token.name == name, Token.revoked_ns.is_(None)
                )
            )
            if active:
                raise CatalogError(f"reader {name!r} exists already (revoke it first)")
            return self._new_token(db, "reader", name)

    def revoke_reader(self, name: str) -> None:
        self._revoke("reader", name)

    def _revoke(self, kind: str, name: str) -> None:
        now = self._clock()
        with self._db(write=True) as db:
            tokens = db.scalars(
                select(Token).where(
                    Token.kind == kind, Token.name == name, Token.revoked_ns.is_(None)
                )
            ).all()
            robot = db.get(Robot, name) if kind == "robot" else None
            if not tokens and (robot is None or robot.revoked_ns is not None):
                raise CatalogError(f"no active {kind} named {name!r}")
            for t in tokens:
                t.revoked_ns = now
            if robot is not None:
                robot.revoked_ns = now

    def list_robots(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.scalars(select(Robot).order_by(Robot.robot_id)).all()
            return [
                {"robot_id": r.robot_id, "created_ns": r.created_ns, "revoked": r.revoked_ns
                 is not None}
                for r in rows
            ]

    def list_readers(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.scalars(
                select(Token).where(Token.kind == "reader").order_by(Token.name, Token.created_ns)
            ).all()
            return [
                {"name": t.name, "created_ns": t.created_ns, "revoked": t.revoked_ns is not None}
                for t in rows
            ]

    def authenticate(self, token: str) -> Principal | None:
        """The owner of an active token, or ``None`` (unknown or revoked)."""
        if not token:
            return None
        # Every request asks this: one statement on an autocommit connection (no
        # BEGIN/COMMIT round trips, no ORM object), still read fresh each time so a
        # revocation holds at the next request on every replica.
        q = select(Token.kind, Token.name).where(Token.sha256 == _digest(token),
                                                 Token.revoked_ns.is_(None))
        row = self._fast_one(q)
        if row is None:
            return None
        kind: Literal["robot", "reader"] = "robot" if row.kind == "robot" else "reader"
        return Principal(kind, row.name)

    # -- writes from robots ------------------------------------------------------------------
    def record_heartbeat(self, hb: Heartbeat) -> None:
        # One upsert, not durable on PostgreSQL (the row is overwritten at the next
        # heartbeat). No read of the robot first: the foreign key refuses an unregistered
        # one. One statement: two replicas getting a robot's first heartbeats at once (a
        # retry overlapping the original) would both insert after a read found no row.
        fields = {
            "last_seen_ns": self._clock(),
            "state": hb.state,
            "session_id": hb.session_id,
            "messages_lost": hb.messages_lost,
            "disk_free_bytes": hb.disk_free_bytes,
            "disk_reserve_bytes": hb.disk_reserve_bytes,
            "upload_backlog_bytes": hb.upload_backlog_bytes,
            "last_upload_error": hb.last_upload_error,
            "heartbeat": hb.model_dump(mode="json"),
        }
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        stmt = insert(RobotStatus).values(robot_id=hb.robot_id, **fields)
        stmt = stmt.on_conflict_do_update(
            index_elements=[RobotStatus.robot_id],
            set_={k: stmt.excluded[k] for k in fields},
        )
        try:
            self._fast_one(stmt, rows=False)
        except IntegrityError:
            raise CatalogError(f"robot {hb.robot_id!r} is not registered") from None

    def _fast_one(self, stmt: Any, rows: bool = True) -> Any:
        """Run one statement on the fast engine: its first row (``rows``) or nothing.

        That pool does not ping before each use: a connection the database dropped
        (a restart) fails its statement, SQLAlchemy then invalidates it and every
        other pooled one, and the statement runs once more on a new connection (safe:
        a token read or a heartbeat upsert gives the same result twice)."""
        with self._errors():
            for attempt in (0, 1):
                try:
                    with self.fast_engine.connect() as conn:
                        result = conn.execute(stmt)
                        return result.first() if rows else None
                except DBAPIError as exc:
                    if attempt or not exc.connection_invalidated:
                        raise
        return None  # unreachable

    def session_upload(self, session_id: str) -> tuple[str, str] | None:
        """(upload_state, remote) of a catalogued session, or ``None``."""
        with self._db() as db:
            s = db.get(Session, session_id)
            return None if s is None else (s.upload_state, s.remote)

    def ingest_session(self, report: SessionReport) -> bool:
        """Add or update a session and replace its episodes and files (idempotent).

        Returns whether the catalog changed. The upload state never moves back
        (``UPLOAD_RANK``); the remote location is kept when the report has none.
        """
        return self.report_session(report)[0]

    def report_session(self, report: SessionReport) -> tuple[bool, bool, SessionRow]:
        """``ingest_session``, answering (changed, created, the session's row as now
        catalogued) from the same transaction: the API's PUT reads nothing back."""
        for attempt in range(2):
            try:
                with self._db(write=True) as db:
                    return self._ingest(db, report)
            except IntegrityError:
                # Another replica inserted the same session between our read and write.
                if attempt:
                    raise CatalogConflict(
                        f"session {report.manifest.session_id}: concurrent update; send again"
                    ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _check_namespace(db: DbSession, m: SessionManifest) -> None:
        """Refuse a session id outside the robot's namespace (``session_id_prefix``).

        Robot ids may contain '_': robot ``a`` may not take ``a_b_...`` once a robot ``a_b``
        is registered (the longest registered prefix owns an id)."""
        sid, robot = m.session_id, m.robot_id
        prefix = session_id_prefix(robot)
        if not sid.startswith(prefix):
            raise SessionIdRefused(f"session id {sid!r}: not in robot {robot!r}'s namespace "
                                   f"(its session ids start with {prefix!r})")
        longer = [sid[:i] for i in range(len(prefix), len(sid)) if sid[i] == "_"]
        if longer:
            owner = db.scalar(select(Robot.robot_id).where(Robot.robot_id.in_(longer))
                              .order_by(func.length(Robot.robot_id).desc()).limit(1))
            if owner is not None:
                raise SessionIdRefused(
                    f"session id {sid!r}: in the namespace of robot {owner!r} "
                    f"({session_id_prefix(owner)!r}), not of robot {robot!r}")

    def _ingest(self, db: DbSession, report: SessionReport) -> tuple[bool, bool, SessionRow]:
        m = report.manifest
        self._check_namespace(db, m)
        digest = manifest_digest(m)
        # Locked until commit: a concurrent report of the same session (another replica)
        # waits and then sees this one's upload state, so the state never moves back.
        row = db.get(Session, m.session_id, with_for_update=True)
        if row is not None and row.robot_id != m.robot_id:
            raise CatalogConflict(
                f"session {m.session_id} belongs to robot {row.robot_id!r}, not {m.robot_id!r}"
            )
        state = report.upload_state
        remote = report.remote
        if row is not None:
            if UPLOAD_RANK[state] < UPLOAD_RANK.get(row.upload_state, 0):
                state = row.upload_state  # type: ignore[assignment]
            remote = remote or row.remote
            same = (row.manifest_sha256, row.upload_state, row.remote) == (digest, state, remote)
            if same and report.bytes in (0, row.bytes):
                count = self._episode_counts(db, [m.session_id]).get(m.session_id, 0)
                return False, False, self._session_row(row, count)
        visit = m.visit or {}
        operator = str(visit.get("operator") or "")
        site = str(visit.get("site") or "")
        visit_id = str(visit.get("visit_id") or "")
        fields = {
            "robot_id": m.robot_id,
            "visit_id": visit_id,
            "operator": operator,
            "site": site,
            "state": m.state,
            "start_ns": m.started_ns,
            "end_ns": m.ended_ns,
            "bytes": report.bytes or sum(f.size for f in m.files),
            "remote": remote,
            "upload_state": state,
            "manifest_sha256": digest,
            "manifest": m.model_dump(mode="json"),
            "updated_ns": self._clock(),
        }
        created = row is None
        if row is None:
            row = Session(session_id=m.session_id, **fields)
            db.add(row)
        else:
            for k, v in fields.items():
                setattr(row, k, v)
            db.execute(delete(Episode).where(Episode.session_id == m.session_id))
            db.execute(delete(File).where(File.session_id == m.session_id))
        db.flush()
        seen: set[int] = set()
        for t in m.tasks:
            if t.episode_index in seen:  # a damaged manifest must not abort the ingest
                continue
            seen.add(t.episode_index)
            lost = _task_lost(t)
            db.add(Episode(
                session_id=m.session_id,
                episode_index=t.episode_index,
                robot_id=m.robot_id,
                task=t.task,
                instruction=t.instruction,
                outcome=t.outcome,
                operator=t.operator or operator,
                site=site,
                visit_id=visit_id,
                start_ns=t.start_ns,
                end_ns=t.end_ns,
                duration_sec=None if t.end_ns is None else (t.end_ns - t.start_ns) / 1e9,
                lost=lost,
                lost_total=sum(lost.values()),
                discarded=t.discarded,
                quality=None if t.quality is None else t.quality.verdict,
                quality_reasons=None if t.quality is None else list(t.quality.reasons),
                window_start_ns=t.window_start_ns,
                window_end_ns=t.window_end_ns,
            ))
        keys: set[str] = set()
        for f in m.files:
            if f.path not in keys:
                keys.add(f.path)
                db.add(File(session_id=m.session_id, key=f.path, size=f.size, sha256=f.sha256))
        return True, created, self._session_row(row, len(seen))

    # -- reads -------------------------------------------------------------------------------
    def _tile(self, robot: Robot, status: RobotStatus | None, now: int) -> RobotTile:
        if status is None:
            return RobotTile(robot_id=robot.robot_id, revoked=robot.revoked_ns is not None,
                             stale=True)
        since = max(0.0, (now - status.last_seen_ns) / 1e9)
        hb = Heartbeat.model_validate(status.heartbeat)
        return RobotTile(
            robot_id=robot.robot_id,
            revoked=robot.revoked_ns is not None,
            last_heartbeat=hb,
            last_seen_ns=status.last_seen_ns,
            seconds_since_heartbeat=since,
            stale=since > self.stale_after,
            losing=hb.messages_lost > 0,
            disk_low=hb.disk_reserve_bytes > 0
            and hb.disk_free_bytes < hb.disk_reserve_bytes * DISK_LOW_FACTOR,
            upload_failed=bool(hb.last_upload_error),
        )

    def robots(self) -> list[RobotTile]:
        now = self._clock()
        with self._db() as db:
            rows = db.execute(
                select(Robot, RobotStatus)
                .join(RobotStatus, RobotStatus.robot_id == Robot.robot_id, isouter=True)
                .order_by(Robot.robot_id)
            ).all()
            return [self._tile(r, s, now) for r, s in rows]

    def robot(self, robot_id: str) -> RobotTile | None:
        now = self._clock()
        with self._db() as db:
            r = db.get(Robot, robot_id)
            return None if r is None else self._tile(r, db.get(RobotStatus, robot_id), now)

    @staticmethod
    def _session_row(s: Session, episodes: int) -> SessionRow:
        return SessionRow(
            session_id=s.session_id, robot_id=s.robot_id, visit_id=s.visit_id,
            operator=s.operator, site=s.site, state=s.state, start_ns=s.start_ns,
            end_ns=s.end_ns, bytes=s.bytes, remote=s.remote,
            upload_state=s.upload_state,  # type: ignore[arg-type]
            manifest_sha256=s.manifest_sha256, episodes=episodes, updated_ns=s.updated_ns,
        )

    def sessions(
        self,
        robot: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SessionPage:
        """Sessions by start time (oldest first), ``limit`` per page."""
        check_limit(limit)
        q = select(Session)
        if robot:
            q = q.where(Session.robot_id == robot)
        if since_ns is not None:
            q = q.where(Session.start_ns >= since_ns)
        if until_ns is not None:
            q = q.where(Session.start_ns < until_ns)
        if cursor:
            start, sid = decode_cursor(cursor, 2)
            q = q.where(tuple_(Session.start_ns, Session.session_id) > tuple_(start, sid))
        q = q.order_by(Session.start_ns, Session.session_id).limit(limit + 1)
        with self._db() as db:
            rows = list(db.scalars(q).all())
            more = len(rows) > limit
            rows = rows[:limit]
            counts = self._episode_counts(db, [s.session_id for s in rows])
            items = [self._session_row(s, counts.get(s.session_id, 0)) for s in rows]
        nxt = encode_cursor((rows[-1].start_ns, rows[-1].session_id)) if more else None
        return SessionPage(items=items, next_cursor=nxt)

    @staticmethod
    def _episode_counts(db: DbSession, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        q = (select(Episode.session_id, func.count()).where(Episode.session_id.in_(ids))
             .group_by(Episode.session_id))
        return {sid: int(n) for sid, n in db.execute(q).all()}

    def session(self, session_id: str) -> SessionDetail | None:
        with self._db() as db:
            s = db.get(Session, session_id)
            if s is None:
                return None
            eps = db.scalars(
                select(Episode).where(Episode.session_id == session_id)
                .order_by(Episode.episode_index)
            ).all()
            files = db.scalars(
                select(File).where(File.session_id == session_id).order_by(File.key)
            ).all()
            row = self._session_row(s, len(eps))
            return SessionDetail(
                **row.model_dump(),
                files=[FileRow(key=f.key, size=f.size, sha256=f.sha256) for f in files],
                episode_rows=[self._episode_row(e, s) for e in eps],
                manifest=SessionManifest.model_validate(s.manifest),
            )

    @staticmethod
    def _episode_row(e: Episode, s: Session) -> EpisodeRow:
        return EpisodeRow(
            robot_id=e.robot_id, session_id=e.session_id, episode_index=e.episode_index,
            task=e.task, instruction=e.instruction, outcome=e.outcome, operator=e.operator,
            site=e.site, visit_id=e.visit_id, start_ns=e.start_ns, end_ns=e.end_ns,
            duration_sec=e.duration_sec, lost=dict(e.lost or {}), remote=s.remote,
            upload_state=s.upload_state,  # type: ignore[arg-type]
            discarded=e.discarded,
            quality=None if e.quality is None else EpisodeQuality(
                verdict=e.quality,  # type: ignore[arg-type]
                reasons=list(e.quality_reasons or [])),
            window_start_ns=e.window_start_ns, window_end_ns=e.window_end_ns,
        )

    def episodes(
        self, where: EpisodeFilter | None = None, limit: int = 100, cursor: str | None = None
    ) -> EpisodePage:
        """Episodes matching every given filter, by start time (oldest first)."""
        check_limit(limit)
        f = where or EpisodeFilter()
        conds: list[ColumnElement[bool]] = []
        for column, value in (
            (Episode.task, f.task),
            (Episode.outcome, f.outcome),
            (Episode.operator, f.operator),
            (Episode.robot_id, f.robot),
            (Episode.site, f.site),
            (Episode.quality, f.quality),
        ):
            if value:
                conds.append(column == value)
        if not f.include_discarded:
            conds.append(Episode.discarded.is_(False))
        if f.since_ns is not None:
            conds.append(Episode.start_ns >= f.since_ns)
        if f.until_ns is not None:
            conds.append(Episode.start_ns < f.until_ns)
        if cursor:
            start, sid, idx = decode_cursor(cursor, 3)
            # Spelled out rather than a row-value comparison, so every planner uses the index.
            conds.append(or_(
                Episode.start_ns > start,
                and_(Episode.start_ns == start, Episode.session_id > sid),
                and_(Episode.start_ns == start, Episode.session_id == sid,
                     Episode.episode_index > idx),
            ))
        q = (
            select(Episode, Session)
            .join(Session, Session.session_id == Episode.session_id)
            .where(*conds)
            .order_by(Episode.start_ns, Episode.session_id, Episode.episode_index)
            .limit(limit + 1)
        )
        with self._db() as db:
            rows = db.execute(q).all()
        more = len(rows) > limit
        items = [self._episode_row(e, s) for e, s in rows[:limit]]
        nxt = None
        if more:
            last = items[-1]
            nxt = encode_cursor((last.start_ns, last.session_id, last.episode_index))
        return EpisodePage(items=items, next_cursor=nxt)

    def summary(self, day: str | None = None) -> FloorSummary:
        """Floor totals of one day (local time; default today)."""
        name, start, end = day_range_ns(day)
        now = self._clock()
        tiles = [t for t in self.robots() if not t.revoked]
        with self._db() as db:
            sessions = db.execute(
                select(Session.session_id, Session.start_ns, Session.end_ns).where(
                    Session.start_ns < end,
                    or_(Session.end_ns.is_(None), Session.end_ns >= start),
                )
            ).all()
            day_eps = (Episode.start_ns >= start, Episode.start_ns < end)
            eps = db.execute(
                select(Episode.outcome, Episode.task, Episode.operator).where(
                    *day_eps, Episode.discarded.is_(False)
                )
            ).all()
            discarded = db.scalar(select(func.count()).select_from(Episode).where(
                *day_eps, Episode.discarded.is_(True)))
        ns = 0
        known = set()
        for sid, s0, s1 in sessions:
            known.add(sid)
            ns += max(0, min(s1 if s1 is not None else min(now, end), end) - max(s0, start))
        live = [t for t in tiles if not t.stale and t.last_heartbeat is not None
                and t.last_heartbeat.state == "recording"]
        for t in live:
            hb = t.last_heartbeat
            assert hb is not None
            if hb.session_id not in known and start <= now < end:
                # Still recording and not catalogued yet: count what it has so far today.
                ns += min(int(hb.elapsed_sec * 1e9), now - start)
        return FloorSummary(
            day=name,
            robots=len(tiles),
            robots_recording=len(live),
            robots_stale=sum(t.stale for t in tiles),
            hours_recorded=round(ns / 3.6e12, 4),
            episodes_by_outcome=dict(Counter(o or "unknown" for o, _, _ in eps)),
            episodes_by_task=dict(Counter(t for _, t, _ in eps)),
            episodes_by_operator=dict(Counter(op for _, _, op in eps)),
            episodes_discarded=int(discarded or 0),
            upload_backlog_bytes=sum(
                t.last_heartbeat.upload_backlog_bytes for t in tiles if t.last_heartbeat
            ),
        )

    def ping(self) -> None:
        """Raise CatalogError unless the database answers."""
        try:
            with self._db() as db:
                db.execute(select(1))
        except SQLAlchemyError as exc:
            raise CatalogUnavailable(f"database {self.url}: {exc}") from None
