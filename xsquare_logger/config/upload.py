"""Upload configuration (``LoggerConfig.upload``).

Credentials are deliberately not part of this model: they come from the
environment (``AWS_ACCESS_KEY_ID`` ...) or a credentials file named here, so a
robot config can be committed and shared without leaking a secret.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "GateConfig",
    "RetentionConfig",
    "RetryConfig",
    "S3Config",
    "UploadConfig",
    "parse_time_window",
]

MIB = 1024 * 1024
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_time_window(text: str) -> tuple[int, int] | None:
    """``"HH:MM-HH:MM"`` (local time) -> (start, end) in minutes after midnight; "" -> None.

    ``end < start`` means the window wraps past midnight (``22:00-06:00``).
    """
    if not text:
        return None
    m = _WINDOW.match(text.strip())
    if m is None:
        raise ValueError(f"time window {text!r} is not HH:MM-HH:MM (24 h, local time)")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    return h1 * 60 + m1, h2 * 60 + m2


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in a robot config must not be silently ignored.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GateConfig(_Strict):
    """When sessions may leave the robot (the network gate)."""

    network: Literal["wireless", "any"] = Field(
        "wireless",
        description="wireless: a wireless interface (sysfs `wireless/`) must be up; "
        "any: any non-loopback interface that is up.",
    )
    interfaces: list[str] = Field(
        default_factory=list,
        description="Allow-list of interface names (e.g. [wlan0]); empty = any that qualifies.",
    )
    ssids: list[str] = Field(
        default_factory=list,
        description="Allow-list of Wi-Fi network names; empty = any. Read with `iw`/`iwgetid`.",
    )
    while_recording: bool = Field(
        False, description="Upload while a session is being recorded (competes for disk/CPU)."
    )
    time_window: str = Field(
        "",
        description="Upload only within HH:MM-HH:MM local time (may wrap midnight); "
        "empty = always.",
    )
    probe_interval: float = Field(
        30.0, gt=0, description="Seconds a successful 'destination answers' check stays valid."
    )
    sysfs_root: Path = Field(
        Path("/sys"), description="Where to read interface state (class/net/*); for containers."
    )

    @field_validator("time_window")
    @classmethod
    def _window(cls, value: str) -> str:
        parse_time_window(value)
        return value.strip()


class S3Config(_Strict):
    """S3-compatible endpoint (AWS, MinIO, Ceph RGW, ...). Credentials are not stored here."""

    endpoint_url: str = Field(
        "",
        description="e.g. https://minio.example:9000; empty = AWS, or $AWS_ENDPOINT_URL_S3 / "
        "$AWS_ENDPOINT_URL.",
    )
    region: str = Field(
        "", description="Region; empty = $AWS_REGION / $AWS_DEFAULT_REGION, else us-east-1."
    )
    credentials_file: Path | None = Field(
        None,
        description="AWS-format credentials file ([profile] aws_access_key_id=...); "
        "default: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, then ~/.aws/credentials.",
    )
    profile: str = Field("", description="Profile in the credentials file; empty = default.")
    verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    ca_bundle: Path | None = Field(
        None, description="PEM file of CA certificates to trust (private CA)."
    )
    addressing_style: Literal["path", "virtual", "auto"] = Field(
        "path",
        description="path: https://host/bucket/key (MinIO, Ceph, gateways, AWS); "
        "virtual: https://bucket.host/key.",
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(60.0, gt=0, description="Seconds without a byte from the server.")

    @field_validator("credentials_file", "ca_bundle")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expandvars(str(value))).expanduser()


class RetentionConfig(_Strict):
    """When verified sessions are deleted from the robot (unverified ones never are)."""

    delete_after: float | None = Field(
        24 * 3600.0,
        ge=0,
        description="Seconds after verification to delete the local copy; null = never by age.",
    )
    free_disk_reserve: int = Field(
        4 * 1024 * MIB,
        ge=0,
        description="Bytes: below this much free disk, delete verified sessions at once, "
        "oldest first.",
    )
    reverify_before_delete: bool = Field(
        True,
        description="HEAD every remote object again just before deleting; a mismatch keeps "
        "the session (if the destination does not answer, the earlier verification stands).",
    )


class RetryConfig(_Strict):
    """Backoff after transient errors (network, server 5xx): exponential with jitter."""

    initial: float = Field(2.0, gt=0, description="Seconds before the first retry.")
    maximum: float = Field(600.0, gt=0, description="Seconds; the backoff never exceeds this.")


class UploadConfig(_Strict):
    """Where closed sessions go and when they may leave the robot."""

    enabled: bool = Field(True, description="Run the uploader in `xsq run`.")
    destination: str = Field("file://data/depot", description="file://PATH or s3://BUCKET/PREFIX.")
    queue_path: Path | None = Field(
        None, description="SQLite upload queue; default <data_root>/.upload/queue.db."
    )
    scan_interval: float = Field(
        5.0, gt=0, description="Seconds between scans of data_root for closed sessions."
    )
    part_size: int = Field(
        16 * MIB,
        ge=5 * MIB,
        le=5 * 1024 * MIB,
        description="Multipart part size in bytes (S3 minimum 5 MiB); larger files are sent "
        "in parts, and a resume re-sends at most the parts in flight.",
    )
    max_concurrency: int = Field(4, ge=1, le=64, description="Parts in flight at once.")
    bandwidth_limit: int = Field(
        0, ge=0, description="Upload cap in bytes/s over all parts; 0 = unlimited."
    )
    gate: GateConfig = Field(default_factory=GateConfig)
    s3: S3Config = Field(default_factory=S3Config)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value.startswith("file://"):
            if not value[len("file://") :]:
                raise ValueError("file:// destination needs a path (file://data/depot)")
            return value
        if value.startswith("s3://"):
            bucket = value[len("s3://") :].split("/", 1)[0]
            if not _BUCKET.match(bucket):
                raise ValueError(
                    f"s3 destination {value!r}: {bucket!r} is not a valid bucket name "
                    "(3-63 lower-case letters, digits, '.', '-')"
                )
            return value
        raise ValueError(f"destination {value!r} must start with file:// or s3://")

    @field_validator("queue_path")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expandvars(str(value))).expanduser()
