"""Upload of closed sessions to central storage (file:// depot or S3-compatible).

``Uploader`` is the whole pipeline (scan, queue, gate, transfer, verify,
retention); ``xsq upload`` is its command line. See docs/upload.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xsquare_logger.config.upload import UploadConfig

if TYPE_CHECKING:
    from xsquare_logger.upload.uploader import Uploader

__all__ = ["UploadConfig", "Uploader"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (e.g. for UploadConfig) must not import boto3.
    if name == "Uploader":
        from xsquare_logger.upload.uploader import Uploader

        return Uploader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
