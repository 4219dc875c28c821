"""`xsq export lerobot OUT s3://...` end to end: the session of test_export_lerobot (raw,
JPEG and H.264 cameras, joints, wrenches, split into files) uploaded by the real Uploader
to a real S3 server (``rclone serve s3`` on 127.0.0.1), exported from the bucket by the
real CLI and compared with the export of the local copy: the same parquet tables, the same
video packets. The bytes read from S3 per episode are counted against the session's size.
Also: the same export run as Ray tasks on a private local Ray instance.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from support.localserver import LocalS3Server
from test_export_lerobot import DURATION_S, build

from xsquare_logger.config.model import LoggerConfig, apply_overrides
from xsquare_logger.export.episode import EpisodeResult
from xsquare_logger.export.mapping import load_mapping
from xsquare_logger.export.run import EpisodeFilter, run_export
from xsquare_logger.upload.backends import remote_url
from xsquare_logger.upload.uploader import Uploader

av = pytest.importorskip("av")

BUCKET = "sessions"
KIB = 1024
SESSION = "x2-sim_20250615T000000Z_aaaaaa"


@dataclass
class Uploaded:
    server: LocalS3Server
    session: Path  # the local copy
    url: str  # s3://sessions/fleet/x2-sim/<day>/<session>
    env: dict[str, str]  # what a user exports: endpoint + credentials, nothing else


def upload(session: Path, server: LocalS3Server, tmp: Path) -> str:
    """Upload ``session`` (in its data root) with the real Uploader; return its s3:// URL."""
    sysfs = tmp / "sys" / "class" / "net" / "wlan0"  # the network gate's wireless interface
    (sysfs / "wireless").mkdir(parents=True, exist_ok=True)
    (sysfs / "operstate").write_text("up\n")
    cfg = apply_overrides(LoggerConfig(), {
        "data_root": str(session.parent),
        "upload.destination": f"s3://{BUCKET}/fleet",
        "upload.s3.endpoint_url": server.endpoint,
        "upload.gate.sysfs_root": str(tmp / "sys"),
        "upload.retention.free_disk_reserve": 0,
        "upload.retention.delete_after": None,
    }, "test")
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        with Uploader(cfg) as up:
            assert up.run_once() == "verified"
            row = up.queue.session(session.name)
            assert row is not None
            return remote_url(row.destination, row.remote_prefix)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def s3_env(server: LocalS3Server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE")}
    return {**env, **server.env(), "AWS_ENDPOINT_URL_S3": server.endpoint,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uploaded]:
    tmp = tmp_path_factory.mktemp("s3x")
    session = build(tmp / "data" / SESSION)
    with LocalS3Server(tmp / "s3", buckets=(BUCKET,)) as server:
        yield Uploaded(server, session, upload(session, server, tmp), s3_env(server))


@pytest.fixture(scope="module")
def mapping_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = Path("config/export/humanoid.yaml").read_text().replace("video_codec: auto",
                                                                   "video_codec: h264")
    path = tmp_path_factory.mktemp("m") / "mapping.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def local_dataset(uploaded: Uploaded, mapping_file: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "ds"
    run_export(out, [str(uploaded.session)], load_mapping(mapping_file), EpisodeFilter(), 1)
    return out


def xsq(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xsquare_logger.cli.main", *args],
                          capture_output=True, text=True, timeout=600, env=env)


def packets(mp4: Path) -> list[bytes]:
    with av.open(str(mp4)) as c:
        return [bytes(p) for p in c.demux(video=0) if p.size]


def assert_same_dataset(got: Path, want: Path, source: str) -> None:
    """Equal parquet tables and info/stats; the same video packets; provenance names
    ``source`` (the session as it was named) instead of the local path."""
    names = sorted(str(p.relative_to(want)) for p in want.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file()) == names
    for rel in names:
        if rel.endswith(".parquet"):
            a, b = pq.read_table(got / rel), pq.read_table(want / rel)
            if rel.startswith("meta/episodes/"):
                assert set(a.column("source/session").to_pylist()) == {source}
                a, b = a.drop(["source/session"]), b.drop(["source/session"])
            assert a.equals(b), rel
        elif rel.endswith(".mp4"):
            assert packets(got / rel) == packets(want / rel), rel
        else:
            assert json.loads((got / rel).read_text()) == json.loads((want / rel).read_text())


def test_cli_export_from_s3_equals_the_local_export(
    uploaded: Uploaded, mapping_file: Path, local_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ds"
    p = xsq("export", "lerobot", str(out), uploaded.url, "--mapping", str(mapping_file),
            "--workers", "2", env=uploaded.env)
    assert p.returncode == 0, p.stderr
    assert "2 episodes written" in p.stdout and "MB from S3 in" in p.stdout
    assert uploaded.server.secret_key not in p.stdout + p.stderr
    assert_same_dataset(out, local_dataset, uploaded.url)


def test_bytes_read_per_episode_are_a_fraction_of_the_session(
    uploaded: Uploaded, mapping_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in uploaded.env.items():
        monkeypatch.setenv(k, v)
    results: list[EpisodeResult] = []
    summary = run_export(tmp_path / "ds", [uploaded.url], load_mapping(mapping_file),
                         EpisodeFilter(), 1, progress=results.append)
    manifest = json.loads((uploaded.session / "session.json").read_text())
    size = sum(f["size"] for f in manifest["files"])
    tasks = {t["episode_index"]: t for t in manifest["tasks"]}
    duration = float(DURATION_S)  # the recording's length
    assert [r.episode_index for r in results] == [0, 2] and summary.written == 2
    for r in results:
        share = (tasks[r.episode_index]["end_ns"] - tasks[r.episode_index]["start_ns"]) / 1e9
        fraction = r.bytes_fetched / size
        print(f"episode {r.episode_index}: {share:.1f} s of {duration:.1f} s, "
              f"{r.bytes_fetched} of {size} bytes ({fraction:.0%}) in {r.requests} requests")
        assert r.requests > 2 and r.bytes_fetched > 0
        # Its share of the recording, plus the alignment margin, whole chunks, summaries.
        assert fraction < share / duration + 0.2
    assert summary.bytes_fetched == sum(r.bytes_fetched for r in results) < 0.8 * size


def _read_bound(session: Path, lo: int, hi: int) -> int:
    """What reading ``[lo, hi]`` of ``session`` must cost at most when each chunk is fetched
    once: session.json, per overlapping file its magic GET, the summary region (everything
    after the last chunk) and the overlapping chunks, plus per-request read-ahead slack.
    Chunk positions come from the official mcap reader, not ours."""
    from mcap.reader import make_reader

    manifest = json.loads((session / "session.json").read_text())
    bound = (session / "session.json").stat().st_size
    for f in manifest["files"]:
        if not f["path"].endswith(".mcap") or not f["message_count"]:
            continue
        if f["start_ns"] > hi or f["end_ns"] < lo:
            continue
        with open(session / f["path"], "rb") as fh:
            summary = make_reader(fh).get_summary()
        assert summary is not None
        chunks = summary.chunk_indexes
        after_chunks = f["size"] - max(c.chunk_start_offset + c.chunk_length for c in chunks)
        overlapping = [c for c in chunks if c.message_start_time <= hi and
                       c.message_end_time >= lo]
        bound += 4 * KIB + 64 * KIB + after_chunks  # magic, footer + summary (and slack)
        bound += sum(c.chunk_length + 4 * KIB for c in overlapping)
    return bound


def test_each_chunk_is_fetched_once(
    uploaded: Uploaded, mapping_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw and JPEG cameras are read in a second pass over the episode's chunks: that
    pass is served from the block cache (sized to the episode), never fetched again, even
    when the episode's chunks are far more than the cache's floor."""
    from xsquare_logger.export import remote

    for k, v in uploaded.env.items():
        monkeypatch.setenv(k, v)
    # A floor far below the episodes' chunks (about 1 MB each): without a reservation the
    # second pass would fetch them again.
    monkeypatch.setattr(remote, "CACHE_FLOOR", 64 * KIB)
    mapping = load_mapping(mapping_file)
    margin = round(mapping.tolerance_ms * 1e6) + 200_000_000
    results: list[EpisodeResult] = []
    run_export(tmp_path / "ds", [uploaded.url], mapping, EpisodeFilter(), 1,
               progress=results.append)
    tasks = {t["episode_index"]: t for t in
             json.loads((uploaded.session / "session.json").read_text())["tasks"]}
    assert [r.episode_index for r in results] == [0, 2]
    for r in results:
        t = tasks[r.episode_index]
        bound = _read_bound(uploaded.session, t["start_ns"] - margin, t["end_ns"] + margin)
        print(f"episode {r.episode_index}: fetched {r.bytes_fetched} bytes, bound {bound}")
        assert 0.5 * bound < r.bytes_fetched <= bound


#: Run inside a private network namespace: a second rclone S3 server on the same folder
#: (the host's 127.0.0.1 is not reachable from there), then the export with --ray local.
_IN_NETNS = """
import os, subprocess, sys
from pathlib import Path
from support.localserver import LocalS3Server
root, out, url, mapping = sys.argv[1:5]
with LocalS3Server(Path(root), buckets=("sessions",)) as server:
    env = {**os.environ, **server.env(), "AWS_ENDPOINT_URL_S3": server.endpoint}
    p = subprocess.run([sys.executable, "-m", "xsquare_logger.cli.main", "export", "lerobot",
                        out, url, "--mapping", mapping, "--ray", "local"], env=env)
sys.exit(p.returncode)
"""


def _netns_refused() -> str | None:
    """Why a private network namespace cannot be made here (None: it can)."""
    try:
        p = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare/ip not usable: {exc}"
    return None if p.returncode == 0 else f"unshare --net refused: {p.stderr.strip()}"


def test_ray_tasks_write_the_same_dataset(
    uploaded: Uploaded, mapping_file: Path, local_dataset: Path, tmp_path: Path
) -> None:
    """A private local Ray instance, started and stopped by the export itself; its workers
    inherit the S3 settings from the environment. Ray 2.60's GCS, raylet and worker servers
    listen on every interface whatever the node address (and the autoscaler's metrics on
    0.0.0.0:44217), so the whole run is put in a network namespace of its own, with only a
    loopback: nothing it opens is reachable from outside."""
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("XSQ_REQUIRE_RAY") == "1":
            pytest.fail("XSQ_REQUIRE_RAY=1 but ray is not installed (pip install '.[ray]')")
        pytest.skip("ray is not installed (the [ray] extra)")
    refused = _netns_refused()
    if refused is not None:
        pytest.skip(f"{refused}: Ray would listen on every interface, not run here")
    out = tmp_path / "ds"
    env = {**uploaded.env, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                          uploaded.env.get("PYTHONPATH", "")])}
    p = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
         sys.executable, "-c", _IN_NETNS, str(uploaded.server.root), str(out), uploaded.url,
         str(mapping_file)],
        capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr
    assert "2 episodes written" in p.stdout, p.stdout
    assert_same_dataset(out, local_dataset, uploaded.url)
    assert not (tmp_path / ".ds.xsq-staging").exists()


def test_cli_refusals_are_one_line(uploaded: Uploaded, tmp_path: Path) -> None:
    out = str(tmp_path / "ds")
    for args, needle in [
        ((out,), "nothing to export"),
        ((out, str(uploaded.session), "--db", f"sqlite:///{tmp_path}/f.db"), "not both"),
        ((out, str(uploaded.session), "--robot", "x2-sim"), "--robot filters the floor"),
        ((out, uploaded.url.rsplit("/", 1)[0] + "/nope"), "no such session"),
    ]:
        p = xsq("export", "lerobot", *args, env=uploaded.env)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr
    assert not Path(out).exists()


def _have(uploaded: Uploaded, prefix: str, dest: Path) -> Path:
    """Every object under ``prefix`` downloaded into ``dest`` (boto3, not our client)."""
    c = uploaded.server.client()
    for o in c.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", []):
        path = dest / o["Key"][len(prefix) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(c.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
    return dest


def test_output_to_s3_new_and_appended(
    uploaded: Uploaded, mapping_file: Path, local_dataset: Path, tmp_path: Path
) -> None:
    c = uploaded.server.client()
    # A first export into this prefix that stopped before its info.json left a file:
    # it is cleared, not taken for a dataset.
    c.put_object(Bucket=BUCKET, Key="datasets/towels/data/chunk-000/file-007.parquet",
                 Body=b"torn")
    url = f"s3://{BUCKET}/datasets/towels"
    p = xsq("export", "lerobot", url, uploaded.url, "--mapping", str(mapping_file),
            "--workers", "1", env=uploaded.env)
    assert p.returncode == 0 and "2 episodes written" in p.stdout, p.stderr
    assert_same_dataset(_have(uploaded, "datasets/towels", tmp_path / "new"), local_dataset,
                        uploaded.url)
    # Append the failed episode: new data/video/episodes files, meta replaced, the files the
    # first run wrote untouched.
    first = {o["Key"]: o["ETag"] for o in
             c.list_objects_v2(Bucket=BUCKET, Prefix="datasets/towels/")["Contents"]}
    p = xsq("export", "lerobot", url, uploaded.url, "--outcome", "failure", "--mapping",
            str(mapping_file), "--workers", "1", env=uploaded.env)
    assert p.returncode == 0 and "1 episodes written" in p.stdout, p.stderr
    after = {o["Key"]: o["ETag"] for o in
             c.list_objects_v2(Bucket=BUCKET, Prefix="datasets/towels/")["Contents"]}
    changed = {k[len("datasets/towels/"):] for k in first if after[k] != first[k]}
    # (tasks.parquet only if it changed: the failed episode's task is there already)
    assert changed == {"meta/info.json", "meta/stats.json"}
    added = {k[len("datasets/towels/"):] for k in set(after) - set(first)}
    assert "meta/episodes/chunk-000/file-001.parquet" in added
    assert "data/chunk-000/file-001.parquet" in added
    ds = _have(uploaded, "datasets/towels", tmp_path / "appended")
    info = json.loads((ds / "meta/info.json").read_text())
    assert info["total_episodes"] == 3
    eps = []
    for f in sorted((ds / "meta/episodes").rglob("*.parquet")):
        eps += pq.read_table(f).to_pylist()
    assert [e["source/episode_index"] for e in eps] == [0, 2, 1]
    assert info["total_frames"] == sum(e["length"] for e in eps)


def test_output_to_s3_stopped_run_leftovers_are_pruned(
    uploaded: Uploaded, mapping_file: Path, tmp_path: Path
) -> None:
    c = uploaded.server.client()
    url = f"s3://{BUCKET}/datasets/wipes"
    args = ("--task", "wipe table", "--mapping", str(mapping_file), "--workers", "1")
    assert xsq("export", "lerobot", url, uploaded.url, *args, env=uploaded.env).returncode == 0
    # A later run stopped after putting its episodes file but before info.json: that file
    # describes an episode info.json never counted.
    leftover = "datasets/wipes/meta/episodes/chunk-000/file-001.parquet"
    body = c.get_object(Bucket=BUCKET, Key="datasets/wipes/meta/episodes/chunk-000/"
                        "file-000.parquet")["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    table = table.set_column(0, "episode_index", pa.array([1], pa.int64()))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    c.put_object(Bucket=BUCKET, Key=leftover, Body=sink.getvalue().to_pybytes())
    p = xsq("export", "lerobot", url, uploaded.url, *args, env=uploaded.env)
    assert p.returncode == 0 and "1 episodes written" in p.stdout, p.stderr
    ds = _have(uploaded, "datasets/wipes", tmp_path / "ds")
    eps = []
    for f in sorted((ds / "meta/episodes").rglob("*.parquet")):
        eps += pq.read_table(f).to_pylist()
    assert [e["episode_index"] for e in eps] == [0, 1]  # the leftover replaced, not counted
    assert json.loads((ds / "meta/info.json").read_text())["total_episodes"] == 2
    # A prefix holding something that is not a dataset is refused, untouched.
    c.put_object(Bucket=BUCKET, Key="datasets/other/notes.txt", Body=b"mine")
    p = xsq("export", "lerobot", f"s3://{BUCKET}/datasets/other", uploaded.url, *args,
            env=uploaded.env)
    assert p.returncode == 2 and "not a LeRobot dataset" in p.stderr, p.stderr
    keys = [o["Key"] for o in c.list_objects_v2(Bucket=BUCKET,
                                                Prefix="datasets/other/")["Contents"]]
    assert keys == ["datasets/other/notes.txt"]
