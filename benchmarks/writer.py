"""Writer benchmark: our McapWriter vs ``mcap.writer.Writer`` + ``flush()``, same features.

Both writers get the humanoid message mix (the sim's real CDR payloads, from
:class:`xsquare_logger.sim.frames.PayloadBank`): 3 x 1280x720 rgb8 images + camera_info at
30 Hz, joint_states and two wrenches at 500 Hz, in time order. Generation is outside the
timed region; both writers get the very same payload objects.

Same features on both sides, so the CPU figures compare like with like:

* chunks closed by size (``--chunk-size``) and at least every ``--flush-interval`` of log
  time, each flush followed by ``os.fsync`` (our recorder's crash window);
* SHA-256 of every byte of the file as written (ours: built in; official: a hashing stream
  wrapper around the file, the only way it can be had without reading the file back);
* chunk CRCs, message indexes, summary; no data-section CRC on either side (ours dropped
  it as rosbag2's writer does, issue 12; ``enable_data_crcs=False`` for the official one);
* the same zstd level: the official writer hard-codes ``zstandard.compress`` (level 3),
  so for its runs ``mcap.writer.zstandard`` is swapped for a level-``--zstd-level`` shim
  (which adopting it in production would need too).

One difference is ours by design: our writer stores a chunk uncompressed when a sample
says compression would save less than 25% (raw camera chunks), the official one
compresses every chunk, so the size columns differ on raw images.

Measured: process CPU time (user + system, from ``os.times``) of each write, in this
one process; the order of the two writers alternates between repetitions. Every file is
checked afterwards (outside the timing): its SHA-256 must equal the writer's running one
and the official reader must count every message.

``python -m benchmarks.writer --help`` for the options; ``make bench`` runs it with the
defaults via :func:`run_all`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import mcap.writer as mcap_writer_module
import zstandard
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

from xsquare_logger.bag.mcap_writer import McapWriter
from xsquare_logger.bag.schema import ros2msg_schema
from xsquare_logger.sim.frames import PayloadBank
from xsquare_logger.sim.profiles import get_profile

__all__ = ["COMPRESSIONS", "HashingStream", "Workload", "main", "make_workload", "print_table",
           "run", "run_all"]

COMPRESSIONS = ("zstd", "lz4", "none")
_OFFICIAL = {"zstd": CompressionType.ZSTD, "lz4": CompressionType.LZ4, "none": CompressionType.NONE}
_NS = 1_000_000_000
_WRITERS = ("ours", "official")


@dataclass
class Workload:
    """Time-ordered messages: ``(topic index, log_time ns, payload)`` plus the topic table."""

    topics: list[tuple[str, str]]  # (name, type)
    messages: list[tuple[int, int, bytes]]

    @property
    def payload_bytes(self) -> int:
        return sum(len(p) for _i, _t, p in self.messages)


def make_workload(seconds: float, profile: str = "humanoid") -> Workload:
    """``seconds`` of the sim profile's traffic, every stream at its rate and phase."""
    prof = get_profile(profile)
    bank = PayloadBank(prof, verify=False)
    t0 = 1_700_000_000 * _NS
    topics: list[tuple[str, str]] = []
    events: list[tuple[int, int, bytes]] = []
    for index, spec in enumerate(prof.streams):
        topics.append((spec.topic, spec.type_name))
        ring = bank[spec.topic]
        # One bytes object per ring entry (a camera ring holds 1 s of distinct frames), reused
        # cyclically, so a long run does not need gigabytes of distinct payloads.
        payloads = [ring.payload(k, t0) for k in range(len(ring))]
        period = spec.period_s
        k = 0
        while (k + spec.phase) * period < seconds:
            t = t0 + round((k + spec.phase) * period * _NS)
            events.append((index, t, payloads[k % len(payloads)]))
            k += 1
    events.sort(key=lambda e: (e[1], e[0]))
    return Workload(topics, events)


class HashingStream:
    """A write-only stream that hashes every byte before passing it on (for the official writer).

    ``mcap.writer.Writer`` needs ``write``, ``tell`` and ``flush``; it never seeks, so the
    running SHA-256 is the SHA-256 of the file.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self._sha = hashlib.sha256()
        self._offset = 0

    def write(self, data: Any) -> int:
        self._file.write(data)
        self._sha.update(data)
        n = len(data)
        self._offset += n
        return n

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


@contextlib.contextmanager
def _official_zstd_level(level: int) -> Iterator[None]:
    """Make ``mcap.writer`` compress zstd chunks at ``level`` (it hard-codes level 3)."""
    compressor = zstandard.ZstdCompressor(level=level)
    saved = mcap_writer_module.zstandard
    # Ignore [assignment]: a stand-in for the module, with only compress() (all mcap.writer calls).
    mcap_writer_module.zstandard = types.SimpleNamespace(  # type: ignore[assignment]
        compress=compressor.compress
    )
    try:
        yield
    finally:
        mcap_writer_module.zstandard = saved


def _schemas(work: Workload) -> list[tuple[str, bytes]]:
    return [(type_name, ros2msg_schema(type_name)) for _name, type_name in work.topics]


_QOS_META = {"offered_qos_profiles": "- history: 3\n  depth: 0\n  reliability: 2\n"}


def _ours(path: Path, work: Workload, opts: argparse.Namespace) -> str:
    interval = round(opts.flush_interval * _NS)
    with McapWriter(
        path, compression=opts.compression, chunk_size=opts.chunk_size,
        zstd_level=opts.zstd_level,
    ) as w:  # fmt: skip
        channels = []
        for (name, _type), (type_name, data) in zip(work.topics, _schemas(work), strict=True):
            schema = w.register_schema(type_name, "ros2msg", data)
            channels.append(w.register_channel(name, "cdr", schema, _QOS_META))
        add = w.add_message
        next_flush = work.messages[0][1] + interval if work.messages else 0
        for seq, (index, t, payload) in enumerate(work.messages):
            if t >= next_flush:
                w.flush(fsync=True)
                next_flush = t + interval
            add(channels[index], t, t, payload, seq)
    return w.sha256_hexdigest()


def _official(path: Path, work: Workload, opts: argparse.Namespace) -> str:
    interval = round(opts.flush_interval * _NS)
    with open(path, "xb") as f:
        stream = HashingStream(f)
        w = Writer(
            stream,  # type: ignore[arg-type]  # duck-typed: write/tell/flush
            chunk_size=opts.chunk_size,
            compression=_OFFICIAL[opts.compression],
            enable_data_crcs=False,
        )
        w.start(profile="ros2", library="bench")
        channels = []
        for (name, _type), (type_name, data) in zip(work.topics, _schemas(work), strict=True):
            schema = w.register_schema(type_name, "ros2msg", data)
            channels.append(w.register_channel(name, "cdr", schema, _QOS_META))
        add = w.add_message
        next_flush = work.messages[0][1] + interval if work.messages else 0
        for seq, (index, t, payload) in enumerate(work.messages):
            if t >= next_flush:
                w.flush()
                os.fsync(f.fileno())
                next_flush = t + interval
            add(channels[index], log_time=t, data=payload, publish_time=t, sequence=seq)
        w.finish()
        stream.flush()
        os.fsync(f.fileno())
    return stream.hexdigest()


_RUNNERS: dict[str, Callable[[Path, Workload, argparse.Namespace], str]] = {
    "ours": _ours,
    "official": _official,
}


def _check(path: Path, sha: str, work: Workload, who: str) -> None:
    """The running SHA-256 is the file's, and the official reader sees every message."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
        if h.hexdigest() != sha:
            raise RuntimeError(f"{who}: running sha256 differs from the file's")
        f.seek(0)
        summary = make_reader(f).get_summary()
    count = summary.statistics.message_count if summary and summary.statistics else -1
    if count != len(work.messages):
        raise RuntimeError(f"{who}: {count} messages in the file, {len(work.messages)} written")


def _one(who: str, work: Workload, opts: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="xsq-bench-", dir=opts.dir) as tmp:
        path = Path(tmp, f"{who}.mcap")
        level = (
            _official_zstd_level(opts.zstd_level) if who == "official" else contextlib.nullcontext()
        )
        with level:
            t0, wall = os.times(), time.perf_counter()
            sha = _RUNNERS[who](path, work, opts)
            t1, wall = os.times(), time.perf_counter() - wall
        user, system = t1.user - t0.user, t1.system - t0.system
        size = path.stat().st_size
        _check(path, sha, work, who)
    return {"cpu_s": user + system, "user_s": user, "system_s": system, "wall_s": wall,
            "file_bytes": float(size)}


def _spread(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def run(
    compression: str = "zstd",
    *,
    seconds: float = 4.0,
    repeat: int = 3,
    chunk_size: int = 4 * 1024 * 1024,
    zstd_level: int = 1,
    flush_interval: float = 1.0,
    directory: str | None = None,
    workload: Workload | None = None,
) -> dict[str, Any]:
    """Benchmark both writers on one compression; return CPU/wall/size spreads and ratios.

    ``ratio_official_vs_ours`` is official CPU / our CPU per repetition (>1: ours is cheaper);
    ``official_within_10pct`` says whether the median ratio is <= 1.10.
    """
    opts = argparse.Namespace(
        compression=compression, chunk_size=chunk_size, zstd_level=zstd_level,
        flush_interval=flush_interval, dir=directory,
    )  # fmt: skip
    work = workload if workload is not None else make_workload(seconds)
    runs: dict[str, list[dict[str, float]]] = {w: [] for w in _WRITERS}
    for rep in range(max(3, repeat)):
        order = _WRITERS if rep % 2 == 0 else _WRITERS[::-1]
        for who in order:
            runs[who].append(_one(who, work, opts))
    payload = work.payload_bytes
    sim_seconds = (work.messages[-1][1] - work.messages[0][1]) / _NS if work.messages else 0.0
    result: dict[str, Any] = {
        "compression": compression,
        "repetitions": len(runs["ours"]),
        "messages": len(work.messages),
        "payload_bytes": payload,
        "sim_seconds": round(sim_seconds, 3),
        "chunk_size": chunk_size,
        "zstd_level": zstd_level,
        "flush_interval_s": flush_interval,
    }
    for who in _WRITERS:
        cpu = [r["cpu_s"] for r in runs[who]]
        result[f"{who}_cpu_s"] = _spread(cpu)
        for part in ("user_s", "system_s", "wall_s"):
            result[f"{who}_{part}"] = _spread([r[part] for r in runs[who]])
        # CPU per second of recorded humanoid data: 100% = one core busy all the time.
        result[f"{who}_cpu_pct_of_core"] = _spread([100 * c / sim_seconds for c in cpu], 1)
        result[f"{who}_file_bytes"] = int(runs[who][0]["file_bytes"])
    ratios = [
        o["cpu_s"] / u["cpu_s"] for o, u in zip(runs["official"], runs["ours"], strict=True)
    ]
    result["ratio_official_vs_ours"] = _spread(ratios)
    result["official_within_10pct"] = statistics.median(ratios) <= 1.10
    return result


def run_all(
    compressions: tuple[str, ...] = COMPRESSIONS, **kwargs: Any
) -> dict[str, dict[str, Any]]:
    """:func:`run` for each compression on one shared workload."""
    seconds = kwargs.pop("seconds", 4.0)
    work = make_workload(seconds)
    return {c: run(c, workload=work, **kwargs) for c in compressions}


def print_table(results: dict[str, dict[str, Any]]) -> None:
    """Human-readable table: CPU seconds min/median/max and the official/ours ratio."""
    first = next(iter(results.values()))
    print(
        f"\n== MCAP writer: ours vs mcap.writer.Writer+flush()+hashing stream "
        f"({first['sim_seconds']:.0f} s humanoid mix, {first['payload_bytes'] / 1e6:.0f} MB, "
        f"{first['repetitions']} runs; CPU s min/median/max) =="
    )
    print(f"{'chunks':7} {'ours CPU s':>20} {'official CPU s':>20} {'official/ours':>18} "
          f"{'file MB ours/official':>22}")
    for comp, r in results.items():
        u, o, q = r["ours_cpu_s"], r["official_cpu_s"], r["ratio_official_vs_ours"]
        print(
            f"{comp:7} {u['min']:>6.2f}/{u['median']:.2f}/{u['max']:.2f}"
            f"{'':>5} {o['min']:>6.2f}/{o['median']:.2f}/{o['max']:.2f}{'':>5} "
            f"{q['min']:>5.2f}/{q['median']:.2f}/{q['max']:.2f} "
            f"{r['ours_file_bytes'] / 1e6:>12.1f}/{r['official_file_bytes'] / 1e6:.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.writer",
        description="CPU time of our McapWriter vs mcap.writer.Writer (+flush, hashing "
        "stream, fsync) on the humanoid message mix, same features and bytes.",
    )
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="simulated seconds of humanoid traffic per run (default 4)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions, at least 3 (default 3)")
    ap.add_argument("--compression", choices=[*COMPRESSIONS, "all"], default="all")
    ap.add_argument("--chunk-size", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--zstd-level", type=int, default=1)
    ap.add_argument("--flush-interval", type=float, default=1.0,
                    help="seconds of log time between forced chunk flush + fsync (default 1)")
    ap.add_argument("--dir", default=None,
                    help="where the temporary files go (default: the system temp dir)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 3:
        ap.error("--seconds must be > 0 and --repeat >= 3")
    if args.dir is not None and not os.path.isdir(args.dir):
        ap.error(f"--dir {args.dir}: not a directory")
    comps = COMPRESSIONS if args.compression == "all" else (args.compression,)
    results = run_all(
        comps, seconds=args.seconds, repeat=args.repeat, chunk_size=args.chunk_size,
        zstd_level=args.zstd_level, flush_interval=args.flush_interval, directory=args.dir,
    )  # fmt: skip
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
