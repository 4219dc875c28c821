"""Configuration: one pydantic model for the whole logger, with its parts.

``model`` is the root (:class:`LoggerConfig`, YAML load, overrides, digest);
``camera``, ``live`` and ``upload`` hold the sections owned by those features.
"""

from __future__ import annotations

from xsquare_logger.config.model import (
    ConfigError,
    LoggerConfig,
    RecordingConfig,
    TabletConfig,
    apply_overrides,
    config_digest,
    load_config,
)

__all__ = [
    "ConfigError",
    "LoggerConfig",
    "RecordingConfig",
    "TabletConfig",
    "apply_overrides",
    "config_digest",
    "load_config",
]
