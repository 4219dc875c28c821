"""Upload policy pieces on their own: gate, verification rules, retention plan, scan, config.

Fakes, and why: ``/sys`` is a temp tree (interface state cannot be changed here);
the SSID reader is a function returning a name (there is no Wi-Fi here); the
clock of the time-window check is a fixed datetime; the gate's destination is a
stub that fails the test if the local checks ever contact it. Everything else
(queue, sessions, retention deletes) is real.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest
from support.sample import make_session

from xsquare_logger.config.model import ConfigError, LoggerConfig, load_config
from xsquare_logger.config.upload import GateConfig, RetentionConfig
from xsquare_logger.upload.backends import PermanentError, RemoteObject
from xsquare_logger.upload.backends.s3 import load_credentials_file
from xsquare_logger.upload.gate import Gate, up_interfaces
from xsquare_logger.upload.queue import UploadQueue
from xsquare_logger.upload.retention import Retention, plan_deletions
from xsquare_logger.upload.scan import SessionNotReady, describe_session
from xsquare_logger.upload.throttle import ThrottledBody, TokenBucket
from xsquare_logger.upload.transfer import effective_part_size
from xsquare_logger.upload.verify import multipart_etag, verified_on_arrival, verify_object

MIB = 1024 * 1024


def sysfs(root: Path, interfaces: dict[str, tuple[str, bool]]) -> Path:
    for name, (state, wireless) in interfaces.items():
        d = root / "class" / "net" / name
        d.mkdir(parents=True)
        (d / "operstate").write_text(state + "\n")
        (d / "carrier").write_text("1\n")
        if wireless:
            (d / "phy80211").mkdir()
    return root


class _NeverProbed:
    def probe(self) -> None:
        raise AssertionError("local checks must not contact the destination")


def gate(root: Path, recording: bool = False, **cfg: object) -> Gate:
    ssids = {"wlan0": "HomeNet", "wlan1": None}
    return Gate(
        GateConfig(sysfs_root=root, **cfg),  # type: ignore[arg-type]
        backend=lambda: _NeverProbed(),  # type: ignore[arg-type,return-value]
        is_recording=lambda: recording,
        ssid_reader=ssids.get,
        now=lambda: datetime(2026, 1, 1, 23, 30),
    )


# --- gate --------------------------------------------------------------------------------


def test_gate_network_rules(tmp_path: Path) -> None:
    wired = sysfs(tmp_path / "a", {"lo": ("unknown", False), "eth0": ("up", False)})
    assert gate(wired).local_reason() == "no wireless interface up"
    assert gate(wired, network="any").local_reason() is None
    assert gate(wired, network="any", interfaces=["wlan0"]).local_reason() == (
        "no network interface up among ['wlan0']"
    )
    wifi = sysfs(tmp_path / "b", {"wlan0": ("up", True), "wlan1": ("dormant", True)})
    assert [i.name for i in up_interfaces(wifi)] == ["wlan0"]
    assert gate(wifi).local_reason() is None
    assert gate(wifi, interfaces=["wlan1"]).local_reason() == (
        "no wireless interface up among ['wlan1']"
    )
    assert gate(wifi, ssids=["HomeNet"]).local_reason() is None
    reason = gate(wifi, ssids=["Depot-5G"]).local_reason()
    assert reason == "not on an allowed Wi-Fi network ['Depot-5G'] (wlan0: HomeNet)"
    assert gate(tmp_path / "no-sysfs").local_reason() == "no wireless interface up"


def test_gate_time_window_and_recording(tmp_path: Path) -> None:
    wifi = sysfs(tmp_path, {"wlan0": ("up", True)})
    assert gate(wifi, time_window="22:00-06:00").local_reason() is None  # wraps midnight
    assert gate(wifi, time_window="01:00-05:00").local_reason() == (
        "outside the upload window 01:00-05:00 (now 23:30)"
    )
    assert "being recorded" in (gate(wifi, recording=True).local_reason() or "")
    assert gate(wifi, recording=True, while_recording=True).local_reason() is None


# --- verification rules ------------------------------------------------------------------


def test_multipart_etag_matches_s3_definition() -> None:
    parts = [b"a" * 10, b"b" * 3]
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    raw = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert multipart_etag(md5s) == f"{raw}-2"


def test_verify_rules() -> None:
    sha = "ab" * 32
    md5 = "cd" * 16
    ok = RemoteObject(size=5, etag=md5, meta_sha256=sha)
    assert verify_object("f", 5, sha, ok, [md5]) is None
    assert "missing" in (verify_object("f", 5, sha, None, [md5]) or "")
    assert "remote size 4" in (verify_object("f", 5, sha, RemoteObject(4, md5), [md5]) or "")
    # Metadata we wrote ourselves proves nothing: the ETag must match our bytes.
    forged = RemoteObject(size=5, etag="ee" * 16, meta_sha256=sha)
    assert "matches none" in (verify_object("f", 5, sha, forged, [md5]) or "")
    wrong_meta = RemoteObject(size=5, etag=md5, meta_sha256="00" * 32)
    assert "x-amz-meta-sha256" in (verify_object("f", 5, sha, wrong_meta, [md5]) or "")
    # Metadata lost (server restart) is not a failure when the ETag proves the bytes.
    assert verify_object("f", 5, sha, RemoteObject(size=5, etag=md5), [md5]) is None
    # ETag not MD5-based (SSE-KMS): a server checksum decides; without one, unverifiable.
    kms = RemoteObject(size=5, etag="opaque-kms-etag", checksum_sha256=sha)
    assert verify_object("f", 5, sha, kms, [md5]) is None
    assert "cannot be verified" in (
        verify_object("f", 5, sha, RemoteObject(size=5, etag="opaque"), [md5]) or ""
    )
    assert verify_object("f", 5, sha, RemoteObject(size=5, content_sha256=sha), []) is None
    damaged = RemoteObject(size=5, content_sha256="1" * 64)
    assert "sha256" in (verify_object("f", 5, sha, damaged, []) or "")


def test_verified_on_arrival_only_by_an_md5_etag_our_bytes_predict() -> None:
    want = multipart_etag(["aa" * 16, "bb" * 16])
    assert verified_on_arrival(want, [want])
    assert verified_on_arrival(want.upper(), [want])  # hex case is not a difference
    assert verified_on_arrival("cd" * 16, ["cd" * 16])  # single PUT: the body's MD5
    # A different answer, none, "" (file://) or a non-MD5 ETag (SSE-KMS): HEAD decides.
    assert not verified_on_arrival(multipart_etag(["aa" * 16, "cc" * 16]), [want])
    assert not verified_on_arrival(None, [want])
    assert not verified_on_arrival("", [want])
    assert not verified_on_arrival("opaque-kms-etag", ["opaque-kms-etag"])
    assert not verified_on_arrival(want, [])


# --- retention ---------------------------------------------------------------------------


def test_retention_deletes_only_verified_oldest_first_under_pressure(tmp_path: Path) -> None:
    root = tmp_path / "data"
    sessions = [make_session(root, "r1", 300_000, seed=i) for i in range(3)]
    q = UploadQueue(tmp_path / "q.db")
    for d in sessions:
        q.enqueue(describe_session(d), "file://x", d.name)
    q.mark_verified(sessions[0].name)
    q.mark_verified(sessions[2].name)
    rows = q.sessions(("verified",))
    # Plan: age only; then pressure needing one session's worth of bytes.
    assert plan_deletions(rows, 0, 3600.0, 10**12, 0) == []
    plan = plan_deletions(rows, 0, None, 0, 1)
    assert [r.session_id for r in plan] == [sessions[0].name]
    # Real deletion with an impossible reserve: every verified one goes, the queued stays.
    cfg = RetentionConfig(delete_after=None, free_disk_reserve=10**18)
    deleted = Retention(cfg, q, root, reverify=lambda row: None).run()
    assert deleted == [sessions[0].name, sessions[2].name]
    assert [d.exists() for d in sessions] == [False, True, False]
    assert q.session(sessions[1].name).state == "queued"
    q.close()


def test_retention_keeps_a_session_whose_remote_copy_fails_reverification(tmp_path: Path) -> None:
    root = tmp_path / "data"
    d = make_session(root, "r1", 100_000)
    q = UploadQueue(tmp_path / "q.db")
    q.enqueue(describe_session(d), "file://x", d.name)
    q.mark_verified(d.name)
    cfg = RetentionConfig(delete_after=0)
    assert Retention(cfg, q, root, reverify=lambda row: "ETag differs").run() == []
    assert d.is_dir()
    q.close()


# --- scan --------------------------------------------------------------------------------


def test_scan_refuses_open_or_crashed_sessions(tmp_path: Path) -> None:
    d = make_session(tmp_path, "r1", 100_000)
    s = describe_session(d)
    assert s.files[0].name == "metadata.yaml"
    assert s.files[-1].name == "session.json"
    (d / "x.mcap.active").write_bytes(b"")
    with pytest.raises(SessionNotReady, match="still being written"):
        describe_session(d)
    (d / "x.mcap.active").unlink()
    manifest = json.loads((d / "session.json").read_text())
    manifest["state"] = "recording"  # crashed, not yet recovered
    (d / "session.json").write_text(json.dumps(manifest))
    with pytest.raises(SessionNotReady, match="not closed"):
        describe_session(d)


# --- config, credentials, parts, throttle -----------------------------------------------


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    for text, field in [
        ("upload: {destination: 'ftp://x'}", "upload.destination"),
        ("upload: {destination: 's3://Bad_Bucket/x'}", "upload.destination"),
        ("upload: {part_size: 1000}", "upload.part_size"),
        ("upload: {gate: {time_window: '25:00-01:00'}}", "upload.gate.time_window"),
        ("upload: {s3: {secret: 'x'}}", "upload.s3.secret"),
    ]:
        p = tmp_path / "c.yaml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_config(p)
    assert LoggerConfig().upload.destination == "file://data/depot"


def test_credentials_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="cannot read S3 credentials file"):
        load_credentials_file(tmp_path / "nope", "")
    f = tmp_path / "creds"
    f.write_text("[robot]\naws_access_key_id = AK\n")
    with pytest.raises(PermanentError, match=r"has no \[default\] profile"):
        load_credentials_file(f, "")
    with pytest.raises(PermanentError, match="lacks aws_secret_access_key"):
        load_credentials_file(f, "robot")
    f.write_text("[robot]\naws_access_key_id = AK\naws_secret_access_key = SK\n")
    assert load_credentials_file(f, "robot") == {
        "aws_access_key_id": "AK",
        "aws_secret_access_key": "SK",
    }


def test_part_size_grows_past_ten_thousand_parts() -> None:
    assert effective_part_size(1000 * MIB, 16 * MIB) == 16 * MIB
    big = 200 * 1024 * MIB  # 200 GiB
    assert effective_part_size(big, 16 * MIB) == 21 * MIB
    assert big / effective_part_size(big, 16 * MIB) <= 10_000


def test_throttled_body_delivers_every_byte_and_seeks() -> None:
    data = bytes(range(256)) * 1000
    body = ThrottledBody(data, TokenBucket(1e9))
    assert len(body) == len(data)
    chunks = []
    while chunk := body.read(10_000):
        chunks.append(chunk)
    assert b"".join(chunks) == data
    body.seek(0)
    assert body.read(3) == data[:3]
