"""Live stream health and the per-episode quality verdict: the shared data types.

The recorder fills them (it measures), the tablet link sends them (status, the
``task.end`` reply) and session.json / ``xsquare.tasks`` keep the verdict. They
live here, below both, because the recording core must not import the link and
a tablet install must not load the session layer (the link turns them into
plain JSON with :meth:`pydantic.BaseModel.model_dump`). docs/tablet-protocol.md
(§7 ``streams``, ``task.end``) is the normative text of the fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ALERT_STATES",
    "EpisodeEvaluator",
    "EpisodeQuality",
    "EpisodeSpan",
    "ExpectedStreamLike",
    "StreamHealth",
    "StreamKind",
    "StreamState",
    "stream_alert",
    "unmeasured_streams",
]

#: ``unknown``: the recorder does not (yet) measure this stream's health; the
#: other four are the recorder's classification (docs/tablet-protocol.md §7).
StreamState = Literal["ok", "degraded", "stalled", "missing", "unknown"]
#: What a stream carries; the console makes preview tiles for ``camera`` streams.
StreamKind = Literal["camera", "joints", "wrench", "other"]
#: States that raise the operator's error banner while a task is open.
ALERT_STATES: frozenset[str] = frozenset({"stalled", "missing"})


class StreamHealth(BaseModel):
    """One expected stream as the recorder sees it right now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Display name from the config (health.streams[].name).")
    topic: str
    kind: StreamKind = "other"
    state: StreamState = "unknown"
    rate_hz: float | None = Field(None, description="Measured over the sliding window.")
    nominal_hz: float | None = None
    lost: int = Field(0, ge=0, description="Messages lost on this topic in this session.")
    last_seen_s: float | None = Field(
        None, description="Seconds since the last message arrived; null: never seen."
    )
    paused: bool = Field(
        False, description="A camera under the privacy pause: arriving, not written; its "
        "silence is neither a stall nor a loss."
    )


class EpisodeQuality(BaseModel):
    """The robot's verdict on one episode (``task.end``), with the reasons."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: Literal["pass", "warn", "fail"]
    reasons: list[str] = Field(default_factory=list)


class EpisodeSpan(BaseModel):
    """The time range a quality evaluator judges: the taps and the pre/post-roll window."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    episode_index: int
    task: str
    start_ns: int
    end_ns: int
    window_start_ns: int
    window_end_ns: int


class EpisodeEvaluator(Protocol):
    """What the recorder provides to judge an ended episode (None: no verdict computed)."""

    def __call__(self, span: EpisodeSpan) -> EpisodeQuality | None: ...


class ExpectedStreamLike(Protocol):
    """The config's expected stream (``config.model.ExpectedStream``) as read here."""

    @property
    def name(self) -> str: ...

    @property
    def topic(self) -> str: ...

    @property
    def nominal_hz(self) -> float: ...

    @property
    def kind(self) -> StreamKind | None: ...


def unmeasured_streams(
    expected: Iterable[ExpectedStreamLike], lost_by_topic: Mapping[str, int]
) -> list[StreamHealth]:
    """The expected streams before the recorder measures them: state ``unknown``.

    Only what is known for sure is filled (name, topic, nominal rate, losses counted
    so far); rate and last-seen stay null rather than being guessed.
    """
    return [
        StreamHealth(
            name=s.name,
            topic=s.topic,
            kind=s.kind or "other",
            nominal_hz=s.nominal_hz,
            lost=max(0, int(lost_by_topic.get(s.topic, 0))),
        )
        for s in expected
    ]


def stream_alert(streams: Sequence[StreamHealth], task_open: bool) -> str:
    """The error banner text: a stalled or missing stream while a task is open, else ''."""
    if not task_open:
        return ""
    bad = [f"{s.name} {s.state}" for s in streams if s.state in ALERT_STATES]
    return ", ".join(bad)
