"""TLS to the S3 server: a private CA given by ``upload.s3.ca_bundle`` or by the
``AWS_CA_BUNDLE`` environment variable (docs/upload.md, S3 setup step 4), against a real
``rclone serve s3`` serving HTTPS with a certificate made for this test by openssl."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.localserver import LocalS3Server

from xsquare_logger.config.upload import S3Config
from xsquare_logger.upload.backends import TransientError
from xsquare_logger.upload.backends.s3 import S3Backend

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")

BODY = b"calibration v7\n"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[LocalS3Server, Path]]:
    """rclone on https://127.0.0.1:PORT with a self-signed certificate (its own CA)."""
    cert, key = tmp_path / "ca.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    with LocalS3Server(tmp_path / "s3", extra_args=("--cert", str(cert), "--key", str(key))) as s:
        yield s, cert


def _backend(
    server: LocalS3Server, monkeypatch: pytest.MonkeyPatch, keep_ca_env: bool = False,
    **cfg: object,
) -> S3Backend:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    if not keep_ca_env:
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    config = S3Config(endpoint_url=f"https://127.0.0.1:{server.port}", connect_timeout=2.0,
                      read_timeout=5.0, **cfg)  # type: ignore[arg-type]
    return S3Backend("s3://sessions/fleet", config)


def _put(backend: S3Backend, key: str) -> str:
    return backend.put(key, BODY, hashlib.md5(BODY).hexdigest(), hashlib.sha256(BODY).hexdigest())


def test_private_ca_from_the_environment(
    tls_server: tuple[LocalS3Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_CA_BUNDLE alone (no ca_bundle in the config) is honoured."""
    server, ca = tls_server
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
    _put(_backend(server, monkeypatch, keep_ca_env=True), "fleet/env.txt")
    assert (server.root / "sessions/fleet/env.txt").read_bytes() == BODY


def test_private_ca_from_the_config(
    tls_server: tuple[LocalS3Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = tls_server
    _put(_backend(server, monkeypatch, ca_bundle=ca), "fleet/cfg.txt")
    assert (server.root / "sessions/fleet/cfg.txt").read_bytes() == BODY


def test_unknown_ca_is_refused_in_one_line(
    tls_server: tuple[LocalS3Server, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = tls_server
    # Transient by design: a captive portal on hotel Wi-Fi looks the same (retried, loudly).
    with pytest.raises(TransientError) as info:
        _put(_backend(server, monkeypatch), "fleet/no.txt")
    msg = str(info.value)
    assert "TLS verification failed" in msg and "AWS_CA_BUNDLE" in msg and "\n" not in msg
    assert server.secret_key not in msg and server.access_key not in msg
    assert not (server.root / "sessions/fleet/no.txt").exists()
