"""The `xsq` commands a user types, as subprocesses."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import xsq
from support.sample import make_session


@pytest.mark.ros
def test_demo_records_the_light_sim_and_prints_the_summary(env, tmp_path: Path) -> None:
    res = xsq("demo", "--duration", "4", "--profile", "light", "--data-root", str(tmp_path),
              env=env, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Topic information:" in res.stdout and "/joint_states" in res.stdout
    assert "Lost messages:     0" in res.stdout
    session = next(p for p in tmp_path.iterdir() if (p / "session.json").exists())
    info = json.loads(xsq("info", str(session), "--json").stdout)
    counts = {t["name"]: t["count"] for t in info["topics"]}
    assert counts["/camera/head/image_raw"] > 0 and counts["/joint_states"] > 0


def test_demo_refuses_in_one_line_when_the_session_would_not_fit(tmp_path: Path) -> None:
    old = tmp_path / "old_session"
    old.mkdir()
    (old / "session.json").write_text("{}")
    # A week of raw humanoid cameras (~150 TB) fits on no disk here.
    res = xsq("demo", "--duration", "604800", "--data-root", str(tmp_path), timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "demo needs ~" in lines[0] and "GiB are free" in lines[0]
    assert "Traceback" not in res.stderr and "[demo] starting" not in res.stdout
    assert (old / "session.json").exists()  # refused before removing anything


def test_info_and_recover_explain_bad_paths(tmp_path: Path) -> None:
    res = xsq("info", str(tmp_path / "nope"))
    assert res.returncode == 1 and "no such session directory" in res.stderr
    res = xsq("info", str(tmp_path))
    assert res.returncode == 1 and "no metadata.yaml" in res.stderr
    (tmp_path / "x.mcap.active").write_bytes(b"")
    res = xsq("info", str(tmp_path))
    assert "xsq recover" in res.stderr
    res = xsq("recover", str(tmp_path / "nope"))
    assert res.returncode == 1 and "no such session directory" in res.stderr


def test_recover_sets_aside_an_empty_active_file(tmp_path: Path) -> None:
    (tmp_path / "s_0.mcap.active").write_bytes(b"")
    res = xsq("recover", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "unrecoverable" in res.stdout
    assert (tmp_path / "s_0.mcap.active.corrupt").exists()  # kept, never deleted


def test_set_requires_key_value(tmp_path: Path) -> None:
    res = xsq("record", "--set", "oops", "-o", str(tmp_path / "s"))
    assert res.returncode == 2 and "expected KEY=VALUE" in res.stderr


# --- every user-facing error: one line naming the problem, no traceback ---------------


def _one_clear_line(res: subprocess.CompletedProcess[str], command: str, *needles: str) -> None:
    """A non-zero exit with a line ``xsq <command>: ...`` naming the problem, no traceback."""
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(f"xsq {command}: ")]
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], res.stderr


def _only_line(res: subprocess.CompletedProcess[str], command: str, *needles: str) -> None:
    """Like :func:`_one_clear_line`, and stderr holds nothing else (no parser marks)."""
    _one_clear_line(res, command, *needles)
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def _busy_port() -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (a port another program holds)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _run_args(tmp_path: Path, *extra: str) -> list[str]:
    """`xsq run` on a temp data root and keys dir, tablet endpoints on free loopback ports."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return [
        "run", "--no-recover", "--data-root", str(tmp_path / "data"),
        "--set", f"tablet.keys_dir={tmp_path / 'keys'}",
        "--set", f"tablet.command_endpoint=tcp://127.0.0.1:{ports[0]}",
        "--set", f"tablet.status_endpoint=tcp://127.0.0.1:{ports[1]}",
        *extra,
    ]


def _init_keys(tmp_path: Path) -> None:
    res = xsq("keys", "init", "--keys-dir", str(tmp_path / "keys"))
    assert res.returncode == 0, res.stderr


@pytest.mark.ros
def test_run_without_robot_key_says_run_keys_init(env, tmp_path: Path) -> None:
    res = xsq(*_run_args(tmp_path), env=env)
    _one_clear_line(res, "run", "robot key pair not found", "xsq keys init")
    assert res.returncode == 2


@pytest.mark.ros
def test_run_with_busy_tablet_command_port_names_the_endpoint(env, tmp_path: Path) -> None:
    _init_keys(tmp_path)
    with _busy_port() as busy:
        endpoint = f"tcp://127.0.0.1:{busy.getsockname()[1]}"
        res = xsq(*_run_args(tmp_path, "--set", f"tablet.command_endpoint={endpoint}"), env=env)
    _one_clear_line(res, "run", endpoint)
    assert res.returncode == 2


@pytest.mark.ros
def test_run_with_busy_live_view_port_names_the_port(env, tmp_path: Path) -> None:
    _init_keys(tmp_path)
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        res = xsq(*_run_args(tmp_path, "--set", "live.enabled=true",
                             "--set", "live.host=127.0.0.1", "--set", f"live.port={port}"),
                  env=env)
    _one_clear_line(res, "run", str(port), "live view")
    assert res.returncode == 2


def test_unreadable_config_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "robot.yaml"
    bad.write_bytes(b"\xff\xfe robot_id: x\n")  # not UTF-8 (root reads any mode-000 file)
    res = xsq("record", "--config", str(bad), "-o", str(tmp_path / "s"))
    _only_line(res, "record", str(bad), "not UTF-8")
    assert res.returncode == 2
    res = xsq("record", "--config", str(tmp_path), "-o", str(tmp_path / "s"))  # a directory
    _only_line(res, "record", "cannot read config file", str(tmp_path))
    assert res.returncode == 2
    bad.write_text("robot_id: [x\n")  # broken YAML: the parser's marks stay on that line
    res = xsq("record", "--config", str(bad), "-o", str(tmp_path / "s"))
    _only_line(res, "record", "not valid YAML", "line 2")
    assert res.returncode == 2


def test_config_with_an_invalid_field_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "robot.yaml"
    bad.write_text("recording:\n  qos_depth: -1\n")
    res = xsq("record", "--config", str(bad), "-o", str(tmp_path / "s"))
    _one_clear_line(res, "record", "invalid configuration", str(bad))
    assert "recording.qos_depth" in res.stderr
    assert res.returncode == 2


def test_info_and_tasks_of_a_non_session_dir_are_exit_1_one_line(tmp_path: Path) -> None:
    (tmp_path / "metadata.yaml").write_text("not: [a, rosbag2\n")  # unreadable metadata too
    for command in ("info", "tasks"):
        res = xsq(command, str(tmp_path))
        _only_line(res, command, str(tmp_path / "metadata.yaml"), "unreadable")
        assert res.returncode == 1
    (tmp_path / "metadata.yaml").unlink()
    res = xsq("info", str(tmp_path))
    _only_line(res, "info", "no metadata.yaml")
    assert res.returncode == 1


def test_clip_of_a_missing_episode_lists_none_and_exits_1(tmp_path: Path) -> None:
    session = make_session(tmp_path / "data", "robot-a", 200_000)
    res = xsq("clip", str(session), "--task", "7", "-o", str(tmp_path / "clip"))
    _only_line(res, "clip", "7")
    assert res.returncode == 1
    assert not (tmp_path / "clip").exists()


def test_keys_init_in_an_uncreatable_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where a directory must go (root can write anywhere else)
    res = xsq("keys", "init", "--keys-dir", str(blocker / "keys"))
    _only_line(res, "keys", str(blocker / "keys"))
    assert res.returncode == 1  # what every `xsq keys` error has always exited with


@pytest.mark.ros
def test_record_into_an_uncreatable_dir_is_one_line(env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = xsq("record", "--no-recover", "--data-root", str(tmp_path / "data"),
              "-o", str(blocker / "s"), env=env)
    _one_clear_line(res, "record", str(blocker / "s"))
    assert res.returncode == 2


@pytest.mark.ros
def test_run_with_an_uncreatable_data_root_is_one_line(env, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = xsq(*_run_args(tmp_path, "--insecure", "--set", "upload.enabled=true",
                         "--data-root", str(blocker / "data")), env=env)
    _one_clear_line(res, "run", str(blocker / "data"))
    assert res.returncode == 2
