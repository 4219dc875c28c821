"""``OUT`` = ``s3://BUCKET/PREFIX``: the dataset written locally, then uploaded, info.json last.

S3 has no rename, so the commit is the order of the PUTs: every new or changed file first
(data, videos, ``meta/tasks.parquet``, ``meta/stats.json``, ``meta/episodes/...``), then
``meta/info.json``, which is what makes a dataset and carries its totals. Data and video
files of an append get new file indexes (as locally), so nothing a committed info.json
refers to is overwritten.

An append first downloads the dataset's ``meta/`` (small: no data or video) into a local
mirror, runs the ordinary local export into it (:func:`~.run.export_selected`), and uploads
what changed. A run stopped between its PUTs can leave ``meta/episodes`` files past the
committed totals: the next run deletes them (they describe episodes info.json never
counted) before it reads the dataset; data and video files past them are overwritten.
Under a prefix without info.json, objects only in ``meta/``, ``data/`` and ``videos/`` are
the leftovers of a stopped first export and are deleted; anything else is refused.

The S3 client is the uploader's (:class:`~xsquare_logger.upload.backends.s3.S3Backend`):
the same credentials chain and one-line errors; each PUT carries Content-MD5, which the
server checks. Two exports into one S3 dataset at a time are not detected: do not.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq  # type: ignore[import-untyped]

from xsquare_logger.config.upload import S3Config
from xsquare_logger.export import ExportError
from xsquare_logger.export.episode import EpisodeResult
from xsquare_logger.export.mapping import ExportMapping
from xsquare_logger.export.run import ExportSummary, Runner, export_selected
from xsquare_logger.session.fsutil import sha256_file
from xsquare_logger.session.manifest import TaskEntry
from xsquare_logger.upload.backends.s3 import S3Backend

__all__ = ["export_to_s3"]

_LAYOUT = ("meta/", "data/", "videos/")
_INFO = "meta/info.json"
_META = ("meta/info.json", "meta/stats.json", "meta/tasks.parquet")


def _order(rel: str) -> tuple[int, str]:
    """Upload order: payload, then tasks and stats, then episodes, info.json last."""
    if rel == _INFO:
        return (4, rel)
    if rel.startswith("meta/episodes/"):
        return (3, rel)
    if rel.startswith("meta/"):
        return (2, rel)
    return (1, rel)


class _Remote:
    def __init__(self, url: str, s3: S3Config | None) -> None:
        path = url[len("s3://"):].strip("/")
        bucket, _, prefix = path.partition("/")
        if not bucket or not prefix:
            raise ExportError(f"{url}: names no dataset folder (want s3://BUCKET/PATH)")
        self.url = f"s3://{bucket}/{prefix}"
        self.backend = S3Backend(self.url, s3 or S3Config())

    def key(self, rel: str) -> str:
        return f"{self.backend.prefix}/{rel}"

    def list(self) -> list[str]:
        root = self.backend.prefix + "/"
        return sorted(k[len(root):] for k in self.backend.list_keys(root))

    def pull(self, rel: str, local: Path) -> None:
        data = self.backend.get(self.key(rel))
        if data is None:
            raise ExportError(f"{self.url}/{rel}: vanished while reading the dataset")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)

    def push(self, rel: str, local: Path) -> None:
        data = local.read_bytes()
        self.backend.put(self.key(rel), data, hashlib.md5(data).hexdigest(),
                         hashlib.sha256(data).hexdigest())


def _pull_meta(remote: _Remote, mirror: Path) -> dict[str, str]:
    """Mirror the dataset's meta/ (pruning a stopped run's leftovers); rel -> sha256."""
    rels = remote.list()
    if _INFO not in rels:
        if rels and all(r.startswith(_LAYOUT) for r in rels):
            for rel in rels:  # a first export that stopped before its info.json
                remote.backend.delete(remote.key(rel))
        elif rels:
            raise ExportError(f"{remote.url}: not empty and not a LeRobot dataset; "
                              "not writing into it")
        return {}
    pulled: dict[str, str] = {}
    for rel in _META:
        if rel in rels:
            remote.pull(rel, mirror / rel)
    total = int(json.loads((mirror / _INFO).read_text())["total_episodes"])
    for rel in (r for r in rels if r.startswith("meta/episodes/") and r.endswith(".parquet")):
        remote.pull(rel, mirror / rel)
        first = pq.read_table(mirror / rel, columns=["episode_index"]).column(0)
        if len(first) == 0 or int(first[0].as_py()) >= total:  # never committed
            (mirror / rel).unlink()
            remote.backend.delete(remote.key(rel))
    for path in mirror.rglob("*"):
        if path.is_file():
            pulled[str(path.relative_to(mirror))] = sha256_file(path)
    return pulled


def export_to_s3(
    url: str,
    chosen: list[tuple[str, TaskEntry]],
    mapping: ExportMapping,
    workers: int | None = None,
    progress: Callable[[EpisodeResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    runner: Runner | None = None,
    filtered: dict[str, int] | None = None,
    s3: S3Config | None = None,
) -> ExportSummary:
    """:func:`~.run.export_selected` into the dataset at ``url`` (new or appended to).

    The local copy lives in a temporary directory (``$TMPDIR``) for the run.

    Raises:
        ExportError: as the local export, or the prefix holds something else.
        BackendError: the bucket refused or failed (one line); the dataset in S3 is then
            as before, apart from new files its info.json does not count.
    """
    remote = _Remote(url, s3)
    with tempfile.TemporaryDirectory(prefix="xsq-export-") as tmp:
        mirror = Path(tmp) / "dataset"
        before = _pull_meta(remote, mirror)
        summary = export_selected(mirror, chosen, mapping, workers, progress, on_start,
                                  runner, filtered)
        if summary.written:
            files = sorted((str(p.relative_to(mirror)) for p in mirror.rglob("*")
                            if p.is_file()), key=_order)
            for rel in files:
                if before.get(rel) != sha256_file(mirror / rel):
                    remote.push(rel, mirror / rel)
    return summary
