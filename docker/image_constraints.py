"""Print the pip constraints for installing xsquare_logger on a ROS 2 apt install.

The Docker image (and a colcon robot) gets ROS 2 from Ubuntu 24.04 apt packages, whose
compiled parts are built against Ubuntu's numpy 1.26 and break under numpy 2. So the
project's pins (constraints.txt, made for the PyPI-wheel venv) are used with three
changes, nothing else (no second list of dependencies: the names come from setup.py,
the versions from constraints.txt):

* numpy and PyYAML: pinned to the versions apt installed (read from this interpreter),
  so pip keeps them instead of shadowing them in /usr/local;
* opencv-python-headless: 5.x needs numpy>=2, so the last release built for both
  numpy 1 and 2 (IMAGE_OVERRIDES).

Usage (in the image, from the repository root):
    python3 docker/image_constraints.py constraints.txt > /tmp/constraints.txt
    pip install --break-system-packages -c /tmp/constraints.txt .
Off the image (checks): --system numpy=1.26.4 --system PyYAML=6.0.1 gives the versions
instead of reading them from the installed distributions.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from pathlib import Path

# Distributions that must stay as apt installed them (the ROS packages import them).
APT_OWNED = ("numpy", "PyYAML")
# Pins that differ in the image, each with its reason above.
IMAGE_OVERRIDES = {"opencv-python-headless": "4.11.0.86"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_constraints(constraints: str, system: dict[str, str]) -> list[str]:
    """constraints.txt text -> the image's constraint lines."""
    replaced = {canonical(n): f"{n}=={v}" for n, v in system.items()}
    replaced.update({canonical(n): f"{n}=={v}" for n, v in IMAGE_OVERRIDES.items()})
    out = ["# derived from constraints.txt by docker/image_constraints.py"]
    seen = set()
    for line in constraints.splitlines():
        name = re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0]
        key = canonical(name)
        if not name or line.lstrip().startswith("#"):
            continue
        if key in replaced:
            out.append(replaced[key])
            seen.add(key)
        else:
            out.append(line.strip())
    out.extend(v for k, v in replaced.items() if k not in seen)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("constraints", type=Path, help="the project's constraints.txt")
    ap.add_argument("--system", action="append", default=[], metavar="NAME=VERSION",
                    help="version of an apt-owned distribution (default: the installed one)")
    args = ap.parse_args(argv)
    system: dict[str, str] = {}
    for item in args.system:
        name, _, version = item.partition("=")
        system[name] = version
    for name in APT_OWNED:
        if name in system:
            continue
        try:
            system[name] = md.version(name)
        except md.PackageNotFoundError:
            print(f"image_constraints: {name} is not installed (apt-get install it first)",
                  file=sys.stderr)
            return 2
    print("\n".join(image_constraints(args.constraints.read_text(), system)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
