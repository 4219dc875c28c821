"""The catalog's tables (SQLAlchemy 2 declarative models).

The schema is created and changed only by the Alembic migrations in
``migrations/versions/`` (never ``create_all``), so every database, old or new,
reaches the same schema by the same steps. A change here needs a new migration.

Free text from the robot (task, operator, site, ...) is TEXT, never a bounded
VARCHAR: PostgreSQL would refuse a long value and the session would never be
catalogued. Times are integer nanoseconds since the epoch, like session.json. Indexes follow
the episode filters (task, outcome, operator, robot, each with the start time) and
end in the keyset order (start_ns, session_id, episode_index) so a filtered page
is one index range scan.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Episode", "File", "Robot", "RobotStatus", "Session", "Token"]


class Base(DeclarativeBase):
    pass


class Robot(Base):
    __tablename__ = "robots"

    robot_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    revoked_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Token(Base):
    """An API token: only its sha256 is stored, so a database leak leaks no token."""

    __tablename__ = "tokens"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "robot" | "reader"
    name: Mapped[str] = mapped_column(String(128), index=True)  # robot id or reader name
    created_ns: Mapped[int] = mapped_column(BigInteger)
    revoked_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RobotStatus(Base):
    """The latest heartbeat of each robot (one row per robot, overwritten)."""

    __tablename__ = "robot_status"

    robot_id: Mapped[str] = mapped_column(
        String(128), ForeignKey("robots.robot_id", ondelete="CASCADE"), primary_key=True
    )
    last_seen_ns: Mapped[int] = mapped_column(BigInteger, index=True)
    state: Mapped[str] = mapped_column(String(16))
    session_id: Mapped[str] = mapped_column(Text, default="")
    messages_lost: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    disk_reserve_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    upload_backlog_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    last_upload_error: Mapped[str] = mapped_column(Text, default="")
    heartbeat: Mapped[dict[str, Any]] = mapped_column(JSON)


class Session(Base):
    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(Text, primary_key=True)
    robot_id: Mapped[str] = mapped_column(Text)
    visit_id: Mapped[str] = mapped_column(Text, default="")
    operator: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(16), default="closed")
    start_ns: Mapped[int] = mapped_column(BigInteger)
    end_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    remote: Mapped[str] = mapped_column(Text, default="")
    upload_state: Mapped[str] = mapped_column(String(16), default="pending")
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_ns: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_sessions_start", "start_ns", "session_id"),
        Index("ix_sessions_robot_start", "robot_id", "start_ns", "session_id"),
    )


class Episode(Base):
    __tablename__ = "episodes"

    session_id: Mapped[str] = mapped_column(
        Text, ForeignKey("sessions.session_id", ondelete="CASCADE"), primary_key=True
    )
    episode_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    robot_id: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(Text)
    instruction: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    operator: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str] = mapped_column(Text, default="")
    visit_id: Mapped[str] = mapped_column(Text, default="")
    start_ns: Mapped[int] = mapped_column(BigInteger)
    end_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    duration_sec: Mapped[float | None] = mapped_column(Float, nullable=True)
    lost: Mapped[dict[str, int]] = mapped_column(JSON)
    lost_total: Mapped[int] = mapped_column(BigInteger, default=0)
    # From the manifest's task (migration 0002): task.discard, the task.end verdict, and
    # the taps widened by the pre/post-roll.
    discarded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    quality: Mapped[str | None] = mapped_column(Text, nullable=True)  # pass|warn|fail
    quality_reasons: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    window_start_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    window_end_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (
        Index("ix_episodes_start", "start_ns", "session_id", "episode_index"),
        Index("ix_episodes_task", "task", "start_ns", "session_id", "episode_index"),
        Index("ix_episodes_outcome", "outcome", "start_ns", "session_id", "episode_index"),
        Index("ix_episodes_operator", "operator", "start_ns", "session_id", "episode_index"),
        Index("ix_episodes_robot", "robot_id", "start_ns", "session_id", "episode_index"),
        Index("ix_episodes_quality", "quality", "start_ns", "session_id", "episode_index"),
    )


class File(Base):
    """A file of a session; ``key`` is relative to the session's remote location."""

    __tablename__ = "files"

    session_id: Mapped[str] = mapped_column(
        Text, ForeignKey("sessions.session_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(Text)
