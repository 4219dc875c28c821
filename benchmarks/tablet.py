"""Tablet link benchmark: command round trip over CURVE on loopback.

Measures ``n`` request/reply round trips (alternating ``status`` and ``mark``)
through the real client, server and state machine, against a controller that
does nothing, and, in the same run, the same number of round trips of a bare
ZeroMQ CURVE DEALER/ROUTER echo: the baseline. The ratio is what the protocol
layer (pydantic validation, state machine, idempotency cache, JSON) costs on
top of the transport. Both servers run as threads of this process.

    python -m benchmarks.tablet [--n 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from xsquare_logger.config.model import TabletConfig
from xsquare_logger.link.keys import KeyStore
from xsquare_logger.link.server import TabletServer
from xsquare_logger.link.visit import VisitStateMachine
from xsquare_logger.recording.control import RecordingStatus
from xsquare_logger.session.events import TaskEventData, VisitInfo
from xsquare_logger.tablet.client import TabletClient, keys_from_files

__all__ = ["main", "run"]

_WARMUP = 50


class _NullController:
    """Accepts everything, records nothing: isolates the link's own cost."""

    def start_session(self, visit: VisitInfo, stamp_ns: int) -> str:
        return "bench-session"

    def record_event(self, event: TaskEventData) -> None:
        pass

    def stop_session(self, stamp_ns: int) -> str:
        return ""

    def status(self) -> RecordingStatus:
        return RecordingStatus(recording=True, session_id="bench-session")


def _stats(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return {
        "p50_ms": round(pick(0.50), 4),
        "p99_ms": round(pick(0.99), 4),
        "mean_ms": round(sum(ordered) / len(ordered) / 1e6, 4),
        "max_ms": round(ordered[-1] / 1e6, 4),
    }


def _tablet_round_trips(keys_dir: Path, n: int) -> list[int]:
    config = TabletConfig(
        command_endpoint="tcp://127.0.0.1:0",
        status_endpoint="tcp://127.0.0.1:0",
        keys_dir=keys_dir,
    )
    machine = VisitStateMachine(_NullController(), "bench")
    with (
        TabletServer(config, "bench", machine) as server,
        TabletClient.from_keys_dir(server.command_endpoint, keys_dir, "bench") as client,
    ):
        client.start_visit("bench-visit", "bench", consent=True)
        samples = []
        for i in range(_WARMUP + n):
            t0 = time.perf_counter_ns()
            if i % 2:
                client.mark("bench")
            else:
                client.status()
            if i >= _WARMUP:
                samples.append(time.perf_counter_ns() - t0)
        client.stop_visit()
    return samples


def _echo_round_trips(keys_dir: Path, n: int) -> list[int]:
    """Bare CURVE DEALER/ROUTER echo with a request-sized payload: the transport alone."""
    store = KeyStore(keys_dir)
    server_public, server_secret = store.load_robot_keys()
    client_keys = keys_from_files(store.robot_public_file, store.issued_dir / "bench.key_secret")
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.curve_server = True
    router.curve_publickey, router.curve_secretkey = server_public, server_secret
    router.bind("tcp://127.0.0.1:0")
    endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            if router.poll(100):
                router.send_multipart(router.recv_multipart())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.curve_serverkey = client_keys["server_public_key"]
    dealer.curve_publickey = client_keys["client_public_key"]
    dealer.curve_secretkey = client_keys["client_secret_key"]
    dealer.connect(endpoint)
    payload = json.dumps(
        {"v": 1, "id": "0" * 32, "cmd": "mark", "args": {"label": "bench"}}
    ).encode()
    samples = []
    try:
        for i in range(_WARMUP + n):
            t0 = time.perf_counter_ns()
            dealer.send(payload)
            dealer.recv()
            if i >= _WARMUP:
                samples.append(time.perf_counter_ns() - t0)
    finally:
        stop.set()
        thread.join()
        dealer.close()
        router.close()
        ctx.term()
    return samples


def run(n: int = 1000) -> dict[str, Any]:
    """Round-trip statistics (milliseconds) of ``n`` tablet commands and of the baseline."""
    with tempfile.TemporaryDirectory(prefix="xsq-tablet-bench-") as tmp:
        keys_dir = Path(tmp) / "keys"
        store = KeyStore(keys_dir)
        store.init_robot()
        store.add_tablet("bench")
        baseline = _stats(_echo_round_trips(keys_dir, n))
        tablet = _stats(_tablet_round_trips(keys_dir, n))
    return {
        "commands": n,
        "transport": "tcp loopback, CURVE",
        "tablet": tablet,
        "zmq_echo_baseline": baseline,
        "ratio_p50": round(tablet["p50_ms"] / baseline["p50_ms"], 2),
        "ratio_p99": round(tablet["p99_ms"] / baseline["p99_ms"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tablet")
    ap.add_argument("--n", type=int, default=1000, help="commands to time")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    result = run(args.n)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    t, b = result["tablet"], result["zmq_echo_baseline"]
    print(f"tablet link round trip, {result['commands']} commands ({result['transport']})")
    print(f"{'':22}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}")
    print(f"{'tablet status/mark':22}{t['p50_ms']:9.3f}{t['p99_ms']:9.3f}{t['mean_ms']:9.3f}")
    print(f"{'bare zmq echo':22}{b['p50_ms']:9.3f}{b['p99_ms']:9.3f}{b['mean_ms']:9.3f}")
    print(f"ratio tablet/echo: p50 {result['ratio_p50']}x, p99 {result['ratio_p99']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
