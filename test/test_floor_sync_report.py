"""A session reported by its robot and the same session found by `xsq floor sync` are
catalogued identically (floor/protocol.py promises it; a training job or the
dashboard must not see different numbers depending on how a session arrived).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import text
from support.sample import make_session

pytest.importorskip("xsquare_logger.floor.catalog", reason="the floor extra is not installed")

from xsquare_logger.floor.catalog import Catalog
from xsquare_logger.floor.reporter import build_session_report
from xsquare_logger.floor.sync import open_destination, sync


def test_robot_report_and_sync_catalogue_a_session_identically(tmp_path: Path) -> None:
    session = make_session(tmp_path / "data", "r1", 300_000, max_file_bytes=120_000)
    depot = tmp_path / "depot"
    folder = depot / "r1" / "2026-05-28" / session.name
    shutil.copytree(session, folder)  # what the uploader leaves at the destination
    remote = f"file://{folder}"

    with Catalog(f"sqlite:///{tmp_path}/robot.db") as reported, \
            Catalog(f"sqlite:///{tmp_path}/synced.db") as synced:
        reported.ingest_session(build_session_report(session, "verified", remote))
        result = sync(synced, open_destination(f"file://{depot}"))
        assert (result.added, result.problems) == (1, [])
        a, b = reported.session(session.name), synced.session(session.name)
        assert a is not None and b is not None
        assert a.model_dump(exclude={"updated_ns"}) == b.model_dump(exclude={"updated_ns"})
        # bytes: the session's data files, as its session.json lists them.
        assert a.bytes == sum(f.size for f in a.files) == sum(
            p.stat().st_size for p in session.glob("*.mcap"))


def test_a_conflicting_marker_is_a_problem_line_and_sync_goes_on(tmp_path: Path) -> None:
    """A session id catalogued for another robot (a robot reported someone else's id)
    must not stop sync at that marker: the others are still added, the conflict is shown."""
    depot = tmp_path / "depot"
    ids = []
    for seed, robot in enumerate(("r1", "r2")):
        session = make_session(tmp_path / "data", robot, 50_000, seed=seed)
        shutil.copytree(session, depot / robot / "2026-05-28" / session.name)
        ids.append(session.name)
    with Catalog(f"sqlite:///{tmp_path}/c.db") as catalog:
        # The catalog refuses a squatted id now (session_id_prefix), but a catalog from
        # before that rule may hold one: r1's id catalogued for r9.
        catalog.ingest_session(build_session_report(tmp_path / "data" / ids[0]))
        with catalog.engine.begin() as conn:
            conn.execute(text("UPDATE sessions SET robot_id = 'r9' WHERE session_id = :s"),
                         {"s": ids[0]})
        result = sync(catalog, open_destination(f"file://{depot}"))
        assert (result.markers, result.added, result.updated) == (2, 1, 0)
        assert len(result.problems) == 1 and ids[0] in result.problems[0]
        assert "r9" in result.problems[0] and "\n" not in result.problems[0]
        assert result.line() == "2 sessions in the bucket: 1 added, 0 updated, 1 in conflict"
        two = catalog.session(ids[1])
        assert two is not None and two.upload_state == "verified"
        one = catalog.session(ids[0])
        assert one is not None and one.robot_id == "r9"  # the catalog is not silently changed


def test_a_marker_outside_its_robots_namespace_is_refused_and_sync_goes_on(
        tmp_path: Path) -> None:
    """A session.json whose id is not its robot's (``<robot_id>_...``, the recorder's one
    generator) would squat another robot's id: refused like a robot's own report."""
    import json

    depot = tmp_path / "depot"
    ids = []
    for seed, robot in enumerate(("r1", "r2")):
        session = make_session(tmp_path / "data", robot, 50_000, seed=seed)
        shutil.copytree(session, depot / robot / "2026-05-28" / session.name)
        ids.append(session.name)
    marker = depot / "r2" / "2026-05-28" / ids[1] / "session.json"
    doc = json.loads(marker.read_text())
    doc["robot_id"] = "r9"
    marker.write_text(json.dumps(doc))
    with Catalog(f"sqlite:///{tmp_path}/c.db") as catalog:
        result = sync(catalog, open_destination(f"file://{depot}"))
        assert (result.markers, result.added, result.refused) == (2, 1, 1)
        assert len(result.problems) == 1 and ids[1] in result.problems[0]
        assert "not in robot 'r9''s namespace" in result.problems[0]
        assert result.line() == "2 sessions in the bucket: 1 added, 0 updated, 1 refused"
        assert catalog.session(ids[1]) is None and catalog.session(ids[0]) is not None
