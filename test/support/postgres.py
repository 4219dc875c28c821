"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks.

``PostgresCluster`` runs Debian's own server binaries (``initdb`` + ``pg_ctl``, found on
PATH or under /usr/lib/postgresql/*/bin) in a fresh temp folder on a free port, and
removes everything at exit (an immediate stop, then the folder), also when the test
that used it failed. ``initdb`` refuses to run as root, so as root the data and socket
folders belong to the ``postgres`` user and the server runs as that user.

Authentication is ``trust`` on the loopback only: the cluster lives for one test run,
listens on 127.0.0.1 alone and holds nothing but test data, so no password exists
anywhere (not in the repo, not in a URL, not in a log).

    with PostgresCluster() as pg:
        url = pg.create_database("catalog")   # postgresql://postgres@127.0.0.1:PORT/catalog
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from support.localserver import free_port

__all__ = ["PostgresCluster", "PostgresNotFound", "find_bindir"]

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SUPERUSER = "postgres"


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries (or no user to run them as) on this machine."""


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/15/bin -> (15,); the newest installed major version first.
    digits = re.findall(r"\d+", Path(path).parent.name)
    return tuple(int(d) for d in digits)


def find_bindir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``; PATH first."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    pattern = "/usr/lib/postgresql/*/bin"
    candidates += [Path(p) for p in sorted(glob.glob(pattern), key=_version_key, reverse=True)]
    for d in candidates:
        if all(os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    raise PostgresNotFound(
        f"no PostgreSQL server (initdb, pg_ctl, postgres) on PATH or in {pattern} "
        "(apt-get install postgresql)"
    )


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SUPERUSER)
    except KeyError:
        raise PostgresNotFound(
            "running as root, and initdb refuses root: needs a 'postgres' user "
            "(Debian's postgresql package creates it)"
        ) from None


class PostgresCluster:
    """One initdb'ed cluster in a temp folder, started on a free 127.0.0.1 port.

    ``durable=False`` (tests) turns fsync off: a crash cannot matter to a cluster that
    is thrown away, and it is much faster on a shared disk. Benchmarks pass
    ``durable=True`` so their write figures include real commits.
    """

    def __init__(self, bindir: Path | None = None, durable: bool = False) -> None:
        self.bindir = bindir or find_bindir()
        self.durable = durable
        self.user = _run_as()
        self.port = 0
        self.root: Path | None = None
        self._started = False

    # -- paths ---------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root / "run"

    @property
    def log(self) -> Path:
        assert self.root is not None, "cluster not started"
        return self.root / "server.log"

    def url(self, database: str = "postgres") -> str:
        """A psycopg/SQLAlchemy URL (no password: trust auth on the loopback)."""
        return f"postgresql://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # -- processes -----------------------------------------------------------------------
    def _pg(self, exe: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self.user is not None:
            env["HOME"] = str(self.root)
        done = subprocess.run(
            [str(self.bindir / exe), *args], capture_output=True, text=True, timeout=timeout,
            cwd=self.root, env=env, stdin=subprocess.DEVNULL, check=False, **kwargs,
        )
        return done

    def _mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700, exist_ok=True)
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> PostgresCluster:
        # A short path: the Unix socket path must fit in 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="xsq-pg-"))
        try:
            if self.user is not None:
                os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            self._mkdir(self.data)
            self._mkdir(self.sockets)
            done = self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", _SUPERUSER,
                            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip()[-2000:]}")
            self._start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self) -> None:
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-k {self.sockets}",
            "-c max_connections=200",  # 100 async robots + pools of the bench service
            "-c shared_buffers=128MB",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        last = ""
        for _ in range(5):  # the free port can be taken between the probe and the bind
            self.port = free_port()
            done = self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w",
                            "-t", "60", "-o", " ".join([f"-p {self.port}", *options]), "start")
            if done.returncode == 0:
                self._started = True
                return
            last = (self.log.read_text(errors="replace") if self.log.exists() else "") or (
                done.stderr + done.stdout)
            if "in use" not in last:
                break
        raise RuntimeError(f"pg_ctl start failed: {last.strip()[-2000:]}")

    def postmaster_pid(self) -> int | None:
        """The server's pid while it runs (from postmaster.pid), else ``None``."""
        if self.root is None:
            return None
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop at once (no checkpoint: the data is thrown away) and remove the folder."""
        if self.root is None:
            return
        pid = self.postmaster_pid()
        if self._started or pid is not None:
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t", "30",
                     "stop", timeout=60)
        if pid is not None:
            _wait_gone(pid, str(self.data))
        self._started = False
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------------
    def _admin(self, statement: str, name: str) -> None:
        import psycopg
        from psycopg import sql

        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r}: use [a-z_][a-z0-9_]*, at most 63")
        query = sql.SQL(statement).format(sql.Identifier(name))
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(query)

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (lower-case letters, digits, '_'); its URL."""
        self._admin("CREATE DATABASE {}", name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections a test left open."""
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)

def _alive(pid: int, data: str) -> bool:
    """Whether ``pid`` is still this cluster's postmaster (a reused pid is not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().split(") ", 1)[1][:1] == "Z"
    except (OSError, IndexError):
        return False
    return not zombie and data.encode() in cmdline


def _wait_gone(pid: int, data: str, timeout: float = 30.0) -> None:
    """Wait for the postmaster to exit; kill it if the immediate stop did not."""
    deadline = time.monotonic() + timeout
    while _alive(pid, data) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid, data):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid, data):
            time.sleep(0.05)
