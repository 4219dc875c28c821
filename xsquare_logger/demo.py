"""`make demo`: the simulated humanoid plus the recorder, then the session summary."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from .procs import ros_env, start, stop
from .recording.info import format_info, session_info

__all__ = ["run_demo"]


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
    sim = start(
        ["-m", "xsquare_logger.nodes.sim_node", "--profile", profile],
        env,
        stdout=logs / "sim.out",
        stderr=logs / "sim.err",
    )
    rec = start(
        ["-m", "xsquare_logger.cli", "record", "--all-topics", "--data-root", str(data_root)],
        env,
        stdout=logs / "record.out",
        stderr=logs / "record.err",
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
        code = stop(rec, timeout=120)
        stop(sim, timeout=20)
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
