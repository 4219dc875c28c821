"""Live view of a recording session in Foxglove, over the foxglove-sdk WebSocket server.

A :class:`~xsquare_logger.recording.tap.Tap`: the node builds it and hands it to each
session's recorder. Every recorded topic is advertised as the recorder registers it
(the recorder's own ``/xsquare/*`` topics, task events, current task and session status,
at session start), and the recorder offers every written message; only topics someone is
subscribed to cost anything (``Channel.has_sinks``), and cameras are throttled to
``camera_rate_hz`` (by message log time, so the decision is deterministic and
free of wall-clock calls), everything else to ``max_rate_hz``. H.264 streams and the
``/xsquare/*`` topics are never throttled: every P-frame depends on the previous one, and
every task event counts. Raw CDR is passed through unchanged on ``ros2msg``/``cdr``
channels, exactly as in the bag.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from xsquare_logger.config.live import LiveConfig
from xsquare_logger.errors import XsqError

__all__ = ["LiveView", "LiveViewError"]

log = logging.getLogger("xsquare_logger.live")

_CAMERA_TYPES = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"})
_NEVER_THROTTLE = frozenset({"foxglove_msgs/msg/CompressedVideo"})
_NEVER_THROTTLE_PREFIX = "/xsquare/"  # the recorder's task events, current task, status


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
        self._lock = threading.Lock()  # advertise() runs on ROS threads, offer() on the writer
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

    def advertise(self, topic: str, type_name: str) -> None:
        """Create ``topic``'s channel now (viewers see it before its first message)."""
        self._channel(topic, type_name)

    def _channel(self, topic: str, type_name: str) -> Any:
        with self._lock:
            channel = self._channels.get(topic)
            if channel is None:
                channel = self._new_channel(topic, type_name)
        return channel

    def _new_channel(self, topic: str, type_name: str) -> Any:
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
        if type_name in _NEVER_THROTTLE or topic.startswith(_NEVER_THROTTLE_PREFIX):
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
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
        self._server.stop()
