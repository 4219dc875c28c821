"""Upload benchmark against a real local S3 server (``rclone serve s3``), three phases.

1. Throughput: one ~1 GiB session (4 MCAP files + metadata + session.json)
   uploaded and verified by the uploader, against boto3's plain ``upload_file``
   of the same files in the same run (rounds interleaved, median of each).
   Ratio = ours / boto3 (target >= 0.9).
2. Kill at 50%: the uploader runs as its own process (``upload run``) and is
   SIGKILLed once half the session is confirmed; a second process resumes. A
   counting TCP relay measures every byte sent on the wire; re-sent bytes =
   wire bytes of both runs - session bytes (target: at most one part).
3. Fleet: 100 robots (one Uploader each, threads of this process; each robot
   being its own machine is not reproducible on 2 cores) upload small sessions
   concurrently into one server; sessions/s, MB/s, and a check that every session
   arrived exactly once and byte for byte.

The gate reads a temp tree shaped like /sys (a wireless interface up): the real
interface state of a build machine is not the subject here.

    python -m benchmarks.upload [--size-mib 1024] [--robots 100] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from support.localserver import STORE_PARTS, LocalS3Server
from support.sample import make_session
from support.wirecount import CountingProxy

from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.upload.queue import UploadQueue
from xsquare_logger.upload.uploader import Uploader, default_queue_path

__all__ = ["main", "run"]

MIB = 1024 * 1024
BUCKET = "bench"


def _sysfs(root: Path) -> Path:
    d = root / "class" / "net" / "wlan0"
    (d / "wireless").mkdir(parents=True, exist_ok=True)
    (d / "operstate").write_text("up\n")
    return root


def _config(work: Path, data_root: Path, endpoint: str, prefix: str, **upload: Any) -> LoggerConfig:
    overrides: dict[str, Any] = {
        "data_root": str(data_root),
        "upload.destination": f"s3://{BUCKET}/{prefix}",
        "upload.queue_path": str(work / "queues" / prefix / "queue.db"),
        "upload.s3.endpoint_url": endpoint,
        "upload.gate.sysfs_root": str(_sysfs(work / "sys")),
        "upload.gate.while_recording": True,
        "upload.retention.delete_after": None,
        "upload.retention.free_disk_reserve": 0,
        "upload.retry.initial": 0.2,
        "upload.retry.maximum": 2.0,
    }
    overrides.update({f"upload.{k}": v for k, v in upload.items()})
    return apply_overrides(LoggerConfig(), overrides, "bench")


def _client(server: LocalS3Server) -> Any:

    return server.client()


def _clear_bucket(server: LocalS3Server) -> None:
    # Faster than DeleteObjects and keeps the server's disk use at one session.
    root = server.root / BUCKET
    for child in root.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _session_files(session: Path) -> list[Path]:
    return sorted(p for p in session.iterdir() if p.is_file() and p.name != ".recording.lock")


# --- phase 1: throughput -------------------------------------------------------------------


Round = tuple[float, float, float]  # wall s, CPU s of this process, CPU s of the server


def _boto3_round(server: LocalS3Server, session: Path, prefix: str) -> Round:
    """(wall s, client CPU s, server CPU s) for boto3 ``upload_file`` of every file."""
    c = _client(server)
    t0, c0, s0 = time.perf_counter(), time.process_time(), server.cpu_seconds()
    for p in _session_files(session):
        c.upload_file(str(p), BUCKET, f"{prefix}/{p.name}")
    return time.perf_counter() - t0, time.process_time() - c0, server.cpu_seconds() - s0


def _ours_round(work: Path, server: LocalS3Server, session: Path, prefix: str) -> Round:
    """(wall s, client CPU s, server CPU s) of one upload + verification on a fresh queue.

    A fresh queue each round: the robot's first upload to this server, nothing learned
    yet (the case an operator meets first, and the one outside testing measured).
    """
    queue = work / "queues" / f"{prefix}.db"
    cfg = _config(work, session.parent, server.endpoint, prefix, queue_path=str(queue))
    with Uploader(cfg) as u:
        u.connect()
        u.scan()
        t0, c0, s0 = time.perf_counter(), time.process_time(), server.cpu_seconds()
        outcome = u.upload(session.name, force=True)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        server_cpu = server.cpu_seconds() - s0
    if outcome != "verified":
        raise RuntimeError(f"bench upload ended {outcome!r}")
    return dt, cpu, server_cpu


def throughput(
    work: Path, server: LocalS3Server, size: int, rounds: int, load: int = 0
) -> dict[str, Any]:
    data = work / "big"
    session = make_session(
        data, "bench-robot", size, message_bytes=1 * MIB, max_file_bytes=size // 4 + 1
    )
    total = sum(p.stat().st_size for p in _session_files(session))
    ours: list[Round] = []
    base: list[Round] = []
    load_before = os.getloadavg()
    # ``load`` busy processes compete for the cores, as other work on a robot does.
    busy = [
        subprocess.Popen([sys.executable, "-c", "while 1: pass"], stdin=subprocess.DEVNULL)
        for _ in range(load)
    ]
    try:
        # A warm-up round of each (not counted): page cache, connections, server state.
        _boto3_round(server, session, "warmup-boto3")
        _ours_round(work, server, session, "warmup-ours")
        for i in range(rounds):
            _clear_bucket(server)
            base.append(_boto3_round(server, session, f"boto3-{i}"))
            _clear_bucket(server)
            ours.append(_ours_round(work, server, session, f"ours-{i}"))
    finally:
        for b in busy:
            b.kill()
            b.wait()
    load_after = os.getloadavg()
    _clear_bucket(server)
    ours_mbs = total / statistics.median(r[0] for r in ours) / 1e6
    base_mbs = total / statistics.median(r[0] for r in base) / 1e6
    shutil.rmtree(data)
    return {
        "session_bytes": total,
        "rounds": rounds,
        "background_busy_processes": load,
        "loadavg_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "ours_s": [round(r[0], 2) for r in ours],
        "ours_cpu_s": [round(r[1], 2) for r in ours],
        "ours_server_cpu_s": [round(r[2], 2) for r in ours],
        "boto3_upload_file_s": [round(r[0], 2) for r in base],
        "boto3_cpu_s": [round(r[1], 2) for r in base],
        "boto3_server_cpu_s": [round(r[2], 2) for r in base],
        "ours_MBps": round(ours_mbs, 1),
        "boto3_upload_file_MBps": round(base_mbs, 1),
        "ratio": round(ours_mbs / base_mbs, 3),
        "ratio_per_round": [round(b[0] / o[0], 3) for o, b in zip(ours, base, strict=True)],
        "note": "ours: first upload on a fresh queue, hashing every byte and verifying "
        "every object; cpu_s = the client process, server_cpu_s = rclone in the same "
        "window; loadavg includes the --load processes and anything else on the machine",
    }


# --- phase 2: kill at 50 % -----------------------------------------------------------------


def kill_resume(work: Path, server: LocalS3Server, size: int) -> dict[str, Any]:
    data = work / "kill"
    session = make_session(data, "bench-robot", size, message_bytes=1 * MIB)
    total = sum(p.stat().st_size for p in _session_files(session))
    with CountingProxy(server.port) as proxy1:
        cfg = _config(work, data, proxy1.endpoint, "kill", scan_interval=0.2)
        cfg_file = work / "kill.yaml"
        cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
        env = dict(os.environ) | server.env()
        log = open(work / "kill-run1.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "xsquare_logger.cli.upload",
                "upload",
                "run",
                "--config",
                str(cfg_file),
            ],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        queue = UploadQueue(default_queue_path(cfg))
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                row = queue.session(session.name)
                if row is not None and row.bytes_done >= total // 2:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"uploader exited early, see {work / 'kill-run1.log'}")
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
        row = queue.session(session.name)
        done_at_kill = row.bytes_done if row else 0
        queue.close()
        sent1 = proxy1.sent
    with CountingProxy(server.port) as proxy2:
        cfg2 = cfg.model_copy(deep=True)
        cfg2.upload.s3.endpoint_url = proxy2.endpoint
        u = Uploader(cfg2)
        try:
            outcome = u.upload(session.name, force=True)
        finally:
            u.stop()
        sent2 = proxy2.sent
    if outcome != "verified":
        raise RuntimeError(f"resumed upload ended {outcome!r}")
    part = cfg.upload.part_size
    resent = max(0, sent1 + sent2 - total)
    _clear_bucket(server)
    shutil.rmtree(data)
    return {
        "session_bytes": total,
        "part_size": part,
        "max_concurrency": cfg.upload.max_concurrency,
        "confirmed_at_kill": done_at_kill,
        "wire_bytes_run1": sent1,
        "wire_bytes_run2": sent2,
        "run2_minus_unconfirmed": sent2 - (total - done_at_kill),
        "resent_bytes": resent,
        "resent_parts": round(resent / part, 2),
        "note": "re-sent = both runs' wire bytes (request headers included) - session bytes: "
        "the parts in flight at the kill, never a confirmed one",
    }


# --- phase 3: the fleet --------------------------------------------------------------------


def fleet(
    work: Path, server: LocalS3Server, robots: int, sessions_each: int, size: int
) -> dict[str, Any]:
    root = work / "fleet"
    expected: dict[str, dict[str, str]] = {}  # session id -> {file: sha256}
    uploaders = []
    for r in range(robots):
        robot = f"robot-{r:03d}"
        data = root / robot
        for s in range(sessions_each):
            d = make_session(data, robot, size, seed=r * 100 + s, message_bytes=64 * 1024)
            expected[d.name] = {
                p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _session_files(d)
            }
        cfg = _config(
            work,
            data,
            server.endpoint,
            "fleet",
            scan_interval=0.5,
            max_concurrency=1,
            queue_path=str(data / ".upload" / "queue.db"),
        )
        u = Uploader(cfg)
        u.connect()
        uploaders.append(u)
    total_bytes = sum(
        p.stat().st_size
        for d in root.iterdir()
        for s in d.iterdir()
        if s.is_dir() and not s.name.startswith(".")
        for p in _session_files(s)
    )
    t0 = time.perf_counter()
    for u in uploaders:
        u.start()
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if all(
            u.backlog()["sessions"] == 0
            and u.queue.sessions(("verified",))
            and len(u.queue.sessions(("verified",))) == sessions_each
            for u in uploaders
        ):
            break
        time.sleep(0.05)
    dt = time.perf_counter() - t0
    for u in uploaders:
        u.stop()
    # Every session exactly once, every object byte for byte.
    c = _client(server)
    seen: dict[str, dict[str, str]] = {}
    markers = 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="fleet/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            sid, name = key.split("/")[-2:]
            body = c.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            if name in seen.setdefault(sid, {}):
                raise RuntimeError(f"duplicate object {key}")
            seen[sid][name] = hashlib.sha256(body).hexdigest()
            markers += name == "session.json"
    lost = sorted(set(expected) - set(seen))
    duplicated = markers - len(seen)
    mismatched = sorted(s for s in expected if s in seen and seen[s] != expected[s])
    shutil.rmtree(root)
    _clear_bucket(server)
    n = robots * sessions_each
    return {
        "robots": robots,
        "sessions": n,
        "bytes": total_bytes,
        "seconds": round(dt, 2),
        "sessions_per_s": round(n / dt, 1),
        "MBps": round(total_bytes / dt / 1e6, 1),
        "lost": len(lost),
        "duplicated": duplicated,
        "mismatched": len(mismatched),
        "extra": len(set(seen) - set(expected)),
    }


def run(
    size_mib: int = 1024,
    rounds: int = 2,
    robots: int = 100,
    sessions_each: int = 2,
    fleet_session_kib: int = 512,
    phases: tuple[str, ...] = ("throughput", "kill", "fleet"),
    load: int = 0,
) -> dict[str, Any]:
    """Run the benchmark phases; returns their figures (see the module docstring)."""
    import logging

    logging.getLogger("xsquare_logger.upload").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="xsq-upload-bench-"))
    result: dict[str, Any] = {}
    saved = {
        k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")
    }
    try:
        for phase in phases:
            # The kill phase measures resume against S3 semantics (parts kept apart); by
            # default rclone streams parts into one file and may drop an upload whose
            # client died mid-part (see localserver.py).
            extra = STORE_PARTS if phase == "kill" else ()
            with LocalS3Server(work / f"s3-{phase}", (BUCKET,), extra) as server:
                os.environ.update(server.env())
                if phase == "throughput":
                    result["throughput"] = throughput(work, server, size_mib * MIB, rounds, load)
                elif phase == "kill":
                    result["kill_at_50pct"] = kill_resume(work, server, size_mib * MIB)
                elif phase == "fleet":
                    result["fleet"] = fleet(
                        work, server, robots, sessions_each, fleet_session_kib * 1024
                    )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(work, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.upload")
    p.add_argument("--size-mib", type=int, default=1024, help="session size for phases 1-2")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of phase 1")
    p.add_argument("--robots", type=int, default=100)
    p.add_argument("--sessions-each", type=int, default=2)
    p.add_argument("--fleet-session-kib", type=int, default=512)
    p.add_argument("--phases", default="throughput,kill,fleet")
    p.add_argument("--load", type=int, default=0, help="busy background processes during phase 1")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    result = run(
        a.size_mib,
        a.rounds,
        a.robots,
        a.sessions_each,
        a.fleet_session_kib,
        tuple(a.phases.split(",")),
        a.load,
    )
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        for phase, figures in result.items():
            print(f"{phase}:")
            for k, v in figures.items():
                print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
