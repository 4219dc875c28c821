"""Upload errors are XsqErrors with one-line messages, against a real S3 server
(``rclone serve s3`` on 127.0.0.1) and a port where nothing listens."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.localserver import LocalS3Server, free_port

from xsquare_logger.config.upload import S3Config
from xsquare_logger.errors import XsqError
from xsquare_logger.upload.backends import (
    BackendError,
    NoSuchUpload,
    PermanentError,
    TransientError,
)
from xsquare_logger.upload.backends.s3 import S3Backend
from xsquare_logger.upload.scan import SessionNotReady
from xsquare_logger.upload.throttle import Aborted
from xsquare_logger.upload.transfer import LocalFileChanged, Paused
from xsquare_logger.upload.verify import VerificationFailed

MD5_EMPTY = "d41d8cd98f00b204e9800998ecf8427e"
SHA_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    "cls",
    [BackendError, TransientError, PermanentError, NoSuchUpload, LocalFileChanged,
     VerificationFailed, SessionNotReady, Paused, Aborted],
)
def test_every_upload_error_is_an_xsq_error(cls: type[Exception]) -> None:
    assert issubclass(cls, XsqError)


def _put(endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch, key: str, secret: str) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    cfg = S3Config(endpoint_url=endpoint, connect_timeout=1.0, read_timeout=2.0)
    backend = S3Backend(f"s3://{bucket}/fleet", cfg)
    with pytest.raises(BackendError) as info:
        backend.put("fleet/x", b"", MD5_EMPTY, SHA_EMPTY)
    assert isinstance(info.value, XsqError)
    msg = str(info.value)
    assert msg and "\n" not in msg and key not in msg and secret not in msg
    return f"{type(info.value).__name__}: {msg}"


def test_wrong_credentials_missing_bucket_dead_network_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalS3Server(tmp_path / "s3", buckets=("sessions",)) as server:
        wrong = _put(server.endpoint, "sessions", monkeypatch, server.access_key, "wrong-secret")
        assert wrong.startswith("PermanentError") and "wrong credentials" in wrong
        missing = _put(
            server.endpoint, "nobucket", monkeypatch, server.access_key, server.secret_key
        )
        assert missing.startswith("PermanentError") and "bucket does not exist" in missing
    dead = _put(
        f"http://127.0.0.1:{free_port()}", "sessions", monkeypatch, "XSQKEY0000000000", "s3cr3t"
    )
    assert dead.startswith("TransientError")


def test_bodies_are_not_sha256_signed_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore hashes every body once more over plain http unless told otherwise: that
    second SHA-256 pass was a third of the uploader's CPU. The server still takes it."""
    with LocalS3Server(tmp_path / "s3", buckets=("sessions",)) as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        backend = S3Backend("s3://sessions/fleet", S3Config(endpoint_url=server.endpoint))
        seen: list[str] = []

        def capture(request: object, **_: object) -> None:
            seen.append(request.headers.get("X-Amz-Content-SHA256", b"").decode())  # type: ignore[attr-defined]

        backend._client.meta.events.register("before-send.s3.PutObject", capture)
        backend.put("fleet/x", b"", MD5_EMPTY, SHA_EMPTY)
        assert seen == ["UNSIGNED-PAYLOAD"]
        assert backend.head("fleet/x") is not None
