"""`xsq info`: what `ros2 bag info` prints, plus losses and tasks from session.json."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xsquare_logger.session.counters import LossCounters
from xsquare_logger.session.view import SessionUnreadable, SessionView

__all__ = ["InfoError", "format_info", "session_info"]


class InfoError(SessionUnreadable):
    """The path is not a readable session."""


def session_info(path: Path) -> dict[str, Any]:
    """Everything `xsq info --json` prints, from metadata.yaml and session.json.

    Per topic of the bag: ``count`` (messages in the bag) and the counters of
    :class:`~xsquare_logger.session.counters.LossCounters` (``received``, ``written``,
    the four loss kinds, ``lost``); ``counters`` holds them for every topic of
    session.json (a camera recorded only compressed too) and the session ``total``.
    """
    try:
        view = SessionView.open(path)
    except SessionUnreadable as exc:
        raise InfoError(str(exc)) from None
    meta, directory = view.metadata, view.directory
    manifest = view.manifest.model_dump(mode="json") if view.manifest is not None else None
    size = sum((directory / f).stat().st_size for f in meta.get("relative_file_paths", [])
               if (directory / f).exists())
    counters = view.counters()
    topics = []
    for entry in meta.get("topics_with_message_count", []):
        tm = entry["topic_metadata"]
        counts = counters.get(tm["name"], LossCounters()).to_dict()
        topics.append(
            {
                "name": tm["name"],
                "type": tm["type"],
                "count": int(entry["message_count"]),
                "serialization_format": tm.get("serialization_format", "cdr"),
                **counts,
            }
        )
    return {
        "path": str(directory),
        "files": list(meta.get("relative_file_paths", [])),
        "unrecovered_files": view.active_files,
        "bag_size": size,
        "storage_identifier": meta.get("storage_identifier", ""),
        "ros_distro": meta.get("ros_distro", ""),
        "start_ns": view.start_ns,
        "end_ns": view.end_ns,
        "duration_ns": view.end_ns - view.start_ns,
        "message_count": int(meta.get("message_count", 0)),
        "topics": topics,
        "counters": view.counters_document(),
        "session": manifest,
    }


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def _time(ns: int) -> str:
    dt = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return f"{dt.strftime('%b %d %Y %H:%M:%S.%f')[:-3]} UTC ({ns / 1e9:.9f})"


def format_info(info: dict[str, Any]) -> str:
    """Human-readable summary in `ros2 bag info` style."""
    lines = [
        f"Files:             {', '.join(info['files']) or '(none)'}",
        f"Bag size:          {_human_size(info['bag_size'])}",
        f"Storage id:        {info['storage_identifier']}",
        f"ROS Distro:        {info['ros_distro']}",
        f"Duration:          {info['duration_ns'] / 1e9:.3f}s",
        f"Start:             {_time(info['start_ns'])}",
        f"End:               {_time(info['end_ns'])}",
        f"Messages:          {info['message_count']}",
    ]
    width = max((len(t["name"]) for t in info["topics"]), default=0)
    for i, t in enumerate(info["topics"]):
        head = "Topic information: " if i == 0 else " " * 19
        lines.append(
            f"{head}Topic: {t['name']:<{width}} | Type: {t['type']} | Count: {t['count']} | "
            f"Serialization Format: {t['serialization_format']}"
        )
    if info["unrecovered_files"]:
        lines.append(
            f"Unfinished files:  {', '.join(info['unrecovered_files'])} "
            f"(run `xsq recover {info['path']}`)"
        )
    s = info.get("session")
    if s:
        lines += [
            "",
            f"Session:           {s['session_id']}  robot {s['robot_id']}  "
            f"state {s['state']} ({s.get('close_reason') or 'open'})",
            f"Software:          xsquare_logger {s['software_version']}  "
            f"config {s['config_digest'][:19]}",
        ]
    counters = info.get("counters") or {}
    total = counters.get("total") or {}
    if s or counters.get("topics"):
        lines.append(
            f"Lost messages:     {total.get('lost', 0)} "
            f"(transport {total.get('lost_transport', 0)}, "
            f"queue full {total.get('dropped_queue', 0)}, disk {total.get('dropped_disk', 0)}, "
            f"encoder {total.get('dropped_encode', 0)})"
        )
        for name, c in (counters.get("topics") or {}).items():
            if c.get("lost", 0):
                lines.append(
                    f"                   {name}: lost {c['lost']}: transport "
                    f"{c.get('lost_transport', 0)}, queue {c.get('dropped_queue', 0)}, "
                    f"disk {c.get('dropped_disk', 0)}, encoder {c.get('dropped_encode', 0)}"
                )
    if s:
        compressed = {n: t["compressed_to"] for n, t in (s.get("topics") or {}).items()
                      if t.get("compressed_to")}
        for name, out in compressed.items():
            lines.append(f"Compressed:        {name} -> {out}")
        tasks = s.get("tasks") or []
        lines.append(f"Tasks:             {len(tasks)}")
        for task in tasks:
            end = task.get("end_ns")
            dur = f"{(end - task['start_ns']) / 1e9:.1f}s" if end else "open"
            lines.append(
                f"  #{task['episode_index']:<4} {task['task']:<24} {dur:>8}  "
                f"{task.get('outcome') or ''}"
            )
    return "\n".join(lines)
