"""`xsq info`: what `ros2 bag info` prints, plus losses and tasks from session.json."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xsquare_logger.session.manifest import MANIFEST_NAME, ManifestError, read_manifest
from xsquare_logger.session.metadata import METADATA_NAME, read_metadata_yaml

__all__ = ["InfoError", "format_info", "session_info"]


class InfoError(Exception):
    """The path is not a readable session."""


def _session_dir(path: Path) -> Path:
    if path.is_file() and path.name in (METADATA_NAME, MANIFEST_NAME):
        return path.parent
    if not path.is_dir():
        raise InfoError(f"{path}: no such session directory")
    return path


def session_info(path: Path) -> dict[str, Any]:
    """Everything `xsq info --json` prints, from metadata.yaml and session.json."""
    directory = _session_dir(path)
    try:
        meta = read_metadata_yaml(directory)
    except FileNotFoundError:
        active = sorted(p.name for p in directory.glob("*.active"))
        hint = f" (unfinished files {active}: run `xsq recover {directory}`)" if active else ""
        raise InfoError(f"{directory}: no {METADATA_NAME}{hint}") from None
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InfoError(f"{directory / METADATA_NAME}: unreadable: {exc}") from None
    try:
        manifest = read_manifest(directory).model_dump(mode="json")
    except ManifestError:
        manifest = None
    size = sum((directory / f).stat().st_size for f in meta.get("relative_file_paths", [])
               if (directory / f).exists())
    start = int(meta["starting_time"]["nanoseconds_since_epoch"])
    duration = int(meta["duration"]["nanoseconds"])
    topics = []
    for entry in meta.get("topics_with_message_count", []):
        tm = entry["topic_metadata"]
        drops = (manifest or {}).get("topics", {}).get(tm["name"], {})
        topics.append(
            {
                "name": tm["name"],
                "type": tm["type"],
                "count": int(entry["message_count"]),
                "serialization_format": tm.get("serialization_format", "cdr"),
                "lost_transport": drops.get("lost_transport", 0),
                "dropped_queue": drops.get("dropped_queue", 0),
                "dropped_disk": drops.get("dropped_disk", 0),
                "dropped_encode": drops.get("dropped_encode", 0),
            }
        )
    active = sorted(p.name for p in directory.glob("*.active"))
    return {
        "path": str(directory),
        "files": list(meta.get("relative_file_paths", [])),
        "unrecovered_files": active,
        "bag_size": size,
        "storage_identifier": meta.get("storage_identifier", ""),
        "ros_distro": meta.get("ros_distro", ""),
        "start_ns": start,
        "end_ns": start + duration,
        "duration_ns": duration,
        "message_count": int(meta.get("message_count", 0)),
        "topics": topics,
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
        drops = s.get("drops") or {}
        lines.append(
            f"Lost messages:     {drops.get('total', 0)} "
            f"(transport {drops.get('lost_transport', 0)}, "
            f"queue full {drops.get('dropped_queue', 0)}, disk {drops.get('dropped_disk', 0)}, "
            f"encoder {drops.get('dropped_encode', 0)})"
        )
        for name, t in (s.get("topics") or {}).items():
            kinds = ("lost_transport", "dropped_queue", "dropped_disk", "dropped_encode")
            if any(t.get(k, 0) for k in kinds):
                lines.append(
                    f"                   {name}: transport {t.get('lost_transport', 0)}, "
                    f"queue {t.get('dropped_queue', 0)}, disk {t.get('dropped_disk', 0)}, "
                    f"encoder {t.get('dropped_encode', 0)}"
                )
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
