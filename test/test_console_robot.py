"""The console on a real robot: `xsq run` (rclpy recorder, stream health, verdicts, previews)
fed by the simulated humanoid, seen in Debian's Chromium.

A camera of the sim dies mid-task (SIGUSR1, ``--halt-on-usr1 head``): its tile turns
red and the error banner names it, and the episode ends with a ``fail`` verdict
naming it. Nothing here is a stand-in: the robot, the sim, the console and the
browser are the real programs (the sim's light profile keeps the load small).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_console_browser import By, WebDriver, browser, el, text
from test_console_screens import (
    RED,
    check_screen,
    pixel_matches,
    rect,
    rgb,
    tiles,
    viewport,
    wait_for,
)

from xsquare_logger.link.keys import KeyStore
from xsquare_logger.tablet.client import keys_from_files
from xsquare_logger.tablet.console import run_console

pytestmark = pytest.mark.ros
__all__ = ["browser"]  # the fixture, imported for pytest

# The light profile's streams at the light profile's rates (15 Hz cameras, 100 Hz rest).
CONFIG = """\
health:
  streams:
    - {name: head camera, topic: /camera/head/image_raw, nominal_hz: 15, kind: camera}
    - {name: left wrist camera, topic: /camera/left_wrist/image_raw, nominal_hz: 15, kind: camera}
    - {name: right wrist camera, topic: /camera/right_wrist/image_raw, nominal_hz: 15, kind: camera}
    - {name: joints, topic: /joint_states, nominal_hz: 100}
    - {name: left wrench, topic: /gripper/left/wrench, nominal_hz: 100}
    - {name: right wrench, topic: /gripper/right/wrench, nominal_hz: 100}
"""


def test_a_camera_dying_mid_task_on_a_real_robot(
    browser: WebDriver, procs: Callable[..., Any], env: dict[str, str], tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    store = KeyStore(keys)
    store.init_robot()
    secret = store.add_tablet("console")
    config = tmp_path / "robot.yaml"
    config.write_text(CONFIG)
    stack = procs(
        [
            "-m", "xsquare_logger.cli.main", "run", "--config", str(config),
            "--robot-id", "tbot", "--data-root", str(tmp_path / "data"),
            "--set", f"tablet.keys_dir={keys}",
            "--set", "tablet.command_endpoint=tcp://127.0.0.1:0",
            "--set", "tablet.status_endpoint=tcp://127.0.0.1:0",
        ],
        env,
        "stack",
    )
    stack.wait_for("robot stack ready", timeout=60)
    m = re.search(r"commands on tcp://127.0.0.1:(\d+), status on tcp://127.0.0.1:(\d+)",
                  stack.stderr())
    assert m, stack.stderr()
    sim = procs(
        ["-m", "xsquare_logger.ros.sim_node", "--profile", "light", "--halt-on-usr1", "head"],
        env,
        "sim",
    )
    console = run_console(
        "127.0.0.1", int(m.group(1)), int(m.group(2)), port=0, timeout=2.0, retries=2,
        **keys_from_files(store.robot_public_file, secret),
    )
    try:
        def api(cmd: str, **args: Any) -> dict[str, Any]:
            reply = console.backend.command(cmd, args, None)[1]
            assert reply["ok"], reply
            return reply

        api("session.start", visit_id="v-robot", operator="ana", consent=True)
        d = browser
        viewport(d, 800, 1280)
        d.get(console.url)
        # Every stream live (the recorder's own measurement): six green tiles.
        wait_for(d, lambda d: [t["state"] for t in tiles(d)] == ["ok"] * 6,
                 "six green tiles from the recorder", timeout=60)
        d.find_element(By.CSS_SELECTOR, '[data-task="fold towel"]').click()
        wait_for(d, lambda d: el(d, "active-task").is_displayed(), "task open")
        # The recorder's camera previews reach the page (through preview.get).
        wait_for(d, lambda d: len(d.find_elements(
            By.CSS_SELECTOR, '[data-testid="preview"][data-available="true"]')) == 3,
            "three camera previews", timeout=30)
        assert not el(d, "problem-banner").is_displayed()

        sim.p.send_signal(signal.SIGUSR1)  # the head camera dies
        halted = time.monotonic()
        wait_for(d, lambda d: tiles(d)[0]["state"] == "stalled", "head camera stalled",
                 timeout=30)
        # Reported, never asserted (the benchmark: under 2 s on a quiet machine).
        print(f"stall shown on the console {time.monotonic() - halted:.2f} s after the halt")
        head = tiles(d)[0]
        assert (head["name"], rgb(head["bg"]), head["word"]) == ("head camera", RED, "STOPPED")
        assert [t["state"] for t in tiles(d)][1:] == ["ok"] * 5
        wait_for(d, lambda d: el(d, "problem-banner").is_displayed(), "error banner")
        assert el(d, "problem-banner").get_attribute("data-level") == "red"
        assert "head camera" in text(d, "problem-detail")
        image = check_screen(d, tmp_path / "console-robot-stalled.png", 800, 1280)
        assert pixel_matches(image, rect(d, "problem-banner"), RED)

        # Ending the episode: the robot's verdict is fail and says why.
        d.find_element(By.CSS_SELECTOR, '[data-testid="outcome-success"]').click()
        wait_for(d, lambda d: el(d, "review").is_displayed(), "verdict", timeout=30)
        assert text(d, "review-verdict") == "FAIL"
        assert "head" in text(d, "review-reasons"), text(d, "review-reasons")
        api("session.stop")
    finally:
        console.close()
        sim.p.send_signal(signal.SIGINT)
        sim.p.wait(timeout=20)
        assert stack.stop() == 0, stack.stderr()
