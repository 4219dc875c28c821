"""What the visit state machine may ask of a recording side beyond the base contract.

:class:`~xsquare_logger.recording.control.SessionController` is the contract
every recorder implements (start, events, stop, status). Issue 11 adds three
capabilities; a controller offers each by having the method, and the machine
checks for it (``isinstance`` on these runtime-checkable protocols), so older
controllers and the test stand-ins keep working:

* :class:`CameraPauser` ``set_camera_paused(paused, stamp_ns)``: without it,
  ``privacy.pause`` is refused (``RECORDER_ERROR``): the robot never claims a
  pause it cannot make.
* :class:`EpisodeJudge` ``evaluate_episode(span)``: without it (or when it
  returns None) ``task.end`` carries ``quality: null`` (no verdict computed).
* :class:`HealthSource` ``stream_health()``: without it (or None) every expected
  stream is reported ``unknown``.
* :class:`PreviewSource` ``camera_preview(topic)``: without it ``preview.get`` answers
  ``available: false``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from xsquare_logger.session.health import EpisodeQuality, EpisodeSpan, StreamHealth

__all__ = ["CameraPauser", "CameraPreview", "EpisodeJudge", "HealthSource", "PreviewSource"]


@runtime_checkable
class CameraPauser(Protocol):
    def set_camera_paused(self, paused: bool, stamp_ns: int) -> None:
        """From ``stamp_ns`` (log time) on, write no camera message (True) or write them
        again (False); camera silence while paused is neither loss nor a stall.
        Idempotent. Raises ControllerError when it cannot (the machine then refuses)."""
        ...


@runtime_checkable
class EpisodeJudge(Protocol):
    def evaluate_episode(self, span: EpisodeSpan) -> EpisodeQuality | None:
        """The verdict on the episode ending now (None: no verdict computed). Called
        before the task_end event is recorded, so the verdict is recorded with it."""
        ...


@runtime_checkable
class HealthSource(Protocol):
    def stream_health(self) -> Sequence[StreamHealth] | None:
        """Each expected stream (config ``health.streams``) as measured now; None when
        the recorder does not measure (then every stream is reported ``unknown``)."""
        ...


class CameraPreview(Protocol):
    """A camera preview (recording/preview.py ``Preview``): a small JPEG of one frame."""

    @property
    def topic(self) -> str: ...

    @property
    def stamp_ns(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def jpeg(self) -> bytes: ...


@runtime_checkable
class PreviewSource(Protocol):
    def camera_preview(self, topic: str) -> CameraPreview | None:
        """Open (or extend) the camera's preview lease; its newest preview, or None when
        there is none yet (first request), no session records, or the privacy pause is on."""
        ...
