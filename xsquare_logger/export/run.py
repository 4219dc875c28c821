"""One export run: pick the episodes, run :func:`export_episode` on a process pool, commit.

Episodes are independent, so they run in a local ``ProcessPoolExecutor`` (default: one
worker per core); results are added to the dataset in the order the episodes were listed
(so the dataset is the same whatever the worker count). Any :class:`ExportError` (a refused
session) stops the run and nothing is published.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsquare_logger.export import ExportError
from xsquare_logger.export.dataset import DatasetWriter, locked, recover
from xsquare_logger.export.episode import (
    EpisodeJob,
    EpisodeResult,
    export_episode,
    is_discarded,
)
from xsquare_logger.export.mapping import ExportMapping
from xsquare_logger.export.source import open_source
from xsquare_logger.export.video import codec_for
from xsquare_logger.session.manifest import TaskEntry

__all__ = ["EpisodeFilter", "ExportSummary", "Runner", "check_output", "export_selected",
           "parse_since", "run_export", "select_episodes", "select_from_catalog"]

_NS = 1_000_000_000


@dataclass(frozen=True)
class EpisodeFilter:
    """Which tagged episodes are exported (None = any)."""

    task: str | None = None
    outcome: str | None = "success"
    operator: str | None = None
    since_ns: int | None = None

    def why_not(self, t: TaskEntry) -> str | None:
        if t.end_ns is None:
            return "not ended"
        if is_discarded(t):
            return "discarded"
        if self.task is not None and t.task != self.task:
            return "other task"
        if self.outcome is not None and t.outcome != self.outcome:
            return f"outcome {t.outcome}"
        if self.operator is not None and t.operator != self.operator:
            return "other operator"
        if self.since_ns is not None and t.start_ns < self.since_ns:
            return "before --since"
        return None


def parse_since(text: str) -> int:
    """``YYYY-MM-DD`` or an ISO date-time (UTC unless it says otherwise) -> ns."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"--since {text!r}: not a date (YYYY-MM-DD or ISO date-time)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * _NS)


@dataclass
class ExportSummary:
    written: int = 0  # dataset episodes added (a split episode counts its parts)
    sources: int = 0  # source episodes with something written
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # session, episode, why
    frames: int = 0
    seconds: float = 0.0
    bytes_added: int = 0
    filtered: dict[str, int] = field(default_factory=dict)  # reason -> episodes not selected
    notes: list[tuple[str, int, str]] = field(default_factory=list)
    requests: int = 0  # network requests of the per-episode reads (0 for local sessions)
    bytes_fetched: int = 0  # bytes those requests fetched

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def select_episodes(specs: Iterable[str], flt: EpisodeFilter
                    ) -> tuple[list[tuple[str, TaskEntry]], dict[str, int]]:
    """The (session spec, episode) pairs to export, and how many were filtered out why."""
    chosen: list[tuple[str, TaskEntry]] = []
    filtered: dict[str, int] = {}
    for spec in specs:
        source = open_source(spec)
        for t in source.manifest.tasks:
            reason = flt.why_not(t)
            if reason is None:
                chosen.append((spec, t))
            else:
                filtered[reason] = filtered.get(reason, 0) + 1
    return chosen, filtered


#: Upload states whose session folder is complete in the bucket (session.json written).
_IN_BUCKET = ("verified", "deleted")


def select_from_catalog(rows: Iterable[dict[str, Any]]
                        ) -> tuple[list[tuple[str, TaskEntry]], dict[str, int]]:
    """The (session spec, episode) pairs of the floor catalog's episode rows (``EpisodeRow``
    as JSON, already filtered by the catalog), and how many were left out why.

    A row's ``remote`` is the session's folder (``s3://...`` or ``file://PATH``); its
    ``start_ns``/``end_ns`` are the episode's time range. Rows of sessions not (yet)
    complete in the bucket, episodes never ended and discarded episodes are left out.
    """
    chosen: list[tuple[str, TaskEntry]] = []
    filtered: dict[str, int] = {}

    def leave(reason: str) -> None:
        filtered[reason] = filtered.get(reason, 0) + 1

    for row in rows:
        remote = str(row.get("remote") or "")
        if not remote or row.get("upload_state") not in _IN_BUCKET:
            leave("not in the bucket yet")
            continue
        task = TaskEntry(episode_index=int(row["episode_index"]), task=str(row["task"]),
                         start_ns=int(row["start_ns"]), end_ns=row.get("end_ns"),
                         outcome=row.get("outcome"), operator=str(row.get("operator") or ""),
                         instruction=str(row.get("instruction") or ""))
        if task.end_ns is None:
            leave("not ended")
        elif is_discarded(task) or row.get("discarded"):
            leave("discarded")
        else:
            spec = remote[len("file://"):] if remote.startswith("file://") else remote
            chosen.append((spec, task))
    return chosen, filtered


#: Runs the jobs and yields their results in job order (local pool, Ray, ...).
Runner = Callable[[list[EpisodeJob]], Iterable[EpisodeResult]]


def run_export(
    out: Path,
    specs: list[str],
    mapping: ExportMapping,
    flt: EpisodeFilter,
    workers: int | None = None,
    progress: Callable[[EpisodeResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    runner: Runner | None = None,
) -> ExportSummary:
    """Export the selected episodes of ``specs`` into the dataset ``out`` (new or existing).

    Raises:
        ExportError: a session is unreadable or refused; the dataset is left unchanged.
    """
    check_output(out)
    chosen, filtered = select_episodes(specs, flt)
    return export_selected(out, chosen, mapping, workers, progress, on_start, runner, filtered)


def check_output(out: Path) -> None:
    """Refuse an ``OUT`` that is a file, or a non-empty directory that is not a dataset."""
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / "meta" / "info.json").is_file():
        raise ExportError(f"{out}: not empty and not a LeRobot dataset; not writing into it")


def export_selected(
    out: Path,
    chosen: list[tuple[str, TaskEntry]],
    mapping: ExportMapping,
    workers: int | None = None,
    progress: Callable[[EpisodeResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    runner: Runner | None = None,
    filtered: dict[str, int] | None = None,
) -> ExportSummary:
    """Export already chosen ``(session spec, episode)`` pairs (from :func:`select_episodes`
    or the floor catalog) into ``out``; ``runner`` defaults to the local process pool."""
    check_output(out)
    out = out.resolve()
    summary = ExportSummary(filtered=dict(filtered or {}))
    run = runner or (lambda jobs: _results(jobs, workers))
    encoder = codec_for(mapping.video_codec)
    with locked(out):
        recover(out)
        writer = DatasetWriter(out, mapping)
        try:
            jobs = [EpisodeJob(i, spec, task, mapping, str(writer.staging), encoder)
                    for i, (spec, task) in enumerate(chosen)]
            if on_start is not None:
                on_start(len(jobs))
            for result in run(jobs):
                summary.requests += result.requests
                summary.bytes_fetched += result.bytes_fetched
                if result.skipped:
                    summary.skipped.append((result.session_id, result.episode_index,
                                            result.skipped))
                else:
                    writer.add(result)
                    summary.sources += 1
                    summary.written += len(result.parts)
                    summary.frames += result.frames
                    if result.notes:
                        summary.notes.append((result.session_id, result.episode_index,
                                              result.notes))
                if progress is not None:
                    progress(result)
            summary.seconds = summary.frames / mapping.fps
            summary.bytes_added = writer.commit()
        except BaseException:
            writer.abort()
            raise
    return summary


def _results(jobs: list[EpisodeJob], workers: int | None) -> Iterable[EpisodeResult]:
    """Results in job order; one worker (or one job) runs in this process."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield export_episode(job)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures: list[Future[EpisodeResult]] = [pool.submit(export_episode, j) for j in jobs]
        try:
            for f in futures:
                yield f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
