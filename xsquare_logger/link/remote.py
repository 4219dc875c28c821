"""The visit state machine of another process, as the tablet server sees it.

The separate tablet bridge (ros/bridge_node.py) owns no state: each tablet frame is
forwarded to the recorder process's state machine and its reply returned unchanged,
so idempotency (the reply cache) and every check live in one place and a restarted
bridge loses nothing. :class:`RemoteMachine` gives the server the three things it
uses (``handle_frame``, ``snapshot``, ``version``) over a :class:`MachineLink`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from xsquare_logger.link.protocol import (
    ErrorCode,
    ProtocolError,
    decode_envelope,
    encode,
    error_reply,
)

__all__ = ["NOT_ANSWERING", "MachineLink", "RemoteMachine"]

log = logging.getLogger(__name__)

NOT_ANSWERING = (
    "the recorder process does not answer; retry with the same id (a command it "
    "already executed is not executed twice)"
)


class MachineLink(Protocol):
    """The transport to the recorder process (rclpy services in the bridge)."""

    def command(self, frame: bytes, received_ns: int, client: str) -> bytes | None:
        """The recorder's reply to one frame; None when it did not answer in time."""
        ...

    def status(self) -> dict[str, Any] | None:
        """The recorder machine's status fields; None when it did not answer."""
        ...

    @property
    def version(self) -> int:
        """The newest state version the recorder announced (cheap: no round trip)."""
        ...


class RemoteMachine:
    """Duck-types the server's machine (link/server.py ``TabletMachine``) over a link."""

    def __init__(
        self, link: MachineLink, robot_id: str, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._link = link
        self._robot_id = robot_id
        self._clock = clock
        self._last: dict[str, Any] | None = None
        self._down = False

    @property
    def version(self) -> int:
        # A change of reachability changes what the status says: publish at once.
        return self._link.version * 2 + int(self._down)

    def handle_frame(self, frame: bytes, received_ns: int, client: str = "") -> bytes:
        try:
            _doc, request_id = decode_envelope(frame)
        except ProtocolError as exc:
            # Refused unread (no id: nothing to cache); the recorder would answer the same.
            return encode(error_reply(exc.request_id, exc.code, exc.message))
        reply = self._link.command(frame, received_ns, client)
        if reply is None:
            self._down = True
            log.warning("recorder did not answer the tablet request %s", request_id)
            return encode(error_reply(request_id, ErrorCode.RECORDER_ERROR, NOT_ANSWERING))
        self._down = False
        return reply

    def snapshot(self) -> dict[str, Any]:
        status = self._link.status()
        if status is not None:
            self._down = False
            self._last = status
            return status
        self._down = True
        # What was last known, marked stale: the tablet keeps its screen and says why.
        last = dict(self._last or {"robot_id": self._robot_id, "state": "idle",
                                   "session_id": "", "recording": False})
        last["robot_time_ns"] = self._clock()
        last["last_error"] = "recorder process not answering (tablet bridge cannot reach it)"
        return last
