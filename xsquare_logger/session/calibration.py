"""The robot's calibration files, read once at session start (config ``calibration.files``).

Each file travels with the data as an MCAP attachment named ``calibration/<file name>``
in every file of the session (a split file stays self-contained), and session.json
``calibration`` lists name, source path, size and sha256 (docs/session-format.md). A
file that cannot be read refuses the session start: data recorded without its
calibration is the failure this exists to prevent.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from xsquare_logger.errors import XsqError

__all__ = [
    "ATTACHMENT_PREFIX",
    "MAX_CALIBRATION_BYTES",
    "CalibrationError",
    "CalibrationFile",
    "LoadedCalibration",
    "load_calibration",
]

ATTACHMENT_PREFIX = "calibration/"
#: Calibration files are small text (YAML, URDF); a bigger one is a wrong path.
MAX_CALIBRATION_BYTES = 64 << 20


class CalibrationError(XsqError):
    """A configured calibration file is missing, unreadable or too big."""


class CalibrationFile(BaseModel):
    """session.json ``calibration[]``: one stored calibration file."""

    model_config = ConfigDict(extra="allow")

    name: str  # the attachment name: calibration/<file name>
    source: str  # the configured path on the robot
    size: int
    sha256: str
    media_type: str = "application/octet-stream"


@dataclass(frozen=True)
class LoadedCalibration:
    entry: CalibrationFile
    data: bytes


def _media_type(path: Path) -> str:
    if path.suffix.lower() in (".yaml", ".yml"):
        return "application/yaml"
    if path.suffix.lower() in (".urdf", ".xacro", ".xml"):
        return "application/xml"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def load_calibration(paths: Sequence[Path]) -> list[LoadedCalibration]:
    """Read every configured file; :class:`CalibrationError` names the first bad one."""
    out = []
    for path in paths:
        try:
            size = path.stat().st_size
            if size > MAX_CALIBRATION_BYTES:
                raise CalibrationError(
                    f"calibration file {path}: {size} bytes, more than "
                    f"{MAX_CALIBRATION_BYTES >> 20} MiB (config calibration.files)"
                )
            data = path.read_bytes()
        except OSError as exc:
            raise CalibrationError(
                f"calibration file {path}: {exc.strerror or exc} (config calibration.files)"
            ) from None
        entry = CalibrationFile(
            name=ATTACHMENT_PREFIX + path.name,
            source=str(path),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            media_type=_media_type(path),
        )
        out.append(LoadedCalibration(entry, data))
    return out
