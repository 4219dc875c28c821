"""The floor dashboard in Debian's headless Chromium against a real ``xsq floor serve``.

Everything is real: the service (SQLite in tmp_path, 127.0.0.1, a short --stale-after),
tokens issued by the CLI, 100 robots heartbeating over HTTP from a thread pool, session
reports PUT like a robot's reporter sends them, and the page driven through Selenium
with /usr/bin/chromedriver. The assertions read the tiles' ``data-robot`` /
``data-flags`` hooks and the search table the floor lead sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.localserver import free_port
from support.procs import start, stop

from xsquare_logger.floor.protocol import API_PREFIX, Heartbeat, SessionReport, StreamCounts
from xsquare_logger.session.manifest import SessionManifest, TaskEntry

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROBOTS = [f"robot-{i:03d}" for i in range(1, 101)]
SILENT = "robot-042"  # stops heartbeating: its tile must turn stale
LOSING = "robot-007"  # reports lost messages: its tile must be flagged losing
STALE_AFTER = 3.0
XSQ = ["-m", "xsquare_logger.cli.main"]

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
)


def xsq(*args: str, timeout: float = 60.0) -> str:
    """Run the real CLI (``xsq floor ...``); its stdout."""
    done = subprocess.run(
        [sys.executable, *XSQ, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert done.returncode == 0, f"xsq {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


def token_of(output: str) -> str:
    """The token a ``... add NAME`` command printed (its last non-empty line)."""
    return [line.strip() for line in output.splitlines() if line.strip()][-1]


@dataclass
class Floor:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    reader: str = ""
    robot_tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, token: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(
            self.url + API_PREFIX + path, data=body, method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[Floor]:
    data_dir = tmp_path / "floor"
    port = free_port()
    log = tmp_path / "floor.log"
    proc = start(
        [*XSQ, "floor", "serve", "--data-dir", str(data_dir),
         "--listen", f"127.0.0.1:{port}", "--stale-after", str(STALE_AFTER)],
        dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                assert proc.poll() is None, f"xsq floor serve exited: {log.read_text()}"
                assert time.monotonic() < deadline, f"floor not up: {log.read_text()}"
                time.sleep(0.1)
        yield Floor(url=url, data_dir=data_dir, proc=proc)
    finally:
        stop(proc, timeout=20)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)
    # Without these Chromium tries to reach the internet at start (no internet here).
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                "--window-size=1920,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        # The wall screen: a 1920x1080 viewport, whatever the window decorations.
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 1920, "height": 1080, "deviceScaleFactor": 1,
                                "mobile": False})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# -- robots -----------------------------------------------------------------------------


def heartbeat(robot_id: str, lost: int = 0) -> bytes:
    streams = {"/camera/color/image_raw": StreamCounts(received=3000, lost=lost),
               "/joint_states": StreamCounts(received=9000, lost=0)}
    return Heartbeat(
        robot_id=robot_id, sent_ns=time.time_ns(), state="recording",
        session_id=f"{robot_id}-s1", task="fold towel", episode_index=2, elapsed_sec=125.0,
        episode_elapsed_sec=12.0, streams=streams, messages_lost=lost,
        disk_free_bytes=400 * 10**9, disk_reserve_bytes=20 * 10**9,
        upload_backlog_sessions=1, upload_backlog_bytes=3 * 10**9,
    ).model_dump_json().encode()


class Fleet:
    """100 robots heartbeating from a small thread pool (not a thread per robot)."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self.silent: set[str] = set()
        self.stop = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=16)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def beat(self, robot_id: str) -> None:
        body = heartbeat(robot_id, lost=5 if robot_id == LOSING else 0)
        try:
            self.floor.call("POST", f"/robots/{robot_id}/heartbeats",
                            self.floor.robot_tokens[robot_id], body)
        except (urllib.error.URLError, OSError) as exc:
            self.errors.append(f"{robot_id}: {exc}")

    def round(self) -> None:
        list(self._pool.map(self.beat, [r for r in ROBOTS if r not in self.silent]))
        self.rounds += 1

    def _run(self) -> None:
        while not self.stop.is_set():
            self.round()
            self.stop.wait(0.3)

    def __enter__(self) -> Fleet:
        self.round()  # every robot has reported once before the page opens
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=30)
        self._pool.shutdown()


def session_report(robot_id: str, session_id: str, operator: str,
                   episodes: list[tuple[str, str]], discarded: frozenset[int] = frozenset(),
                   ) -> bytes:
    """A closed session with ``episodes`` = [(task, outcome), ...], 10 s each, from now;
    the ``discarded`` indexes re-recorded on the tablet."""
    t0 = time.time_ns() - len(episodes) * 11 * 10**9
    tasks = [
        TaskEntry(episode_index=i, task=task, outcome=outcome, operator=operator,
                  start_ns=t0 + i * 11 * 10**9, end_ns=t0 + i * 11 * 10**9 + 10 * 10**9,
                  discarded=i in discarded)
        for i, (task, outcome) in enumerate(episodes)
    ]
    manifest = SessionManifest(
        session_id=session_id, robot_id=robot_id, software_version="0.1.0",
        config_digest="sha256:0", state="closed", started_ns=t0,
        ended_ns=t0 + len(episodes) * 11 * 10**9, tasks=tasks,
    )
    return SessionReport(manifest=manifest, upload_state="verified",
                         remote=f"s3://floor/{robot_id}/{session_id}",
                         bytes=10**9).model_dump_json().encode()


# -- the page ---------------------------------------------------------------------------


def wait(driver: WebDriver, what: str, until: Callable[[WebDriver], Any],
         timeout: float = 30.0) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(until)
    except TimeoutException:
        seen = driver.execute_script(
            "const t = (id) => { const e = document.getElementById(id);"
            " return e && !e.hidden ? e.textContent.trim() : ''; };"
            "return {tiles: document.querySelectorAll('[data-robot]').length,"
            " banner: t('banner'), signin: t('signin-message'), status: t('search-status')}")
        logs = [e["message"] for e in getattr(driver, "get_log", lambda _: [])("browser")][-5:]
        raise AssertionError(f"dashboard: timed out waiting for {what}; page: {seen}; "
                             f"console: {logs}") from None


def flags(driver: WebDriver) -> dict[str, set[str]]:
    got = driver.execute_script(
        "return [...document.querySelectorAll('[data-robot]')]"
        ".map(e => [e.dataset.robot, e.dataset.flags || ''])")
    return {robot: set(f.split()) for robot, f in got}


def search(driver: WebDriver, **filters: str) -> list[tuple[str, str, int]]:
    """Fill the search form, run it, page through "more"; (robot, session, episode) rows."""
    form = driver.find_element(By.ID, "search")
    for name, value in filters.items():
        field_ = form.find_element(By.NAME, name)
        if field_.tag_name == "select":
            field_.find_element(By.CSS_SELECTOR, f"option[value='{value}'],option").click()
            driver.execute_script("arguments[0].value = arguments[1]", field_, value)
        else:
            field_.clear()
            field_.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    while True:
        status = wait(driver, "search results", lambda d: (
            lambda s: s if s and s != "searching…" else False)(
            d.find_element(By.ID, "search-status").text))
        assert not status.startswith("Search failed"), status
        more = driver.find_element(By.ID, "more")
        if not more.is_displayed():
            break
        driver.execute_script("arguments[0].click()", more)
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#episodes tbody tr')]"
        ".map(r => [r.cells[0].textContent, r.dataset.session, Number(r.dataset.episode)])")
    return [(r, s, int(e)) for r, s, e in rows]


def test_dashboard_shows_100_robots_flags_and_finds_episodes(
    floor: Floor, browser: WebDriver
) -> None:
    floor.reader = token_of(xsq("floor", "readers", "add", "wall", "--data-dir",
                                str(floor.data_dir)))
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = pool.map(lambda r: xsq("floor", "robots", "add", r, "--data-dir",
                                         str(floor.data_dir)), ROBOTS)
        floor.robot_tokens = {r: token_of(out) for r, out in zip(ROBOTS, outputs, strict=True)}

    with Fleet(floor) as fleet:
        # A wall screen bookmarked with its token in the fragment (never sent to the server).
        browser.get(f"{floor.url}/#token={floor.reader}")
        wait(browser, "100 tiles", lambda d: len(flags(d)) == 100)
        assert "token" not in browser.current_url
        order = list(flags(browser))
        assert order == ROBOTS, "tiles are sorted by robot name"
        # All 100 tiles fit a 1920x1080 wall screen without scrolling.
        bottom = browser.execute_script(
            "return Math.max(...[...document.querySelectorAll('[data-robot]')]"
            ".map(e => e.getBoundingClientRect().bottom))")
        assert bottom <= 1080, f"100 tiles need {bottom}px of a 1080px screen"

        # The robot reporting losses is flagged, and its tile says how many.
        wait(browser, "the losing flag", lambda d: "losing" in flags(d)[LOSING])
        losing_tile = browser.find_element(By.CSS_SELECTOR, f"[data-robot='{LOSING}']")
        assert "lost 5" in losing_tile.text
        assert "losing" not in set().union(*(f for r, f in flags(browser).items() if r != LOSING))

        # One robot goes silent: only its tile turns stale, with the big STALE label.
        fleet.silent.add(SILENT)
        seen = wait(browser, "the stale flag", lambda d: (
            lambda f: f if "stale" in f[SILENT] else False)(flags(d)), timeout=60)
        assert [r for r, f in seen.items() if "stale" in f] == [SILENT]
        assert "STALE" in browser.find_element(By.CSS_SELECTOR, f"[data-robot='{SILENT}']").text
        assert not fleet.errors, fleet.errors[:3]

    # Sessions with episodes, PUT as a robot's reporter sends them.
    s1, s2 = "robot-001_20260528T120000Z_0a1b2c", "robot-002_20260528T120000Z_3d4e5f"
    sessions = {
        ("robot-001", s1, "op12"): [("fold towel", "success")] * 55
        + [("fold towel", "failure"), ("pour water", "success")],
        ("robot-002", s2, "op7"): [("pour water", "failure"), ("fold towel", "success"),
                                   ("fold towel", "aborted"), ("fold towel", "success"),
                                   ("fold towel", "success")],
    }
    gone = {s2: frozenset({4})}  # re-recorded: neither found nor counted
    expected = set()
    for (robot, session, operator), episodes in sessions.items():
        discarded = gone.get(session, frozenset())
        floor.call("PUT", f"/robots/{robot}/sessions/{session}", floor.robot_tokens[robot],
                   session_report(robot, session, operator, episodes, discarded))
        expected |= {(robot, session, i) for i, (task, outcome) in enumerate(episodes)
                     if (task, outcome) == ("fold towel", "success") and i not in discarded}

    rows = search(browser, task="fold towel", outcome="success")
    assert len(rows) == len(expected) == 57  # more than one page: "more" was used
    assert set(rows) == expected
    rows = search(browser, task="fold towel", outcome="success", operator="op7",
                  robot="robot-002")
    assert set(rows) == {("robot-002", s2, 1), ("robot-002", s2, 3)}

    # Today's totals come from the summary (polled every ~5 s): 55 + 1 + 2 successes.
    wait(browser, "today's totals", lambda d: "success 58" in d.find_element(
        By.ID, "t-outcomes").text, timeout=30)
    assert browser.find_element(By.ID, "t-discarded").text == "1"

    # The same page on a 10-inch tablet in portrait (800x1280, touch): no sideways
    # scrolling, every tile as wide as it is on the wall, the search still there.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 800, "height": 1280, "deviceScaleFactor": 1,
                             "mobile": True})
    browser.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True})
    browser.refresh()
    wait(browser, "100 tiles on the tablet", lambda d: len(flags(d)) == 100)
    layout = browser.execute_script(
        "const t = [...document.querySelectorAll('[data-robot]')].map("
        "e => e.getBoundingClientRect());"
        "return {scroll: document.documentElement.scrollWidth, view: window.innerWidth,"
        " right: Math.max(...t.map(r => r.right)), left: Math.min(...t.map(r => r.left)),"
        " narrow: Math.min(...t.map(r => r.width))};")
    assert layout["view"] == 800 and layout["scroll"] <= 800, layout
    assert layout["left"] >= 0 and layout["right"] <= 800, layout
    assert layout["narrow"] >= 60, f"tiles too small to read on a tablet: {layout}"
    rows = search(browser, task="fold towel", outcome="success", operator="op7",
                  robot="robot-002")
    assert set(rows) == {("robot-002", s2, 1), ("robot-002", s2, 3)}

    # A wrong token brings back the sign-in with a one-line message.
    browser.get("about:blank")
    browser.get(f"{floor.url}/#token=not-a-reader-token")
    wait(browser, "the sign-in", lambda d: d.find_element(By.ID, "signin").is_displayed())
    message = browser.find_element(By.ID, "signin-message").text
    assert "401" in message and "\n" not in message
    assert not browser.find_element(By.ID, "app").is_displayed()


def test_dashboard_keeps_last_data_when_the_floor_is_unreachable(
    floor: Floor, browser: WebDriver
) -> None:
    floor.reader = token_of(xsq("floor", "readers", "add", "wall", "--data-dir",
                                str(floor.data_dir)))
    robot = "robot-001"
    floor.robot_tokens[robot] = token_of(xsq("floor", "robots", "add", robot, "--data-dir",
                                             str(floor.data_dir)))
    floor.call("POST", f"/robots/{robot}/heartbeats", floor.robot_tokens[robot],
               heartbeat(robot))
    browser.get(f"{floor.url}/")
    # Asked once; the token is kept (localStorage) for the next visit.
    wait(browser, "the sign-in", lambda d: d.find_element(By.ID, "signin").is_displayed())
    browser.find_element(By.ID, "signin-token").send_keys(floor.reader + "\n")
    wait(browser, "the tile", lambda d: len(flags(d)) == 1)
    browser.refresh()
    wait(browser, "the tile again", lambda d: len(flags(d)) == 1)
    assert not browser.find_element(By.ID, "signin").is_displayed()

    stop(floor.proc, timeout=20)
    banner = wait(browser, "the unreachable banner", lambda d: (
        lambda b: b if b.is_displayed() else False)(d.find_element(By.ID, "banner")))
    assert "unreachable" in banner.text
    assert list(flags(browser)) == [robot], "the last data stays on screen"
