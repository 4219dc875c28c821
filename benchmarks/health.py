"""Stream health and previews: what they cost the recorder, and how fast a stall shows.

Each run starts the real robot stack (`xsq run`, raw cameras) and the simulated humanoid,
opens a visit over the tablet link, and polls ``status`` once a second, as a console
does. Two arms, alternated run by run on the same machine state:

* ``on``: health tracking (default config) and a client asking ``preview.get`` for the
  three cameras about once a second (previews made all run long);
* ``off``: ``health.enabled=false``, ``health.previews=false``, no preview requests.

Recorder CPU (user + system of the `xsq run` process, % of one core) is measured over
the same ``duration`` window after every stream is live. At the end of each ``on`` run
the sim's head camera is halted (SIGUSR1) and the status is polled every 20 ms until it
says ``stalled``: the time from halt to status (the stall rule itself waits
``max(stalled_periods / nominal, stalled_min_s)`` = 0.5 s at 30 Hz).

A micro phase times the subscription callback alone, in this process (no DDS): a
JointState through the plain callback (health off) and through the observed one
(health on: the monitor's append and the header stamp read), per message, 3 runs.

``python -m benchmarks.health [--duration S] [--runs N] [--profile humanoid]``
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from support.procs import ros_env, start, stop

from xsquare_logger.link.keys import KeyStore
from xsquare_logger.tablet.client import TabletClient

__all__ = ["main", "print_table", "run"]

CAMERAS = ("head camera", "left wrist camera", "right wrist camera")


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _wait_text(path: Path, pattern: str, proc: Any, timeout: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, path.read_text(errors="replace"))
        if m:
            return m
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{pattern!r} not seen in {path}")


def _all_live(client: TabletClient, timeout: float = 60.0) -> None:
    """Every expected stream recorded (by the counters: the "off" arm measures no health)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.status()
        topics = status["topics"]
        if all(topics.get(s["topic"], {}).get("received", 0) > 0 for s in status["streams"]):
            return
        time.sleep(0.2)
    raise RuntimeError(f"streams not live: {client.status()['topics']}")


def one_run(arm: str, duration: float, profile: str, workdir: Path, domain: int) -> dict[str, Any]:
    env = ros_env(domain)
    keys = workdir / "keys"
    store = KeyStore(keys)
    store.init_robot()
    store.add_tablet("bench")
    logs = workdir / "logs"
    logs.mkdir()
    settings = ["--set", f"tablet.keys_dir={keys}",
                "--set", "tablet.command_endpoint=tcp://127.0.0.1:0",
                "--set", "tablet.status_endpoint=tcp://127.0.0.1:0"]
    if arm == "off":
        settings += ["--set", "health.enabled=false", "--set", "health.previews=false"]
    stack = start(["-m", "xsquare_logger.cli.main", "run", "--robot-id", "bench",
                   "--data-root", str(workdir / "data"), *settings],
                  env, logs / "stack.out", logs / "stack.err")
    sim = None
    client = None
    try:
        m = _wait_text(logs / "stack.err", r"commands on (tcp://\S+), status on", stack)
        client = TabletClient.from_keys_dir(m.group(1), keys, "bench", timeout=10.0)
        client.start_visit("bench", "bench", True)
        sim = start(["-m", "xsquare_logger.ros.sim_node", "--profile", profile,
                     "--halt-on-usr1", "head"], env, logs / "sim.out", logs / "sim.err")
        _all_live(client)
        ps = psutil.Process(stack.pid)
        cpu0, t0 = _cpu(ps), time.monotonic()
        previews = 0
        while time.monotonic() - t0 < duration:
            client.status()
            if arm == "on":
                for cam in CAMERAS:
                    previews += bool(client.request("preview.get", {"camera": cam})["available"])
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
        cpu1, t1 = _cpu(ps), time.monotonic()
        out: dict[str, Any] = {
            "arm": arm, "cpu_percent": 100.0 * (cpu1 - cpu0) / (t1 - t0),
            "previews_received": previews,
        }
        if arm == "on":
            sim.send_signal(signal.SIGUSR1)
            halted = time.monotonic()
            while True:
                streams = {s["name"]: s for s in client.status()["streams"]}
                if streams["head camera"]["state"] == "stalled":
                    out["stall_to_status_s"] = time.monotonic() - halted
                    break
                if time.monotonic() - halted > 30:
                    raise RuntimeError("head camera never reported stalled")
                time.sleep(0.02)
        status = client.status()
        out["messages_lost"] = status["messages_lost"]
        client.stop_visit()
        return out
    finally:
        if client is not None:
            client.close()
        if sim is not None:
            stop(sim, timeout=30)
        stop(stack, timeout=120)


def callback_cost_us(health: bool, n: int = 200_000) -> float:
    """CPU µs per message of the JointState subscription callback (queue drained aside)."""
    from rclpy.serialization import serialize_message
    from support import known

    from xsquare_logger.bag.qos import make_qos
    from xsquare_logger.config.model import LoggerConfig, apply_overrides
    from xsquare_logger.recording.recorder import Recorder

    cfg = apply_overrides(LoggerConfig(), {
        "recording.disk_reserve_bytes": 0, "health.enabled": health,
        "health.streams": [{"name": "joints", "topic": known.JOINT_TOPIC, "nominal_hz": 500}],
    }, "bench")
    with tempfile.TemporaryDirectory(prefix="xsq-health-cb-") as tmp:
        rec = Recorder(cfg, Path(tmp) / "s", "s")
        cb = rec.add_topic(known.JOINT_TOPIC, "sensor_msgs/msg/JointState", [make_qos()])
        data = serialize_message(known.joint_state(0))
        gid = {"implementation_identifier": "rmw_fastrtps_cpp", "data": b"A" * 16}
        base = time.time_ns()
        infos = [{"received_timestamp": base + i * 2_000_000, "source_timestamp": base,
                  "publication_sequence_number": i + 1, "publisher_gid": gid}
                 for i in range(n)]
        t0 = time.process_time()
        for info in infos:
            cb(data, info)
        spent = time.process_time() - t0
        rec.start()
        rec.stop()
    return 1e6 * spent / n


def preview_cost_ms(profile: str = "humanoid", n: int = 50) -> float:
    """CPU ms per preview (scale + JPEG) of one of the profile's camera frames."""
    from xsquare_logger.recording.preview import make_jpeg
    from xsquare_logger.sim.frames import build_ring
    from xsquare_logger.sim.profiles import get_profile

    ring = build_ring(get_profile(profile).stream("/camera/head/image_raw"), verify=False)
    frames = [ring.payload(i % len(ring), time.time_ns()) for i in range(n)]
    t0 = time.process_time()
    for frame in frames:
        make_jpeg(frame, 320)
    return 1e3 * (time.process_time() - t0) / n


def run(duration: float = 20.0, runs: int = 3, profile: str = "humanoid",
        domain: int = 63) -> dict[str, Any]:
    micro = {"off": [callback_cost_us(False) for _ in range(runs)],
             "on": [callback_cost_us(True) for _ in range(runs)],
             "preview_ms": [preview_cost_ms(profile) for _ in range(runs)]}
    print(f"[health] callback µs/message: {json.dumps(micro)}", flush=True)
    results: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for i in range(runs):
        for arm in ("on", "off") if i % 2 == 0 else ("off", "on"):
            with tempfile.TemporaryDirectory(prefix=f"xsq-health-{arm}-") as tmp:
                r = one_run(arm, duration, profile, Path(tmp), domain)
            print(f"[health] run {i + 1} {arm}: {json.dumps(r)}", flush=True)
            results[arm].append(r)
    load = psutil.getloadavg()
    return {"profile": profile, "duration_s": duration, "runs": results, "callback_us": micro,
            "loadavg_1_5_15": [round(x, 2) for x in load]}


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"median {statistics.median(values):.2f} "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)})")


def print_table(r: dict[str, Any]) -> None:
    on = [x["cpu_percent"] for x in r["runs"]["on"]]
    off = [x["cpu_percent"] for x in r["runs"]["off"]]
    stall = [x["stall_to_status_s"] for x in r["runs"]["on"] if "stall_to_status_s" in x]
    pairs = [a - b for a, b in zip(on, off, strict=False)]
    print(f"\n== stream health + previews, {r['profile']} raw, {r['duration_s']:g} s per run ==")
    print(f"recorder CPU %, health+previews on : {_spread(on)}")
    print(f"recorder CPU %, health+previews off: {_spread(off)}")
    print(f"extra (on - off, paired runs)      : {_spread(pairs)}  (target < 2)")
    print(f"halt -> status 'stalled' (s)       : {_spread(stall)}  (target < 2)")
    print(f"load average 1/5/15 at the end     : {r['loadavg_1_5_15']}")
    micro = r["callback_us"]
    print(f"callback µs/message, health off     : {_spread(micro['off'])}")
    print(f"callback µs/message, health on      : {_spread(micro['on'])}")
    print(f"preview (scale + JPEG) CPU ms       : {_spread(micro['preview_ms'])}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.health")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", default="humanoid")
    ap.add_argument("--domain", type=int, default=63, help="ROS_DOMAIN_ID of the runs")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    r = run(args.duration, args.runs, args.profile, args.domain)
    print_table(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
