"""Shared fixtures: isolated ROS environments, real recorder/publisher processes and a
throwaway PostgreSQL cluster (``postgres_url``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.postgres import PostgresCluster, PostgresNotFound, find_bindir
from support.procs import ros_env, start, stop

TEST_DIR = Path(__file__).parent
_next_domain = [((os.getpid() * 7) % 200) + 1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ros: starts real ROS 2 processes")


@pytest.fixture
def env() -> dict[str, str]:
    """A ROS environment with a domain id no other test in this run uses."""
    _next_domain[0] = _next_domain[0] % 232 + 1
    e = ros_env(_next_domain[0])
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TEST_DIR), e.get("PYTHONPATH")]))
    return e


class Proc:
    """A child process whose stderr/stdout go to files we can poll."""

    def __init__(self, args: list[str], env: dict[str, str], logdir: Path, name: str) -> None:
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        self.p = start(args, env, stdout=self.out, stderr=self.err)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            if rx.search(self.err.read_text(errors="replace")):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{pattern!r} not seen (exit {self.p.poll()}):\n{self.err.read_text()[-3000:]}"
        )

    def stop(self, timeout: float = 60.0) -> int:
        return stop(self.p, timeout)

    def wait(self, timeout: float = 60.0) -> int:
        return self.p.wait(timeout)

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    started: list[Proc] = []
    logdir = tmp_path / "logs"
    logdir.mkdir()

    def launch(args: list[str], env: dict[str, str], name: str) -> Proc:
        p = Proc(args, env, logdir, name)
        started.append(p)
        return p

    yield launch
    for p in started:
        if p.p.poll() is None:
            p.p.kill()
            p.p.wait()


def xsq(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real `xsq` CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "xsquare_logger.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def pymcap_doctor(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("pymcap-cli")
    return subprocess.run([str(exe), "doctor", str(path)], capture_output=True, text=True)


# -- PostgreSQL -----------------------------------------------------------------------------

#: Set to 1 (CI does) to fail, not skip, the PostgreSQL tests when no server is installed.
REQUIRE_POSTGRES = "XSQ_REQUIRE_POSTGRES"


@pytest.fixture(scope="session")
def postgres_bindir() -> Path:
    """The PostgreSQL server binaries; skips (or, under XSQ_REQUIRE_POSTGRES=1, fails)
    with the reason where they or the user to run them as are missing."""
    try:
        bindir = find_bindir()
        PostgresCluster(bindir)  # checks the run-as user too
    except PostgresNotFound as exc:
        if os.environ.get(REQUIRE_POSTGRES) == "1":
            pytest.fail(f"{REQUIRE_POSTGRES}=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))
    return bindir


@pytest.fixture(scope="session")
def postgres_cluster(postgres_bindir: Path) -> Iterator[PostgresCluster]:
    """One cluster for the whole run (started on first use, removed at the end)."""
    with PostgresCluster(postgres_bindir) as cluster:
        yield cluster


_next_db = [0]


@pytest.fixture
def postgres_url(
    postgres_cluster: PostgresCluster, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh, empty database of its own for each test (dropped afterwards)."""
    _next_db[0] += 1
    stem = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())[:40].strip("_")
    name = f"t{_next_db[0]}_{stem}"
    url = postgres_cluster.create_database(name)
    yield url
    postgres_cluster.drop_database(name)
