"""`xsq floor serve` runs until SIGINT/SIGTERM (docs/floor.md) and then stops cleanly:
exit status 0, no traceback (Ctrl-C on the floor machine is not a crash).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.localserver import free_port

pytest.importorskip("xsquare_logger.floor.api", reason="the floor extra is not installed")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_cleanly_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    err = tmp_path / "err"
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xsquare_logger.cli.main", "floor", "serve", "--data-dir",
             str(tmp_path), "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("xsq floor: serving http://127.0.0.1:")
        deadline = time.monotonic() + 30
        while True:  # answering requests, so the signal finds a running server
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    assert r.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, err.read_text()
                time.sleep(0.1)
        proc.send_signal(sig)
        assert proc.wait(30) == 0, err.read_text()
        text = err.read_text()  # the migration's log line, nothing else
        assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
