"""Floor service benchmark: a real ``xsq floor serve`` (its own process) under a full floor.

For each database (SQLite in a temp folder, and PostgreSQL in a throwaway cluster of
its own with fsync on, test/support/postgres.py):

1. A floor day, compressed: 100 simulated robots (asyncio clients in this process, one
   HTTP connection each, not a thread each) heartbeat at 1 Hz for ``--duration`` s
   while their session reports bring 12,000 episodes (1,000 sessions of 12, each robot's
   10 spread evenly over the run). Heartbeat and session PUT latency p50/p99 (request
   sent -> response read), the service process's CPU (psutil; 100% = one core).
2. Ingest burst: every robot sends its 10 "verified" reports back to back, all robots
   at once: episodes/s the service catalogues, and its CPU meanwhile.

Then, on PostgreSQL: 360,000 more catalogued episodes (30 days x 100 robots x 10
sessions x 12 episodes) are bulk-loaded with COPY, and the episode queries of the
issue's filter set are timed over HTTP (``GET /api/v1/episodes``, 100 rows a page,
random values each time), with each filter set's EXPLAIN (ANALYZE) taken on the very
SQL the catalog runs, so an index that is not used shows. Last, the dashboard's first
render with 100 robots in Debian's headless Chromium (Selenium, /usr/bin/chromedriver):
from navigation start to 100 tiles on screen.

    python -m benchmarks.floor [--duration 60] [--db sqlite,postgresql] [--json FILE]

Everything runs on one machine: the clients, the service and the database share its
cores, so the figures are a floor for the service alone, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from support.localserver import free_port
from support.postgres import PostgresCluster

from xsquare_logger.floor.protocol import API_PREFIX, Heartbeat, StreamCounts

__all__ = ["main", "print_table", "run"]

S = 1_000_000_000
ROBOTS = 100
EPISODES = 12_000
PER_SESSION = 12
CATALOGUED = 360_000
TASKS = ["fold towel", "pick cup", "pour water", "wipe table", "load dishwasher",
         "hang shirt", "open drawer", "stack blocks", "sort laundry", "water plant",
         "make bed", "set table"]
OPERATORS = [f"op{i}" for i in range(1, 41)]
OUTCOMES = ["success"] * 14 + ["failure"] * 4 + ["aborted"] + [""]  # "" = not tagged
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def at(q: float) -> float:
        return v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))]

    return {"n": len(v), "p50_ms": at(0.50) * 1e3, "p99_ms": at(0.99) * 1e3,
            "max_ms": v[-1] * 1e3}


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


class CpuMeter:
    """CPU seconds of a process (and, for PostgreSQL, its children) between two reads."""

    def __init__(self, pid: int, children: bool = False) -> None:
        self.proc = psutil.Process(pid)
        self.children = children

    def read(self) -> float:
        total = _cpu(self.proc)
        if self.children:
            for c in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a backend that just ended
                    total += _cpu(c)
        return total


# -- the service process ------------------------------------------------------------------------


@contextmanager
def serve(db_url: str, workdir: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = workdir / f"serve-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xsquare_logger.cli.main", "floor", "serve", "--db", db_url,
             "--listen", f"127.0.0.1:{port}", "--stale-after", "5"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"xsq floor serve did not start: {log.read_text()}") from None
                time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- simulated robots -----------------------------------------------------------------------------


def _heartbeat(robot: str, n: int) -> dict[str, Any]:
    streams = {"/camera/head/image_raw": StreamCounts(received=30 * n, lost=0),
               "/joint_states": StreamCounts(received=500 * n, lost=0)}
    return Heartbeat(
        robot_id=robot, sent_ns=time.time_ns(), state="recording", session_id=f"{robot}-live",
        task=TASKS[n % len(TASKS)], episode_index=n // 30, elapsed_sec=float(n),
        streams=streams, disk_free_bytes=400 * 10**9, disk_reserve_bytes=20 * 10**9,
        upload_backlog_sessions=1, upload_backlog_bytes=3 * 10**9,
        software_version="0.1.0", config_digest="sha256:bench",
    ).model_dump(mode="json")


def _report(robot: str, k: int, t0: int, upload_state: str) -> dict[str, Any]:
    """Session ``k`` of ``robot``: 12 episodes of 25 s, 5 s apart (a session.json's shape)."""
    sid = f"{robot}_bench_{k:03d}"
    rnd = random.Random(f"{robot}/{k}")
    operator = rnd.choice(OPERATORS)
    tasks = []
    for i in range(PER_SESSION):
        start = t0 + i * 30 * S
        outcome = rnd.choice(OUTCOMES) or None
        tasks.append({"episode_index": i, "task": rnd.choice(TASKS), "instruction": "",
                      "operator": operator, "start_ns": start, "end_ns": start + 25 * S,
                      "outcome": outcome, "lost": {"/camera/head/image_raw": 0}})
    manifest = {
        "session_id": sid, "robot_id": robot, "software_version": "0.1.0",
        "config_digest": "sha256:bench", "state": "closed", "started_ns": t0,
        "ended_ns": t0 + PER_SESSION * 30 * S,
        "visit": {"visit_id": f"v-{sid}", "operator": operator, "site": "hall-a",
                  "consent": True},
        "tasks": tasks,
        "files": [{"path": f"{sid}_0.mcap", "size": 4 * 10**9, "sha256": "0" * 64,
                   "message_count": 10**6}],
    }
    remote = f"s3://floor/sessions/{robot}/{sid}" if upload_state == "verified" else ""
    return {"manifest": manifest, "upload_state": upload_state, "remote": remote}


async def _robot(
    client: Any, robot: str, token: str, duration: float, sessions: int, t0: int,
    hb_lat: list[float], put_lat: list[float], errors: list[str],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    base = time.monotonic() + random.random()  # robots are not in phase
    due = [(base + i, "hb", i) for i in range(int(duration))]
    due += [(base + (k + 0.5) * duration / sessions, "put", k) for k in range(sessions)]
    due.sort()
    for at, kind, n in due:
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        if kind == "hb":
            path, body, method, lat = (f"{API_PREFIX}/robots/{robot}/heartbeats",
                                       _heartbeat(robot, n), "POST", hb_lat)
        else:
            path = f"{API_PREFIX}/robots/{robot}/sessions/{robot}_bench_{n:03d}"
            body, method, lat = _report(robot, n, t0 + n * 3600 * S, "pending"), "PUT", put_lat
        t = time.perf_counter()
        try:
            r = await client.request(method, path, json=body, headers=headers)
            ok = r.status_code < 300
        except Exception as exc:  # counted and reported; the run goes on
            ok, r = False, exc
        lat.append(time.perf_counter() - t)
        if not ok:
            errors.append(f"{method} {path}: {getattr(r, 'status_code', r)}")


async def _burst(client: Any, robot: str, token: str, sessions: int, t0: int,
                 errors: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    for k in range(sessions):
        path = f"{API_PREFIX}/robots/{robot}/sessions/{robot}_bench_{k:03d}"
        try:
            r = await client.put(path, json=_report(robot, k, t0 + k * 3600 * S, "verified"),
                                 headers=headers)
            if r.status_code >= 300:
                errors.append(f"PUT {path}: {r.status_code}")
        except Exception as exc:  # counted and reported; the run goes on
            errors.append(f"PUT {path}: {exc}")


async def _fleet(url: str, tokens: dict[str, str], duration: float, episodes: int,
                 server: CpuMeter, db: CpuMeter | None) -> dict[str, Any]:
    import httpx2

    sessions = max(1, episodes // PER_SESSION // len(tokens))
    t0 = time.time_ns() - 30 * 86400 * S  # before the bulk-loaded month: no overlap
    clients = {r: httpx2.AsyncClient(base_url=url, timeout=60.0,
                                     limits=httpx2.Limits(max_connections=1))
               for r in tokens}
    hb_lat: list[float] = []
    put_lat: list[float] = []
    errors: list[str] = []
    out: dict[str, Any] = {}
    try:
        cpu0, dcpu0, w0 = server.read(), db.read() if db else 0.0, time.monotonic()
        me0 = _cpu(psutil.Process())
        await asyncio.gather(*(_robot(clients[r], r, tok, duration, sessions, t0, hb_lat,
                                      put_lat, errors) for r, tok in tokens.items()))
        wall = time.monotonic() - w0
        out["day"] = {
            "robots": len(tokens), "duration_s": wall, "heartbeat": _pct(hb_lat),
            "session_put": _pct(put_lat), "sessions": len(put_lat),
            "episodes": len(put_lat) * PER_SESSION,
            "episodes_per_s_offered": len(put_lat) * PER_SESSION / wall,
            "service_cpu_pct": 100 * (server.read() - cpu0) / wall,
            "db_cpu_pct": 100 * (db.read() - dcpu0) / wall if db else None,
            "clients_cpu_pct": 100 * (_cpu(psutil.Process()) - me0) / wall,
            "errors": len(errors), "first_errors": errors[:5],
        }
        errors.clear()
        cpu0, dcpu0, w0 = server.read(), db.read() if db else 0.0, time.monotonic()
        await asyncio.gather(*(_burst(clients[r], r, tok, sessions, t0, errors)
                               for r, tok in tokens.items()))
        wall = time.monotonic() - w0
        n = len(tokens) * sessions * PER_SESSION
        out["burst"] = {
            "sessions": len(tokens) * sessions, "episodes": n, "wall_s": wall,
            "episodes_per_s": n / wall,
            "service_cpu_pct": 100 * (server.read() - cpu0) / wall,
            "db_cpu_pct": 100 * (db.read() - dcpu0) / wall if db else None,
            "errors": len(errors), "first_errors": errors[:5],
        }
    finally:
        await asyncio.gather(*(c.aclose() for c in clients.values()))
    return out


# -- 360,000 catalogued episodes, and the queries over them --------------------------------------


def bulk_load(url: str, episodes: int, robots: list[str]) -> dict[str, Any]:
    """COPY ``episodes`` episodes (12 a session, 10 sessions a robot a day, ending now)."""
    import psycopg

    rnd = random.Random(7)
    per_day = len(robots) * 10 * PER_SESSION
    days = max(1, -(-episodes // per_day))
    now = time.time_ns()
    start_day = now - days * 86400 * S
    sessions, eps = io.StringIO(), io.StringIO()
    manifest = json.dumps({"session_id": "", "robot_id": "", "software_version": "0.1.0",
                           "config_digest": "sha256:bench", "state": "closed",
                           "started_ns": 0, "tasks": [], "files": []})
    n = 0
    for d in range(days):
        for r in robots:
            for k in range(10):
                if n >= episodes:
                    break
                t0 = start_day + d * 86400 * S + k * 2400 * S + rnd.randrange(600) * S
                sid = f"{r}_d{d:02d}_{k}"
                op = rnd.choice(OPERATORS)
                sessions.write("\t".join([
                    sid, r, f"v-{sid}", op, "hall-a", "closed", str(t0),
                    str(t0 + PER_SESSION * 30 * S), str(4 * 10**9),
                    f"s3://floor/sessions/{r}/{sid}", "verified", "0" * 64,
                    manifest.replace('"session_id": ""', f'"session_id": "{sid}"')
                    .replace('"robot_id": ""', f'"robot_id": "{r}"'), str(now)]) + "\n")
                for i in range(PER_SESSION):
                    s0 = t0 + i * 30 * S
                    outcome = rnd.choice(OUTCOMES) or "\\N"
                    eps.write("\t".join([
                        sid, str(i), r, rnd.choice(TASKS), "", outcome, op, "hall-a",
                        f"v-{sid}", str(s0), str(s0 + 25 * S), "25.0", "{}", "0"]) + "\n")
                    n += 1
    t = time.monotonic()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY sessions (session_id, robot_id, visit_id, operator, site, "
                          "state, start_ns, end_ns, bytes, remote, upload_state, "
                          "manifest_sha256, manifest, updated_ns) FROM STDIN") as copy:
                copy.write(sessions.getvalue())
            with cur.copy("COPY episodes (session_id, episode_index, robot_id, task, "
                          "instruction, outcome, operator, site, visit_id, start_ns, end_ns, "
                          "duration_sec, lost, lost_total) FROM STDIN") as copy:
                copy.write(eps.getvalue())
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE sessions")
        conn.execute("VACUUM ANALYZE episodes")
        total = conn.execute("SELECT count(*) FROM episodes").fetchone()
    return {"episodes_loaded": n, "days": days, "load_s": time.monotonic() - t,
            "episodes_in_catalog": int(total[0]) if total else 0}


def _monday_ns() -> int:
    lt = time.localtime()
    midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
    return int(midnight - lt.tm_wday * 86400) * S


def filter_sets(robots: list[str]) -> dict[str, Any]:
    """The issue's filters; each a function of a Random giving fresh values per query."""
    week = _monday_ns()
    day = time.time_ns() - 86400 * S
    return {
        "task+outcome+operator+since Monday": lambda r: {
            "task": r.choice(TASKS), "outcome": "success", "operator": r.choice(OPERATORS),
            "since": str(week)},
        "task+outcome": lambda r: {"task": r.choice(TASKS), "outcome": r.choice(
            ["success", "failure"])},
        "robot+since 24 h": lambda r: {"robot": r.choice(robots), "since": str(day)},
        "operator": lambda r: {"operator": r.choice(OPERATORS)},
        "task": lambda r: {"task": r.choice(TASKS)},
        "outcome+since 24 h": lambda r: {"outcome": r.choice(["failure", "aborted"]),
                                         "since": str(day)},
        "none (page 2)": lambda r: {},
    }


def _explain(url: str, where: dict[str, str]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the exact SQL ``Catalog.episodes`` runs for ``where``."""
    from sqlalchemy import event

    from xsquare_logger.floor.catalog import Catalog

    captured: list[tuple[str, Any]] = []
    with Catalog(url, migrate=False) as c:
        def grab(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
            if "FROM episodes" in statement:
                captured.append((statement, params))

        event.listen(c.engine, "before_cursor_execute", grab)
        c.episodes(_where(where), limit=100)
        event.remove(c.engine, "before_cursor_execute", grab)
        statement, params = captured[-1]
        with c.engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            cur = raw.cursor()
            cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
            row = cur.fetchone()
    plan = row[0][0] if row else {}
    nodes: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        name = node.get("Node Type", "?")
        if node.get("Index Name"):
            name += f" {node['Index Name']}"
        elif node.get("Relation Name"):
            name += f" {node['Relation Name']}"
        nodes.append(name)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan.get("Plan", {}))
    seq = [n for n in nodes if n.startswith("Seq Scan episodes")]
    return {"nodes": nodes, "execution_ms": plan.get("Execution Time"), "seq_scan": bool(seq)}


def _where(params: dict[str, str]) -> Any:
    from xsquare_logger.floor.catalog import EpisodeFilter, parse_time_ns

    return EpisodeFilter(task=params.get("task"), outcome=params.get("outcome"),
                         operator=params.get("operator"), robot=params.get("robot"),
                         since_ns=parse_time_ns(params["since"]) if "since" in params else None)


def _direct(url: str, sets: dict[str, Any], per_set: int) -> dict[str, Any]:
    """The same queries through ``Catalog.episodes`` in this process: database + ORM time,
    without HTTP, auth and JSON (what the service adds is the difference)."""
    from xsquare_logger.floor.catalog import Catalog

    rnd = random.Random(11)
    out: dict[str, Any] = {}
    with Catalog(url, migrate=False) as c:
        for name, make in sets.items():
            lat: list[float] = []
            for _ in range(per_set):
                where = _where(make(rnd))
                t = time.perf_counter()
                c.episodes(where, limit=100)
                lat.append(time.perf_counter() - t)
            out[name] = _pct(lat)
    return out


async def _queries(url: str, reader: str, sets: dict[str, Any], per_set: int
                   ) -> dict[str, Any]:
    import httpx2

    rnd = random.Random(11)
    out: dict[str, Any] = {}
    async with httpx2.AsyncClient(base_url=url, timeout=60.0,
                                  headers={"Authorization": f"Bearer {reader}"}) as client:
        for name, make in sets.items():
            lat: list[float] = []
            rows: list[int] = []
            for _ in range(per_set):
                params = make(rnd)
                if name.startswith("none"):
                    first = await client.get(f"{API_PREFIX}/episodes",
                                             params={"limit": 100})
                    params = {"cursor": first.json()["next_cursor"]}
                t = time.perf_counter()
                r = await client.get(f"{API_PREFIX}/episodes", params={**params, "limit": 100})
                lat.append(time.perf_counter() - t)
                r.raise_for_status()
                rows.append(len(r.json()["items"]))
            out[name] = {**_pct(lat), "rows_mean": statistics.fmean(rows)}
    return out


# -- dashboard -------------------------------------------------------------------------------------


def dashboard_first_render(url: str, reader: str, loads: int = 5) -> dict[str, Any]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return {"skipped": "needs Debian's chromium and chromium-driver"}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    profile = tempfile.mkdtemp(prefix="xsq-bench-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--window-size=1920,1080"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    times: list[float] = []
    try:
        for _ in range(loads):
            driver.get("about:blank")
            driver.get(f"{url}/#token={reader}")
            WebDriverWait(driver, 60, poll_frequency=0.02).until(
                lambda d: d.execute_script(
                    "return document.querySelectorAll('[data-robot]').length") >= ROBOTS)
            # Navigation start -> now, on the page's own clock (includes fetching the API).
            ms = driver.execute_script("return performance.now()")
            times.append(float(ms) / 1e3)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return _pct(times)


# -- one database ------------------------------------------------------------------------------


def _one(kind: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from xsquare_logger.floor.catalog import Catalog

    robots = [f"robot-{i:03d}" for i in range(1, args.robots + 1)]
    cluster: PostgresCluster | None = None
    try:
        if kind == "postgresql":
            cluster = PostgresCluster(durable=True).start()
            url = cluster.create_database("floor")
        else:
            url = f"sqlite:///{workdir}/floor.db"
        with Catalog(url) as c:
            tokens = {r: c.add_robot(r) for r in robots}
            reader = c.add_reader("bench")
        result: dict[str, Any] = {"db": kind}
        with serve(url, workdir) as (base, proc):
            db_pid = cluster.postmaster_pid() if cluster else None
            print(f"[bench floor] {kind}: {len(robots)} robots x {args.duration:.0f} s, "
                  f"{args.episodes} episodes", flush=True)
            result.update(asyncio.run(_fleet(
                base, tokens, args.duration, args.episodes, CpuMeter(proc.pid),
                CpuMeter(db_pid, children=True) if db_pid else None)))
            if kind == "postgresql" and args.catalogued:
                print(f"[bench floor] {kind}: bulk-loading {args.catalogued} episodes",
                      flush=True)
                result["bulk"] = bulk_load(url, args.catalogued, robots)
                sets = filter_sets(robots)
                result["explain"] = {name: _explain(url, make(random.Random(3)))
                                     for name, make in sets.items() if not name.startswith("none")}
                result["queries"] = asyncio.run(_queries(base, reader, sets, args.queries))
                result["queries_in_process"] = _direct(url, sets, args.queries)
            if not args.no_dashboard:
                result["dashboard"] = dashboard_first_render(base, reader)
        return result
    finally:
        if cluster is not None:
            cluster.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="xsq-floor-bench-"))
    load = os.getloadavg()
    try:
        out: dict[str, Any] = {"load_avg_before": load, "cpus": os.cpu_count(),
                               "duration_s": args.duration, "robots": args.robots}
        for kind in args.db.split(","):
            out[kind] = _one(kind, workdir, args)
        out["load_avg_after"] = os.getloadavg()
        return out
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _ms(d: dict[str, Any]) -> str:
    return f"{d['p50_ms']:8.1f} {d['p99_ms']:8.1f}" if d.get("n") else f"{'-':>8} {'-':>8}"


def _pct_cell(v: float | None) -> str:
    return f"{v:6.0f}%" if v is not None else "      -"


def print_table(r: dict[str, Any]) -> None:
    load = r["load_avg_before"]
    print(f"\n== floor service: {r['robots']} robots at 1 Hz for {r['duration_s']:.0f} s + "
          f"session reports; {r['cpus']} CPUs, load avg before {load[0]:.2f} ==")
    print(f"{'db':10} {'phase':28} {'p50 ms':>8} {'p99 ms':>8} {'rate':>12} {'svc CPU':>8} "
          f"{'db CPU':>7} {'errors':>6}")
    for kind in ("sqlite", "postgresql"):
        if kind not in r:
            continue
        x = r[kind]
        day, burst = x["day"], x["burst"]
        print(f"{kind:10} {'heartbeat (during the day)':28} {_ms(day['heartbeat'])} "
              f"{day['heartbeat'].get('n', 0) / day['duration_s']:8.1f}/s "
              f"{day['service_cpu_pct']:7.0f}% {_pct_cell(day['db_cpu_pct'])} {day['errors']:>6}")
        print(f"{'':10} {'session PUT (during the day)':28} {_ms(day['session_put'])} "
              f"{day['episodes_per_s_offered']:7.1f} ep/s {'':8} {'':7} {'':>6}")
        print(f"{'':10} {'ingest burst (verified)':28} {'':8} {'':8} "
              f"{burst['episodes_per_s']:7.0f} ep/s {burst['service_cpu_pct']:7.0f}% "
              f"{_pct_cell(burst['db_cpu_pct'])} {burst['errors']:>6}")
        dash = x.get("dashboard")
        if dash and dash.get("n"):
            print(f"{'':10} {'dashboard first render':28} {_ms(dash)}   ({dash['n']} loads)")
        elif dash:
            print(f"{'':10} {'dashboard first render':28} {dash.get('skipped', '')}")
        if "queries" in x:
            b = x["bulk"]
            print(f"\n== episode queries over {b['episodes_in_catalog']:,} catalogued episodes "
                  f"({kind}; COPY of {b['episodes_loaded']:,} took {b['load_s']:.1f} s), "
                  "GET /api/v1/episodes, 100 a page ==")
            print(f"{'filters':36} {'HTTP p50':>8} {'p99 ms':>8} {'rows':>5} "
                  f"{'catalog p50':>11} {'p99':>6} {'plan ms':>7}  index (EXPLAIN ANALYZE)")
            for name, q in x["queries"].items():
                plan = x["explain"].get(name, {})
                nodes = " > ".join(n for n in plan.get("nodes", []) if "episodes" in n)
                db_ms = plan.get("execution_ms")
                cell = f"{db_ms:7.1f}" if db_ms is not None else f"{'-':>7}"
                d = x["queries_in_process"][name]
                print(f"{name:36} {_ms(q)} {q['rows_mean']:5.0f} {d['p50_ms']:11.1f} "
                      f"{d['p99_ms']:6.1f} {cell}  {nodes}")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.floor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0,
                    help="seconds the robots heartbeat (default 60)")
    ap.add_argument("--robots", type=int, default=ROBOTS)
    ap.add_argument("--episodes", type=int, default=EPISODES,
                    help="episodes ingested from session reports (default 12000)")
    ap.add_argument("--catalogued", type=int, default=CATALOGUED,
                    help="episodes bulk-loaded for the query benchmark (0: skip it)")
    ap.add_argument("--queries", type=int, default=100, help="queries per filter set")
    ap.add_argument("--db", default="sqlite,postgresql", help="comma list: sqlite, postgresql")
    ap.add_argument("--no-dashboard", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("bench_out/floor.json"))
    return ap


def write_json(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"\n[bench floor] JSON: {path}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    print_table(result)
    write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
