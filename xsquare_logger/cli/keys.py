"""`xsq keys ...`: the robot's CURVE key pair and the tablets it accepts (robot side)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xsquare_logger.config import ConfigError, TabletConfig, load_config
from xsquare_logger.link.keys import KeyStore, KeyStoreError

__all__ = ["add_parser", "run"]

_SubParsers = argparse._SubParsersAction


def add_parser(sub: _SubParsers) -> None:
    """Add the ``keys`` command to the ``xsq`` subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--keys-dir", type=Path, help="key store (default: tablet.keys_dir of --config)"
    )
    common.add_argument("--config", type=Path, help="robot YAML config to take keys_dir from")
    p = sub.add_parser(
        "keys",
        help="CURVE keys of the tablet link: robot key pair, tablet allow-list",
        description="Manage the robot's key pair and the tablets it accepts. A running "
        "robot picks up added and revoked tablets within a second.",
    )
    ksub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    ksub.add_parser("init", parents=[common], help="create the robot key pair")
    a = ksub.add_parser(
        "add-tablet", parents=[common], help="create a tablet key pair and authorize it"
    )
    a.add_argument("name", help="tablet name (letters, digits, _ . -)")
    r = ksub.add_parser("revoke", parents=[common], help="stop accepting a tablet")
    r.add_argument("name")
    ls = ksub.add_parser("list", parents=[common], help="list authorized tablets")
    ls.add_argument("--json", action="store_true", help="machine-readable output")



def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``keys`` command; returns the exit status."""
    return _run_keys(args)


def _keys_dir(args: argparse.Namespace) -> Path:
    if args.keys_dir is not None:
        return Path(args.keys_dir).expanduser()
    if args.config is not None:
        return load_config(args.config).tablet.keys_dir
    return TabletConfig().keys_dir


def _run_keys(args: argparse.Namespace) -> int:
    try:
        store = KeyStore(_keys_dir(args))
        action = args.keys_command
        if action == "init":
            public = store.init_robot()
            print(f"robot key pair created: {public} (public), {store.robot_secret_file} (secret)")
            print("next: xsq keys add-tablet NAME")
        elif action == "add-tablet":
            secret = store.add_tablet(args.name)
            robot_copy = store.issued_dir / store.robot_public_file.name
            print(f"tablet {args.name!r} authorized ({store.authorized_dir / args.name}.key)")
            print("copy these two files onto the tablet, then delete the first one here:")
            print(f"  {secret}")
            print(f"  {robot_copy}")
            print(
                f"try it: xsq tablet hello --robot HOST --robot-key {robot_copy.name} "
                f"--tablet-key {secret.name}"
            )
        elif action == "revoke":
            store.revoke(args.name)
            print(f"tablet {args.name!r} revoked; a running robot refuses it within a second")
        elif action == "list":
            _print_tablets(store, args.json)
    except (KeyStoreError, ConfigError) as exc:
        print(f"xsq keys: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_tablets(store: KeyStore, as_json: bool) -> None:
    tablets = store.list_tablets()
    if as_json:
        rows = [
            {
                "name": t.name,
                "public_key": t.public_key,
                "path": str(t.path),
                "issued_secret": str(t.issued_secret) if t.issued_secret else None,
            }
            for t in tablets
        ]
        print(json.dumps(rows, indent=2))
        return
    if not tablets:
        print(f"no authorized tablets in {store.authorized_dir}")
    for t in tablets:
        pending = f"  (issued secret still here: {t.issued_secret})" if t.issued_secret else ""
        print(f"{t.name}  {t.public_key}{pending}")
