"""The floor catalog on a real database: SQLite, and PostgreSQL in a throwaway cluster
(test/support/postgres.py via the conftest ``postgres_url`` fixture).

Also the sample data the API and CLI tests share (``make_report``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import event

from xsquare_logger.floor.catalog import (
    Catalog,
    CatalogConflict,
    CatalogError,
    EpisodeFilter,
    Principal,
    SessionIdRefused,
    parse_time_ns,
)
from xsquare_logger.floor.catalog.db import HEAD, MIGRATIONS, current_revision
from xsquare_logger.floor.metrics import render as render_metrics
from xsquare_logger.floor.protocol import Heartbeat, SessionReport
from xsquare_logger.session.manifest import FileEntry, SessionManifest, TaskEntry

S = 1_000_000_000
# Noon UTC of a fixed day: seeded sessions (12:00-15:00) stay on one day in any zone
# within +-8 h of UTC, and tests never depend on "now".
T0 = 1_779_969_600 * S


def make_report(
    robot: str,
    n: int,
    *,
    tasks: list[tuple[str, str | None]] | None = None,
    start_ns: int = T0,
    operator: str = "op1",
    site: str = "hall-a",
    upload_state: str = "pending",
    remote: str = "",
    lost: dict[str, int] | None = None,
    session_id: str | None = None,
    task_extra: dict[int, dict[str, object]] | None = None,
) -> SessionReport:
    """Session ``n`` of ``robot``: one episode per (task, outcome), 10 s each, 1 s apart."""
    sid = session_id or f"{robot}_{n:04d}"
    tasks = tasks if tasks is not None else [("fold towel", "success"), ("pick cup", "failure")]
    entries = []
    for i, (task, outcome) in enumerate(tasks):
        t = start_ns + i * 11 * S
        extra: dict[str, object] = {"lost": lost} if lost is not None and i == 0 else {}
        extra.update((task_extra or {}).get(i, {}))
        entries.append(TaskEntry.model_validate(
            {"episode_index": i, "task": task, "start_ns": t, "end_ns": t + 10 * S,
             "outcome": outcome, "instruction": f"please {task}", **extra}))
    manifest = SessionManifest(
        session_id=sid,
        robot_id=robot,
        software_version="0.1.0",
        config_digest="abc",
        state="closed",
        started_ns=start_ns,
        ended_ns=start_ns + (len(tasks) * 11 + 1) * S,
        visit={"visit_id": f"v-{sid}", "operator": operator, "site": site, "consent": True},
        tasks=entries,
        files=[FileEntry(path="data_0.mcap", size=1000, sha256="0" * 64, message_count=10),
               FileEntry(path="metadata.yaml", size=100, sha256="1" * 64, message_count=0)],
    )
    return SessionReport.model_validate({"manifest": manifest.model_dump(mode="json"),
                                         "upload_state": upload_state, "remote": remote})


def heartbeat(robot: str, **kw: object) -> Heartbeat:
    return Heartbeat.model_validate({"robot_id": robot, "sent_ns": T0, "state": "idle", **kw})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each catalog test runs on SQLite and on a fresh database of the real PostgreSQL
    cluster (conftest ``postgres_url``: skipped where no server is installed, failed then
    under XSQ_REQUIRE_POSTGRES=1)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/floor.db"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def catalog(db_url: str, clock: Clock) -> Iterator[Catalog]:
    with Catalog(db_url, stale_after=10.0, clock=clock) as c:
        yield c


def test_head_constant_is_the_newest_migration() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD


def test_migrate_from_empty_and_rerun_upgrade_keeps_data(db_url: str, clock: Clock) -> None:
    with Catalog(db_url, clock=clock) as c:
        assert current_revision(c.engine) == HEAD
        token = c.add_robot("r1")
        c.ingest_session(make_report("r1", 1))
    # A second start (a service upgrade) runs the upgrade again: nothing is lost.
    with Catalog(db_url, clock=clock) as c:
        assert current_revision(c.engine) == HEAD
        assert c.authenticate(token) is not None
        assert len(c.episodes().items) == 2
        assert c.session("r1_0001") is not None


def test_tokens_stored_as_digests_and_revocable(catalog: Catalog, tmp_path: Path) -> None:
    robot_token = catalog.add_robot("r1")
    reader_token = catalog.add_reader("lead")
    assert catalog.authenticate(robot_token) == Principal("robot", "r1")
    assert catalog.authenticate(reader_token) == Principal("reader", "lead")
    assert catalog.authenticate("xsqrobot_nope") is None
    assert catalog.authenticate("") is None
    if catalog.engine.dialect.name == "sqlite":
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("floor.db*"))
        assert robot_token.encode() not in raw and reader_token.encode() not in raw
    with pytest.raises(CatalogError, match="exists already"):
        catalog.add_robot("r1")
    with pytest.raises(CatalogError, match="exists already"):
        catalog.add_reader("lead")
    catalog.revoke_robot("r1")
    catalog.revoke_reader("lead")
    assert catalog.authenticate(robot_token) is None
    assert catalog.authenticate(reader_token) is None
    assert catalog.list_robots()[0]["revoked"] is True
    # Re-admitting a revoked robot issues a new token; the old one stays dead.
    new = catalog.add_robot("r1")
    assert catalog.authenticate(new) == Principal("robot", "r1")
    assert catalog.authenticate(robot_token) is None
    with pytest.raises(CatalogError, match="no active robot"):
        catalog.revoke_robot("ghost")
    with pytest.raises(CatalogError, match="robot name"):
        catalog.add_robot("bad name/../")


def test_ingest_is_idempotent_and_upload_state_moves_forward(catalog: Catalog) -> None:
    catalog.add_robot("r1")
    report = make_report("r1", 1)
    assert catalog.ingest_session(report) is True
    assert catalog.ingest_session(report) is False
    assert len(catalog.episodes().items) == 2
    verified = make_report("r1", 1, upload_state="verified", remote="s3://b/p/r1/day/r1_0001")
    assert catalog.ingest_session(verified) is True
    detail = catalog.session("r1_0001")
    assert detail is not None
    assert (detail.upload_state, detail.remote) == ("verified", "s3://b/p/r1/day/r1_0001")
    assert [f.key for f in detail.files] == ["data_0.mcap", "metadata.yaml"]
    assert detail.bytes == 1100 and detail.operator == "op1" and detail.site == "hall-a"
    # A late "pending" report (queued on the robot) does not undo the verified upload.
    catalog.ingest_session(report)
    detail = catalog.session("r1_0001")
    assert detail is not None
    assert (detail.upload_state, detail.remote) == ("verified", "s3://b/p/r1/day/r1_0001")
    # Episodes are replaced, not added to, when the session is sent again.
    catalog.ingest_session(make_report("r1", 1, tasks=[("wipe table", "success")]))
    assert [e.task for e in catalog.episodes().items] == ["wipe table"]
    assert catalog.episodes().items[0].remote == "s3://b/p/r1/day/r1_0001"


def test_session_of_another_robot_is_refused(catalog: Catalog) -> None:
    other = make_report("r1", 1).model_dump(mode="json")
    other["manifest"]["robot_id"] = "r2"
    with pytest.raises(SessionIdRefused, match="not in robot 'r2''s namespace"):
        catalog.ingest_session(SessionReport.model_validate(other))
    # Robot ids may contain '_': the longest registered prefix owns an id, and an id
    # catalogued before that robot was registered stays with its first robot (409).
    catalog.add_robot("r1")
    catalog.ingest_session(make_report("r1", 1, session_id="r1_x_0001"))
    catalog.add_robot("r1_x")
    with pytest.raises(SessionIdRefused, match="namespace of robot 'r1_x'"):
        catalog.ingest_session(make_report("r1", 1, session_id="r1_x_0002"))
    with pytest.raises(CatalogConflict, match="belongs to robot 'r1'"):
        catalog.ingest_session(make_report("r1_x", 1, session_id="r1_x_0001"))
    catalog.ingest_session(make_report("r1_x", 2, session_id="r1_x_0002"))
    assert catalog.sessions().items[-1].robot_id == "r1_x"


def test_episode_lost_per_stream_and_old_sessions_without_it(catalog: Catalog) -> None:
    catalog.ingest_session(make_report("r1", 1, lost={"/cam": 3, "/joints": 1}))
    first, second = catalog.episodes().items
    assert first.lost == {"/cam": 3, "/joints": 1}
    assert second.lost == {}
    assert first.duration_sec == 10.0 and first.instruction == "please fold towel"


def _seed(catalog: Catalog) -> None:
    # 3 robots x 4 sessions x 3 episodes, one hour apart, two operators.
    tasks = [("fold towel", "success"), ("fold towel", "failure"), ("pick cup", None)]
    for r in ("r1", "r2", "r3"):
        for n in range(4):
            start = T0 + n * 3600 * S + int(r[1]) * S
            catalog.ingest_session(make_report(r, n, tasks=tasks, start_ns=start,
                                               operator="op1" if n % 2 else "op2"))


def test_episode_filters(catalog: Catalog) -> None:
    _seed(catalog)
    everything = catalog.episodes(limit=1000).items
    assert len(everything) == 36
    assert [e.start_ns for e in everything] == sorted(e.start_ns for e in everything)

    def count(**kw: object) -> int:
        return len(catalog.episodes(EpisodeFilter(**kw), limit=1000).items)  # type: ignore[arg-type]

    assert count(task="fold towel") == 24
    assert count(task="fold towel", outcome="success") == 12
    assert count(task="fold towel", outcome="success", operator="op1", robot="r2") == 2
    assert count(site="hall-a") == 36 and count(site="elsewhere") == 0
    assert count(since_ns=T0 + 2 * 3600 * S) == 18
    assert count(since_ns=T0 + 3600 * S, until_ns=T0 + 2 * 3600 * S) == 9
    rows = catalog.episodes(EpisodeFilter(robot="r3", outcome="failure"), limit=1000).items
    assert {(e.robot_id, e.outcome, e.task) for e in rows} == {("r3", "failure", "fold towel")}
    assert all(e.visit_id == f"v-{e.session_id}" for e in rows)


def test_keyset_pagination_walks_everything_once(catalog: Catalog) -> None:
    _seed(catalog)
    where = EpisodeFilter(task="fold towel")
    seen = []
    cursor = None
    pages = 0
    while True:
        page = catalog.episodes(where, limit=5, cursor=cursor)
        seen += [(e.session_id, e.episode_index) for e in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    everything = [(e.session_id, e.episode_index)
                  for e in catalog.episodes(where, limit=1000).items]
    assert seen == everything and len(set(seen)) == 24 and pages == 5
    sessions = catalog.sessions(limit=5)
    assert len(sessions.items) == 5 and sessions.next_cursor
    rest = catalog.sessions(limit=100, cursor=sessions.next_cursor)
    assert len(rest.items) == 7 and rest.next_cursor is None
    assert all(s.episodes == 3 for s in rest.items)


@pytest.mark.parametrize("cursor", ["garbage", "W10", "WyJhIiwxLDJd", "!!"])
def test_bad_cursor_and_limit_are_one_line_errors(catalog: Catalog, cursor: str) -> None:
    with pytest.raises(CatalogError, match=r"^cursor: not a cursor"):
        catalog.episodes(cursor=cursor)
    with pytest.raises(CatalogError, match=r"^limit 0"):
        catalog.episodes(limit=0)


def test_heartbeats_make_tiles_with_flags(catalog: Catalog, clock: Clock) -> None:
    for r in ("r1", "r2", "r3", "r4"):
        catalog.add_robot(r)
    catalog.record_heartbeat(heartbeat("r1", state="recording", session_id="r1_x",
                                       elapsed_sec=1800.0))
    catalog.record_heartbeat(heartbeat("r2", messages_lost=4, disk_free_bytes=10,
                                       disk_reserve_bytes=100))
    catalog.record_heartbeat(heartbeat("r3", last_upload_error="S3 said no"))
    clock.now += 5 * S
    catalog.record_heartbeat(heartbeat("r1", state="recording", session_id="r1_x",
                                       elapsed_sec=1805.0))
    clock.now += 6 * S  # r2, r3: 11 s since their heartbeat > 10 s; r1: 6 s
    tiles = {t.robot_id: t for t in catalog.robots()}
    assert not tiles["r1"].stale and tiles["r1"].seconds_since_heartbeat == 6.0
    assert tiles["r2"].stale and tiles["r2"].losing and tiles["r2"].disk_low
    assert tiles["r3"].upload_failed and not tiles["r3"].losing
    assert tiles["r4"].stale and tiles["r4"].last_heartbeat is None  # never reported
    one = catalog.robot("r1")
    assert one is not None and one.last_heartbeat is not None
    assert one.last_heartbeat.elapsed_sec == 1805.0
    assert catalog.robot("ghost") is None
    with pytest.raises(CatalogError, match="not registered"):
        catalog.record_heartbeat(heartbeat("ghost"))


def test_summary_and_metrics(catalog: Catalog, clock: Clock) -> None:
    _seed(catalog)
    for r in ("r1", "r2"):
        catalog.add_robot(r)
    catalog.record_heartbeat(heartbeat("r1", state="recording", session_id="r1_live",
                                       elapsed_sec=360.0, messages_lost=7,
                                       upload_backlog_bytes=5000))
    name = datetime.fromtimestamp(T0 / S).date().isoformat()
    clock.now = T0 + 3 * 3600 * S + 600 * S  # after the last seeded session, same day
    catalog.record_heartbeat(heartbeat("r1", state="recording", session_id="r1_live",
                                       elapsed_sec=360.0, messages_lost=7,
                                       upload_backlog_bytes=5000))
    s = catalog.summary(name)
    assert s.robots == 2 and s.robots_recording == 1 and s.robots_stale == 1
    assert s.episodes_by_outcome == {"success": 12, "failure": 12, "unknown": 12}
    assert s.episodes_by_task == {"fold towel": 24, "pick cup": 12}
    assert s.episodes_by_operator == {"op1": 18, "op2": 18}
    assert s.upload_backlog_bytes == 5000
    # 12 sessions of 34 s plus the live one's 6 minutes (not catalogued yet).
    assert s.hours_recorded == pytest.approx((12 * 34 + 360) / 3600, abs=1e-3)
    assert parse_time_ns(name) <= T0 < parse_time_ns(name) + 86400 * S
    with pytest.raises(CatalogError, match="day"):
        catalog.summary("yesterday")
    text = render_metrics(catalog)
    assert 'xsq_floor_robots{state="recording"} 1' in text
    assert 'xsq_floor_robots{state="stale"} 1' in text
    assert "xsq_floor_robots_stale 1" in text
    assert 'xsq_floor_messages_lost{robot="r1"} 7' in text
    assert 'xsq_floor_upload_backlog_bytes{robot="r1"} 5000' in text


# -- discarded episodes, quality verdicts, windows (migration 0002) ----------------------

# Session 1 of r1: a failed take discarded and re-recorded (task.discard + task.start),
# then a take the recorder judged "warn", with pre/post-roll windows on both.
RERECORDED = {
    0: {"discarded": True, "window_start_ns": T0 - 2 * S, "window_end_ns": T0 + 11 * S,
        "quality": {"verdict": "fail", "reasons": ["/cam/head: stalled 2.1 s"]}},
    1: {"window_start_ns": T0 + 9 * S, "window_end_ns": T0 + 22 * S,
        "quality": {"verdict": "warn", "reasons": ["/joints: 3 lost"]},
        "privacy_paused": [[T0 + 12 * S, T0 + 13 * S]]},
}


def test_discarded_quality_and_window_are_catalogued(catalog: Catalog) -> None:
    catalog.ingest_session(make_report("r1", 1, tasks=[("fold towel", "failure"),
                                                       ("fold towel", "success")],
                                       task_extra=RERECORDED))
    catalog.ingest_session(make_report("r1", 2, start_ns=T0 + 3600 * S))
    # Discarded episodes are left out unless asked for.
    kept = catalog.episodes().items
    assert [(e.session_id, e.episode_index) for e in kept] == [
        ("r1_0001", 1), ("r1_0002", 0), ("r1_0002", 1)]
    assert not any(e.discarded for e in kept)
    every = catalog.episodes(EpisodeFilter(include_discarded=True)).items
    assert len(every) == 4
    gone = every[0]
    assert (gone.episode_index, gone.discarded, gone.outcome) == (0, True, "failure")
    assert gone.quality is not None and gone.quality.verdict == "fail"
    assert gone.quality.reasons == ["/cam/head: stalled 2.1 s"]
    assert (gone.window_start_ns, gone.window_end_ns) == (T0 - 2 * S, T0 + 11 * S)
    warn = every[1]
    assert warn.quality is not None and warn.quality.model_dump() == {
        "verdict": "warn", "reasons": ["/joints: 3 lost"]}
    assert every[2].quality is None and every[2].window_start_ns is None  # older sessions

    def keys(**kw: object) -> list[tuple[str, int]]:
        page = catalog.episodes(EpisodeFilter(**kw))  # type: ignore[arg-type]
        return [(e.session_id, e.episode_index) for e in page.items]

    assert keys(quality="warn") == [("r1_0001", 1)]
    assert keys(quality="fail") == []
    assert keys(quality="fail", include_discarded=True) == [("r1_0001", 0)]
    with pytest.raises(CatalogError, match=r"^quality 'ok': expected pass, warn or fail"):
        keys(quality="ok")
    # The session's detail lists every episode, the discarded one flagged.
    detail = catalog.session("r1_0001")
    assert detail is not None and detail.episodes == 2
    assert [e.discarded for e in detail.episode_rows] == [True, False]


def test_summary_counts_kept_episodes_and_discarded_apart(catalog: Catalog) -> None:
    catalog.ingest_session(make_report("r1", 1, tasks=[("fold towel", "failure"),
                                                       ("fold towel", "success")],
                                       task_extra=RERECORDED))
    name = datetime.fromtimestamp(T0 / S).date().isoformat()
    s = catalog.summary(name)
    assert s.episodes_by_outcome == {"success": 1}
    assert s.episodes_by_task == {"fold towel": 1} and s.episodes_by_operator == {"op1": 1}
    assert s.episodes_discarded == 1


def test_upgrade_from_0001_keeps_every_row_and_backfills(db_url: str) -> None:
    """A catalog written by the first schema, upgraded: every row stays, and episodes whose
    stored session.json says discarded/quality/window get those (sync does not download a
    verified session again, so the upgrade itself must fill them in)."""
    from alembic import command
    from sqlalchemy import MetaData, func, insert, select

    engine_catalog = Catalog(db_url, migrate=False)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine_catalog.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
    old = MetaData()
    old.reflect(engine_catalog.engine)
    assert "discarded" not in old.tables["episodes"].c
    reports = [make_report("r1", 1, tasks=[("fold towel", "failure"), ("fold towel", "success")],
                           task_extra=RERECORDED),
               make_report("r2", 1, upload_state="verified", remote="s3://b/r2_0001")]
    with engine_catalog.engine.begin() as conn:
        conn.execute(insert(old.tables["robots"]), [
            {"robot_id": r, "created_ns": T0} for r in ("r1", "r2")])
        for rep in reports:
            m = rep.manifest
            conn.execute(insert(old.tables["sessions"]).values(
                session_id=m.session_id, robot_id=m.robot_id, visit_id="v", operator="op1",
                site="hall-a", state="closed", start_ns=m.started_ns, end_ns=m.ended_ns,
                bytes=1000, remote=rep.remote, upload_state=rep.upload_state,
                manifest_sha256="0" * 64, manifest=m.model_dump(mode="json"), updated_ns=T0))
            for t in m.tasks:
                conn.execute(insert(old.tables["episodes"]).values(
                    session_id=m.session_id, episode_index=t.episode_index,
                    robot_id=m.robot_id, task=t.task, instruction="", outcome=t.outcome,
                    operator="op1", site="hall-a", visit_id="v", start_ns=t.start_ns,
                    end_ns=t.end_ns, duration_sec=10.0, lost={}, lost_total=0))
            conn.execute(insert(old.tables["files"]).values(
                session_id=m.session_id, key="data_0.mcap", size=1000, sha256="0" * 64))
    counts = {}
    with engine_catalog.engine.connect() as conn:
        for name in ("robots", "sessions", "episodes", "files"):
            counts[name] = conn.scalar(select(func.count()).select_from(old.tables[name]))
    engine_catalog.close()
    assert counts == {"robots": 2, "sessions": 2, "episodes": 4, "files": 2}

    with Catalog(db_url) as c:  # opening migrates to the head
        assert current_revision(c.engine) == HEAD
        with c.engine.connect() as conn:
            for name, n in counts.items():
                assert conn.scalar(select(func.count()).select_from(old.tables[name])) == n
        every = c.episodes(EpisodeFilter(include_discarded=True)).items
        assert len(every) == 4
        r1 = {e.episode_index: e for e in every if e.robot_id == "r1"}
        assert r1[0].discarded and r1[0].quality is not None
        assert r1[0].quality.reasons == ["/cam/head: stalled 2.1 s"]
        assert (r1[1].discarded, r1[1].window_end_ns) == (False, T0 + 22 * S)
        assert [e.quality for e in every if e.robot_id == "r2"] == [None, None]
        assert len(c.episodes().items) == 3
        assert c.session("r2_0001") is not None
        assert c.session("r2_0001").upload_state == "verified"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a URL"),
        ("mysql://h/db", "unsupported database 'mysql'"),
        ("postgresql+asyncpg://h/db", "only psycopg"),
        ("sqlite://", "needs a file"),
        ("postgresql://u:secret@127.0.0.1:1/db", "cannot open or migrate"),
    ],
)
def test_bad_database_urls(url: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message) as err:
        Catalog(url)
    assert "secret" not in str(err.value) and "\n" not in str(err.value)


def test_sqlite_is_in_wal_mode(tmp_path: Path) -> None:
    with Catalog(f"sqlite:///{tmp_path}/f.db") as c:
        c.add_robot("r1")
    con = sqlite3.connect(tmp_path / "f.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_models_match_the_migrations(db_url: str) -> None:
    # The tables the migrations build are the ones the models describe: a model change
    # without its migration fails here, not on a floor's database.
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from xsquare_logger.floor.catalog.models import Base

    with Catalog(db_url) as c, c.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_out_of_range_numbers_are_bad_input(catalog: Catalog) -> None:
    catalog.add_robot("r1")
    with pytest.raises(CatalogError, match="value refused"):
        catalog.record_heartbeat(heartbeat("r1", disk_free_bytes=2**70))


# -- two replicas writing at once ------------------------------------------------------------


def _interleave(db_url: str, table: str, first: Callable[[Catalog], object],
                second: Callable[[Catalog], object]) -> None:
    """Two replicas (own engines) on one database: ``second`` runs until its first
    statement on ``table`` has run, then ``first`` runs to its end, then ``second``
    finishes: the read-then-write race of two replicas, made to happen every time.

    Where ``second`` holds a lock by then, ``first`` waits for it; the pause then ends
    after a bounded wait (it cannot see ``first`` finish) and both still complete.
    """
    with Catalog(db_url) as a, Catalog(db_url) as b:
        paused, first_done = threading.Event(), threading.Event()

        def pause(_c: object, _cur: object, statement: str, *_: object) -> None:
            if table in statement and not paused.is_set():
                paused.set()
                first_done.wait(timeout=1.5)

        for engine in {b.engine, b.fast_engine}:  # heartbeats use the fast one
            event.listen(engine, "after_cursor_execute", pause)
        errors: list[BaseException] = []

        def run_second() -> None:
            try:
                second(b)
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)

        worker = threading.Thread(target=run_second)
        worker.start()
        try:
            assert paused.wait(timeout=30), f"second replica never touched {table}"
            first(a)
        finally:
            first_done.set()
            worker.join(timeout=60)
        if errors:
            raise errors[0]


def test_first_heartbeats_of_two_replicas_at_once(db_url: str) -> None:
    # A robot's retry reaches replica A while its first heartbeat is still in replica B:
    # both must be taken (one row, the one committed last), never an error (a 500).
    with Catalog(db_url) as c:
        c.add_robot("r1")
    _interleave(db_url, "robot_status",
                lambda a: a.record_heartbeat(heartbeat("r1", messages_lost=1)),
                lambda b: b.record_heartbeat(heartbeat("r1", messages_lost=2)))
    with Catalog(db_url) as c:
        tile = c.robot("r1")
        assert tile is not None and tile.last_heartbeat is not None
        assert tile.last_heartbeat.messages_lost in (1, 2)


def test_concurrent_reports_never_move_the_upload_state_back(db_url: str) -> None:
    # Replica B handles a late "uploading" report of a session while replica A handles
    # its "verified" one. Whatever the interleaving, the catalog ends at verified.
    with Catalog(db_url) as c:
        c.ingest_session(make_report("r1", 1))
    verified = make_report("r1", 1, upload_state="verified", remote="s3://b/r1_0001")
    _interleave(db_url, "sessions",
                lambda a: a.ingest_session(verified),
                lambda b: b.ingest_session(make_report("r1", 1, upload_state="uploading")))
    with Catalog(db_url) as c:
        detail = c.session("r1_0001")
        assert detail is not None
        assert (detail.upload_state, detail.remote) == ("verified", "s3://b/r1_0001")
        assert len(detail.episode_rows) == 2


def test_heartbeats_and_token_checks_survive_dropped_connections(
        request: pytest.FixtureRequest) -> None:
    """Their pool does not ping before each use (a round trip per request): a connection
    the database dropped (restart, failover, idle kill) must still not fail a request."""
    from sqlalchemy import create_engine, text

    url = str(request.getfixturevalue("postgres_url"))
    with Catalog(url) as c:
        token = c.add_robot("r1")
        c.record_heartbeat(heartbeat("r1", messages_lost=1))
        assert c.authenticate(token) == Principal("robot", "r1")
        admin = create_engine(c.engine.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            killed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        admin.dispose()
        assert killed  # the pooled connections are gone
        c.record_heartbeat(heartbeat("r1", messages_lost=2))
        assert c.authenticate(token) == Principal("robot", "r1")
        tile = c.robot("r1")
        assert tile is not None and tile.last_heartbeat is not None
        assert tile.last_heartbeat.messages_lost == 2
