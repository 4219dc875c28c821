"""CURVE key store of the tablet link, and the allow-list the robot checks tablets against.

Layout under ``keys_dir`` (default ``~/.xsquare/keys``)::

    robot.key                  robot public key (give it to tablets)
    robot.key_secret           robot secret key, mode 0600
    authorized/<name>.key      public keys of the tablets the robot accepts
    issued/<name>.key_secret   a tablet's secret certificate, mode 0600: copy it
                               onto that tablet, then delete it here
    issued/robot.key           copy of robot.key, to copy along with it

Files are ZeroMQ certificates (``zmq.auth.create_certificates``), readable by
any ZeroMQ binding. Secrets are written inside a private (0700) temporary
directory and moved into place, so they are never readable by others, not
even for an instant.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zmq.auth

from xsquare_logger.errors import XsqError

__all__ = ["AllowList", "KeyStore", "KeyStoreError", "TabletKey", "load_key_file"]

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ROBOT = "robot"
_Z85_KEY_LEN = 40


class KeyStoreError(XsqError):
    """A key store operation failed; the message names the path and what to do."""


@dataclass(frozen=True)
class TabletKey:
    """One authorized tablet: ``public_key`` is Z85 text; ``issued_secret`` is the
    secret certificate still waiting to be copied onto the tablet, if any."""

    name: str
    public_key: str
    path: Path
    issued_secret: Path | None


def load_key_file(path: Path, *, need_secret: bool) -> tuple[bytes, bytes | None]:
    """Read a ZeroMQ certificate: (public, secret) Z85 keys; errors name the file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"cannot read key file {path}: {exc}") from None
    if len(public) != _Z85_KEY_LEN:
        raise KeyStoreError(f"key file {path}: public key is not a 40-character Z85 key")
    if need_secret and (secret is None or len(secret) != _Z85_KEY_LEN):
        raise KeyStoreError(f"key file {path} holds no secret key (expected a .key_secret file)")
    return public, secret


class KeyStore:
    """The robot's key pair and its tablet keys under ``keys_dir``."""

    def __init__(self, keys_dir: Path | str) -> None:
        self.keys_dir = Path(keys_dir).expanduser()

    @property
    def robot_public_file(self) -> Path:
        return self.keys_dir / f"{_ROBOT}.key"

    @property
    def robot_secret_file(self) -> Path:
        return self.keys_dir / f"{_ROBOT}.key_secret"

    @property
    def authorized_dir(self) -> Path:
        return self.keys_dir / "authorized"

    @property
    def issued_dir(self) -> Path:
        return self.keys_dir / "issued"

    def init_robot(self) -> Path:
        """Create the robot key pair; returns the public key file. Never overwrites."""
        if self.robot_secret_file.exists() or self.robot_public_file.exists():
            raise KeyStoreError(
                f"robot keys exist already in {self.keys_dir}; not overwriting "
                "(a new robot key would lock out every provisioned tablet)"
            )
        self._make_dirs()
        with self._new_pair(_ROBOT) as (public, secret):
            os.replace(secret, self.robot_secret_file)
            os.replace(public, self.robot_public_file)
        return self.robot_public_file

    def load_robot_keys(self) -> tuple[bytes, bytes]:
        """The robot's (public, secret) Z85 keys, for the CURVE server sockets."""
        if not self.robot_secret_file.exists():
            raise KeyStoreError(
                f"robot key pair not found: {self.robot_secret_file} does not exist; "
                "run `xsq keys init`"
            )
        public, secret = load_key_file(self.robot_secret_file, need_secret=True)
        assert secret is not None
        mode = self.robot_secret_file.stat().st_mode
        if mode & 0o077:
            log.warning(
                "%s is readable by other users (mode %o); run chmod 600 on it",
                self.robot_secret_file,
                mode & 0o777,
            )
        return public, secret

    def add_tablet(self, name: str) -> Path:
        """Create and authorize a key pair for tablet ``name``.

        Returns the tablet's secret certificate (``issued/<name>.key_secret``);
        ``issued/robot.key`` next to it is the robot public key the tablet needs.
        """
        self._check_name(name)
        if not self.robot_public_file.exists():
            raise KeyStoreError(
                f"robot key pair not found: {self.robot_public_file} does not exist; "
                "run `xsq keys init` first"
            )
        authorized = self.authorized_dir / f"{name}.key"
        issued = self.issued_dir / f"{name}.key_secret"
        for existing in (authorized, issued):
            if existing.exists():
                raise KeyStoreError(
                    f"tablet {name!r} exists already ({existing}); "
                    f"run `xsq keys revoke {name}` first or choose another name"
                )
        self._make_dirs()
        with self._new_pair(name) as (public, secret):
            os.replace(secret, issued)
            # Last: the moment the public key lands in authorized/, the robot accepts it.
            os.replace(public, authorized)
        shutil.copyfile(self.robot_public_file, self.issued_dir / f"{_ROBOT}.key")
        return issued

    def revoke(self, name: str) -> None:
        """Remove tablet ``name`` from the allow-list (and its issued secret, if still here).

        A running robot refuses the key within about a second, open connections included.
        """
        self._check_name(name)
        authorized = self.authorized_dir / f"{name}.key"
        if not authorized.exists():
            known = ", ".join(t.name for t in self.list_tablets()) or "none"
            raise KeyStoreError(
                f"no tablet named {name!r}: {authorized} does not exist (authorized: {known})"
            )
        authorized.unlink()
        (self.issued_dir / f"{name}.key_secret").unlink(missing_ok=True)

    def list_tablets(self) -> list[TabletKey]:
        """The authorized tablets, sorted by name."""
        if not self.authorized_dir.is_dir():
            return []
        tablets = []
        for path in sorted(self.authorized_dir.glob("*.key")):
            try:
                public, _ = load_key_file(path, need_secret=False)
            except KeyStoreError as exc:
                log.warning("%s", exc)
                continue
            issued = self.issued_dir / f"{path.stem}.key_secret"
            tablets.append(
                TabletKey(path.stem, public.decode(), path, issued if issued.exists() else None)
            )
        return tablets

    def load_tablet_keys(self, name: str) -> tuple[bytes, bytes]:
        """A tablet's (public, secret) keys from ``issued/`` (tests, tools on the robot)."""
        self._check_name(name)
        public, secret = load_key_file(self.issued_dir / f"{name}.key_secret", need_secret=True)
        assert secret is not None
        return public, secret

    # --- helpers --------------------------------------------------------------------

    @staticmethod
    def _check_name(name: str) -> None:
        # Names become file names: no separators, no dot-files, no "..".
        if not _NAME_RE.match(name) or name == _ROBOT:
            raise KeyStoreError(
                f"invalid tablet name {name!r}: use 1-63 letters, digits, '_', '.', '-', "
                f"starting with a letter or digit (and not {_ROBOT!r})"
            )

    def _make_dirs(self) -> None:
        try:
            self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.authorized_dir.mkdir(mode=0o755, exist_ok=True)
            self.issued_dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise KeyStoreError(f"cannot create key store {self.keys_dir}: {exc}") from exc

    @contextlib.contextmanager
    def _new_pair(self, name: str) -> Iterator[tuple[Path, Path]]:
        # mkdtemp creates the directory 0700: the secret is private from its first byte.
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.keys_dir))
        try:
            public, secret = zmq.auth.create_certificates(tmp, name)
            os.chmod(secret, 0o600)
            os.chmod(public, 0o644)
            yield Path(public), Path(secret)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class AllowList:
    """The tablet public keys in one directory (``authorized/``), kept current.

    :meth:`refresh` re-reads the directory only when a cheap ``stat`` signature
    (names, sizes, mtimes, inodes) changed, so it can run on every CURVE
    handshake and every second. Thread-safe: the ZAP thread and the server
    thread both use it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._signature: tuple[tuple[str, int, int, int], ...] | None = None
        self._keys: dict[bytes, str] = {}
        self._removed: set[str] = set()

    def refresh(self) -> set[str]:
        """Reload if the directory changed; returns the names whose keys were removed."""
        signature = self._scan()
        with self._lock:
            if signature == self._signature:
                return set()
            keys: dict[bytes, str] = {}
            for name, *_ in signature:
                path = self.directory / name
                try:
                    public, _ = load_key_file(path, need_secret=False)
                except KeyStoreError as exc:
                    # A damaged file grants nothing, and must not revoke the others.
                    log.warning("ignoring %s", exc)
                    continue
                keys[public] = path.stem
            removed = {n for k, n in self._keys.items() if k not in keys}
            self._keys, self._signature = keys, signature
            self._removed |= removed
        if removed:
            log.info("tablet keys revoked: %s", ", ".join(sorted(removed)))
        return removed

    def pop_removed(self) -> set[str]:
        """Names removed since the last call, whichever thread's refresh noticed it."""
        with self._lock:
            removed, self._removed = self._removed, set()
        return removed

    def allows(self, z85_key: bytes) -> bool:
        """Whether this Z85 public key is authorized right now (refreshes first)."""
        self.refresh()
        return z85_key in self._keys

    def name_of(self, z85_key: bytes) -> str | None:
        """The tablet name of an authorized key (as of the last refresh)."""
        return self._keys.get(z85_key)

    def __contains__(self, z85_key: object) -> bool:
        """Whether the key was authorized at the last refresh (no file system access)."""
        return z85_key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def _scan(self) -> tuple[tuple[str, int, int, int], ...]:
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return ()
        sig = []
        for entry in entries:
            if not entry.name.endswith(".key"):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue  # removed between scandir and stat
            sig.append((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(sorted(sig))


ROBOT_KEY_ENV = "XSQ_ROBOT_KEY"
TABLET_KEY_ENV = "XSQ_TABLET_KEY"


def add_key_arguments(parser: argparse._ActionsContainer, insecure_help: str) -> None:
    """``--robot-key``, ``--tablet-key`` (defaults from the environment) and ``--insecure``:
    the same on every tablet-side command, so one definition serves them all."""
    parser.add_argument(
        "--robot-key",
        type=Path,
        default=os.environ.get(ROBOT_KEY_ENV),
        metavar="FILE",
        help=f"robot public key (robot.key; default ${ROBOT_KEY_ENV})",
    )
    parser.add_argument(
        "--tablet-key",
        type=Path,
        default=os.environ.get(TABLET_KEY_ENV),
        metavar="FILE",
        help=f"this tablet's secret certificate (NAME.key_secret; default ${TABLET_KEY_ENV})",
    )
    parser.add_argument("--insecure", action="store_true", help=insecure_help)
