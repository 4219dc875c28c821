"""``xsq floor ...`` as a user runs it: real processes, a real S3 server (rclone serve s3)
for sync, and one-line errors with exit status 2 for everything a user can get wrong.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.localserver import LocalS3Server, free_port
from test_floor_catalog import T0, make_report

from xsquare_logger.floor.catalog import Catalog

PREFIX = "floor-test"


def xsq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xsquare_logger.cli.main", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_tokens_printed_once_to_stdout(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path}/f.db"]
    add = xsq("floor", "robots", "add", "r1", *db)
    assert add.returncode == 0, add.stderr
    token = add.stdout.strip()
    assert token.startswith("xsqrobot_") and token not in add.stderr
    assert xsq("floor", "robots", "list", *db).stdout == "r1\tactive\n"
    one_line_error(xsq("floor", "robots", "add", "r1", *db), "exists already")
    assert xsq("floor", "robots", "revoke", "r1", *db).returncode == 0
    assert xsq("floor", "robots", "list", *db).stdout == "r1\trevoked\n"
    one_line_error(xsq("floor", "robots", "revoke", "ghost", *db), "no active robot named 'ghost'")
    reader = xsq("floor", "readers", "add", "lead", *db)
    assert reader.stdout.startswith("xsqread_")
    assert xsq("floor", "readers", "list", *db).stdout == "lead\tactive\n"
    # The default catalog lives in --data-dir (or $XSQ_FLOOR_DATA_DIR).
    env = {"XSQ_FLOOR_DATA_DIR": str(tmp_path / "dd")}
    assert xsq("floor", "robots", "add", "r9", env=env).returncode == 0
    assert (tmp_path / "dd" / "floor.db").is_file()


def test_user_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    one_line_error(xsq("floor", "robots", "list", "--db", "not a url"), "is not a URL")
    one_line_error(xsq("floor", "robots", "list", "--db", "mysql://h/d"), "unsupported")
    one_line_error(
        xsq("floor", "robots", "list", "--db", "postgresql://u:hunter2@127.0.0.1:1/x"),
        "cannot open or migrate")
    assert "hunter2" not in xsq("floor", "robots", "list", "--db",
                                "postgresql://u:hunter2@127.0.0.1:1/x").stderr
    port = free_port()  # nothing listens there
    one_line_error(xsq("floor", "episodes", "--floor", f"http://127.0.0.1:{port}",
                       "--token", "t"), "cannot reach the floor")
    one_line_error(xsq("floor", "episodes", "--floor", f"http://127.0.0.1:{port}"),
                   "needs a reader token")
    one_line_error(xsq("floor", "serve", "--listen", "nonsense"), "--listen")
    one_line_error(xsq("floor", "episodes", "--db", f"sqlite:///{tmp_path}/f.db",
                       "--since", "monday"), "--since 'monday'")
    one_line_error(xsq("floor", "sync", "--destination", "ftp://x",
                       "--db", f"sqlite:///{tmp_path}/f.db"), "--destination")


def test_port_in_use_is_one_line_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = xsq("floor", "serve", "--db", f"sqlite:///{tmp_path}/f.db",
                "--listen", f"127.0.0.1:{port}")
    one_line_error(p, f"cannot listen on 127.0.0.1:{port}")
    assert "serving" not in p.stdout  # nothing claims to serve where it does not


def test_bad_token_against_a_running_floor(tmp_path: Path) -> None:
    port = free_port()
    db = f"sqlite:///{tmp_path}/f.db"
    proc = subprocess.Popen([sys.executable, "-m", "xsquare_logger.cli.main", "floor", "serve",
                             "--db", db, "--listen", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "serving http://127.0.0.1:" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        while True:  # wait for uvicorn to bind (the line comes just before)
            p = xsq("floor", "episodes", "--floor", url, "--token", "xsqread_wrong")
            if "cannot reach" not in p.stderr:
                break
            assert proc.poll() is None
            time.sleep(0.2)
        one_line_error(p, "answered 401", "unknown or revoked token")
        robot = xsq("floor", "robots", "add", "r1", "--db", db).stdout.strip()
        one_line_error(xsq("floor", "episodes", "--floor", url, "--token", robot),
                       "answered 403")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_episodes_from_the_database_as_csv_and_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/f.db"
    with Catalog(url) as c:
        for n in range(3):
            c.ingest_session(make_report("r1", n, lost={"/cam": 2}))
    p = xsq("floor", "episodes", "--db", url, "--task", "fold towel", "--csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [r["session_id"] for r in rows] == ["r1_0000", "r1_0001", "r1_0002"]
    assert json.loads(rows[0]["lost"]) == {"/cam": 2} and rows[0]["outcome"] == "success"
    p = xsq("floor", "episodes", "--db", url, "--json", "--limit", "4")
    assert len(json.loads(p.stdout)) == 4  # over two internal pages of the catalog
    p = xsq("floor", "episodes", "--db", url, "--outcome", "failure", "--robot", "r1")
    assert len(p.stdout.strip().splitlines()) == 3 and "pick cup" in p.stdout


def test_episodes_discarded_and_quality_flags(tmp_path: Path) -> None:
    from test_floor_catalog import RERECORDED

    url = f"sqlite:///{tmp_path}/f.db"
    with Catalog(url) as c:
        c.ingest_session(make_report("r1", 1, tasks=[("fold towel", "failure"),
                                                     ("fold towel", "success")],
                                     task_extra=RERECORDED))
    p = xsq("floor", "episodes", "--db", url, "--csv")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [(r["episode_index"], r["discarded"], r["quality"]) for r in rows] == [
        ("1", "false", "warn")]
    assert json.loads(rows[0]["quality_reasons"]) == ["/joints: 3 lost"]
    assert rows[0]["window_end_ns"] == str(T0 + 22 * 10**9)
    p = xsq("floor", "episodes", "--db", url, "--include-discarded", "--quality", "fail",
            "--json")
    got = json.loads(p.stdout)
    assert [(r["episode_index"], r["discarded"]) for r in got] == [(0, True)]
    p = xsq("floor", "episodes", "--db", url, "--include-discarded")
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and "discarded" in lines[0] and "discarded" not in lines[1]
    assert "quality=warn" in lines[1]
    one_line_error(xsq("floor", "episodes", "--db", url, "--quality", "ok"),
                   "quality 'ok': expected pass, warn or fail")


# -- sync from a real S3 bucket --------------------------------------------------------------


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[LocalS3Server]:
    with LocalS3Server(tmp_path / "s3") as server:
        yield server


def _put_session(s3: LocalS3Server, robot: str, n: int) -> str:
    """A session as the uploader leaves it: files first, session.json (the marker) last."""
    report = make_report(robot, n)
    sid = report.manifest.session_id
    folder = f"{PREFIX}/{robot}/2026-05-28/{sid}"
    client = s3.client()
    client.put_object(Bucket="sessions", Key=f"{folder}/data_0.mcap", Body=b"x" * 1000)
    client.put_object(Bucket="sessions", Key=f"{folder}/session.json",
                      Body=report.manifest.model_dump_json().encode())
    return f"s3://sessions/{folder}"


def _s3_args(s3: LocalS3Server, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    config = tmp_path / "logger.yaml"
    config.write_text(f"upload:\n  s3:\n    endpoint_url: {s3.endpoint}\n")
    return ["--config", str(config)], s3.env()


def test_sync_adds_missing_sessions_and_is_idempotent(s3: LocalS3Server, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/f.db"
    remotes = [_put_session(s3, "r1", n) for n in range(3)]
    _put_session(s3, "r2", 0)
    # A half-written or foreign marker is reported, not fatal.
    s3.client().put_object(Bucket="sessions", Key=f"{PREFIX}/junk/session.json", Body=b"{oops")
    with Catalog(url) as c:  # r1_0000 was reported by its robot, before its upload
        c.ingest_session(make_report("r1", 0))
    args, env = _s3_args(s3, tmp_path)
    cmd = ["floor", "sync", "--destination", f"s3://sessions/{PREFIX}", "--db", url, *args]
    p = xsq(*cmd, env=env)
    assert p.returncode == 0, p.stderr
    assert "5 sessions in the bucket: 3 added, 1 updated, 1 unreadable" in p.stdout
    assert len(p.stderr.strip().splitlines()) == 1 and "junk/session.json" in p.stderr
    assert s3.secret_key not in p.stdout + p.stderr
    with Catalog(url) as c:
        for n, remote in enumerate(remotes):
            detail = c.session(f"r1_{n:04d}")
            assert detail is not None
            assert (detail.upload_state, detail.remote) == ("verified", remote)
        assert len(c.episodes(limit=100).items) == 8
    p = xsq(*cmd, env=env)
    assert "5 sessions in the bucket: 0 added, 0 updated, 1 unreadable" in p.stdout
    # Without credentials the bucket refuses: one line, exit 2, no secret.
    no_creds = {"AWS_ACCESS_KEY_ID": "XSQWRONGKEY000000", "AWS_SECRET_ACCESS_KEY": "nope"}
    one_line_error(xsq(*cmd, env=no_creds), "xsq floor:")


def test_sync_from_a_file_depot(tmp_path: Path) -> None:
    depot = tmp_path / "depot"
    report = make_report("r1", 7)
    folder = depot / "r1" / "2026-05-28" / "r1_0007"
    folder.mkdir(parents=True)
    (folder / "session.json").write_text(report.manifest.model_dump_json())
    (depot / ".uploads" / "x").mkdir(parents=True)  # in-progress uploads are not objects
    (depot / ".uploads" / "x" / "session.json").write_text("{}")
    url = f"sqlite:///{tmp_path}/f.db"
    p = xsq("floor", "sync", "--destination", f"file://{depot}", "--db", url)
    assert "1 sessions in the bucket: 1 added, 0 updated" in p.stdout, p.stderr
    with Catalog(url) as c:
        detail = c.session("r1_0007")
        assert detail is not None and detail.remote == f"file://{folder}"


def test_serve_syncs_on_a_timer(s3: LocalS3Server, tmp_path: Path) -> None:
    remote = _put_session(s3, "r1", 1)
    url = f"sqlite:///{tmp_path}/f.db"
    args, env = _s3_args(s3, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "xsquare_logger.cli.main", "floor", "serve", "--db", url,
         "--listen", f"127.0.0.1:{free_port()}", "--sync-destination",
         f"s3://sessions/{PREFIX}", "--sync-interval", "0.5", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 60
        with Catalog(url) as c:
            while c.session_upload("r1_0001") is None:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            assert c.session_upload("r1_0001") == ("verified", remote)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
