"""``--ray ADDRESS``: the per-episode function as Ray tasks, for more than one machine.

The same :func:`~xsquare_logger.export.episode.export_episode` runs in a Ray task; the task
writes into a temporary directory on its own node and returns the staged files' bytes with
the result (through Ray's object store), so no file system is shared with the driver. The
driver writes them into its staging directory and adds the results in job order, exactly
as after the local pool: the dataset is the same.

Workers read sessions by their spec, so an ``s3://`` session needs the S3 settings in the
workers' environment (``AWS_*``, as for the uploader); they are never sent through Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from xsquare_logger.errors import XsqError, one_line
from xsquare_logger.export import ExportError
from xsquare_logger.export.episode import EpisodeJob, EpisodeResult, export_episode
from xsquare_logger.export.run import Runner

__all__ = ["ray_runner"]

_IN_FLIGHT_PER_CPU = 2  # tasks submitted ahead per cluster CPU (bounds driver memory)


def _task(job: EpisodeJob) -> tuple[EpisodeResult, dict[str, bytes]]:
    """Run one job in a Ray worker; return its result and the files it staged (by name)."""
    with tempfile.TemporaryDirectory(prefix="xsq-export-") as tmp:
        result = export_episode(dataclasses.replace(job, staging=tmp))
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    return result, files


def _land(result: EpisodeResult, files: dict[str, bytes], staging: Path) -> EpisodeResult:
    """Write a task's files into the driver's staging directory; point the result at them."""
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (staging / name).write_bytes(data)
    for part in result.parts:
        part.table = str(staging / Path(part.table).name)
        part.videos = {k: str(staging / Path(v).name) for k, v in part.videos.items()}
    return result


def _one_line_cause(exc: BaseException) -> ExportError:
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, XsqError):
        return ExportError(str(cause))
    return ExportError(f"a Ray task failed: {one_line(cause)}")


@contextlib.contextmanager
def ray_runner(address: str) -> Iterator[Runner]:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://...``;
    ``local`` starts a private one on this machine, stopped at the end) and yield a runner.

    Raises:
        ExportError: ray is not installed, or the cluster cannot be reached.
    """
    try:
        import ray
    except ImportError:
        raise ExportError("--ray needs the ray extra: pip install 'xsquare_logger[ray]'") from None
    options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False,
                               "configure_logging": True}
    if address == "local":
        # A private instance: node address 127.0.0.1, no dashboard (a web server). Ray's
        # core servers still listen on every interface (docs/export.md, Ray): not settable.
        options.update(include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExportError(f"--ray {address}: cannot connect: {one_line(exc)}") from None
    try:
        remote = ray.remote(_task)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))

        def run(jobs: list[EpisodeJob]) -> Iterable[EpisodeResult]:
            window = cpus * _IN_FLIGHT_PER_CPU
            pending: deque[tuple[EpisodeJob, Any]] = deque()
            todo = iter(jobs)
            try:
                for job in todo:
                    pending.append((job, remote.remote(job)))
                    if len(pending) >= window:
                        yield _get(ray, *pending.popleft())
                while pending:
                    yield _get(ray, *pending.popleft())
            finally:
                for _job, ref in pending:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref)

        yield run
    finally:
        ray.shutdown()


def _get(ray: Any, job: EpisodeJob, ref: Any) -> EpisodeResult:
    try:
        result, files = ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise _one_line_cause(exc) from None
    return _land(result, files, Path(job.staging))
