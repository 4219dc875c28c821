"""The floor HTTP API: a real ``xsq floor serve`` (uvicorn on 127.0.0.1, a free port) for
the end-to-end paths, FastAPI's TestClient (same app, in-process) for fine-grained cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.localserver import free_port
from test_floor_catalog import T0, heartbeat, make_report
from test_floor_catalog import db_url as db_url  # the parametrized fixture (both databases)

from xsquare_logger.floor.api import create_app
from xsquare_logger.floor.catalog import Catalog
from xsquare_logger.floor.catalog.db import HEAD, current_revision

P = "/api/v1"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def _app_on(url: str) -> Iterator[tuple[TestClient, Catalog, dict[str, str]]]:
    catalog = Catalog(url)
    tokens = {"r1": catalog.add_robot("r1"), "r2": catalog.add_robot("r2"),
              "reader": catalog.add_reader("lead")}
    with TestClient(create_app(catalog, dashboard=None)) as client:
        yield client, catalog, tokens
    catalog.close()


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[tuple[TestClient, Catalog, dict[str, str]]]:
    with _app_on(f"sqlite:///{tmp_path}/floor.db") as app:
        yield app


@pytest.fixture
def floor_any(db_url: str) -> Iterator[tuple[TestClient, Catalog, dict[str, str]]]:
    """The app on SQLite and on the real PostgreSQL cluster (``db_url`` is parametrized)."""
    with _app_on(db_url) as app:
        yield app


def _hb(robot: str, **kw: Any) -> dict[str, Any]:
    return heartbeat(robot, **kw).model_dump(mode="json")


def _session(robot: str, n: int, **kw: Any) -> dict[str, Any]:
    return make_report(robot, n, **kw).model_dump(mode="json")


def test_robot_writes_its_own_records_only(floor: Any) -> None:
    client, _, tok = floor
    r = client.post(f"{P}/robots/r1/heartbeats", json=_hb("r1"), headers=_auth(tok["r1"]))
    assert r.status_code == 204
    r = client.post(f"{P}/robots/r2/heartbeats", json=_hb("r2"), headers=_auth(tok["r1"]))
    assert r.status_code == 403 and "may not write robot 'r2'" in r.json()["detail"]
    r = client.put(f"{P}/robots/r2/sessions/r2_0001", json=_session("r2", 1),
                   headers=_auth(tok["r1"]))
    assert r.status_code == 403
    # Readers read, never write.
    r = client.post(f"{P}/robots/r1/heartbeats", json=_hb("r1"), headers=_auth(tok["reader"]))
    assert r.status_code == 403 and "reader tokens may not write" in r.json()["detail"]
    # A robot reads its own tile and nothing else.
    assert client.get(f"{P}/robots/r1", headers=_auth(tok["r1"])).status_code == 200
    for path in ("/robots/r2", "/robots", "/episodes", "/sessions", "/summary"):
        r = client.get(P + path, headers=_auth(tok["r1"]))
        assert r.status_code == 403, path
    assert client.get("/metrics", headers=_auth(tok["r1"])).status_code == 403


def test_missing_unknown_and_revoked_tokens_are_401(floor: Any) -> None:
    client, catalog, tok = floor
    r = client.get(f"{P}/robots")
    assert r.status_code == 401 and r.json() == {
        "detail": "missing token: send Authorization: Bearer <token>"}
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.get(f"{P}/robots", headers=_auth("xsqread_nope")).status_code == 401
    assert client.get(f"{P}/robots", headers={"Authorization": "Basic abc"}).status_code == 401
    catalog.revoke_robot("r1")
    r = client.post(f"{P}/robots/r1/heartbeats", json=_hb("r1"), headers=_auth(tok["r1"]))
    assert r.status_code == 401 and r.json()["detail"] == "unknown or revoked token"
    tiles = client.get(f"{P}/robots", headers=_auth(tok["reader"])).json()
    assert {t["robot_id"]: t["revoked"] for t in tiles} == {"r1": True, "r2": False}


def test_session_put_is_idempotent(floor: Any) -> None:
    client, _, tok = floor
    url = f"{P}/robots/r1/sessions/r1_0001"
    r = client.put(url, json=_session("r1", 1), headers=_auth(tok["r1"]))
    assert r.status_code == 201 and r.json()["episodes"] == 2
    r = client.put(url, json=_session("r1", 1), headers=_auth(tok["r1"]))
    assert r.status_code == 200 and r.json()["upload_state"] == "pending"
    r = client.put(url, json=_session("r1", 1, upload_state="verified", remote="s3://b/x"),
                   headers=_auth(tok["r1"]))
    assert (r.json()["upload_state"], r.json()["remote"]) == ("verified", "s3://b/x")
    page = client.get(f"{P}/episodes", headers=_auth(tok["reader"])).json()
    assert len(page["items"]) == 2 and page["next_cursor"] is None
    assert {e["remote"] for e in page["items"]} == {"s3://b/x"}
    detail = client.get(f"{P}/sessions/r1_0001", headers=_auth(tok["reader"])).json()
    assert detail["manifest"]["session_id"] == "r1_0001"
    assert [f["key"] for f in detail["files"]] == ["data_0.mcap", "metadata.yaml"]
    assert len(detail["episode_rows"]) == 2


def test_bad_input_is_a_one_line_4xx(floor: Any) -> None:
    client, _, tok = floor
    rob, rd = _auth(tok["r1"]), _auth(tok["reader"])
    cases = [
        client.post(f"{P}/robots/r1/heartbeats", json={**_hb("r1"), "state": "dancing"},
                    headers=rob),
        client.post(f"{P}/robots/r1/heartbeats", json={**_hb("r1"), "typo": 1}, headers=rob),
        client.post(f"{P}/robots/r1/heartbeats", json=_hb("r2"), headers=rob),
        client.post(f"{P}/robots/r1/heartbeats", content=b"{not json", headers=rob),
        client.post(f"{P}/robots/r1/heartbeats", json={**_hb("r1"), "disk_free_bytes": 2**70},
                    headers=rob),
        client.put(f"{P}/robots/r1/sessions/other", json=_session("r1", 1), headers=rob),
        client.get(f"{P}/episodes?limit=0", headers=rd),
        client.get(f"{P}/episodes?limit=abc", headers=rd),
        client.get(f"{P}/episodes?cursor=garbage", headers=rd),
        client.get(f"{P}/episodes?since=monday", headers=rd),
        client.get(f"{P}/summary?day=2026-13-01", headers=rd),
    ]
    for r in cases:
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail
    assert cases[0].json()["detail"].startswith("body.state:")
    assert cases[1].json()["detail"].startswith("body.typo:")
    assert cases[7].json()["detail"].startswith("query.limit:")
    assert "session_id" in cases[5].json()["detail"]
    r = client.get(f"{P}/sessions/nope", headers=rd)
    assert r.status_code == 404 and r.json() == {"detail": "no session 'nope'"}


def test_session_id_outside_the_robots_namespace_is_refused(floor: Any) -> None:
    # Session ids are <robot_id>_<stamp>_<hex> (recording/recorder.py): a robot that PUTs an
    # id of another robot's namespace would squat it (the real robot's report then a 409).
    client, _, tok = floor
    for sid in ("r2_0001", "other"):
        body = _session("r1", 1)
        body["manifest"]["session_id"] = sid
        r = client.put(f"{P}/robots/r1/sessions/{sid}", json=body, headers=_auth(tok["r1"]))
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == (f"session id {sid!r}: not in robot 'r1''s namespace "
                                      "(its session ids start with 'r1_')")
    assert client.get(f"{P}/sessions", headers=_auth(tok["reader"])).json()["items"] == []
    # The real robot's report is then taken.
    r = client.put(f"{P}/robots/r2/sessions/r2_0001", json=_session("r2", 1),
                   headers=_auth(tok["r2"]))
    assert r.status_code == 201


def test_session_of_another_robot_conflicts(floor: Any) -> None:
    # Robot ids may contain '_': r1 catalogued r1_x_0001 before a robot r1_x existed. Once
    # r1_x is registered the id is in r1_x's (longer) namespace: r1 may no longer write it,
    # and r1_x's own report of it contradicts the catalog (409, nothing changed).
    client, catalog, tok = floor
    body = _session("r1", 1)
    body["manifest"]["session_id"] = "r1_x_0001"
    url = f"{P}/robots/r1/sessions/r1_x_0001"
    assert client.put(url, json=body, headers=_auth(tok["r1"])).status_code == 201
    token = catalog.add_robot("r1_x")
    r = client.put(url, json=body, headers=_auth(tok["r1"]))
    assert r.status_code == 422 and "namespace of robot 'r1_x'" in r.json()["detail"]
    theirs = _session("r1_x", 1)
    theirs["manifest"]["session_id"] = "r1_x_0001"
    r = client.put(f"{P}/robots/r1_x/sessions/r1_x_0001", json=theirs, headers=_auth(token))
    assert r.status_code == 409 and "belongs to robot 'r1'" in r.json()["detail"]
    detail = client.get(f"{P}/sessions/r1_x_0001", headers=_auth(tok["reader"])).json()
    assert detail["robot_id"] == "r1"


def test_episode_filters_and_pages(floor_any: Any) -> None:
    client, _, tok = floor_any
    tasks = [("fold towel", "success"), ("fold towel", "failure"), ("pick cup", "success")]
    for n in range(4):
        client.put(f"{P}/robots/r1/sessions/r1_{n:04d}",
                   json=_session("r1", n, tasks=tasks, start_ns=T0 + n * 3600 * 10**9,
                                 operator=f"op{n % 2}"),
                   headers=_auth(tok["r1"]))
    rd = _auth(tok["reader"])
    q = {"task": "fold towel", "outcome": "success", "operator": "op1", "robot": "r1"}
    items = client.get(f"{P}/episodes", params=q, headers=rd).json()["items"]
    assert [(e["session_id"], e["episode_index"]) for e in items] == [
        ("r1_0001", 0), ("r1_0003", 0)]
    since = client.get(f"{P}/episodes", params={"since": str(T0 + 2 * 3600 * 10**9)},
                       headers=rd).json()["items"]
    assert {e["session_id"] for e in since} == {"r1_0002", "r1_0003"}
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{P}/episodes", params=params, headers=rd).json()
        seen += [(e["session_id"], e["episode_index"]) for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 12
    sessions = client.get(f"{P}/sessions", params={"robot": "r1", "limit": 3}, headers=rd).json()
    assert len(sessions["items"]) == 3 and sessions["next_cursor"]


def test_discarded_episodes_and_quality_over_the_api(floor_any: Any) -> None:
    from test_floor_catalog import RERECORDED

    client, _, tok = floor_any
    rd = _auth(tok["reader"])
    body = _session("r1", 1, tasks=[("fold towel", "failure"), ("fold towel", "success")],
                    task_extra=RERECORDED)
    r = client.put(f"{P}/robots/r1/sessions/r1_0001", json=body, headers=_auth(tok["r1"]))
    assert r.status_code == 201 and r.json()["episodes"] == 2
    items = client.get(f"{P}/episodes", headers=rd).json()["items"]
    assert [(e["episode_index"], e["discarded"]) for e in items] == [(1, False)]
    assert items[0]["quality"] == {"verdict": "warn", "reasons": ["/joints: 3 lost"]}
    assert (items[0]["window_start_ns"], items[0]["window_end_ns"]) == (T0 + 9 * 10**9,
                                                                        T0 + 22 * 10**9)
    every = client.get(f"{P}/episodes", params={"include_discarded": "true"},
                       headers=rd).json()["items"]
    assert [(e["episode_index"], e["discarded"]) for e in every] == [(0, True), (1, False)]
    fail = client.get(f"{P}/episodes", params={"quality": "fail", "include_discarded": "true"},
                      headers=rd).json()["items"]
    assert [e["episode_index"] for e in fail] == [0]
    assert client.get(f"{P}/episodes", params={"quality": ""}, headers=rd).json()["items"]
    r = client.get(f"{P}/episodes", params={"quality": "great"}, headers=rd)
    assert r.status_code == 422 and r.json() == {
        "detail": "quality 'great': expected pass, warn or fail"}
    r = client.get(f"{P}/episodes", params={"include_discarded": "maybe"}, headers=rd)
    assert r.status_code == 422 and r.json()["detail"].startswith("query.include_discarded:")
    day = datetime.fromtimestamp(T0 / 10**9).date().isoformat()
    summary = client.get(f"{P}/summary", params={"day": day}, headers=rd).json()
    assert summary["episodes_by_outcome"] == {"success": 1}
    assert summary["episodes_discarded"] == 1


def test_openapi_summary_metrics_and_healthz(floor: Any) -> None:
    client, _, tok = floor
    spec = client.get("/openapi.json").json()
    for path in ("/robots/{robot_id}/heartbeats", "/robots/{robot_id}/sessions/{session_id}",
                 "/robots", "/robots/{robot_id}", "/sessions", "/sessions/{session_id}",
                 "/episodes", "/summary"):
        assert P + path in spec["paths"], path
    assert client.get("/healthz").json() == {"status": "ok"}
    client.post(f"{P}/robots/r1/heartbeats",
                json=_hb("r1", state="recording", messages_lost=3, upload_backlog_bytes=9),
                headers=_auth(tok["r1"]))
    summary = client.get(f"{P}/summary", headers=_auth(tok["reader"])).json()
    assert summary["robots"] == 2 and summary["robots_recording"] == 1
    r = client.get("/metrics", headers=_auth(tok["reader"]))
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'xsq_floor_messages_lost{robot="r1"} 3' in r.text
    assert 'xsq_floor_robots{state="stale"} 1' in r.text  # r2 never reported
    assert client.get("/").status_code == 404  # no dashboard folder given


def test_dashboard_is_served_when_present(tmp_path: Path) -> None:
    (tmp_path / "dash" / "static").mkdir(parents=True)
    (tmp_path / "dash" / "index.html").write_text("<html>floor</html>")
    (tmp_path / "dash" / "static" / "app.js").write_text("1;")
    with Catalog(f"sqlite:///{tmp_path}/f.db") as catalog, \
            TestClient(create_app(catalog, dashboard=tmp_path / "dash")) as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/app.js").text == "1;"


# -- a real service process --------------------------------------------------------------------


def _xsq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xsquare_logger.cli.main", *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def _request(method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={**_auth(token), "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:  # e.g. a 500 "Internal Server Error" in plain text
            return exc.code, raw.decode(errors="replace")


@contextmanager
def _serve(*db_args: str) -> Iterator[str]:
    """A real ``xsq floor serve`` on a free 127.0.0.1 port; its URL once /healthz answers.

    Its stderr goes to a file (a pipe nobody reads would stall a server that logs a lot),
    shown when the block fails.
    """
    port = free_port()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xsquare_logger.cli.main", "floor", "serve", *db_args,
             "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(f"xsq floor: serving http://127.0.0.1:{port} "), line
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:  # the line comes just before uvicorn binds
                try:
                    urllib.request.urlopen(f"{url}/healthz", timeout=2).close()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            yield url
        except BaseException:
            err.seek(0)
            sys.stderr.write(f"--- xsq floor serve stderr ---\n{err.read()[-6000:]}\n")
            raise
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "floor"
    with _serve("--data-dir", str(data)) as url:
        yield url, data


def test_served_over_http_with_cli_issued_tokens(served: tuple[str, Path]) -> None:
    url, data = served
    add = _xsq("floor", "robots", "add", "r1", "--data-dir", str(data))
    assert add.returncode == 0, add.stderr
    robot = add.stdout.strip()
    reader = _xsq("floor", "readers", "add", "lead", "--data-dir", str(data)).stdout.strip()
    assert robot.startswith("xsqrobot_") and robot not in add.stderr
    status, _ = _request("POST", f"{url}{P}/robots/r1/heartbeats", robot, _hb("r1"))
    assert status == 204
    status, body = _request("PUT", f"{url}{P}/robots/r1/sessions/r1_0001", robot,
                            _session("r1", 1))
    assert status == 201 and body["episodes"] == 2
    status, body = _request("GET", f"{url}{P}/episodes?task=fold%20towel", reader)
    assert status == 200 and [e["outcome"] for e in body["items"]] == ["success"]
    status, body = _request("GET", f"{url}{P}/episodes", robot)
    assert status == 403
    assert _xsq("floor", "robots", "revoke", "r1", "--data-dir", str(data)).returncode == 0
    status, body = _request("POST", f"{url}{P}/robots/r1/heartbeats", robot, _hb("r1"))
    assert status == 401
    # The CLI against the service reads the same rows.
    out = _xsq("floor", "episodes", "--floor", url, "--json", "--outcome", "failure",
               env={"XSQ_FLOOR_TOKEN": reader})
    assert out.returncode == 0, out.stderr
    assert [e["task"] for e in json.loads(out.stdout)] == ["pick cup"]


def test_replicas_started_at_once_migrate_one_postgres_and_share_it(
    postgres_url: str,
) -> None:
    # Three `xsq floor serve` replicas on one empty PostgreSQL database start together:
    # the migration runs once (advisory lock), all of them serve, and what one replica
    # wrote the others answer (no state outside the database).
    with ThreadPoolExecutor(max_workers=3) as pool:
        starting = [pool.submit(_start_replica, postgres_url) for _ in range(3)]
        replicas = [f.result() for f in starting]
    try:
        urls = [url for url, _ in replicas]
        with Catalog(postgres_url, migrate=False) as c:
            assert current_revision(c.engine) == HEAD
            robot, reader = c.add_robot("r1"), c.add_reader("lead")
        for n, url in enumerate(urls):
            status, _ = _request("PUT", f"{url}{P}/robots/r1/sessions/r1_{n:04d}", robot,
                                 _session("r1", n, start_ns=T0 + n * 10**12))
            assert status == 201
        for url in urls:
            status, body = _request("GET", f"{url}{P}/episodes?task=fold%20towel", reader)
            assert status == 200
            assert [e["session_id"] for e in body["items"]] == ["r1_0000", "r1_0001", "r1_0002"]
    finally:
        for _, stack in replicas:
            stack.__exit__(None, None, None)


def _start_replica(url: str) -> tuple[str, Any]:
    stack = _serve("--db", url)
    return stack.__enter__(), stack


@pytest.fixture
def served_any(db_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real service process on SQLite or on the PostgreSQL cluster; (url, db url)."""
    with _serve("--db", db_url) as url:
        yield url, db_url


def test_concurrent_robots_lose_no_write(served_any: tuple[str, str]) -> None:
    # 12 robots at once, each from several connections, as a flaky network makes them:
    # a robot's first heartbeats overlap (a retry while the first is still in flight),
    # its sessions go in in parallel, and one session is sent 4 times at once with
    # different upload states. Every request must succeed (no 5xx, no lost row) and
    # the upload state must end at the most advanced one.
    url, db = served_any
    robots = [f"r{i:02d}" for i in range(12)]
    with Catalog(db) as c:
        tokens = {r: c.add_robot(r) for r in robots}
        reader = c.add_reader("lead")
    start = threading.Barrier(len(robots) * 3)
    failures: list[str] = []

    def first_heartbeat(robot: str) -> None:
        start.wait(timeout=60)
        status, body = _request("POST", f"{url}{P}/robots/{robot}/heartbeats", tokens[robot],
                                _hb(robot, state="recording", messages_lost=1))
        if status != 204:
            failures.append(f"heartbeat {robot}: {status} {body}")

    def put(robot: str, n: int, upload_state: str = "pending", remote: str = "") -> None:
        status, body = _request("PUT", f"{url}{P}/robots/{robot}/sessions/{robot}_{n:04d}",
                                tokens[robot],
                                _session(robot, n, start_ns=T0 + n * 3600 * 10**9,
                                         upload_state=upload_state, remote=remote))
        if status not in (200, 201):
            failures.append(f"PUT {robot}_{n:04d} ({upload_state}): {status} {body}")

    with ThreadPoolExecutor(max_workers=len(robots) * 3) as pool:
        list(pool.map(first_heartbeat, robots * 3))
        jobs = [pool.submit(put, r, n) for r in robots for n in range(1, 5)]
        jobs += [pool.submit(put, r, 9, state, f"s3://b/{r}_0009" if state == "verified" else "")
                 for r in robots for state in ("pending", "uploading", "verified", "pending")]
        for job in jobs:
            job.result()
    assert not failures, "\n".join(failures[:10])
    status, tiles = _request("GET", f"{url}{P}/robots", reader)
    assert status == 200 and all(t["last_heartbeat"]["messages_lost"] == 1 for t in tiles)
    seen: list[tuple[str, int]] = []
    cursor = ""
    while True:
        status, page = _request("GET", f"{url}{P}/episodes?limit=50{cursor}", reader)
        assert status == 200
        seen += [(e["session_id"], e["episode_index"]) for e in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted({(f"{r}_{n:04d}", i) for r in robots
                                   for n in (1, 2, 3, 4, 9) for i in (0, 1)})
    for r in robots:
        status, detail = _request("GET", f"{url}{P}/sessions/{r}_0009", reader)
        assert (detail["upload_state"], detail["remote"]) == ("verified", f"s3://b/{r}_0009")


# -- fuzzing with the service's own OpenAPI spec -------------------------------------------------


def _fuzz_app(url: str) -> tuple[Any, dict[str, str]]:
    catalog = Catalog(url)
    tokens = {"robot": catalog.add_robot("r1"), "reader": catalog.add_reader("fuzz")}
    catalog.ingest_session(make_report("r1", 1))
    return create_app(catalog, dashboard=None), tokens


def test_fuzz_no_5xx_from_the_openapi_spec(db_url: str) -> None:
    # On both databases: PostgreSQL refuses values SQLite stores (NUL in text, integers
    # over 2**63-1), and each refusal must stay a one-line 4xx.
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    app, tokens = _fuzz_app(db_url)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    seen: Counter[int] = Counter()

    def check(case: Any, token: str) -> None:
        # Half the writes go to r1 itself, so they get past the 403 into validation.
        if "robot_id" in (case.path_parameters or {}) and hash(repr(case.body)) % 2:
            case.path_parameters["robot_id"] = "r1"
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        seen[response.status_code] += 1
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: "
                            f"{response.status_code} {response.text[:200]}")
        elif response.status_code >= 400:
            detail = response.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail, detail

    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        token = tokens["reader" if operation.method.upper() == "GET" else "robot"]

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            check(case, token)  # noqa: B023 (run at once, inside this iteration)

        fuzz()
        ran += 1
    assert ran >= 8  # every route of the spec was fuzzed
    assert seen[200] and seen[422] and seen[403], seen  # not a vacuous run
    assert not failures, "\n".join(failures[:10])
