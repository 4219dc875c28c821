"""Episodes carry what the recorder and the tablet decided: discarded, quality, window.

``discarded`` (task.discard: re-recorded, never exported), the quality verdict and
its reasons (task.end), and the pre/post-roll window (what an export cuts). The
upgrade fills them in from each session's catalogued ``session.json``: sync never
downloads a verified session again, so nothing else would.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_EP_ORDER = ("start_ns", "session_id", "episode_index")
_VERDICTS = ("pass", "warn", "fail")
_BATCH = 1000
_COLUMNS = ("discarded", "quality", "quality_reasons", "window_start_ns", "window_end_ns")


def upgrade() -> None:
    with op.batch_alter_table("episodes") as batch:
        batch.add_column(sa.Column("discarded", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("quality", sa.Text, nullable=True))
        batch.add_column(sa.Column("quality_reasons", sa.JSON, nullable=True))
        batch.add_column(sa.Column("window_start_ns", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("window_end_ns", sa.BigInteger, nullable=True))
    op.create_index("ix_episodes_quality", "episodes", ["quality", *_EP_ORDER])
    _backfill()


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _values(task: dict[str, Any]) -> dict[str, Any] | None:
    """The new columns of one manifest task, or None when all are their defaults."""
    quality = task.get("quality")
    verdict = reasons = None
    if isinstance(quality, dict) and quality.get("verdict") in _VERDICTS:
        verdict = quality["verdict"]
        reasons = [str(r) for r in quality.get("reasons") or [] if isinstance(r, str)]
    row = {"discarded": task.get("discarded") is True, "quality": verdict,
           "quality_reasons": reasons, "window_start_ns": _int(task.get("window_start_ns")),
           "window_end_ns": _int(task.get("window_end_ns"))}
    return row if row["discarded"] or any(
        row[k] is not None for k in ("quality", "window_start_ns", "window_end_ns")) else None


def _backfill() -> None:
    # Lightweight tables: a migration must not import the models (they move on).
    conn = op.get_bind()
    sessions = sa.table("sessions", sa.column("session_id", sa.Text),
                        sa.column("manifest", sa.JSON))
    episodes = sa.table(
        "episodes", sa.column("session_id", sa.Text), sa.column("episode_index", sa.Integer),
        sa.column("discarded", sa.Boolean), sa.column("quality", sa.Text),
        sa.column("quality_reasons", sa.JSON), sa.column("window_start_ns", sa.BigInteger),
        sa.column("window_end_ns", sa.BigInteger))
    update = (
        episodes.update()
        .where(episodes.c.session_id == sa.bindparam("sid"),
               episodes.c.episode_index == sa.bindparam("idx"))
        # Bind names differ from the column names: SQLAlchemy reserves those for SET.
        .values({c: sa.bindparam(f"v_{c}") for c in _COLUMNS})
    )
    pending: list[dict[str, Any]] = []
    rows = conn.execute(sa.select(sessions.c.session_id, sessions.c.manifest)).all()
    for sid, manifest in rows:
        seen: set[int] = set()
        for task in (manifest or {}).get("tasks") or []:
            idx = _int(task.get("episode_index")) if isinstance(task, dict) else None
            if idx is None or idx in seen:  # the first of a repeated index counts (ingest)
                continue
            seen.add(idx)
            values = _values(task)
            if values is not None:
                pending.append({"sid": sid, "idx": idx,
                                **{f"v_{k}": v for k, v in values.items()}})
        if len(pending) >= _BATCH:
            conn.execute(update, pending)
            pending = []
    if pending:
        conn.execute(update, pending)


def downgrade() -> None:
    op.drop_index("ix_episodes_quality", "episodes")
    with op.batch_alter_table("episodes") as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column)
