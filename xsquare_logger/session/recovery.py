"""Session-level crash recovery: repair ``.active`` files, rebuild metadata.yaml and session.json.

A recorder holds an exclusive lock on ``<session>/.recording.lock`` while it
writes; recovery skips any session whose lock is held, so starting a second
recorder never touches a live session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import yaml
from mcap.reader import make_reader

from xsquare_logger import __version__
from xsquare_logger.bag.recover import RecoveryError, recover_mcap
from xsquare_logger.errors import XsqError
from xsquare_logger.session.counters import TopicStats
from xsquare_logger.session.fsutil import SessionLock, sha256_file
from xsquare_logger.session.index import IndexedTopic, SessionIndex
from xsquare_logger.session.manifest import (
    FileEntry,
    ManifestError,
    SessionManifest,
    read_manifest,
)

__all__ = [
    "RecoveryFailed",
    "recover_data_root",
    "recover_path",
    "recover_session",
]

_FILE_RE = re.compile(r"_(\d+)\.mcap$")


class RecoveryFailed(XsqError):
    """Recovery could not proceed; the message says which file and why."""


def _file_order(p: Path) -> tuple[int, str]:
    m = _FILE_RE.search(p.name)
    return (int(m.group(1)) if m else 1 << 30, p.name)




def _qos_list(text: str) -> list[dict[str, object]]:
    if not text:
        return []
    loaded = yaml.safe_load(text)
    return list(loaded) if isinstance(loaded, list) else []


def rebuild_indexes(directory: Path, reason: str) -> SessionManifest:
    """Rewrite metadata.yaml and session.json from the complete MCAP files in ``directory``.

    What is in the files is the truth for ``written``; the other counters (they
    include the losses) are kept from the last session.json.
    """
    files = sorted(directory.glob("*.mcap"), key=_file_order)
    in_files: dict[str, IndexedTopic] = {}
    entries: list[FileEntry] = []
    for path in files:
        with open(path, "rb") as fh:
            summary = make_reader(fh).get_summary()
        if summary is None or summary.statistics is None:
            raise RecoveryFailed(f"{path}: no summary section; not a finished MCAP file")
        stats = summary.statistics
        for cid, channel in summary.channels.items():
            schema = summary.schemas.get(channel.schema_id)
            topic = in_files.setdefault(
                channel.topic,
                IndexedTopic(
                    TopicStats(channel.topic, schema.name if schema else ""),
                    type_hash=channel.metadata.get("topic_type_hash", ""),
                    qos=_qos_list(channel.metadata.get("offered_qos_profiles", "")),
                ),
            )
            topic.stats.written += stats.channel_message_counts.get(cid, 0)
        start, end = stats.message_start_time, stats.message_end_time
        entries.append(
            FileEntry(
                path=path.name,
                size=path.stat().st_size,
                sha256=sha256_file(path),
                message_count=stats.message_count,
                start_ns=start,
                end_ns=end,
            )
        )
    try:
        manifest = read_manifest(directory)
    except ManifestError:
        robot, _, _ = directory.name.partition("_")
        manifest = SessionManifest(
            session_id=directory.name,
            robot_id=robot or "unknown",
            software_version=__version__,
            config_digest="unknown",
        )
    topics: list[IndexedTopic] = []
    for name, entry in manifest.topics.items():
        found = in_files.pop(name, None)
        live = entry.stats(name)
        if found is not None:
            live.written = found.stats.written
            topics.append(IndexedTopic(live, found.type_hash, found.qos))
        else:  # a raw camera recorded compressed, or a topic with nothing in the files
            live.written = 0
            topics.append(IndexedTopic(live, compressed_to=entry.compressed_to, in_bag=False))
    for found in in_files.values():
        found.stats.received = found.stats.written
        topics.append(found)
    if manifest.state == "recording":
        manifest.state = "recovered"
        manifest.close_reason = reason
    if manifest.ended_ns is None and entries:
        manifest.ended_ns = max(e.end_ns for e in entries)
    return SessionIndex(manifest, topics, entries).write(directory)


def recover_session(directory: Path) -> Iterator[str]:
    """Recover every ``.active`` file in a session directory and rebuild its indexes."""
    lock = SessionLock(directory)
    if not lock.acquire():
        raise RecoveryFailed(f"{directory}: a recorder is still writing this session")
    try:
        for active in sorted(directory.glob("*.mcap.active"), key=lambda p: p.name):
            try:
                res = recover_mcap(active)
            except RecoveryError as exc:
                # An empty/headerless file holds no data: set it aside, never delete it.
                bad = active.with_name(active.name + ".corrupt")
                active.rename(bad)
                yield f"{active}: unrecoverable ({exc}); kept as {bad.name}"
                continue
            yield (
                f"{active.name} -> {Path(res.out_path).name}: {res.messages_recovered} messages "
                f"recovered, {res.chunks_dropped} incomplete chunk(s) dropped"
            )
        manifest = rebuild_indexes(directory, "recovered after crash")
        total = sum(f.message_count for f in manifest.files)
        files = len(manifest.files)
        yield f"{directory}: {files} file(s), {total} messages, state {manifest.state}"
    finally:
        lock.release()


def _needs_recovery(directory: Path) -> bool:
    if any(directory.glob("*.mcap.active")):
        return True
    try:
        return read_manifest(directory).state == "recording"
    except ManifestError:
        return False


def recover_path(path: Path) -> Iterator[str]:
    """`xsq recover PATH`: a session directory or one ``.mcap.active`` file in it."""
    if path.is_file():
        if not path.name.endswith(".active"):
            raise RecoveryFailed(f"{path}: not an unfinished (.active) MCAP file")
        path = path.parent
    if not path.is_dir():
        raise RecoveryFailed(f"{path}: no such session directory or file")
    if not _needs_recovery(path):
        yield f"{path}: nothing to recover"
        return
    yield from recover_session(path)


def recover_data_root(root: Path) -> Iterator[str]:
    """Recover every unfinished, unlocked session under ``root`` (run at recorder start)."""
    if not root.is_dir():
        return
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        if not _needs_recovery(directory):
            continue
        try:
            yield from recover_session(directory)
        except RecoveryFailed as exc:
            yield f"skipped: {exc}"
