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
    lr.add_argument("out", metavar="OUT",
                    help="dataset directory, or s3://BUCKET/PATH (uploaded, info.json last)")
    lr.add_argument("sessions", nargs="*", metavar="SESSION",
                    help="session directories or s3:// session folders (none with --floor/--db)")
    lr.add_argument("--task", help="only episodes of this task")
    lr.add_argument("--outcome", default="success",
                    help="only episodes with this outcome (default success; 'any' for all)")
    lr.add_argument("--operator", help="only episodes of this operator")
    lr.add_argument("--robot", help="only episodes of this robot (with --floor/--db)")
    lr.add_argument("--since", metavar="DATE", help="only episodes started at/after (UTC)")
    cat = lr.add_argument_group("from the floor catalog (instead of SESSION...)")
    cat.add_argument("--floor", metavar="URL", help="floor service, e.g. http://floor:8600")
    cat.add_argument("--token", help="reader token for --floor (default: $XSQ_FLOOR_TOKEN)")
    cat.add_argument("--db", metavar="URL", help="the catalog database itself "
                     "(sqlite:///PATH or postgresql://...)")
    lr.add_argument("--mapping", type=Path, metavar="FILE",
                    help="mapping file (default config/export/humanoid.yaml)")
    lr.add_argument("--workers", type=int, metavar="N", help="processes (default: cores)")
    lr.add_argument("--ray", metavar="ADDRESS",
                    help="run the episodes as Ray tasks on this cluster (auto, HOST:PORT, "
                         "ray://HOST:PORT; local = a private instance on this machine)")


def run(args: argparse.Namespace) -> int:
    from contextlib import AbstractContextManager, nullcontext

    from xsquare_logger.export import ExportError

    try:
        from xsquare_logger.export.mapping import load_mapping
        from xsquare_logger.export.run import (
            EpisodeFilter,
            Runner,
            check_output,
            export_selected,
            parse_since,
            select_episodes,
        )
    except ModuleNotFoundError as exc:
        # pyarrow and PyAV are the [export] extra: a robot install does not carry them.
        raise ExportError(f"the export extra is not installed ({exc.name}): "
                          "pip install 'xsquare_logger[export]'") from None

    if args.workers is not None and args.workers < 1:
        raise ExportError(f"--workers must be >= 1, got {args.workers}")
    if args.ray is not None and args.workers is not None:
        raise ExportError("--workers is for the local pool; with --ray the cluster decides")
    catalog = bool(args.floor or args.db)
    if catalog and args.sessions:
        raise ExportError("give SESSION... or --floor/--db (the catalog's episodes), not both")
    if not catalog and not args.sessions:
        raise ExportError("nothing to export: give SESSION... or --floor URL / --db URL")
    if args.robot and not catalog:
        raise ExportError("--robot filters the floor catalog: give --floor URL or --db URL")
    mapping = load_mapping(args.mapping)
    to_s3 = str(args.out).startswith("s3://")
    if not to_s3:
        check_output(Path(args.out))
    if catalog:
        chosen, filtered = _catalog_episodes(args)
    else:
        flt = EpisodeFilter(
            task=args.task,
            outcome=None if args.outcome == "any" else args.outcome,
            operator=args.operator,
            since_ns=parse_since(args.since) if args.since else None,
        )
        chosen, filtered = select_episodes(list(args.sessions), flt)
    runner: AbstractContextManager[Runner | None] = nullcontext(None)
    if args.ray is not None:
        from xsquare_logger.export.distributed import ray_runner

        runner = ray_runner(args.ray)
    bar = _Bar()
    try:
        with runner as run_jobs:
            if to_s3:
                from xsquare_logger.export.s3out import export_to_s3

                summary = export_to_s3(args.out, chosen, mapping, args.workers,
                                       progress=bar.advance, on_start=bar.start,
                                       runner=run_jobs, filtered=filtered)
            else:
                summary = export_selected(Path(args.out), chosen, mapping, args.workers,
                                          progress=bar.advance, on_start=bar.start,
                                          runner=run_jobs, filtered=filtered)
    finally:
        bar.stop()
    print(f"{args.out}: {summary.written} episodes written (from {summary.sources} source "
          f"episodes), {summary.frames} frames, {summary.hours:.3f} h, "
          f"{summary.bytes_added / 1e6:.1f} MB added")
    if summary.requests:
        print(f"  read {summary.bytes_fetched / 1e6:.1f} MB from S3 in {summary.requests} "
              "requests")
    for session, index, why in summary.skipped:
        print(f"  skipped {session} episode {index}: {why}")
    for session, index, note in summary.notes:
        print(f"  {session} episode {index}: {note}")
    if summary.filtered:
        print("  not selected: " + ", ".join(f"{n} {why}" for why, n in
                                             sorted(summary.filtered.items())))
    return 0


def _catalog_episodes(args: argparse.Namespace) -> tuple[list[Any], dict[str, int]]:
    """The floor catalog's episodes for the filters, by the floor CLI's own query."""
    from xsquare_logger.cli.floor import episode_rows
    from xsquare_logger.export.run import select_from_catalog

    query = argparse.Namespace(
        task=args.task, outcome=None if args.outcome == "any" else args.outcome,
        operator=args.operator, robot=args.robot, site=None, since=args.since, until=None,
        limit=sys.maxsize, floor=args.floor, token=args.token, db=args.db, data_dir=None,
        # Discarded rows too: the summary then says they were skipped and why, as an
        # export of the same sessions from disk does (select_from_catalog leaves them out).
        include_discarded=True, quality=None)
    return select_from_catalog(episode_rows(query))


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
