"""The operator console's screens in Debian's Chromium: layouts, health, verdicts, wording.

Against the real link in its own process (``support.console_robot``: real
TabletServer and visit state machine over CURVE, a recorder stand-in whose stream
health, episode verdicts and camera previews the test steers and sees asked for).

Screenshots at 1280x800 (landscape) and 800x1280 (a 10-inch tablet upright) are
checked, not only saved: layout facts from the DOM (one column in portrait, no
horizontal scroll, every tile on screen, touch targets) and pixels of the image
(the banner really is red where the DOM says it is).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

# Through test_console_browser, which skips the module without selenium or Chromium.
from test_console_browser import (
    By,
    WebDriver,
    WebDriverWait,
    browser,
    click,
    el,
    expect_error,
    text,
    type_into,
    wait_text,
)
from test_console_visit import (
    HUMANOID,
    SteeredRobot,
    console_for,
    health,
    start_steered_robot,
)

from xsquare_logger.config.model import LoggerConfig
from xsquare_logger.tablet.console import ConsoleServer
from xsquare_logger.tablet.console.wording import OPERATOR_TEXT

__all__ = ["browser"]  # the fixture, imported for pytest

RED = (176, 0, 30)  # --stop
AMBER = (255, 179, 0)  # --amber
GREEN = (10, 107, 44)  # --go


def rgb(css: str) -> tuple[int, ...]:
    """``rgb(1, 2, 3)`` or ``rgba(1, 2, 3, 1)`` -> (1, 2, 3)."""
    return tuple(int(float(x)) for x in css[css.index("(") + 1 : -1].split(",")[:3])
VISIT = {"visit_id": "v7", "operator": "ana", "consent": True}


def viewport(d: WebDriver, width: int, height: int) -> None:
    """Make the page's viewport exactly width x height (headless keeps a frame)."""
    d.set_window_size(width, height)
    inner = d.execute_script("return [window.innerWidth, window.innerHeight]")
    d.set_window_size(2 * width - inner[0], 2 * height - inner[1])
    WebDriverWait(d, 5).until(
        lambda d: d.execute_script("return [window.innerWidth, window.innerHeight]")
        == [width, height]
    )


def rect(d: WebDriver, testid: str) -> dict[str, float]:
    r: dict[str, float] = d.execute_script(
        "const r = document.querySelector(`[data-testid='${arguments[0]}']`)"
        ".getBoundingClientRect(); return {left: r.left, right: r.right, top: r.top,"
        " bottom: r.bottom, width: r.width, height: r.height};",
        testid,
    )
    return r


def wait_for(
    d: WebDriver, pred: Callable[[WebDriver], Any], what: str, timeout: float = 10.0
) -> Any:
    try:
        return WebDriverWait(d, timeout).until(pred)
    except Exception:
        raise AssertionError(f"timed out waiting for {what}") from None


def tiles(d: WebDriver) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = d.execute_script(
        "return [...document.querySelectorAll('[data-testid=health-tile]')].map(t => {"
        " const r = t.getBoundingClientRect(); const cs = getComputedStyle(t);"
        " return {name: t.dataset.stream, state: t.dataset.state, left: r.left, right: r.right,"
        " top: r.top, bottom: r.bottom, bg: cs.backgroundColor,"
        " nameFont: parseFloat(getComputedStyle(t.children[0]).fontSize),"
        " stateFont: parseFloat(getComputedStyle(t.children[1]).fontSize),"
        " word: t.children[1].textContent}; })"
    )
    return out


def check_screen(d: WebDriver, path: Path, width: int, height: int) -> np.ndarray:
    """Facts every screen must hold; returns the screenshot (BGR) for pixel checks."""
    facts = d.execute_script(
        "const de = document.documentElement;"
        "return {scroll: de.scrollWidth, inner: window.innerWidth,"
        " buttons: [...document.querySelectorAll('button')].filter(b => b.offsetParent !== null)"
        "   .map(b => [b.textContent.trim(), b.getBoundingClientRect().height,"
        "              b.getBoundingClientRect().right])};"
    )
    assert facts["scroll"] <= facts["inner"] == width, facts  # no horizontal scroll
    small = [b for b in facts["buttons"] if b[1] < 64]
    assert facts["buttons"] and not small, small  # touch targets
    assert all(b[2] <= width for b in facts["buttons"]), facts["buttons"]
    assert d.save_screenshot(str(path))
    image = cv2.imread(str(path))
    assert image is not None
    assert image.shape[:2] == (height, width), image.shape
    print(f"screenshot: {path}")
    return image


def pixel_matches(image: np.ndarray, r: dict[str, float], color: tuple[int, ...]) -> bool:
    """Most pixels of the rectangle's inner band are the colour (text aside)."""
    top, bottom = int(r["top"]) + 3, int(r["bottom"]) - 3
    left, right = int(r["left"]) + 3, int(r["right"]) - 3
    patch = image[top:bottom, left:right].reshape(-1, 3).astype(int)
    bgr = np.array(color[::-1])
    share = float((np.abs(patch - bgr).max(axis=1) <= 8).mean())
    return share > 0.5


@pytest.fixture
def robot(procs: Callable[..., Any], env: dict[str, str], tmp_path: Path) -> SteeredRobot:
    return start_steered_robot(procs, env, tmp_path, require=["site", "robot_serial"])


def api(console: ConsoleServer, cmd: str, **args: Any) -> dict[str, Any]:
    _, reply = console.backend.command(cmd, args, None)
    assert reply["ok"], reply
    return reply


# --- landscape and portrait, with a stream stalling mid-task ----------------------------------


def test_landscape_and_portrait_with_a_stalled_stream(
    browser: WebDriver, robot: SteeredRobot, tmp_path: Path
) -> None:
    d = browser
    robot.set_health(health())
    console = console_for(robot)
    try:
        api(console, "session.start", **VISIT, site="flat 3", metadata={"robot_serial": "HX-1"})
        api(console, "task.start", task="fold towel")

        viewport(d, 1280, 800)
        d.get(console.url)
        wait_text(d, "link-state", "LINK OK")
        wait_text(d, "active-task-name", "fold towel")
        wait_for(d, lambda d: len(tiles(d)) == 6 and {t["state"] for t in tiles(d)} == {"ok"},
                 "six green tiles")
        assert [t["name"] for t in tiles(d)] == HUMANOID
        assert not el(d, "problem-banner").is_displayed()

        # Landscape: controls left, cameras/episodes/status right, side by side.
        controls, side = rect(d, "controls"), rect(d, "side")
        assert side["left"] >= controls["right"] and abs(side["top"] - controls["top"]) < 1
        # Tiles readable at arm's length, all on screen, in one row at 1280 px.
        for t in tiles(d):
            assert rgb(t["bg"]) == GREEN and t["word"] == "OK", t
            assert t["nameFont"] >= 22 and t["stateFont"] >= 26, t
            assert t["left"] >= 0 and t["right"] <= 1280 and t["bottom"] <= 800, t
        assert len({t["top"] for t in tiles(d)}) == 1
        # The outcome buttons of the open task are on screen without scrolling.
        assert rect(d, "outcome-success")["bottom"] <= 800
        check_screen(d, tmp_path / "console-1280x800.png", 1280, 800)

        # The head camera stops during the open task: red tile and a red error banner.
        robot.set_health(health(head_camera="stalled"))
        wait_for(d, lambda d: tiles(d)[0]["state"] == "stalled", "stalled tile")
        head = tiles(d)[0]
        assert (rgb(head["bg"]), head["word"]) == (RED, "STOPPED")
        assert [t["state"] for t in tiles(d)[1:]] == ["ok"] * 5
        wait_for(d, lambda d: el(d, "problem-banner").is_displayed(), "problem banner")
        assert el(d, "problem-banner").get_attribute("data-level") == "red"
        assert text(d, "problem-title") == "STREAM STOPPED DURING THE TASK"
        assert "head camera (stopped)" in text(d, "problem-detail")
        image = check_screen(d, tmp_path / "console-1280x800-stalled.png", 1280, 800)
        assert pixel_matches(image, rect(d, "problem-banner"), RED)
        assert pixel_matches(image, {**tiles(d)[0]}, RED)

        # Portrait 10-inch tablet: one full-width column, the task first, nothing squeezed.
        viewport(d, 800, 1280)
        wait_for(d, lambda d: rect(d, "side")["top"] >= rect(d, "controls")["bottom"],
                 "one column")
        controls, side = rect(d, "controls"), rect(d, "side")
        assert abs(controls["left"] - side["left"]) < 1
        assert controls["width"] >= 0.95 * (800 - 24) and side["width"] == controls["width"]
        assert rect(d, "active-task")["width"] >= 0.9 * 800 - 24
        outcome = rect(d, "outcome-success")
        assert outcome["height"] >= 96 and outcome["bottom"] <= 1280  # on screen, big
        rows = sorted({t["top"] for t in tiles(d)})
        assert len(rows) == 2 and all(t["right"] <= 800 for t in tiles(d))
        image = check_screen(d, tmp_path / "console-800x1280-stalled.png", 800, 1280)
        assert pixel_matches(image, rect(d, "problem-banner"), RED)

        # Back to health: the banner goes, the tile turns green.
        robot.set_health(health())
        wait_for(d, lambda d: tiles(d)[0]["state"] == "ok", "recovered tile")
        wait_for(d, lambda d: not el(d, "problem-banner").is_displayed(), "banner gone")
    finally:
        console.close()


# --- waiting for the robot is a problem, errors in operator words -------------------------------


def test_waiting_for_robot_is_a_banner_and_errors_speak_plainly(
    browser: WebDriver, tmp_path: Path
) -> None:
    from test_console_api import free_port

    from xsquare_logger.tablet.console import run_console

    console = run_console(
        "127.0.0.1", free_port(), free_port(), port=0, tasks=["fold towel"], timeout=0.3,
        retries=0,
    )
    try:
        d = browser
        viewport(d, 800, 1280)
        d.get(console.url)
        wait_for(d, lambda d: el(d, "problem-banner").is_displayed(), "waiting banner")
        assert text(d, "problem-title") == "WAITING FOR ROBOT"
        assert "switched on" in text(d, "problem-detail")
        assert rgb(el(d, "problem-banner").value_of_css_property("background-color")) == AMBER
        # The link pill is amber too: a problem, not a neutral grey.
        wait_text(d, "link-state", "WAITING FOR ROBOT")
        assert rgb(el(d, "link-state").value_of_css_property("background-color")) == AMBER
        image = check_screen(d, tmp_path / "console-waiting.png", 800, 1280)
        assert pixel_matches(image, rect(d, "problem-banner"), AMBER)

        # A tap with no robot: the operator's sentence big, the code small for support.
        # (the buttons come with the config, which waited for the absent robot's hello)
        wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="task-button"]'),
                 "task buttons")
        d.find_element(By.CSS_SELECTOR, '[data-testid="task-button"]').click()
        expect_error(d, "ROBOT_UNREACHABLE")
        assert text(d, "error-text") == OPERATOR_TEXT["ROBOT_UNREACHABLE"]
        big = float(el(d, "error-text").value_of_css_property("font-size").rstrip("px"))
        small = float(el(d, "error-code").value_of_css_property("font-size").rstrip("px"))
        assert small < big and small >= 12
        assert el(d, "error-retry").is_displayed()
    finally:
        console.close()


# --- a visit: required fields, counts, mark confirmation, verdict, re-record, privacy ---------


def test_visit_with_verdicts_rerecord_marks_and_privacy(
    browser: WebDriver, robot: SteeredRobot, tmp_path: Path
) -> None:
    d = browser
    robot.set_health(health())
    console = console_for(robot, tasks=["fold towel", "wipe table"])
    try:
        viewport(d, 800, 1280)
        d.get(console.url)
        wait_text(d, "link-state", "LINK OK")
        # The robot requires a robot serial: the form asks for it before the first try.
        wait_for(d, lambda d: d.find_elements(By.CSS_SELECTOR,
                 '[data-testid="visit-field-robot_serial"]'), "robot serial field")

        # An INVALID_STATE in operator words.
        d.find_element(By.CSS_SELECTOR, '[data-task="fold towel"]').click()
        expect_error(d, "INVALID_STATE")
        assert text(d, "error-text") == "Start the visit first."

        type_into(d, "visit-id", "visit-7")
        type_into(d, "visit-operator", "ana")
        click(d, "visit-consent")
        click(d, "start-visit")
        expect_error(d, "MISSING_FIELDS")
        assert text(d, "error-text") == "Fill in the missing visit details: Site, Robot serial."
        assert "missing" in str(el(d, "visit-site").find_element(By.XPATH, "..")
                                .get_attribute("class"))
        type_into(d, "visit-site", "flat 3")
        type_into(d, "visit-field-robot_serial", "HX-0042")
        click(d, "start-visit")
        wait_text(d, "rec-indicator", "REC")
        assert robot.calls()[0]["visit"]["metadata"]["robot_serial"] == "HX-0042"

        # A task: the task clock runs; the counts follow the robot.
        robot.set_quality({"verdict": "fail", "reasons": ["head camera stalled for 3.2 s"]})
        d.find_element(By.CSS_SELECTOR, '[data-task="fold towel"]').click()
        wait_text(d, "active-task-name", "fold towel")
        wait_text(d, "count-episodes", "1")
        first = text(d, "task-elapsed")
        wait_for(d, lambda d: text(d, "task-elapsed") != first, "task clock moving")

        # A mark is confirmed on screen and counted.
        type_into(d, "mark-label", "cup dropped")
        click(d, "mark")
        wait_for(d, lambda d: el(d, "mark-confirm").is_displayed(), "mark confirmation")
        assert "“cup dropped” in episode 0" in text(d, "mark-confirm")
        wait_text(d, "count-marks", "1")

        # Task end: the verdict with its reason, Keep / Re-record offered.
        click(d, "outcome-success")
        wait_for(d, lambda d: el(d, "review").is_displayed(), "review card")
        assert text(d, "review-verdict") == "FAIL"
        assert text(d, "review-reasons") == "head camera stalled for 3.2 s"
        row = d.find_element(By.CSS_SELECTOR, '[data-testid="episode-row"][data-index="0"]')
        assert (row.get_attribute("data-outcome"), row.get_attribute("data-quality")) == (
            "success", "fail")
        check_screen(d, tmp_path / "console-800x1280-verdict.png", 800, 1280)

        # Re-record: episode 0 discarded (kept in the bag), the same task open again.
        robot.set_quality({"verdict": "pass", "reasons": []})
        click(d, "review-rerecord")
        wait_text(d, "active-task-name", "fold towel")
        wait_text(d, "active-task-episode", "1")
        wait_for(d, lambda d: d.find_element(By.CSS_SELECTOR,
                 '[data-testid="episode-row"][data-index="0"]').get_attribute("data-discarded")
                 == "true", "episode 0 discarded")
        kinds = [(c["kind"], c["task"], c["episode_index"])
                 for c in robot.calls() if c["call"] == "record_event"]
        assert kinds[-2:] == [("task_discard", "fold towel", 0), ("task_start", "fold towel", 1)]

        click(d, "outcome-success")
        wait_for(d, lambda d: text(d, "review-verdict") == "PASS", "pass verdict")
        click(d, "review-keep")
        wait_for(d, lambda d: not el(d, "review").is_displayed(), "review closed")
        rows = d.find_elements(By.CSS_SELECTOR, '[data-testid="episode-row"]')
        assert [(r.get_attribute("data-index"), r.get_attribute("data-quality"),
                 r.get_attribute("data-discarded")) for r in rows] == [
            ("1", "pass", "false"), ("0", "fail", "true")]

        # Privacy pause: banner, cameras grey "PAUSED" (not a red alarm), resume.
        click(d, "privacy-pause")
        wait_for(d, lambda d: el(d, "privacy-banner").is_displayed(), "privacy banner")
        wait_for(d, lambda d: [t["state"] for t in tiles(d)][:3] == ["paused"] * 3,
                 "paused camera tiles")
        assert [t["state"] for t in tiles(d)][3:] == ["ok"] * 3
        click(d, "privacy-resume")
        wait_for(d, lambda d: not el(d, "privacy-banner").is_displayed(), "privacy over")
        pauses = [c["paused"] for c in robot.calls() if c["call"] == "set_camera_paused"]
        assert pauses == [True, False]
    finally:
        console.close()


# --- camera previews: asked for only while the page is open -------------------------------------


def test_previews_through_the_link_only_while_the_page_is_open(
    browser: WebDriver, robot: SteeredRobot
) -> None:
    robot.set_health(health())
    console = console_for(robot)
    try:
        api(console, "session.start", **VISIT, site="flat 3", metadata={"robot_serial": "HX-1"})
        wait_until_status = time.monotonic() + 10
        while console.backend.status()["state"] != "recording":
            assert time.monotonic() < wait_until_status, "no recording status"
            time.sleep(0.1)

        def asks() -> list[str]:
            return [c["topic"] for c in robot.calls() if c["call"] == "camera_preview"]

        # A recording visit and a console, but no page: the robot makes no preview.
        time.sleep(1.0)
        assert asks() == []

        d = browser
        viewport(d, 1280, 800)
        d.get(console.url)
        wait_for(d, lambda d: len(d.find_elements(
            By.CSS_SELECTOR, '[data-testid="preview"][data-available="true"]')) == 3,
            "three previews")
        shown = d.execute_script(
            "return [...document.querySelectorAll('[data-testid=preview] img')]"
            ".map(i => [i.closest('figure').dataset.camera, i.naturalWidth, i.naturalHeight,"
            " i.getBoundingClientRect().width])")
        assert [s[0] for s in shown] == [n for n in HUMANOID if "camera" in n]
        assert all(s[1:3] == [320, 180] and 0 < s[3] <= 320 for s in shown), shown
        topics = {s.topic for s in LoggerConfig().health.streams if s.kind == "camera"}
        assert set(asks()) == topics

        # The page goes away: the robot is asked nothing more.
        d.get("about:blank")
        time.sleep(1.0)  # a request already under way may still land
        before = len(asks())
        time.sleep(2.5)
        assert len(asks()) == before
    finally:
        console.close()
