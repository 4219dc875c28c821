"""`xsq export lerobot OUT --floor URL --token T` / `--db URL`: the floor catalog picks the
episodes, the bucket supplies them.

Two sessions (test_export_lerobot's, three episodes each) are uploaded by the real Uploader
to a real S3 server; `xsq floor sync` catalogs them from the bucket into SQLite; a real
`xsq floor serve` answers the export's episode query. In the second session, episode 2 was
marked discarded (re-recorded) in its session.json: it is never exported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from support.localserver import LocalS3Server, free_port
from test_export_lerobot import build
from test_export_s3 import BUCKET, s3_env, upload

from xsquare_logger.export.mapping import load_mapping
from xsquare_logger.export.run import EpisodeFilter, run_export, select_from_catalog

pytest.importorskip("av")
pytest.importorskip("sqlalchemy")

SESSIONS = ("x2-sim_20250615T000000Z_aaaaaa", "x2-sim_20250615T000000Z_bbbbbb")


@dataclass
class Floor:
    url: str  # the running service
    token: str  # a reader token
    db: str  # its SQLite catalog
    env: dict[str, str]
    remotes: dict[str, str]  # session id -> s3:// folder
    local: list[Path]


def xsq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xsquare_logger.cli.main", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def _discard(session: Path, episode: int) -> None:
    """What the tablet's Re-record will leave in session.json: the episode kept, marked."""
    path = session / "session.json"
    manifest = json.loads(path.read_text())
    manifest["tasks"][episode]["discarded"] = True
    path.write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Floor]:
    tmp = tmp_path_factory.mktemp("floor")
    with LocalS3Server(tmp / "s3", buckets=(BUCKET,)) as server:
        local, remotes = [], {}
        for n, sid in enumerate(SESSIONS):
            session = build(tmp / f"robot{n}" / sid)
            if n == 1:
                _discard(session, 2)
            remotes[sid] = upload(session, server, tmp / f"up{n}")
            local.append(session)
        env = s3_env(server)
        db = f"sqlite:///{tmp}/floor.db"
        config = tmp / "logger.yaml"
        config.write_text(f"upload:\n  s3:\n    endpoint_url: {server.endpoint}\n")
        p = xsq("floor", "sync", "--destination", f"s3://{BUCKET}/fleet", "--db", db,
                "--config", str(config), env=env)
        assert p.returncode == 0 and "2 added" in p.stdout, p.stdout + p.stderr
        token = xsq("floor", "readers", "add", "trainer", "--db", db, env=env).stdout.strip()
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "xsquare_logger.cli.main", "floor",
                                 "serve", "--db", db, "--listen", f"127.0.0.1:{port}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        try:
            assert proc.stdout is not None and "serving" in proc.stdout.readline()
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:  # uvicorn binds just after the line
                try:
                    with urllib.request.urlopen(f"{url}/healthz", timeout=5):
                        break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.2)
            yield Floor(url, token, db, env, remotes, local)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = Path("config/export/humanoid.yaml").read_text().replace("video_codec: auto",
                                                                   "video_codec: h264")
    path = tmp_path_factory.mktemp("m") / "mapping.yaml"
    path.write_text(text)
    return path


def _episodes(root: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for f in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return rows


def test_export_from_a_floor_service(floor: Floor, mapping_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    p = xsq("export", "lerobot", str(out), "--floor", floor.url, "--token", floor.token,
            "--mapping", str(mapping_file), "--workers", "2", env=floor.env)
    assert p.returncode == 0, p.stderr
    assert floor.token not in p.stdout + p.stderr
    # success (the default) in both sessions: 0 and 2 of each, but b's 2 was discarded.
    assert "3 episodes written" in p.stdout, p.stdout
    # The catalog knows it (sync read session.json): left out before any work, and said so.
    assert "not selected: 1 discarded" in p.stdout, p.stdout
    assert "MB from S3" in p.stdout
    eps = _episodes(out)
    got = [(e["source/session_id"], e["source/episode_index"]) for e in eps]
    # In the catalog's order: by start time, then session, then episode.
    assert got == [(SESSIONS[0], 0), (SESSIONS[1], 0), (SESSIONS[0], 2)]
    assert [e["source/session"] for e in eps] == [floor.remotes[s] for s, _ in got]
    # The same frames as the local copy's export of each episode.
    local = tmp_path / "local"
    run_export(local, [str(s) for s in floor.local], load_mapping(mapping_file),
               EpisodeFilter(), 1)
    lengths = {(e["source/session_id"], e["source/episode_index"]): e["length"]
               for e in _episodes(local)}
    assert set(lengths) == set(got)  # the local export leaves the discarded one out too
    assert [e["length"] for e in eps] == [lengths[k] for k in got]


def test_export_from_the_catalog_database_with_filters(
    floor: Floor, mapping_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    p = xsq("export", "lerobot", str(out), "--db", floor.db, "--task", "wipe table",
            "--robot", "x2-sim", "--operator", "ben", "--mapping", str(mapping_file),
            "--workers", "1", env=floor.env)
    assert p.returncode == 0, p.stderr
    assert "1 episodes written" in p.stdout and "not selected: 1 discarded" in p.stdout, p.stdout
    assert [(e["source/session_id"], e["source/episode_index"]) for e in _episodes(out)] == [
        (SESSIONS[0], 2)]
    # Nothing matches: nothing written, the dataset is not created.
    p = xsq("export", "lerobot", str(tmp_path / "none"), "--db", floor.db, "--robot", "ghost",
            "--mapping", str(mapping_file), env=floor.env)
    assert p.returncode == 0 and "0 episodes written" in p.stdout, p.stderr
    assert not (tmp_path / "none").exists()


def test_refused_token_is_one_line(floor: Floor, tmp_path: Path) -> None:
    p = xsq("export", "lerobot", str(tmp_path / "ds"), "--floor", floor.url, "--token",
            "xsqread_wrong", env=floor.env)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "answered 401" in lines[0], p.stderr
    assert not (tmp_path / "ds").exists()


def test_catalog_rows_not_exportable_are_left_out() -> None:
    base = {"robot_id": "r1", "session_id": "s", "task": "t", "start_ns": 1, "end_ns": 2,
            "outcome": "success", "remote": "s3://b/p/s", "upload_state": "verified"}
    rows = [
        {**base, "episode_index": 0},
        {**base, "episode_index": 1, "outcome": "discarded"},
        {**base, "episode_index": 2, "end_ns": None},
        {**base, "episode_index": 3, "upload_state": "uploading"},
        {**base, "episode_index": 4, "remote": ""},
        {**base, "episode_index": 5, "remote": "file:///depot/r1/s", "upload_state": "deleted"},
    ]
    chosen, filtered = select_from_catalog(rows)
    assert [(spec, t.episode_index) for spec, t in chosen] == [("s3://b/p/s", 0),
                                                               ("/depot/r1/s", 5)]
    assert filtered == {"discarded": 1, "not ended": 1, "not in the bucket yet": 2}
    assert os.sep == "/"
