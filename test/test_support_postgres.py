"""The throwaway PostgreSQL cluster (test/support/postgres.py) starts a real server and
leaves nothing behind: no server process, the port free, the folder gone, also when the
block that used it fails."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import psycopg
import pytest
from support.postgres import PostgresCluster


def _port_free(port: int) -> bool:
    """Whether a new server could listen on ``port`` now. SO_REUSEADDR as every server
    sets it: the closed connections' TIME_WAIT entries do not hold a port, a listener does."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _running(pid: int, data: Path) -> bool:
    """Whether ``pid`` is a live (not zombie) process serving ``data``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state != "Z" and str(data).encode() in cmdline


def _postmasters_of(data: Path) -> list[int]:
    """Every live process whose command line names ``data`` (postmaster and children)."""
    return [int(p.name) for p in Path("/proc").iterdir()
            if p.name.isdigit() and _running(int(p.name), data)]


def test_cluster_serves_a_real_server_and_leaves_nothing(postgres_bindir: Path) -> None:
    with PostgresCluster(postgres_bindir) as pg:
        assert pg.root is not None
        root, data, port = pg.root, pg.data, pg.port
        pid = pg.postmaster_pid()
        assert pid is not None and _running(pid, data)
        url = pg.create_database("catalog_1")
        assert url == f"postgresql://postgres@127.0.0.1:{port}/catalog_1"  # no password
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT current_database(), inet_server_addr()::text, "
                               "current_setting('listen_addresses')").fetchone()
        assert row == ("catalog_1", "127.0.0.1/32", "127.0.0.1")
        with pytest.raises(ValueError, match="database name"):
            pg.create_database('x"; DROP DATABASE postgres; --')
        pg.drop_database("catalog_1")
        with pytest.raises(psycopg.OperationalError, match="catalog_1"):
            psycopg.connect(url).close()
    assert not _postmasters_of(data)
    assert _port_free(port)
    assert not root.exists()


def test_cluster_is_removed_when_the_block_fails(postgres_bindir: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), PostgresCluster(postgres_bindir) as pg:
        assert pg.root is not None
        root, data, port = pg.root, pg.data, pg.port
        with psycopg.connect(pg.url()) as conn:  # a client still connected at the stop
            conn.execute("SELECT 1")
            raise RuntimeError("boom")
    assert not _postmasters_of(data)
    assert _port_free(port)
    assert not root.exists()


def test_initdb_failure_is_reported_and_cleaned_up() -> None:
    # A bindir whose initdb fails: the error says so and no temp folder is left. Outside
    # pytest's tmp_path: its folders are closed to the postgres user the scripts run as.
    fake = Path(tempfile.mkdtemp(prefix="xsq-fake-pg-"))
    try:
        fake.chmod(0o755)
        for exe in ("initdb", "pg_ctl", "postgres"):
            (fake / exe).write_text("#!/bin/sh\necho 'initdb: broken on purpose' >&2\nexit 1\n")
            (fake / exe).chmod(0o755)
        before = set(Path(tempfile.gettempdir()).glob("xsq-pg-*"))
        pg = PostgresCluster(fake)
        with pytest.raises(RuntimeError, match="initdb failed: initdb: broken on purpose"):
            pg.start()
        assert pg.root is None
        assert set(Path(tempfile.gettempdir()).glob("xsq-pg-*")) <= before
    finally:
        shutil.rmtree(fake)
