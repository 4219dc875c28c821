"""The first floor catalog: robots, tokens, robot status, sessions, episodes, files.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_EP_ORDER = ("start_ns", "session_id", "episode_index")


def upgrade() -> None:
    op.create_table(
        "robots",
        sa.Column("robot_id", sa.String(128), primary_key=True),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("revoked_ns", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "tokens",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
        sa.Column("revoked_ns", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_tokens_name", "tokens", ["name"])
    op.create_table(
        "robot_status",
        sa.Column(
            "robot_id",
            sa.String(128),
            sa.ForeignKey("robots.robot_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("last_seen_ns", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("session_id", sa.Text, nullable=False),
        sa.Column("messages_lost", sa.BigInteger, nullable=False),
        sa.Column("disk_free_bytes", sa.BigInteger, nullable=False),
        sa.Column("disk_reserve_bytes", sa.BigInteger, nullable=False),
        sa.Column("upload_backlog_bytes", sa.BigInteger, nullable=False),
        sa.Column("last_upload_error", sa.Text, nullable=False),
        sa.Column("heartbeat", sa.JSON, nullable=False),
    )
    op.create_index("ix_robot_status_last_seen_ns", "robot_status", ["last_seen_ns"])
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.Text, primary_key=True),
        sa.Column("robot_id", sa.Text, nullable=False),
        sa.Column("visit_id", sa.Text, nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("site", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("remote", sa.Text, nullable=False),
        sa.Column("upload_state", sa.String(16), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("updated_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_sessions_start", "sessions", ["start_ns", "session_id"])
    op.create_index("ix_sessions_robot_start", "sessions", ["robot_id", "start_ns", "session_id"])
    op.create_table(
        "episodes",
        sa.Column(
            "session_id",
            sa.Text,
            sa.ForeignKey("sessions.session_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("episode_index", sa.Integer, primary_key=True),
        sa.Column("robot_id", sa.Text, nullable=False),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("instruction", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("site", sa.Text, nullable=False),
        sa.Column("visit_id", sa.Text, nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=True),
        sa.Column("duration_sec", sa.Float, nullable=True),
        sa.Column("lost", sa.JSON, nullable=False),
        sa.Column("lost_total", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_episodes_start", "episodes", list(_EP_ORDER))
    for column in ("task", "outcome", "operator", "robot_id"):
        name = "robot" if column == "robot_id" else column
        op.create_index(f"ix_episodes_{name}", "episodes", [column, *_EP_ORDER])
    op.create_table(
        "files",
        sa.Column(
            "session_id",
            sa.Text,
            sa.ForeignKey("sessions.session_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("files", "episodes", "sessions", "robot_status", "tokens", "robots"):
        op.drop_table(table)
