"""Live view of a recording session in Foxglove, over the foxglove-sdk WebSocket server.

The recorder offers every written message; only topics someone is subscribed to
cost anything (``Channel.has_sinks``), and cameras are throttled to
``camera_rate_hz`` (by message log time, so the decision is deterministic and
free of wall-clock calls), everything else to ``max_rate_hz``. H.264 streams are
never throttled: every P-frame depends on the previous one. Raw CDR is passed
through unchanged on ``ros2msg``/``cdr`` channels, exactly as in the bag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from xsquare_logger.config.live import LiveConfig
from xsquare_logger.errors import XsqError

__all__ = ["LiveView", "LiveViewError"]

log = logging.getLogger("xsquare_logger.live")

_CAMERA_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})
_NEVER_THROTTLE = frozenset({"foxglove_msgs/msg/CompressedVideo"})


class LiveViewError(XsqError):
    """The live view server could not start (port in use, bad host)."""


class LiveView:
    """Owns the WebSocket server and one channel per topic."""

    def __init__(
        self,
        config: LiveConfig,
        schema_provider: Callable[[str], bytes],
        name: str = "xsquare_logger",
    ) -> None:
        import foxglove

        self._foxglove = foxglove
        self.config = config
        self._schema_provider = schema_provider
        self._context = foxglove.Context()
        try:
            self._server = foxglove.start_server(
                name=name, host=config.host, port=config.port, context=self._context
            )
        except RuntimeError as exc:  # foxglove-sdk reports bind failures as RuntimeError
            raise LiveViewError(
                f"live view: cannot listen on {config.host}:{config.port}: {exc} "
                "(set live.port, or live.enabled=false)"
            ) from exc
        self._channels: dict[str, Any] = {}
        self._period_ns: dict[str, int] = {}
        self._last_ns: dict[str, int] = {}
        self.sent = 0
        self.throttled = 0
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("live view is reachable from the network on %s", config.host)
        log.info("live view: Foxglove WebSocket on ws://%s:%d", config.host, self.port)

    @property
    def port(self) -> int:
        return int(self._server.port)

    def _channel(self, topic: str, type_name: str) -> Any:
        fg = self._foxglove
        channel = fg.Channel(
            topic,
            schema=fg.Schema(
                name=type_name, encoding="ros2msg", data=self._schema_provider(type_name)
            ),
            message_encoding="cdr",
            context=self._context,
        )
        self._channels[topic] = channel
        if type_name in _NEVER_THROTTLE:
            self._period_ns[topic] = 0
        else:
            rate = self.config.camera_rate_hz if type_name in _CAMERA_TYPES else (
                self.config.max_rate_hz
            )
            # 10% slack: a 30 Hz camera throttled to 10 Hz delivers every third frame
            # even when its stamps are a few microseconds early.
            self._period_ns[topic] = int(0.9e9 / rate)
        return channel

    def offer(self, topic: str, type_name: str, data: bytes, log_time_ns: int) -> bool:
        """Send ``data`` if someone watches ``topic`` and its rate allows; True if sent."""
        channel = self._channels.get(topic) or self._channel(topic, type_name)
        if not channel.has_sinks():
            return False
        last = self._last_ns.get(topic)
        if last is not None and log_time_ns - last < self._period_ns[topic]:
            self.throttled += 1
            return False
        self._last_ns[topic] = log_time_ns
        channel.log(data, log_time=log_time_ns)
        self.sent += 1
        return True

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._server.stop()
