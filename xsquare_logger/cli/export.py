"""``xsq export lerobot OUT SESSION...``: tagged episodes as a LeRobot v3 dataset.

Exit status: 0 (also when every episode was skipped: the summary says why), 2 on a user
error (one line: unreadable or refused session, bad mapping, busy dataset); the dataset is
then left as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="export tagged episodes as a training dataset")
    formats = p.add_subparsers(dest="export_format", required=True, metavar="FORMAT")
    lr = formats.add_parser(
        "lerobot",
        help="LeRobot v3 dataset (new, or appended to)",
        description="Export the episodes of SESSION... that pass the filters into the LeRobot "
        "v3 dataset OUT (created, or appended to without rewriting it). A killed export "
        "leaves OUT as it was. See docs/export.md.",
    )
    lr.add_argument("out", type=Path, metavar="OUT", help="dataset directory")
    lr.add_argument("sessions", nargs="+", metavar="SESSION", help="session directories")
    lr.add_argument("--task", help="only episodes of this task")
    lr.add_argument("--outcome", default="success",
                    help="only episodes with this outcome (default success; 'any' for all)")
    lr.add_argument("--operator", help="only episodes of this operator")
    lr.add_argument("--since", metavar="DATE", help="only episodes started at/after (UTC)")
    lr.add_argument("--mapping", type=Path, metavar="FILE",
                    help="mapping file (default config/export/humanoid.yaml)")
    lr.add_argument("--workers", type=int, metavar="N", help="processes (default: cores)")


def run(args: argparse.Namespace) -> int:
    from xsquare_logger.export import ExportError
    from xsquare_logger.export.mapping import load_mapping
    from xsquare_logger.export.run import EpisodeFilter, parse_since, run_export

    if args.workers is not None and args.workers < 1:
        raise ExportError(f"--workers must be >= 1, got {args.workers}")
    mapping = load_mapping(args.mapping)
    flt = EpisodeFilter(
        task=args.task,
        outcome=None if args.outcome == "any" else args.outcome,
        operator=args.operator,
        since_ns=parse_since(args.since) if args.since else None,
    )
    bar = _Bar()
    try:
        summary = run_export(args.out, list(args.sessions), mapping, flt, args.workers,
                             progress=bar.advance, on_start=bar.start)
    finally:
        bar.stop()
    print(f"{args.out}: {summary.written} episodes written (from {summary.sources} source "
          f"episodes), {summary.frames} frames, {summary.hours:.3f} h, "
          f"{summary.bytes_added / 1e6:.1f} MB added")
    for session, index, why in summary.skipped:
        print(f"  skipped {session} episode {index}: {why}")
    for session, index, note in summary.notes:
        print(f"  {session} episode {index}: {note}")
    if summary.filtered:
        print("  not selected: " + ", ".join(f"{n} {why}" for why, n in
                                             sorted(summary.filtered.items())))
    return 0


class _Bar:
    """A rich progress bar over episodes on a terminal; nothing otherwise."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None

    def start(self, total: int) -> None:
        if not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._progress = Progress("[progress.description]{task.description}", BarColumn(),
                                  MofNCompleteColumn(), TimeRemainingColumn(),
                                  console=Console(stderr=True))
        self._progress.start()
        self._task = self._progress.add_task("episodes", total=total)

    def advance(self, _result: object) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
