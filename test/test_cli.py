"""The `xsq` commands a user types, as subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import xsq


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
