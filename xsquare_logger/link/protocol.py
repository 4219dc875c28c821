"""The tablet wire protocol, version 1: request parsing, validation and reply building.

Every frame a tablet sends is untrusted: it is size-checked before it is decoded,
decoded strictly (UTF-8, JSON without NaN/Infinity, no string that UTF-8 cannot
encode, i.e. no escaped lone surrogate like ``"\\ud800"``), and validated by pydantic
models that forbid unknown fields and never coerce types. Any failure becomes a
:class:`ProtocolError` carrying one :class:`ErrorCode`; nothing here has side
effects, so a bad request cannot change the robot's state.

Parsing is split in two steps so that the idempotency cache can be consulted as
soon as the request id is known (a retried id returns the first reply even if the
retried body differs): :func:`decode_envelope` then :func:`validate_request`.
:func:`parse_request` runs both. docs/tablet-protocol.md is the normative text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

__all__ = [
    "COMMANDS",
    "MAX_ID_CHARS",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "UNCACHED_COMMANDS",
    "CommandArgs",
    "ErrorBody",
    "ErrorCode",
    "HelloArgs",
    "MarkArgs",
    "PreviewGetArgs",
    "PrivacyPauseArgs",
    "PrivacyResumeArgs",
    "ProtocolError",
    "Reply",
    "Request",
    "SessionStartArgs",
    "SessionStopArgs",
    "StatusArgs",
    "StatusMessage",
    "TaskDiscardArgs",
    "TaskEndArgs",
    "TaskStartArgs",
    "decode_envelope",
    "encode",
    "error_reply",
    "find_unencodable",
    "ok_reply",
    "parse_request",
    "validate_request",
]

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 256
MAX_TEXT_CHARS = 4096
# Echoing attacker-chosen text back (unknown command names, field names) is
# bounded so an error reply can never approach the message size limit.
_MAX_ECHO_CHARS = 64
_MAX_ERRORS_LISTED = 3
MAX_METADATA_ENTRIES = 32


class ErrorCode(StrEnum):
    """Error codes a reply can carry (``error.code``)."""

    BAD_REQUEST = "BAD_REQUEST"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_COMMAND = "UNKNOWN_COMMAND"
    INVALID_STATE = "INVALID_STATE"
    CONSENT_REQUIRED = "CONSENT_REQUIRED"
    MISSING_FIELDS = "MISSING_FIELDS"
    TOO_LARGE = "TOO_LARGE"
    RECORDER_ERROR = "RECORDER_ERROR"
    INTERNAL = "INTERNAL"


class ProtocolError(Exception):
    """A request that cannot be executed; becomes an ``ok: false`` reply.

    ``request_id`` is the request's id when it could be read, else ``None``
    (the reply then carries ``"id": null``).
    """

    def __init__(self, code: ErrorCode, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id


# --- argument models -------------------------------------------------------------------

# Names end up in file metadata, ROS strings and operator screens: no control
# characters, no surrounding blanks, never empty.
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=MAX_NAME_CHARS,
        pattern=r"^[^\x00-\x1f\x7f]+$",
    ),
]
ShortText = Annotated[
    str, StringConstraints(max_length=MAX_NAME_CHARS, pattern=r"^[^\x00-\x1f\x7f]*$")
]
# Free text may span lines; NUL is refused because ROS strings are C strings.
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS, pattern=r"^[^\x00]*$")]
# Visit metadata keys (robot_serial, calibration_version): also config keys, so plain.
MetadataKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class CommandArgs(BaseModel):
    """Base of the per-command argument models."""

    # strict: JSON 1 is not the string "1", "true" is not true; forbid: a
    # misspelt optional field must not be silently dropped from the record.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class HelloArgs(CommandArgs):
    """``hello``: no arguments."""


class SessionStartArgs(CommandArgs):
    """``session.start``: one visit of the robot to a site, recorded as one session."""

    visit_id: Name
    operator: Name
    # Missing counts as "not given": the reply is CONSENT_REQUIRED, not BAD_REQUEST.
    consent: bool = False
    site: ShortText = ""
    notes: Text = ""
    # Required visit metadata the robot's config names (visit.required_fields).
    metadata: Annotated[
        dict[MetadataKey, ShortText], Field(max_length=MAX_METADATA_ENTRIES)
    ] = {}


class TaskStartArgs(CommandArgs):
    """``task.start``: opens an episode."""

    task: Name
    instruction: Text = ""


class TaskEndArgs(CommandArgs):
    """``task.end``: closes the open episode with its outcome."""

    outcome: Literal["success", "failure", "aborted"]
    note: Text = ""


class TaskDiscardArgs(CommandArgs):
    """``task.discard``: marks the last ended episode discarded (re-record)."""

    # When given, must name the last ended episode: a console acting on a stale
    # screen must not discard another episode than the one it shows.
    episode_index: Annotated[int, Field(ge=0)] | None = None
    note: Text = ""


class PrivacyPauseArgs(CommandArgs):
    """``privacy.pause``: stop writing camera streams until ``privacy.resume``."""

    note: Text = ""


class PrivacyResumeArgs(CommandArgs):
    """``privacy.resume``: write camera streams again."""

    note: Text = ""


class MarkArgs(CommandArgs):
    """``mark``: a labelled instant, inside or outside a task."""

    label: Name
    note: Text = ""


class SessionStopArgs(CommandArgs):
    """``session.stop``: no arguments."""


class StatusArgs(CommandArgs):
    """``status``: no arguments."""


class PreviewGetArgs(CommandArgs):
    """``preview.get``: the newest preview of one camera (opens its lease)."""

    camera: Name  # a status ``streams`` name whose ``kind`` is ``camera``


COMMANDS: dict[str, type[CommandArgs]] = {
    "hello": HelloArgs,
    "session.start": SessionStartArgs,
    "task.start": TaskStartArgs,
    "task.end": TaskEndArgs,
    "task.discard": TaskDiscardArgs,
    "mark": MarkArgs,
    "privacy.pause": PrivacyPauseArgs,
    "privacy.resume": PrivacyResumeArgs,
    "session.stop": SessionStopArgs,
    "status": StatusArgs,
    "preview.get": PreviewGetArgs,
}
#: Read-only commands whose replies are not kept for idempotency (a repeat is harmless,
#: and a preview reply is large: 10,000 kept would be hundreds of MB).
UNCACHED_COMMANDS = frozenset({"preview.get"})

_ENVELOPE_FIELDS = frozenset({"v", "id", "cmd", "args"})


@dataclass(frozen=True)
class Request:
    """A validated request: ``args`` is the command's model from :data:`COMMANDS`."""

    id: str
    cmd: str
    args: CommandArgs


# --- parsing ---------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_ECHO_CHARS else text[:_MAX_ECHO_CHARS] + "..."


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str) -> str:
    """``text`` with what UTF-8 cannot encode written as ``\\udXXX`` (safe to echo)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _unencodable_error(where: list[str], what: str, text: str) -> str:
    bad = next(c for c in text if not _encodable(c))
    path = ".".join(_clip(_escaped(p)) for p in where)
    return (
        f"{path}: {what} holds an unpaired surrogate ({_escaped(bad)}), which is not "
        "Unicode text and cannot be encoded as UTF-8"
    )


def find_unencodable(doc: dict[str, Any]) -> str | None:
    """Why ``doc`` holds a string (field name or value) UTF-8 cannot encode, or None.

    JSON's ``\\uXXXX`` escapes can spell half of a surrogate pair alone, which
    ``json.loads`` accepts; such a string would break every later step (the
    reply, the recorded metadata, ROS strings), so it is refused up front.
    Iterative: the document may be nested as deeply as the JSON decoder allows.
    """
    stack: list[tuple[list[str], Any]] = [([], doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _encodable(value):
                return _unencodable_error(path, "text", value)
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                if not _encodable(key):
                    return _unencodable_error([*path, key], "field name", key)
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, str(i)], item) for i, item in reversed(list(enumerate(value))))
    return None


def decode_envelope(frame: bytes) -> tuple[dict[str, Any], str]:
    """Decode one frame into a JSON object and its request id.

    Raises :class:`ProtocolError`: ``TOO_LARGE`` above 64 KiB (checked before
    decoding), ``BAD_REQUEST`` for empty frames, invalid UTF-8 or JSON, a
    non-object document, or a missing/invalid ``id`` (non-empty string of at
    most 128 characters that UTF-8 can encode). In all these cases the id is
    unknown (``request_id`` None): an id that cannot be encoded is never echoed.
    """
    if len(frame) > MAX_MESSAGE_BYTES:
        raise ProtocolError(
            ErrorCode.TOO_LARGE,
            f"message is {len(frame)} bytes; the limit is {MAX_MESSAGE_BYTES} bytes",
        )
    if not frame:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "empty message")
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"message is not valid UTF-8 (byte {exc.start})"
        ) from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        # The C scanner recurses per nesting level: 64 KiB of "[" must not crash the bridge.
        raise ProtocolError(ErrorCode.BAD_REQUEST, "message is nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"message is not valid JSON: {_clip(str(exc))}"
        ) from None
    if not isinstance(doc, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "a request must be a JSON object")
    request_id = doc.get("id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_ID_CHARS:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"id: required, a non-empty string of at most {MAX_ID_CHARS} characters",
        )
    if not _encodable(request_id):
        # Not echoed: the reply must be valid UTF-8, so it carries "id": null.
        raise ProtocolError(ErrorCode.BAD_REQUEST, _unencodable_error(["id"], "text", request_id))
    return doc, request_id


def _describe(exc: ValidationError, prefix: str) -> str:
    parts = []
    for err in exc.errors()[:_MAX_ERRORS_LISTED]:
        where = ".".join(_clip(str(p)) for p in (prefix, *err["loc"]))
        what = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{where}: {what}")
    more = exc.error_count() - _MAX_ERRORS_LISTED
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def validate_request(doc: dict[str, Any], request_id: str) -> Request:
    """Check version, envelope fields, command and arguments of a decoded request.

    Order of checks (the first failure is reported): any field name or string
    value that UTF-8 cannot encode (``BAD_REQUEST`` naming it), ``v``
    (``BAD_REQUEST`` if missing or not an integer, ``UNSUPPORTED_VERSION`` if not 1), unknown
    top-level fields, ``cmd`` (``UNKNOWN_COMMAND``), ``args`` (``BAD_REQUEST``
    naming the field), consent (``CONSENT_REQUIRED``).
    """
    unencodable = find_unencodable(doc)
    if unencodable is not None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, unencodable, request_id)
    version = doc.get("v")
    # bool is an int subclass in Python; JSON true is not a version number.
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "v: required, an integer", request_id)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported; this robot speaks "
            f"version {PROTOCOL_VERSION}",
            request_id,
        )
    extra = sorted(k for k in doc if k not in _ENVELOPE_FIELDS)
    if extra:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{_clip(extra[0])}: unknown field", request_id)
    cmd = doc.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "cmd: required, a string", request_id)
    model = COMMANDS.get(cmd)
    if model is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_COMMAND,
            f"unknown command {_clip(cmd)!r}; known: {', '.join(COMMANDS)}",
            request_id,
        )
    raw_args = doc.get("args", {})
    if not isinstance(raw_args, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "args: must be a JSON object", request_id)
    try:
        args = model.model_validate(raw_args)
    except ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, _describe(exc, "args"), request_id) from None
    if isinstance(args, SessionStartArgs) and not args.consent:
        raise ProtocolError(
            ErrorCode.CONSENT_REQUIRED,
            "args.consent must be true: recording needs the consent of the people present",
            request_id,
        )
    return Request(id=request_id, cmd=cmd, args=args)


def parse_request(frame: bytes) -> Request:
    """Decode and validate one request frame; raises :class:`ProtocolError`."""
    doc, request_id = decode_envelope(frame)
    return validate_request(doc, request_id)


# --- replies ---------------------------------------------------------------------------


def ok_reply(request_id: str, result: dict[str, Any], robot_time_ns: int) -> dict[str, Any]:
    """A success reply; ``robot_time_ns`` is the robot's receive time of the request."""
    return {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": True,
        "result": result,
        "robot_time_ns": robot_time_ns,
    }


def error_reply(
    request_id: str | None, code: ErrorCode, message: str, **details: Any
) -> dict[str, Any]:
    """An error reply; ``request_id`` is ``None`` when the request's id was unreadable.

    ``details`` are structured fields beside code and message (``missing`` of
    ``MISSING_FIELDS``).
    """
    return {
        "v": PROTOCOL_VERSION,
        "id": request_id,
        "ok": False,
        "error": {"code": str(code), "message": message, **details},
    }


def encode(doc: dict[str, Any]) -> bytes:
    """Serialize a reply or status message: compact UTF-8 JSON, no NaN.

    Always valid UTF-8: request text is checked on the way in, and a lone
    surrogate in robot-side text (an OS error naming a non-UTF-8 file name, say)
    becomes ``?`` rather than an exception that would cost the reply.
    """
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", "replace")


# --- models of what the robot sends (validated by the client) -----------------------------


class _Incoming(BaseModel):
    # A newer robot may add fields; an older client must still read the reply.
    model_config = ConfigDict(extra="allow")


class ErrorBody(_Incoming):
    # A plain string, not ErrorCode: codes added by newer robots must not break parsing.
    code: str
    message: str
    # MISSING_FIELDS: the visit fields session.start lacked, as the config names them.
    missing: list[str] | None = None


class Reply(_Incoming):
    """A reply as a client receives it."""

    v: int
    id: str | None
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None
    robot_time_ns: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Reply:
        if self.ok and self.result is None:
            raise ValueError("ok reply without result")
        if not self.ok and self.error is None:
            raise ValueError("error reply without error")
        return self


class StatusMessage(_Incoming):
    """A status message from the PUB socket (the fields the client relies on)."""

    v: int
    type: Literal["status"]
    seq: int
    robot_id: str
    robot_time_ns: int
    state: str
    session_id: str
