"""The LeRobot v3 dataset writer: staged, appended, committed at the end.

Layout (LeRobot ``datasets/utils.py``): ``meta/info.json``, ``meta/stats.json``,
``meta/tasks.parquet``, ``meta/episodes/chunk-CCC/file-FFF.parquet``,
``data/chunk-CCC/file-FFF.parquet`` and ``videos/<key>/chunk-CCC/file-FFF.mp4``; many
episodes per file. An append never rewrites an existing data, video or episodes file: like
LeRobot when it resumes, it starts the next file index; only info.json, stats.json and
tasks.parquet are replaced.

Atomicity: everything is written into a staging directory beside the dataset
(``.<name>.xsq-staging``). A new dataset is that directory renamed into place. An append
writes a journal (``COMMIT``: the files to move) into the staging directory, then moves the
files, info.json last; the next export finishes an interrupted commit from its journal, or
removes a staging directory without one. So a killed export leaves the dataset as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# pyarrow ships no type information (its stubs are a separate, unofficial package).
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from xsquare_logger.export import ExportError
from xsquare_logger.export.episode import QUANTILES, EpisodeResult, PartResult
from xsquare_logger.export.mapping import WRENCH_NAMES, ExportMapping
from xsquare_logger.export.video import concat, same_codec, video_info

__all__ = [
    "CHUNKS_SIZE",
    "CODEBASE_VERSION",
    "DatasetWriter",
    "aggregate_stats",
    "column_stats",
    "dataset_features",
    "locked",
]

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
JOURNAL = "COMMIT"
_MB = 1024 * 1024
_NO_STATS = {"held"}  # bool flags: no numeric stats


def dataset_features(mapping: ExportMapping, frame_sizes: dict[str, tuple[int, int]]
                     ) -> dict[str, dict[str, Any]]:
    """The ``features`` of meta/info.json (``frame_sizes``: video key -> (h, w))."""
    features: dict[str, dict[str, Any]] = {}
    for key, feat in mapping.joint_features().items():
        names = mapping.joint_names(feat)
        features[key] = {"dtype": "float32", "shape": [len(names)], "names": names}
    for key in mapping.wrench_features():
        features[key] = {"dtype": "float32", "shape": [6], "names": list(WRENCH_NAMES)}
    for key in mapping.camera_features():
        h, w = frame_sizes[key]
        features[key] = {"dtype": "video", "shape": [h - h % 2, w - w % 2, 3],
                         "names": ["height", "width", "channels"]}
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"),
                       ("episode_index", "int64"), ("index", "int64"),
                       ("task_index", "int64"), ("capture_time_ns", "int64"),
                       ("held", "bool")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def column_stats(values: np.ndarray) -> dict[str, list[Any]]:
    """min/max/mean/std/count and q01..q99 over frames (axis 0), as LeRobot computes them."""
    v = np.asarray(values, np.float64)
    if v.ndim == 1:
        v = v[:, None]
    out: dict[str, list[Any]] = {
        "min": v.min(0).tolist(), "max": v.max(0).tolist(), "mean": v.mean(0).tolist(),
        "std": v.std(0).tolist(), "count": [len(v)],
    }
    for name, q in QUANTILES.items():
        out[name] = np.quantile(v, q, axis=0).tolist()
    return out


def aggregate_stats(parts: list[dict[str, list[Any]]]) -> dict[str, list[Any]]:
    """Dataset stats from episode stats: exact min/max/mean/std (parallel variance);
    quantiles as LeRobot aggregates them (lower ones the minimum, upper ones the maximum)."""
    means = np.asarray([p["mean"] for p in parts], np.float64)
    stds = np.asarray([p["std"] for p in parts], np.float64)
    counts = np.asarray([p["count"][0] for p in parts], np.float64)
    shape = (-1,) + (1,) * (means.ndim - 1)
    total = counts.sum()
    mean = (means * counts.reshape(shape)).sum(0) / total
    var = ((stds**2 + (means - mean) ** 2) * counts.reshape(shape)).sum(0) / total
    out: dict[str, list[Any]] = {
        "min": np.min([p["min"] for p in parts], axis=0).tolist(),
        "max": np.max([p["max"] for p in parts], axis=0).tolist(),
        "mean": mean.tolist(), "std": np.sqrt(var).tolist(), "count": [int(total)],
    }
    for name in QUANTILES:
        stack = np.asarray([p[name] for p in parts], np.float64)
        out[name] = (stack.min(0) if int(name[1:]) <= 50 else stack.max(0)).tolist()
    return out


def _next(chunk: int, file: int) -> tuple[int, int]:
    file += 1
    return (chunk + 1, 0) if file == CHUNKS_SIZE else (chunk, file)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One export at a time per dataset (a lock file beside it)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    path = root.parent / f".{root.name}.xsq-export.lock"
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(f"{root}: another export into this dataset is running") from None
        yield


def _fsync_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def recover(root: Path) -> str | None:
    """Finish a commit its journal describes, or drop a staging directory without one."""
    staging = root.parent / f".{root.name}.xsq-staging"
    if not staging.exists():
        return None
    journal = staging / JOURNAL
    if journal.is_file():
        for rel in json.loads(journal.read_text())["files"]:
            src = staging / rel
            if src.exists():
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, root / rel)
        shutil.rmtree(staging)
        return f"{root}: finished the commit an earlier export was stopped in"
    shutil.rmtree(staging)
    return f"{root}: removed what an earlier, stopped export had staged"


@dataclass
class _VideoFile:
    chunk: int
    file: int
    parts: list[Path] = field(default_factory=list)
    frames: int = 0
    bytes: int = 0


class DatasetWriter:
    """Appends exported episodes to a (new or existing) dataset; :meth:`commit` publishes."""

    def __init__(self, root: Path, mapping: ExportMapping) -> None:
        self.root = root
        self.mapping = mapping
        self.staging = root.parent / f".{root.name}.xsq-staging"
        self.staging.mkdir(parents=True)
        self.new = not (root / "meta" / "info.json").is_file()
        if not self.new and not (root / "meta" / "episodes").is_dir():
            raise ExportError(f"{root}: meta/info.json without meta/episodes: not a dataset "
                              "this exporter can append to")
        self.info: dict[str, Any] | None = None
        self.tasks: dict[str, int] = {}
        self.stats: dict[str, dict[str, list[Any]]] = {}
        self.episode_stats: list[dict[str, dict[str, list[Any]]]] = []
        self.episode_rows: list[dict[str, Any]] = []
        self.written: list[str] = []
        self._total_episodes = 0
        self._total_frames = 0
        self._data = (0, 0)
        self._episodes_file = (0, 0)
        self._videos: dict[str, _VideoFile] = {}
        self._data_writer: pq.ParquetWriter | None = None
        self._data_bytes = 0
        if not self.new:
            self._load_existing()

    # ------------------------------------------------------------------ existing dataset
    def _load_existing(self) -> None:
        info = json.loads((self.root / "meta" / "info.json").read_text())
        if info.get("codebase_version") != CODEBASE_VERSION:
            raise ExportError(f"{self.root}: codebase_version "
                              f"{info.get('codebase_version')!r}, this exporter writes "
                              f"{CODEBASE_VERSION}")
        if info.get("fps") != self.mapping.fps:
            raise ExportError(f"{self.root}: the dataset is at {info.get('fps')} fps, the "
                              f"mapping at {self.mapping.fps}")
        self.info = info
        self._total_episodes = int(info["total_episodes"])
        self._total_frames = int(info["total_frames"])
        tasks = pq.read_table(self.root / "meta" / "tasks.parquet").to_pydict()
        self.tasks = dict(zip(tasks["task"], tasks["task_index"], strict=True))
        stats_path = self.root / "meta" / "stats.json"
        self.stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            return
        table = pq.read_table(files[-1])
        last = table.slice(table.num_rows - 1).to_pylist()[0]
        self._episodes_file = _next(last["meta/episodes/chunk_index"],
                                    last["meta/episodes/file_index"])
        self._data = _next(last["data/chunk_index"], last["data/file_index"])
        for key in self._video_keys():
            self._videos[key] = _VideoFile(*_next(last[f"videos/{key}/chunk_index"],
                                                  last[f"videos/{key}/file_index"]))

    def _video_keys(self) -> list[str]:
        return list(self.mapping.camera_features())

    # ------------------------------------------------------------------------- adding
    def _features(self, part: PartResult) -> dict[str, dict[str, Any]]:
        if self.info is None:
            sizes = {}
            for key, mp4 in part.videos.items():
                vi = video_info(Path(mp4), self.mapping.fps)
                sizes[key] = (int(vi["video.height"]), int(vi["video.width"]))  # type: ignore[call-overload]
            made = dataset_features(self.mapping, sizes)
            for key, mp4 in part.videos.items():
                made[key]["info"] = video_info(Path(mp4), self.mapping.fps)
            self.info = {
                "codebase_version": CODEBASE_VERSION,
                "robot_type": self.mapping.robot_type,
                "total_episodes": 0, "total_frames": 0, "total_tasks": 0,
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB,
                "video_files_size_in_mb": VIDEO_FILE_MB, "fps": self.mapping.fps,
                "splits": {}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": made,
            }
        features: dict[str, dict[str, Any]] = self.info["features"]
        return features

    def _check_features(self, features: dict[str, dict[str, Any]], table: pa.Table,
                        part: PartResult) -> None:
        expected = {k for k, f in features.items() if f["dtype"] != "video"}
        have = set(table.column_names) | {"episode_index", "index", "task_index"}
        if expected != have:
            raise ExportError(f"{self.root}: the dataset's features ({', '.join(sorted(expected))})"
                              f" differ from this mapping's ({', '.join(sorted(have))})")
        for key in part.videos:
            if key not in features:
                raise ExportError(f"{self.root}: the dataset has no camera {key}")

    def add(self, result: EpisodeResult) -> list[int]:
        """Append every part of ``result``; return the dataset episode indexes given."""
        given = []
        for part in result.parts:
            given.append(self._add_part(result, part))
        return given

    def _add_part(self, result: EpisodeResult, part: PartResult) -> int:
        table = pq.read_table(part.table)
        features = self._features(part)
        self._check_features(features, table, part)
        episode = self._total_episodes
        first = self._total_frames
        n = part.frames
        if result.task not in self.tasks:
            self.tasks[result.task] = len(self.tasks)
        task_index = self.tasks[result.task]
        table = table.append_column("episode_index", pa.array(np.full(n, episode, np.int64)))
        table = table.append_column("index", pa.array(np.arange(first, first + n, dtype=np.int64)))
        table = table.append_column("task_index", pa.array(np.full(n, task_index, np.int64)))
        order = [k for k, f in features.items() if f["dtype"] != "video"]
        table = table.select(order)
        self._write_data(table)

        stats: dict[str, dict[str, list[Any]]] = {}
        for key in order:
            if key in _NO_STATS:
                continue
            column = table.column(key).combine_chunks()
            if isinstance(column.type, pa.FixedSizeListType):
                values = column.flatten().to_numpy().reshape(n, column.type.list_size)
            else:
                values = column.to_numpy()
            stats[key] = column_stats(values)
        for key, st in part.image_stats.items():
            stats[key] = st
        self.episode_stats.append(stats)

        row: dict[str, Any] = {
            "episode_index": episode, "tasks": [result.task], "length": n,
            "data/chunk_index": self._data[0], "data/file_index": self._data[1],
            "dataset_from_index": first, "dataset_to_index": first + n,
        }
        for vkey, mp4 in part.videos.items():
            vf = self._video_file(vkey, Path(mp4))
            row[f"videos/{vkey}/chunk_index"] = vf.chunk
            row[f"videos/{vkey}/file_index"] = vf.file
            row[f"videos/{vkey}/from_timestamp"] = vf.frames / self.mapping.fps
            row[f"videos/{vkey}/to_timestamp"] = (vf.frames + n) / self.mapping.fps
            vf.parts.append(Path(mp4))
            vf.frames += n
            vf.bytes += Path(mp4).stat().st_size
        row["meta/episodes/chunk_index"] = self._episodes_file[0]
        row["meta/episodes/file_index"] = self._episodes_file[1]
        for key, st in stats.items():
            for name, value in st.items():
                row[f"stats/{key}/{name}"] = value
        row.update({
            "source/robot_id": result.robot_id, "source/session_id": result.session_id,
            "source/session": result.source,
            "source/episode_index": result.episode_index, "source/part": part.part,
            "source/operator": result.operator, "source/outcome": result.outcome or "",
            "source/start_ns": part.start_ns, "source/end_ns": part.end_ns,
            "source/window_start_ns": result.window_start_ns,
            "source/window_end_ns": result.window_end_ns,
            "source/tap_start_ns": result.tap_start_ns, "source/tap_end_ns": result.tap_end_ns,
            "source/remuxed": sorted(k for k, v in part.remuxed.items() if v),
            "source/notes": result.notes,
        })
        self.episode_rows.append(row)
        self._total_episodes += 1
        self._total_frames += n
        return episode

    def _write_data(self, table: pa.Table) -> None:
        if self._data_writer is not None and self._data_bytes > DATA_FILE_MB * _MB:
            self._data_writer.close()
            self._data_writer = None
            self._data = _next(*self._data)
        if self._data_writer is None:
            rel = DATA_PATH.format(chunk_index=self._data[0], file_index=self._data[1])
            path = self.staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            self._data_bytes = 0
            self.written.append(rel)
        self._data_writer.write_table(table)  # one row group per episode
        self._data_bytes += table.nbytes

    def _video_file(self, key: str, mp4: Path) -> _VideoFile:
        vf = self._videos.get(key)
        if vf is None:
            vf = self._videos[key] = _VideoFile(0, 0)
        if vf.parts and (vf.bytes + mp4.stat().st_size > VIDEO_FILE_MB * _MB
                         or not same_codec(vf.parts[0], mp4)):
            self._flush_video(key, vf)
            vf = self._videos[key] = _VideoFile(*_next(vf.chunk, vf.file))
        return vf

    def _flush_video(self, key: str, vf: _VideoFile) -> None:
        if not vf.parts:
            return
        rel = VIDEO_PATH.format(video_key=key, chunk_index=vf.chunk, file_index=vf.file)
        out = self.staging / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        concat(vf.parts, out, self.mapping.fps)
        for p in vf.parts:
            p.unlink()
        vf.parts.clear()
        self.written.append(rel)

    # ------------------------------------------------------------------------- commit
    def commit(self) -> int:
        """Publish the staged episodes; return the bytes added. No episode: nothing changes."""
        if not self.episode_rows:
            self.abort()
            return 0
        assert self.info is not None
        if self._data_writer is not None:
            self._data_writer.close()
        for key, vf in self._videos.items():
            self._flush_video(key, vf)
        rel = EPISODES_PATH.format(chunk_index=self._episodes_file[0],
                                   file_index=self._episodes_file[1])
        (self.staging / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), self.staging / rel)
        self.written.append(rel)
        all_stats = [self.stats] if self.stats else []
        keys = set(self.episode_stats[0])
        self.stats = {
            k: aggregate_stats([*(s[k] for s in all_stats if k in s),
                                *(e[k] for e in self.episode_stats)])
            for k in sorted(keys)
        }
        info = dict(self.info)
        info.update(total_episodes=self._total_episodes, total_frames=self._total_frames,
                    total_tasks=len(self.tasks),
                    splits={"train": f"0:{self._total_episodes}"})
        tasks = sorted(self.tasks.items(), key=lambda kv: kv[1])
        # pandas reads this as LeRobot writes it: a frame indexed by the task string.
        pandas_meta = {
            "index_columns": ["task"], "column_indexes": [],
            "columns": [
                {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                 "numpy_type": "int64", "metadata": None},
                {"name": "task", "field_name": "task", "pandas_type": "unicode",
                 "numpy_type": "object", "metadata": None},
            ],
            "creator": {"library": "xsquare_logger"}, "pandas_version": "2.2.0",
        }
        schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                           metadata={b"pandas": json.dumps(pandas_meta).encode()})
        pq.write_table(pa.table({"task_index": [i for _, i in tasks],
                                 "task": [t for t, _ in tasks]}, schema=schema),
                       self.staging / "meta" / "tasks.parquet")
        _fsync_write(self.staging / "meta" / "stats.json",
                     json.dumps(self.stats, indent=2).encode())
        _fsync_write(self.staging / "meta" / "info.json", json.dumps(info, indent=2).encode())
        meta = ["meta/tasks.parquet", "meta/stats.json", "meta/info.json"]
        added = sum((self.staging / r).stat().st_size for r in self.written)
        if self.new:
            if self.root.exists():
                self.root.rmdir()  # an empty directory (anything else was refused earlier)
            for leftover in self.staging.glob("job*"):
                leftover.unlink()
            os.rename(self.staging, self.root)
            return added
        for leftover in self.staging.glob("job*"):
            leftover.unlink()
        _fsync_write(self.staging / JOURNAL,
                     json.dumps({"files": [*self.written, *meta]}).encode())
        recover(self.root)
        return added

    def abort(self) -> None:
        if self._data_writer is not None:
            with contextlib.suppress(Exception):
                self._data_writer.close()
        shutil.rmtree(self.staging, ignore_errors=True)

