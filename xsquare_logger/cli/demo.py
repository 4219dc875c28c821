"""`make demo`: the simulated humanoid plus the recorder, then the session summary."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xsquare_logger.ros.env import ros_env
from xsquare_logger.tools.info import format_info, session_info

__all__ = ["run_demo"]


def _start(args: list[str], env: dict[str, str], out: Path, err: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as o, open(err, "wb") as e:
        return subprocess.Popen(
            [sys.executable, *args], env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL
        )


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGINT (the recorder finalizes its session), then kill after ``timeout`` s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run_demo(duration: float, profile: str, data_root: Path) -> int:
    """Record ``duration`` seconds of the sim into a new session under ``data_root``."""
    env = ros_env()
    data_root.mkdir(parents=True, exist_ok=True)
    # data/demo is the demo's scratch folder: 20 s of raw humanoid data is ~5 GB,
    # so keep only the newest demo session.
    for old in sorted(p for p in data_root.iterdir() if (p / "session.json").exists()):
        print(f"[demo] removing previous demo session {old}")
        shutil.rmtree(old)
    logs = Path(tempfile.mkdtemp(prefix="xsq-demo-"))
    print(f"[demo] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} (localhost only); logs in {logs}")
    print(f"[demo] starting simulated humanoid ({profile}) and recorder for {duration:.0f} s")
    sim = _start(
        ["-m", "xsquare_logger.ros.sim_node", "--profile", profile],
        env, logs / "sim.out", logs / "sim.err",
    )
    rec = _start(
        ["-m", "xsquare_logger.cli.main", "record", "--all-topics", "--data-root", str(data_root)],
        env, logs / "record.out", logs / "record.err",
    )
    tty = sys.stdout.isatty()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration:
            if rec.poll() is not None or sim.poll() is not None:
                break
            time.sleep(0.5)
            if tty:
                print(f"\r[demo] recording... {time.monotonic() - t0:5.1f} s", end="", flush=True)
        print()
    finally:
        code = _stop(rec, timeout=120)
        _stop(sim, timeout=20)
    out = (logs / "record.out").read_text().strip().splitlines()
    if code not in (0, 3) or not out:
        print(f"[demo] recorder failed (exit {code}); its log:", file=sys.stderr)
        print((logs / "record.err").read_text()[-4000:], file=sys.stderr)
        return 1
    session = Path(out[-1])
    print(f"[demo] session: {session}\n")
    print(format_info(session_info(session)))
    print(
        "\nOpen it in Foxglove: File > Open local file(s), select every .mcap in\n"
        f"  {session}\n"
        "or check it with rosbags: python -c \"from rosbags.rosbag2 import Reader; "
        f"r = Reader('{session}'); r.open(); print(r.message_count)\""
    )
    return 0
