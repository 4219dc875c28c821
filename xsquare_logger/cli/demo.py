"""`make demo`: the simulated humanoid plus the recorder, then the session summary."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xsquare_logger.config.model import RecordingConfig
from xsquare_logger.errors import XsqError
from xsquare_logger.ros.env import ros_env
from xsquare_logger.sim.profiles import get_profile
from xsquare_logger.tools.info import format_info, session_info

__all__ = ["DemoDiskError", "demo_bytes", "run_demo"]

GIB = 1024**3


class DemoDiskError(XsqError):
    """The demo session would not fit on the disk of its data root."""


def demo_bytes(profile: str, duration: float) -> int:
    """What ``duration`` s of ``profile`` write at most: raw frames, before compression
    (the sim's frames shrink ~20% under zstd; real camera content much less), plus 5% for
    the control topics and the MCAP framing."""
    return int(get_profile(profile).image_bytes_per_second() * duration * 1.05)


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _check_disk(data_root: Path, old: list[Path], need: int) -> None:
    """Refuse (one line) unless the session fits beside the recorder's disk reserve."""
    reserve = RecordingConfig().disk_reserve_bytes  # the recorder closes the session there
    free = shutil.disk_usage(data_root).free + sum(_tree_bytes(p) for p in old)
    if free < need + reserve:
        raise DemoDiskError(
            f"demo needs ~{need / GIB:.1f} GiB plus the recorder's {reserve / GIB:.0f} GiB "
            f"disk reserve in {data_root}, but only {free / GIB:.1f} GiB are free "
            "(use a shorter --duration, --profile light, or another --data-root)"
        )


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
    data_root.mkdir(parents=True, exist_ok=True)
    # data/demo is the demo's scratch folder: 20 s of raw humanoid data is ~5 GB,
    # so keep only the newest demo session.
    olds = sorted(p for p in data_root.iterdir() if (p / "session.json").exists())
    need = demo_bytes(profile, duration)
    _check_disk(data_root, olds, need)
    print(
        f"[demo] this writes up to ~{need / GIB:.1f} GiB ({duration:.0f} s of raw {profile} "
        f"cameras) into {data_root.resolve()}; only the newest demo session is kept there"
    )
    env = ros_env()
    for old in olds:
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
