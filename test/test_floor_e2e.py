"""The training-center floor end to end, real processes only.

One `xsq floor serve` (SQLite in tmp), a real S3 server (`rclone serve s3`), and three
real `xsq run` robots, each with its own sim (`xsquare_logger.ros.sim_node`, light
profile), its own ROS_DOMAIN_ID (53, 54, 55), its own robot token and a tablet driving
visits with tasks over ZeroMQ CURVE. Along the way:

- the floor is SIGKILLed while the sims publish and restarted on the same port and
  database: every robot records every published message, a session closed while the
  floor is down waits in its outbox and is delivered after the restart;
- robot r2's token is revoked while it records: it is refused (401) and keeps its
  report spooled; `xsq floor sync` then adds its session from the bucket, so the
  catalog holds exactly the bucket's sessions;
- a robot token cannot read (episodes, robots, summary, metrics) nor write another
  robot's records;
- `/metrics`, parsed by prometheus_client's parser, matches the robots' heartbeats
  and the catalog (robots by state, stale, lost, upload backlog, episodes today).

The catalog is read both through `xsq floor episodes --floor URL --token READER --json`
and the HTTP API, and compared with each session's own session.json and the bucket.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TEST_DIR, Proc, xsq
from support.localserver import LocalS3Server, free_port
from support.procs import ros_env

pytest.importorskip("xsquare_logger.floor.api", reason="the floor extra is not installed")
parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client missing")

from xsquare_logger.link.keys import KeyStore  # noqa: E402
from xsquare_logger.session.manifest import SessionManifest, read_manifest  # noqa: E402
from xsquare_logger.tablet.client import TabletClient  # noqa: E402

pytestmark = pytest.mark.ros

BUCKET = "sessions"
PREFIX = "floor"
STALE_AFTER = 3.0
SIM = ["-m", "xsquare_logger.ros.sim_node", "--profile", "light", "--cameras", "1",
       "--duration", "8", "--wait-subscribers", "60", "--stats"]
# Episodes per robot: (task, outcome); the first one is open while the floor is killed.
PLANS = {
    "r1": [("fold towel", "success"), ("arrange shoes", "failure")],
    "r2": [("fold towel", "aborted"), ("wipe table", "success")],
    "r3": [("wipe table", "success")],
}


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, token: str | None = None, body: Any = None) -> Answer:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return Answer(resp.status, resp.read(),
                          {k.lower(): v for k, v in resp.headers.items()})
    except urllib.error.HTTPError as exc:
        return Answer(exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()})


class FloorProc:
    """`xsq floor serve` as a child process on a fixed port (so it can be restarted)."""

    def __init__(self, launch: Callable[..., Proc], env: dict[str, str], data: Path) -> None:
        self.launch, self.env, self.data = launch, env, data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runs = 0
        self.proc: Proc | None = None

    def start(self) -> None:
        self.runs += 1
        self.proc = self.launch(
            ["-m", "xsquare_logger.cli.main", "floor", "serve", "--data-dir", str(self.data),
             "--listen", f"127.0.0.1:{self.port}", "--stale-after", str(STALE_AFTER)],
            self.env, f"floor{self.runs}")
        proc = self.proc

        def up() -> bool:
            assert proc.p.poll() is None, proc.stderr()
            return "xsq floor: serving" in proc.stdout()

        wait_for(up, "the floor service to serve")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.p.send_signal(signal.SIGKILL)
        self.proc.p.wait()

    def cli(self, *args: str, env: dict[str, str] | None = None) -> str:
        out = xsq("floor", *args, "--data-dir", str(self.data), env=env or self.env)
        assert out.returncode == 0, out.stderr
        return out.stdout


@dataclass
class Robot:
    name: str
    domain: int
    root: Path
    token: str
    env: dict[str, str] = field(default_factory=dict)
    stack: Proc | None = None
    client: TabletClient | None = None
    sim: Proc | None = None
    session_id: str = ""

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def outbox(self) -> list[Path]:
        return sorted((self.data / ".floor-outbox").glob("*.json"))

    def gate(self, up: bool) -> None:
        (self.root / "sys/class/net/wlan0/operstate").write_text("up\n" if up else "down\n")

    def sim_stats(self) -> dict[str, Any]:
        assert self.sim is not None
        assert self.sim.wait(60) == 0, self.sim.stderr()
        return dict(json.loads(self.sim.stdout().strip().splitlines()[-1]))


def start_robot(launch: Callable[..., Proc], robot: Robot, floor_url: str, s3: LocalS3Server,
                network_up: bool) -> None:
    keys = robot.root / "keys"
    store = KeyStore(keys)
    store.init_robot()
    store.add_tablet("tab1")
    net = robot.root / "sys/class/net/wlan0"
    (net / "wireless").mkdir(parents=True)
    robot.gate(up=network_up)
    (robot.root / "floor-token").write_text(robot.token + "\n")
    config = {
        "robot_id": robot.name,
        "data_root": str(robot.data),
        "tablet": {"keys_dir": str(keys), "command_endpoint": "tcp://127.0.0.1:0",
                   "status_endpoint": "tcp://127.0.0.1:0", "tasks": ["fold towel"]},
        "floor": {"url": floor_url, "token_file": str(robot.root / "floor-token"),
                  "heartbeat_interval": 0.5},
        "upload": {
            "destination": f"s3://{BUCKET}/{PREFIX}",
            "scan_interval": 0.5,
            "s3": {"endpoint_url": s3.endpoint},
            "gate": {"sysfs_root": str(robot.root / "sys"), "probe_interval": 1.0},
            # Keep the local copy: the test compares the catalog with each session.json.
            "retention": {"delete_after": None, "free_disk_reserve": 0},
        },
    }
    (robot.root / "robot.yaml").write_text(yaml.safe_dump(config))
    env = ros_env(robot.domain)
    env.pop("XSQ_FLOOR_TOKEN", None)
    env.update(s3.env())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEST_DIR), env.get("PYTHONPATH")]))
    robot.env = env
    robot.stack = launch(["-m", "xsquare_logger.cli.main", "run", "--config",
                          str(robot.root / "robot.yaml")], env, f"stack-{robot.name}")


def connect(robot: Robot) -> None:
    import re

    assert robot.stack is not None
    robot.stack.wait_for("robot stack ready", 90)
    m = re.search(r"commands on (tcp://\S+), status on", robot.stack.stderr())
    assert m, robot.stack.stderr()
    robot.client = TabletClient.from_keys_dir(m.group(1), robot.root / "keys", "tab1",
                                              timeout=10.0)


def metrics(floor: FloorProc, reader: str) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                    float]:
    answer = http("GET", f"{floor.url}/metrics", reader)
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in parser.text_string_to_metric_families(answer.body.decode()):
        assert family.type == "gauge", family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def consistent_snapshot(floor: FloorProc, reader: str) -> tuple[list[dict[str, Any]], dict]:
    """Tiles and metrics from the same heartbeats: retried until no heartbeat arrived
    between the two reads of the tiles around the scrape."""
    for _ in range(200):
        before = http("GET", f"{floor.url}/api/v1/robots", reader).json()
        scraped = metrics(floor, reader)
        after = http("GET", f"{floor.url}/api/v1/robots", reader).json()
        if [t["last_seen_ns"] for t in before] == [t["last_seen_ns"] for t in after] and \
                [t["stale"] for t in before] == [t["stale"] for t in after]:
            return after, scraped
        time.sleep(0.02)
    raise AssertionError("heartbeats never paused long enough for a consistent scrape")


def check_metrics(tiles: list[dict[str, Any]], scraped: dict, episodes: list[dict]) -> None:
    active = [t for t in tiles if not t["revoked"]]
    states = Counter("stale" if t["stale"] or t["last_heartbeat"] is None
                     else t["last_heartbeat"]["state"] for t in active)
    for state in ("idle", "recording", "error", "stale"):
        assert scraped[("xsq_floor_robots", (("state", state),))] == states[state], state
    assert scraped[("xsq_floor_robots_stale", ())] == states["stale"]
    reporting = {t["robot_id"]: t["last_heartbeat"] for t in active if t["last_heartbeat"]}
    lost = {dict(k[1])["robot"]: v for k, v in scraped.items() if k[0] == "xsq_floor_messages_lost"}
    backlog = {dict(k[1])["robot"]: v for k, v in scraped.items()
               if k[0] == "xsq_floor_upload_backlog_bytes"}
    assert lost == {r: hb["messages_lost"] for r, hb in reporting.items()}
    assert backlog == {r: hb["upload_backlog_bytes"] for r, hb in reporting.items()}
    today = {dict(k[1])["outcome"]: v for k, v in scraped.items()
             if k[0] == "xsq_floor_episodes_today"}
    assert today == dict(Counter(e["outcome"] or "unknown" for e in episodes))


def bucket_sessions(s3_root: Path) -> dict[str, str]:
    """session id -> its folder key, for every committed session.json in the bucket."""
    found = {}
    for marker in (s3_root / BUCKET / PREFIX).glob("*/*/*/session.json"):
        folder = marker.parent.relative_to(s3_root / BUCKET)
        found[marker.parent.name] = str(folder)
    return found


def all_episodes(floor: FloorProc, reader: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = http("GET", f"{floor.url}/api/v1/episodes?limit=2&cursor={cursor}", reader)
        assert page.status == 200, page.body
        doc = page.json()
        items += doc["items"]
        if not doc["next_cursor"]:
            return items
        cursor = doc["next_cursor"]


def test_three_robots_a_killed_floor_a_revoked_robot_and_sync(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    s3_root = tmp_path / "s3"
    with LocalS3Server(s3_root, buckets=(BUCKET,)) as s3:
        floor = FloorProc(procs, ros_env(53), tmp_path / "floor")
        tokens = {name: floor.cli("robots", "add", name).strip() for name in PLANS}
        reader = floor.cli("readers", "add", "lead").strip()
        assert all(t.startswith("xsqrobot_") for t in tokens.values())
        assert reader.startswith("xsqread_")
        floor.start()
        robots = {name: Robot(name, 53 + i, tmp_path / name, tokens[name])
                  for i, name in enumerate(PLANS)}
        r1, r2, _ = robots.values()
        for r in robots.values():
            # r1's network stays down until late: an upload backlog the metrics must show.
            start_robot(procs, r, floor.url, s3, network_up=r is not r1)
        for r in robots.values():
            connect(r)
        try:
            run_floor(procs, floor, robots, reader, s3, s3_root)
        finally:
            for r in robots.values():
                if r.client is not None:
                    r.client.close()
        for r in (r1, r2):
            assert r.stack is not None
            assert r.stack.stop() == 0, r.stack.stderr()
        for r in robots.values():
            assert r.stack is not None
            assert r.token not in r.stack.stderr() + r.stack.stdout()
        assert floor.proc is not None
        assert floor.proc.stop() == 0, floor.proc.stderr()


def run_floor(procs: Callable[..., Proc], floor: FloorProc, robots: dict[str, Robot], reader: str,
              s3: LocalS3Server, s3_root: Path) -> None:
    r1, r2, r3 = robots.values()
    operators = {name: f"op-{i + 1}" for i, name in enumerate(robots)}

    # -- visits start; each robot's sim publishes while the first task is open ---------------
    for r in robots.values():
        assert r.client is not None
        started = r.client.start_visit(f"visit-{r.name}", operators[r.name], True, site="hall-a")
        r.session_id = started["session_id"]
        r.sim = procs(SIM, r.env, f"sim-{r.name}")
        r.client.start_task(PLANS[r.name][0][0])
    for r in robots.values():
        assert r.sim is not None
        r.sim.wait_for(r"subscribers matched", 90)

    def all_recording() -> bool:
        tiles = http("GET", f"{floor.url}/api/v1/robots", reader).json()
        return [(t["robot_id"], (t["last_heartbeat"] or {}).get("state"),
                 (t["last_heartbeat"] or {}).get("task")) for t in tiles] == [
            (r.name, "recording", PLANS[r.name][0][0]) for r in robots.values()]

    wait_for(all_recording, "three recording heartbeats with their open task")
    tiles, scraped = consistent_snapshot(floor, reader)
    assert scraped[("xsq_floor_robots", (("state", "recording"),))] == 3
    check_metrics(tiles, scraped, [])

    # -- the floor dies while the sims publish; the robots go on --------------------------
    assert all(r.sim is not None and r.sim.p.poll() is None for r in robots.values())
    floor.kill()
    for r in robots.values():
        assert r.client is not None
        r.client.end_task(PLANS[r.name][0][1])
        if len(PLANS[r.name]) > 1:
            r.client.start_task(PLANS[r.name][1][0])
    published = {r.name: r.sim_stats()["published"] for r in robots.values()}
    assert r3.client is not None
    r3.client.stop_visit()  # closed while the floor is down: its report waits in the outbox
    spooled = [p.name for p in r3.outbox]
    assert len(spooled) == 1 and r3.session_id in spooled[0], spooled
    floor.start()  # same port, same catalog

    def catalogued(r: Robot, state: str) -> bool:
        got = http("GET", f"{floor.url}/api/v1/sessions/{r.session_id}", reader)
        return got.status == 200 and got.json()["upload_state"] == state

    wait_for(lambda: catalogued(r3, "verified") and not r3.outbox,
             "r3's spooled report delivered after the restart, then its verified one")

    # -- r2's token is revoked while it records: refused, its reports stay spooled ---------
    floor.cli("robots", "revoke", "r2")
    assert r2.stack is not None
    r2.stack.wait_for(r"floor refused the robot token \(401\)")
    for r in (r1, r2):
        assert r.client is not None
        r.client.end_task(PLANS[r.name][1][1])
        r.client.stop_visit()
    wait_for(lambda: r2.session_id in bucket_sessions(s3_root), "r2's upload in the bucket")
    wait_for(lambda: [p.name.rsplit("-", 1)[-1] for p in r2.outbox] == ["verified.json"],
             "r2's verified report kept in its outbox")
    assert http("GET", f"{floor.url}/api/v1/sessions/{r2.session_id}", reader).status == 404

    # -- no message lost: the sims' counts are what each session recorded -----------------
    for r in robots.values():
        manifest = read_manifest(r.data / r.session_id)
        assert manifest.state == "closed"
        for topic, n in published[r.name].items():
            entry = manifest.topics[topic]
            assert (entry.received, entry.written, entry.lost) == (n, n, 0), (r.name, topic)

    # -- r3 stops reporting (stale), r1 waits for its network: metrics match ---------------
    wait_for(lambda: catalogued(r1, "pending"), "r1's closed session catalogued")
    assert r3.stack is not None
    assert r3.stack.stop() == 0, r3.stack.stderr()

    def settled() -> bool:
        tiles = {t["robot_id"]: t for t in http("GET", f"{floor.url}/api/v1/robots",
                                                 reader).json()}
        hb1 = tiles["r1"]["last_heartbeat"] or {}
        return bool(tiles["r3"]["stale"] and hb1.get("state") == "idle"
                    and hb1.get("upload_backlog_sessions") == 1 and tiles["r2"]["revoked"])

    wait_for(settled, "r3 stale, r1 idle with its backlog")
    tiles, scraped = consistent_snapshot(floor, reader)
    by_id = {t["robot_id"]: t for t in tiles}
    assert by_id["r1"]["last_heartbeat"]["upload_backlog_bytes"] > 0
    assert scraped[("xsq_floor_robots", (("state", "idle"),))] == 1
    assert scraped[("xsq_floor_robots", (("state", "stale"),))] == 1
    assert scraped[("xsq_floor_robots_stale", ())] == 1
    assert ("xsq_floor_messages_lost", (("robot", "r2"),)) not in scraped  # revoked
    check_metrics(tiles, scraped, all_episodes(floor, reader))

    # -- r1's network comes back; sync adds what no report brought ------------------------
    r1.gate(up=True)
    wait_for(lambda: catalogued(r1, "verified"), "r1's verified upload catalogued", 90)
    in_bucket = bucket_sessions(s3_root)
    assert set(in_bucket) == {r.session_id for r in robots.values()}
    sync_env = dict(floor.env, **s3.env(), AWS_ENDPOINT_URL_S3=s3.endpoint)
    line = floor.cli("sync", "--destination", f"s3://{BUCKET}/{PREFIX}", env=sync_env)
    assert line.strip() == "xsq floor sync: 3 sessions in the bucket: 1 added, 0 updated"
    again = floor.cli("sync", "--destination", f"s3://{BUCKET}/{PREFIX}", env=sync_env)
    assert again.strip() == "xsq floor sync: 3 sessions in the bucket: 0 added, 0 updated"

    # -- the catalog is the bucket: sessions, episodes, times, files -----------------------
    sessions = http("GET", f"{floor.url}/api/v1/sessions", reader).json()
    assert sessions["next_cursor"] is None
    assert {s["session_id"]: s["remote"] for s in sessions["items"]} == {
        sid: f"s3://{BUCKET}/{key}" for sid, key in in_bucket.items()}
    assert all(s["upload_state"] == "verified" for s in sessions["items"])
    cli = xsq("floor", "episodes", "--floor", floor.url, "--token", reader, "--json",
              env=floor.env)
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads(cli.stdout)
    from_api = all_episodes(floor, reader)
    assert from_cli == from_api
    expected = []
    for r in robots.values():
        manifest = read_manifest(r.data / r.session_id)
        in_the_bucket = SessionManifest.model_validate_json(
            (s3_root / BUCKET / in_bucket[r.session_id] / "session.json").read_bytes())
        assert in_the_bucket == manifest
        assert [(t.task, t.outcome) for t in manifest.tasks] == PLANS[r.name]
        for t in manifest.tasks:
            assert t.end_ns is not None
            expected.append({
                "robot_id": r.name, "session_id": r.session_id,
                "episode_index": t.episode_index, "task": t.task, "instruction": "",
                "outcome": t.outcome, "operator": operators[r.name], "site": "hall-a",
                "visit_id": f"visit-{r.name}", "start_ns": t.start_ns, "end_ns": t.end_ns,
                "duration_sec": (t.end_ns - t.start_ns) / 1e9, "lost": {},
                "remote": f"s3://{BUCKET}/{in_bucket[r.session_id]}",
                "upload_state": "verified",
                # What the recorder decided at task.end, as session.json holds it.
                "discarded": t.discarded,
                "quality": None if t.quality is None else t.quality.model_dump(),
                "window_start_ns": t.window_start_ns, "window_end_ns": t.window_end_ns,
            })
        detail = http("GET", f"{floor.url}/api/v1/sessions/{r.session_id}", reader).json()
        assert (detail["robot_id"], detail["start_ns"], detail["end_ns"]) == (
            r.name, manifest.started_ns, manifest.ended_ns)
        assert (detail["operator"], detail["visit_id"]) == (operators[r.name], f"visit-{r.name}")
        # The files a training job fetches: session.json's, each in the bucket at remote/key.
        assert detail["files"] == [{"key": f.path, "size": f.size, "sha256": f.sha256}
                                   for f in sorted(manifest.files, key=lambda f: f.path)]
        folder = s3_root / BUCKET / in_bucket[r.session_id]
        for f in detail["files"]:
            assert (folder / f["key"]).stat().st_size == f["size"]
        assert detail["bytes"] == sum(f.size for f in manifest.files)  # reported or synced
    expected.sort(key=lambda e: (e["start_ns"], e["session_id"], e["episode_index"]))
    assert from_api == expected
    summary = http("GET", f"{floor.url}/api/v1/summary", reader).json()
    assert summary["episodes_by_outcome"] == dict(Counter(o for p in PLANS.values()
                                                          for _, o in p))

    check_tokens(floor, robots, reader)


def check_tokens(floor: FloorProc, robots: dict[str, Robot], reader: str) -> None:
    r1, r2, r3 = robots.values()
    api = f"{floor.url}/api/v1"
    # A robot token cannot read the floor's data (403: authenticated, not allowed).
    for path in ("/episodes", "/robots", "/summary", "/sessions",
                 f"/sessions/{r1.session_id}", "/robots/r3"):
        got = http("GET", api + path, r1.token)
        assert got.status == 403, (path, got.status)
        assert "\n" not in got.json()["detail"]
    assert http("GET", f"{floor.url}/metrics", r1.token).status == 403
    own = http("GET", f"{api}/robots/r1", r1.token)
    assert own.status == 200 and own.json()["robot_id"] == "r1"
    # ... nor write another robot's records.
    hb = {"robot_id": "r3", "sent_ns": time.time_ns(), "state": "idle"}
    assert http("POST", f"{api}/robots/r3/heartbeats", r1.token, hb).status == 403
    theirs = read_manifest(r3.data / r3.session_id).model_dump(mode="json")
    report = {"manifest": theirs, "upload_state": "verified", "remote": "s3://elsewhere/x"}
    assert http("PUT", f"{api}/robots/r3/sessions/{r3.session_id}", r1.token,
                report).status == 403
    stolen = dict(report, manifest=dict(theirs, robot_id="r1"))
    # ... nor take another robot's session id as its own (ids are <robot_id>_...).
    squat = http("PUT", f"{api}/robots/r1/sessions/{r3.session_id}", r1.token, stolen)
    assert squat.status == 422, squat.body
    assert "not in robot 'r1''s namespace" in squat.json()["detail"]
    after = http("GET", f"{api}/sessions/{r3.session_id}", reader).json()
    assert after["robot_id"] == "r3"
    assert after["remote"].startswith(f"s3://{BUCKET}/{PREFIX}/r3/")
    # The revoked token is refused everywhere, with a Bearer challenge.
    for method, path, body in (
        ("GET", f"{api}/robots/r2", None),
        ("POST", f"{api}/robots/r2/heartbeats",
         {"robot_id": "r2", "sent_ns": time.time_ns(), "state": "idle"}),
    ):
        got = http(method, path, r2.token, body)
        assert got.status == 401 and got.json() == {"detail": "unknown or revoked token"}
        assert got.headers.get("www-authenticate") == "Bearer"
    # A reader writes nothing.
    hb1 = {"robot_id": "r1", "sent_ns": time.time_ns(), "state": "idle"}
    assert http("POST", f"{api}/robots/r1/heartbeats", reader, hb1).status == 403
