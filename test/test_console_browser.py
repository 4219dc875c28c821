"""The operator console in a real headless browser: Debian's Chromium driven by Selenium.

An operator's visit, clicked through on a 1024x768 (tablet-sized) window against
the real robot bridge (``support.tablet_robot``: real TabletServer, CURVE keys made
in tmp, a controller standing in for the recorder that logs every call). Needs
``apt-get install chromium chromium-driver`` (never a downloaded browser) and the
``selenium`` package; skips with the reason when either is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_console_api import Robot, start_robot

from xsquare_logger.config.model import LoggerConfig
from xsquare_logger.tablet.console import ConsoleBackend, ConsoleServer, run_console

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium not installed (pip install -c constraints.txt ...)"
)
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Debian's chromium and chromium-driver are not installed "
        "(apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# Headless, and quiet on a machine with no internet: without the background-networking
# flags Chromium keeps trying (and failing) to reach Google's services.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,768",
]


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    # Selenium Manager must not try to download a driver or a browser.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        # The page itself (the viewport) is what a 1024x768 tablet shows, so grow the
        # window by whatever headless Chromium still reserves for its frame.
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        driver.set_window_size(1024 + 1024 - inner[0], 768 + 768 - inner[1])
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def robot(procs: Callable[..., Any], env: dict[str, str], tmp_path: Path) -> Robot:
    return start_robot(procs, env, tmp_path, status_interval=0.5)


@pytest.fixture
def console(robot: Robot) -> Iterator[ConsoleServer]:
    server = run_console(
        "127.0.0.1",
        robot.command_port,
        robot.status_port,
        port=0,
        tasks=LoggerConfig().tablet.tasks,
        timeout=0.5,
        retries=1,
        stale_after=1.5,
        **robot.keys,
    )
    yield server
    server.close()


# --- page helpers ------------------------------------------------------------------------


def el(driver: WebDriver, testid: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')


def text(driver: WebDriver, testid: str) -> str:
    return str(el(driver, testid).get_attribute("textContent")).strip()


def wait_text(driver: WebDriver, testid: str, expected: str, timeout: float = 10.0) -> None:
    try:
        WebDriverWait(driver, timeout).until(lambda d: text(d, testid) == expected)
    except Exception:
        raise AssertionError(
            f"{testid}: expected {expected!r}, page shows {text(driver, testid)!r}; "
            f"banner: {text(driver, 'error-code')} {text(driver, 'error-message')}"
        ) from None


def wait_visible(driver: WebDriver, testid: str, visible: bool = True) -> None:
    WebDriverWait(driver, 10).until(lambda d: el(d, testid).is_displayed() == visible)


def wait_idle_ui(driver: WebDriver) -> None:
    """The previous command has been answered (buttons are enabled again)."""
    wait_visible(driver, "busy-indicator", False)


def expect_error(driver: WebDriver, code: str) -> None:
    wait_visible(driver, "error-banner")
    wait_text(driver, "error-code", code)
    assert text(driver, "error-message"), "the banner must say what went wrong"


def click(driver: WebDriver, testid: str) -> None:
    wait_idle_ui(driver)
    el(driver, testid).click()


def start_task_button(driver: WebDriver, task: str) -> None:
    wait_idle_ui(driver)
    driver.find_element(By.CSS_SELECTOR, f'[data-testid="task-button"][data-task="{task}"]').click()


def type_into(driver: WebDriver, testid: str, value: str) -> None:
    field = el(driver, testid)
    field.clear()
    field.send_keys(value)


# --- the visit ---------------------------------------------------------------------------


def test_click_through_a_visit(
    browser: WebDriver, console: ConsoleServer, robot: Robot, tmp_path: Path
) -> None:
    d = browser
    d.get(console.url)
    assert d.execute_script("return [window.innerWidth, window.innerHeight]") == [1024, 768]

    # The page loads its task list from the config and sees the robot.
    WebDriverWait(d, 10).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, '[data-testid="task-button"]')) == 5
    )
    wait_text(d, "link-state", "LINK OK")
    wait_text(d, "status-state", "idle")
    assert text(d, "rec-indicator") == "IDLE"
    assert el(d, "visit-form").is_displayed()
    for testid in ("start-visit", "mark", "stop-visit"):
        assert d.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')
    # Touch targets: every visible button at least 64 px high.
    heights = d.execute_script(
        "return [...document.querySelectorAll('button')]"
        ".filter(b => b.offsetParent !== null).map(b => b.getBoundingClientRect().height)"
    )
    assert heights and min(heights) >= 64, heights

    # A task before the visit: the robot says INVALID_STATE and the banner shows it.
    start_task_button(d, "fold towel")
    expect_error(d, "INVALID_STATE")

    # The visit without consent is refused by the robot.
    type_into(d, "visit-id", "visit-042")
    type_into(d, "visit-operator", "ana")
    type_into(d, "visit-site", "Lisbon flat 3")
    click(d, "start-visit")
    expect_error(d, "CONSENT_REQUIRED")
    wait_text(d, "rec-indicator", "IDLE")
    assert d.save_screenshot(str(tmp_path / "console-consent-refused.png"))

    # With consent it starts: REC, a session id, the banner gone.
    click(d, "visit-consent")
    click(d, "start-visit")
    wait_text(d, "rec-indicator", "REC")
    wait_visible(d, "error-banner", False)
    wait_text(d, "status-state", "recording")
    session_id = text(d, "status-session")
    assert session_id.startswith("test-robot-"), session_id
    wait_text(d, "visit-summary-session", session_id)
    wait_text(d, "visit-summary-visit", "visit-042")
    wait_text(d, "visit-summary-operator", "· ana")
    assert not el(d, "visit-form").is_displayed()

    # A task from the config list: the status panel shows it and its episode.
    start_task_button(d, "fold towel")
    wait_text(d, "status-task", "fold towel")
    wait_text(d, "status-episode", "0")
    wait_visible(d, "active-task")
    wait_text(d, "active-task-name", "fold towel")

    # The elapsed time keeps moving while recording.
    first = text(d, "status-elapsed")
    WebDriverWait(d, 5).until(lambda d: text(d, "status-elapsed") != first)
    assert text(d, "status-lost") == "0"
    assert "bad" not in str(el(d, "status-lost").get_attribute("class"))
    assert text(d, "status-disk") == "1000.0 GB"

    # A mark during the task, then the tablet-sized screenshot of a recording visit.
    type_into(d, "mark-label", "cup dropped")
    click(d, "mark")
    WebDriverWait(d, 10).until(lambda d: el(d, "mark-label").get_attribute("value") == "")
    shot = tmp_path / "console-recording.png"
    assert d.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    # End it with success.
    type_into(d, "task-note", "folded twice")
    click(d, "outcome-success")
    wait_text(d, "status-task", "—")
    wait_visible(d, "active-task", False)

    # A free-text task is the next episode; it fails.
    type_into(d, "task-free-text", "water plants")
    click(d, "task-free-start")
    wait_text(d, "status-task", "water plants")
    wait_text(d, "status-episode", "1")
    click(d, "outcome-failure")
    wait_text(d, "status-task", "—")

    # Stop asks first; Cancel keeps recording, Yes stops.
    click(d, "stop-visit")
    wait_visible(d, "stop-confirm")
    click(d, "stop-confirm-no")
    wait_visible(d, "stop-confirm", False)
    assert text(d, "rec-indicator") == "REC"
    click(d, "stop-visit")
    click(d, "stop-confirm-yes")
    wait_text(d, "rec-indicator", "IDLE")
    wait_text(d, "status-state", "idle")
    wait_text(d, "status-session", "—")
    wait_visible(d, "visit-form")
    assert not el(d, "error-banner").is_displayed()

    # What the recorder was asked to do, in order.
    calls = robot.calls()
    assert [c["call"] for c in calls] == ["start_session"] + ["record_event"] * 7 + ["stop_session"]
    visit = calls[0]["visit"]
    assert (visit["visit_id"], visit["operator"], visit["consent"], visit["site"]) == (
        "visit-042",
        "ana",
        True,
        "Lisbon flat 3",
    )
    events = [
        (c["kind"], c["task"], c["episode_index"], c["outcome"], c["note"])
        for c in calls
        if c["call"] == "record_event"
    ]
    assert events == [
        ("session_start", "", -1, "", ""),
        ("task_start", "fold towel", 0, "", ""),
        ("mark", "cup dropped", 0, "", ""),
        ("task_end", "fold towel", 0, "success", "folded twice"),
        ("task_start", "water plants", 1, "", ""),
        ("task_end", "water plants", 1, "failure", ""),
        ("session_end", "", -1, "", ""),
    ]
    assert {c["session_id"] for c in calls if c["call"] == "record_event"} == {session_id}

    # Offline: every resource the page loaded came from the console itself.
    resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(console.url) for r in resources), resources

    # The robot goes away: the link turns red and a command says ROBOT_UNREACHABLE.
    robot.proc.stop(timeout=10)
    wait_text(d, "link-state", "ROBOT NOT RESPONDING")
    start_task_button(d, "wipe table")
    expect_error(d, "ROBOT_UNREACHABLE")
    wait_visible(d, "error-retry")


# --- rendering of warnings (status injected: the stand-in recorder never loses data) -------


class _Offline:
    """No robot at all: this test only checks how the page renders a given status."""

    def request(self, cmd: str, args: Any = None, request_id: str | None = None) -> dict:
        raise AssertionError("the page must not send commands in this test")

    def close(self) -> None:
        pass

    def recv(self, timeout: float | None = None) -> None:
        time.sleep(timeout or 0)


def test_losses_low_disk_and_stale_link_are_highlighted(browser: WebDriver) -> None:
    backend = ConsoleBackend(_Offline(), _Offline, tasks=["fold towel"], stale_after=1.0)
    server = ConsoleServer(("127.0.0.1", 0), backend).start()
    try:
        backend.update_status(
            {
                "v": 1,
                "type": "status",
                "state": "recording",
                "session_id": "humanoid-sim-20261122-001",
                "current_task": "fold towel",
                "episode_index": 3,
                "elapsed_sec": 3725.4,
                "bytes_written": 1_234_567_890,
                "messages_lost": 17,
                "disk_free_bytes": 4_200_000_000,
                "upload_backlog": 2,
            }
        )
        d = browser
        d.get(server.url)
        wait_text(d, "rec-indicator", "REC")
        assert text(d, "status-elapsed") == "1:02:05"
        assert text(d, "status-mb") == "1234.6 MB"
        assert text(d, "status-lost") == "17"
        assert "bad" in str(el(d, "status-lost").get_attribute("class"))
        color = el(d, "status-lost").value_of_css_property("background-color")
        assert color == "rgba(176, 0, 30, 1)", color  # the red of --stop
        assert "warn" in str(el(d, "status-disk").get_attribute("class"))
        assert text(d, "status-backlog") == "2"
        assert text(d, "status-episode") == "3"
        # No new status: after stale_after the page stops claiming a live link.
        wait_text(d, "link-state", "ROBOT NOT RESPONDING")
        wait_text(d, "rec-indicator", "REC")  # last known state, but no longer red
        assert "rec-off" in str(el(d, "rec-indicator").get_attribute("class"))
    finally:
        server.close()
