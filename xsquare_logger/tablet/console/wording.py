"""What the operator reads when a command fails: one plain sentence per error code.

The robot's error ``message`` is written for developers ("no task is open; send
task.start first"); the field test showed operators stop reading at the first
protocol word. The console shows :func:`operator_text` large and keeps the code and
the robot's message small underneath, for support. The sentence may depend on the
command and on the robot's last status (``INVALID_STATE`` means something different
for each command), never on parsing the robot's message text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["OPERATOR_TEXT", "field_label", "operator_text"]

_TELL_SUPPORT = "If it happens again, tell support the code shown below."

#: The sentence per error code (protocol codes, the reference client's link codes and
#: the console's own). ``{fields}`` is filled for ``MISSING_FIELDS``.
OPERATOR_TEXT: dict[str, str] = {
    # robot replies (docs/tablet-protocol.md section 5)
    "BAD_REQUEST": "The robot could not read what the console sent. " + _TELL_SUPPORT,
    "UNSUPPORTED_VERSION": "This tablet and the robot run different software versions. "
    "Tell support.",
    "UNKNOWN_COMMAND": "The robot's software does not offer this button yet. Tell support.",
    "INVALID_STATE": "The robot is not ready for that right now. Check the screen, "
    "it shows the robot's current state, and try again.",
    "CONSENT_REQUIRED": "Tick the consent box first: the people here must agree to be "
    "recorded before the visit starts.",
    "MISSING_FIELDS": "Fill in the missing visit details: {fields}.",
    "TOO_LARGE": "That text is too long. Shorten it and try again.",
    "RECORDER_ERROR": "The robot could not record. Check the robot's disk space and "
    "cameras, then try again.",
    "INTERNAL": "The robot hit an internal error. Try again. " + _TELL_SUPPORT,
    # the link, as the console's client reports it
    "ROBOT_UNREACHABLE": "The robot did not answer. Check that it is switched on and on "
    "the same Wi-Fi as this tablet, then press Retry.",
    "TIMEOUT": "The robot did not answer. Check that it is switched on and on the same "
    "Wi-Fi as this tablet, then press Retry.",
    "AUTH_REFUSED": "The robot does not accept this tablet. Ask support to register the "
    "tablet with this robot.",
    "HANDSHAKE_FAILED": "This tablet holds the wrong key for this robot. Ask support to "
    "set the tablet up for this robot.",
    "BAD_REPLY": "The robot sent an answer the console cannot read. " + _TELL_SUPPORT,
    # the console itself
    "CONSOLE_ERROR": "The console on this tablet hit an error. Reload the page. "
    + _TELL_SUPPORT,
    "BODY_TOO_LARGE": "That text is too long. Shorten it and try again.",
    "FORBIDDEN": "This page is not allowed to control the robot. Open the console at "
    "http://127.0.0.1 on the tablet itself.",
    "NOT_FOUND": "The console does not know that page. Reload the console.",
    "PREVIEW_UNAVAILABLE": "No camera picture right now.",
}

_UNKNOWN = "Something went wrong. " + _TELL_SUPPORT

# INVALID_STATE per command, split by what the robot's last status said.
_NO_VISIT = "Start the visit first."
_INVALID_STATE: dict[str, tuple[str, str, str]] = {
    # (no visit recording, visit recording without a task, a task open)
    "task.start": (
        _NO_VISIT,
        "The robot is not ready for a task yet. Wait a moment and try again.",
        "A task is already running. End it first (Success, Failure or Aborted).",
    ),
    "task.end": (_NO_VISIT, "No task is running, so there is nothing to end.", ""),
    "task.discard": (
        _NO_VISIT,
        "There is no finished episode to re-record.",
        "End the running task before re-recording.",
    ),
    "mark": (_NO_VISIT + " Marks are saved inside a visit.", "", ""),
    "session.start": (
        "",
        "A visit is already recording. Stop it before starting another.",
        "A visit is already recording. Stop it before starting another.",
    ),
    "session.stop": ("No visit is recording, so there is nothing to stop.", "", ""),
    "privacy.pause": (_NO_VISIT, "", ""),
    "privacy.resume": (_NO_VISIT, "", ""),
}

# Codes whose sentence depends on the command alone.
_BY_COMMAND: dict[tuple[str, str], str] = {
    ("privacy.pause", "RECORDER_ERROR"): "The robot cannot pause its cameras right now. "
    "Ask the people present to step out of view, or stop the visit.",
    ("privacy.resume", "RECORDER_ERROR"): "The robot could not switch its cameras back on. "
    "Stop the visit and tell support.",
    ("session.stop", "RECORDER_ERROR"): "The robot could not finish the recording. "
    "Press Stop visit again; if it fails again, tell support.",
}

#: How a visit field the robot may require is named on the start form.
_FIELD_LABELS = {
    "visit_id": "Visit ID",
    "operator": "Operator",
    "site": "Site",
    "notes": "Notes",
    "consent": "Consent",
    "robot_serial": "Robot serial",
    "calibration_version": "Calibration version",
}


def field_label(name: str) -> str:
    """``robot_serial`` -> ``Robot serial`` (known fields have a fixed label)."""
    return _FIELD_LABELS.get(name, name.replace("_", " ").strip().capitalize() or name)


def operator_text(
    code: str,
    cmd: str = "",
    status: Mapping[str, Any] | None = None,
    missing: Sequence[str] = (),
) -> str:
    """The sentence the operator reads for error ``code`` of command ``cmd``.

    ``status`` is the robot's last status (to tell "no visit" from "a task is
    open"); ``missing`` the field names of a ``MISSING_FIELDS`` refusal.
    """
    if code == "INVALID_STATE" and cmd in _INVALID_STATE:
        phase = _phase(status)
        text = _INVALID_STATE[cmd][phase] if phase is not None else ""
        if text:
            return text
    if (cmd, code) in _BY_COMMAND:
        return _BY_COMMAND[(cmd, code)]
    if code == "MISSING_FIELDS":
        names = ", ".join(field_label(m) for m in missing) or "see the form"
        return OPERATOR_TEXT[code].format(fields=names)
    return OPERATOR_TEXT.get(code, _UNKNOWN)


def _phase(status: Mapping[str, Any] | None) -> int | None:
    """0 no visit, 1 visit without a task, 2 task open; None when unknown."""
    if not status or status.get("state") not in ("idle", "recording"):
        return None
    if status.get("state") == "idle":
        return 0
    return 2 if status.get("current_task") else 1
