"""``xsq floor serve | robots | readers | episodes | sync``: the training-center floor service.

Needs the ``floor`` extra (``pip install 'xsquare_logger[floor]'``). Every user error
is one line on stderr and exit status 2 (docs/floor.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from xsquare_logger.errors import XsqError

__all__ = ["DEFAULT_LISTEN", "FloorCliError", "add_parser", "episode_rows", "run"]

DEFAULT_LISTEN = "127.0.0.1:8600"
DATA_DIR_ENV = "XSQ_FLOOR_DATA_DIR"
DB_ENV = "XSQ_FLOOR_DB"
TOKEN_ENV = "XSQ_FLOOR_TOKEN"
EPISODE_FIELDS = ("robot_id", "session_id", "episode_index", "task", "instruction", "outcome",
                  "operator", "site", "visit_id", "start_ns", "end_ns", "duration_sec",
                  "lost", "remote", "upload_state", "discarded", "quality",
                  "quality_reasons", "window_start_ns", "window_end_ns")

log = logging.getLogger(__name__)
_SubParsers = argparse._SubParsersAction


class FloorCliError(XsqError):
    """A floor command the user can fix (bad flag, floor unreachable, refused token)."""


def _default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path.home() / ".local/share/xsquare_logger/floor"


def add_parser(sub: _SubParsers) -> None:
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--db", metavar="URL",
                    help=f"catalog database: sqlite:///PATH or postgresql://... (default: "
                         f"${DB_ENV}, else sqlite in --data-dir)")
    db.add_argument("--data-dir", type=Path, metavar="DIR",
                    help=f"where the default SQLite catalog lives (default: ${DATA_DIR_ENV}, "
                         "else ~/.local/share/xsquare_logger/floor)")
    s3 = argparse.ArgumentParser(add_help=False)
    s3.add_argument("--config", type=Path, metavar="YAML",
                    help="logger config whose upload.s3 section (endpoint, credentials file) "
                         "is used to read the bucket")

    p = sub.add_parser("floor", help="training-center floor service: serve, tokens, queries",
                       description="The floor service and its catalog (docs/floor.md).")
    fsub = p.add_subparsers(dest="floor_command", required=True, metavar="ACTION")

    s = fsub.add_parser("serve", parents=[db, s3], help="run the HTTP API + dashboard")
    s.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"address to bind (default {DEFAULT_LISTEN}: this machine only)")
    s.add_argument("--stale-after", type=float, default=10.0, metavar="S",
                   help="seconds without a heartbeat before a robot is stale (default 10)")
    s.add_argument("--sync-destination", metavar="URL",
                   help="also run `floor sync` from this s3:// or file:// destination")
    s.add_argument("--sync-interval", type=float, default=300.0, metavar="S",
                   help="seconds between syncs (default 300)")

    for kind in ("robots", "readers"):
        k = fsub.add_parser(kind, help=f"{kind[:-1]} tokens: add, revoke, list")
        ksub = k.add_subparsers(dest="token_command", required=True, metavar="ACTION")
        a = ksub.add_parser("add", parents=[db], help="issue a token (printed once, stdout)")
        a.add_argument("name")
        r = ksub.add_parser("revoke", parents=[db], help="revoke its tokens")
        r.add_argument("name")
        ksub.add_parser("list", parents=[db], help="list them")

    e = fsub.add_parser("episodes", parents=[db], help="query catalogued episodes",
                        description="Against a service (--floor URL --token T) or the "
                                    "database itself (--db URL).")
    for name in ("task", "outcome", "operator", "robot", "site"):
        e.add_argument(f"--{name}")
    e.add_argument("--quality", metavar="VERDICT",
                   help="the recorder's verdict: pass, warn or fail")
    e.add_argument("--include-discarded", action="store_true",
                   help="also list discarded (re-recorded) episodes")
    e.add_argument("--since", help="start >= this: YYYY-MM-DD, ISO date-time or ns")
    e.add_argument("--until", help="start < this (same forms)")
    e.add_argument("--limit", type=int, default=100, help="rows at most (default 100)")
    e.add_argument("--floor", metavar="URL", help="floor service, e.g. http://floor:8600")
    e.add_argument("--token", help=f"reader token (default: ${TOKEN_ENV})")
    fmt = e.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON list of rows")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")

    y = fsub.add_parser("sync", parents=[db, s3],
                        help="catalog every session.json in the bucket the catalog lacks")
    y.add_argument("--destination", required=True, metavar="URL",
                   help="s3://BUCKET/PREFIX or file://PATH (as upload.destination)")


def _db_url(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    data = (args.data_dir or _default_data_dir()).expanduser().absolute()
    return f"sqlite:///{data}/floor.db"


def _catalog(args: argparse.Namespace, stale_after: float = 10.0) -> Any:
    try:
        from xsquare_logger.floor.catalog import Catalog
    except ImportError as exc:
        raise FloorCliError(
            f"the floor extra is not installed ({exc.name}): pip install 'xsquare_logger[floor]'"
        ) from None
    return Catalog(_db_url(args), stale_after=stale_after)


def _s3(args: argparse.Namespace) -> Any:
    if getattr(args, "config", None) is None:
        return None
    from xsquare_logger.config import load_config

    return load_config(args.config).upload.s3


def run(args: argparse.Namespace) -> int:
    action = args.floor_command
    if action == "serve":
        return _serve(args)
    if action in ("robots", "readers"):
        return _tokens(args)
    if action == "episodes":
        return _episodes(args)
    if action == "sync":
        return _sync(args)
    return 1


# -- serve ------------------------------------------------------------------------------------


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise FloorCliError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def _sync_loop(catalog: Any, backend: Any, interval: float, stop: threading.Event) -> None:
    from xsquare_logger.floor.sync import sync

    while not stop.is_set():
        try:
            result = sync(catalog, backend)
            for line in result.problems:
                log.warning("floor sync: %s", line)
            log.info("floor sync: %s", result.line())
        except XsqError as exc:  # bucket or database down: try again next time
            log.warning("floor sync failed: %s", exc)
        stop.wait(interval)


def _serve(args: argparse.Namespace) -> int:
    host, port = _listen(args.listen)
    if args.sync_interval <= 0:
        raise FloorCliError(f"--sync-interval {args.sync_interval}: must be > 0 seconds")
    # Bind before anything else, not inside uvicorn: a port in use is one line and exit 2,
    # and the line printed below names the real port (also for --listen HOST:0).
    sock = _bind(host, port)
    port = sock.getsockname()[1]
    catalog = _catalog(args, args.stale_after)
    import uvicorn

    from xsquare_logger.floor.api import create_app

    backend = None
    if args.sync_destination:
        from xsquare_logger.floor.sync import open_destination

        backend = open_destination(args.sync_destination, _s3(args))
    app = create_app(catalog)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    stop = threading.Event()
    if backend is not None:
        threading.Thread(target=_sync_loop, args=(catalog, backend, args.sync_interval, stop),
                         name="floor-sync", daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    print(f"xsq floor: serving http://{shown}:{port} (catalog {catalog.url})", flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then raises the signal again
    # for the previous handler: by default a traceback (SIGINT) or death by signal
    # (SIGTERM). Ours turn that re-raise into a clean exit 0.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    except _Stopped:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.set()
        sock.close()
        catalog.close()
    return 0


class _Stopped(BaseException):
    """SIGINT/SIGTERM reached ``xsq floor serve`` (after uvicorn's graceful shutdown)."""


def _stopped(_sig: int, _frame: object) -> None:
    raise _Stopped


def _bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        raise FloorCliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


# -- tokens -----------------------------------------------------------------------------------


def _tokens(args: argparse.Namespace) -> int:
    kind = args.floor_command[:-1]  # robot | reader
    with _catalog(args) as catalog:
        if args.token_command == "add":
            token = catalog.add_robot(args.name) if kind == "robot" else catalog.add_reader(
                args.name)
            print(token)
            print(f"xsq floor: {kind} {args.name!r} added; the token above is shown only once",
                  file=sys.stderr)
        elif args.token_command == "revoke":
            (catalog.revoke_robot if kind == "robot" else catalog.revoke_reader)(args.name)
            print(f"xsq floor: {kind} {args.name!r} revoked", file=sys.stderr)
        else:
            rows = catalog.list_robots() if kind == "robot" else catalog.list_readers()
            key = "robot_id" if kind == "robot" else "name"
            for r in rows:
                print(f"{r[key]}\t{'revoked' if r['revoked'] else 'active'}")
    return 0


# -- episodes ---------------------------------------------------------------------------------


def _filters(args: argparse.Namespace) -> dict[str, str]:
    # getattr: callers that build args themselves (xsq export) may leave the newer out.
    names = ("task", "outcome", "operator", "robot", "site", "since", "until", "quality")
    found = {n: getattr(args, n, None) for n in names}
    if getattr(args, "include_discarded", False):
        found["include_discarded"] = "true"
    return {n: v for n, v in found.items() if v}


def _http_pages(args: argparse.Namespace, token: str) -> list[dict[str, Any]]:
    base = str(args.floor).rstrip("/")
    rows: list[dict[str, Any]] = []
    cursor = None
    while len(rows) < args.limit:
        params = {**_filters(args), "limit": str(min(1000, args.limit - len(rows)))}
        if cursor:
            params["cursor"] = cursor
        url = f"{base}/api/v1/episodes?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                page = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail", exc.reason)
            except ValueError:
                detail = exc.reason
            raise FloorCliError(f"floor at {base} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FloorCliError(f"cannot reach the floor at {base}: {reason}") from None
        rows += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return rows


def _db_pages(args: argparse.Namespace) -> list[dict[str, Any]]:
    from xsquare_logger.floor.catalog import EpisodeFilter, parse_time_ns

    f = _filters(args)
    where = EpisodeFilter(
        task=f.get("task"), outcome=f.get("outcome"), operator=f.get("operator"),
        robot=f.get("robot"), site=f.get("site"),
        since_ns=parse_time_ns(f["since"], "--since") if "since" in f else None,
        until_ns=parse_time_ns(f["until"], "--until") if "until" in f else None,
        quality=f.get("quality"), include_discarded="include_discarded" in f,
    )
    rows: list[dict[str, Any]] = []
    cursor = None
    with _catalog(args) as catalog:
        while len(rows) < args.limit:
            page = catalog.episodes(where, min(1000, args.limit - len(rows)), cursor)
            rows += [r.model_dump(mode="json") for r in page.items]
            cursor = page.next_cursor
            if not cursor:
                break
    return rows


def episode_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The catalog's episode rows (EpisodeRow as JSON) for ``args``: the filters (task,
    outcome, operator, robot, site, since, until), ``limit``, and ``floor`` + ``token``
    (a service) or ``db`` / ``data_dir`` (the database). Also used by ``xsq export``."""
    if args.limit < 1:
        raise FloorCliError(f"--limit {args.limit}: must be >= 1")
    if args.floor and args.db:
        raise FloorCliError("give --floor URL (with a token) or --db URL, not both")
    if args.floor:
        token = args.token or os.environ.get(TOKEN_ENV, "")
        if not token:
            raise FloorCliError(f"--floor needs a reader token: --token T or ${TOKEN_ENV}")
        return _http_pages(args, token)
    return _db_pages(args)


def _episodes(args: argparse.Namespace) -> int:
    rows = episode_rows(args)
    out = sys.stdout
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
    elif args.csv:
        w = csv.writer(out)
        w.writerow(EPISODE_FIELDS)
        for r in rows:
            w.writerow([_csv_cell(r, k) for k in EPISODE_FIELDS])
    else:
        for r in rows:
            lost = sum((r.get("lost") or {}).values())
            verdict = (r.get("quality") or {}).get("verdict") or "-"
            gone = "\tdiscarded" if r.get("discarded") else ""
            print(f"{r['session_id']}#{r['episode_index']}\t{r['robot_id']}\t{r['task']}\t"
                  f"{r.get('outcome') or '-'}\t{r.get('operator') or '-'}\t"
                  f"{r.get('duration_sec') or 0:.1f}s\tlost={lost}\tquality={verdict}\t"
                  f"{r.get('remote') or '-'}{gone}")
    return 0


def _csv_cell(row: dict[str, Any], key: str) -> Any:
    quality = row.get("quality") or {}
    if key == "lost":
        return json.dumps(row.get("lost", {}), sort_keys=True)
    if key == "quality":
        return quality.get("verdict", "")
    if key == "quality_reasons":
        return json.dumps(quality.get("reasons", [])) if quality else ""
    if key == "discarded":
        return "true" if row.get("discarded") else "false"
    value = row.get(key)
    return "" if value is None else value


# -- sync -------------------------------------------------------------------------------------


def _sync(args: argparse.Namespace) -> int:
    from xsquare_logger.floor.sync import open_destination, sync

    backend = open_destination(args.destination, _s3(args))
    with _catalog(args) as catalog:
        result = sync(catalog, backend)
    for line in result.problems:
        print(f"xsq floor sync: {line}", file=sys.stderr)
    print(f"xsq floor sync: {result.line()}")
    return 0
