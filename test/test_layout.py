"""The package layout of docs/architecture.md, held against the code's own imports.

A new reader finds every concern by its folder name only if the folders keep
their places: each layer imports only the layers before it (no import runs back
up, so there are no circles between folders), there are no circles between
modules either, the recording core imports no ROS, ZeroMQ or live view, and a
tablet install never imports the robot's side.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "xsquare_logger"

#: docs/architecture.md, "Package layout": a module may import only from its own
#: layer or the layers listed before it.
LAYERS = [
    "errors",
    "config",
    "bag",
    "session",
    "camera",
    "recording",
    "link",
    "tablet",
    "upload",
    "tools",
    "floor",
    "export",
    "live",
    "sim",
    "ros",
    "cli",
]
#: What the tablet side (client, console) may take from the robot's side of the link.
TABLET_MAY_IMPORT = {"xsquare_logger.link.protocol", "xsquare_logger.link.keys"}
#: Third-party modules the recording core must not import (it is plain Python).
CORE_FORBIDDEN = {"rclpy", "zmq", "foxglove", "xsquare_logger_msgs"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (also inside functions), absolute, with its line."""
    found: list[tuple[int, str]] = []
    package = _module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from xsquare_logger.cli import tablet` imports the module cli.tablet.
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "xsquare_logger" else None


def _internal_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for _, m in _imports(path) if m in modules and m != name}
    return graph


def test_every_module_belongs_to_a_layer() -> None:
    strays = [
        name
        for name in _modules()
        if name != "xsquare_logger" and _layer(name) not in LAYERS
    ]
    assert not strays, f"modules outside the documented layers: {strays}"


def test_no_import_runs_back_up_a_layer() -> None:
    upward = []
    for name, path in _modules().items():
        own = _layer(name)
        if own is None:
            continue
        for line, target in _imports(path):
            layer = _layer(target)
            if layer in LAYERS and LAYERS.index(layer) > LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(set(upward)))


def test_no_import_circles_between_modules() -> None:
    graph = _internal_graph()
    # Package faces (__init__ re-exporting their own modules) are not circles.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(f"{t}.")}
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_runtime_package_never_imports_tests_or_benchmarks() -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in PACKAGE.rglob("*.py")
        for line, target in _imports(path)
        if target.split(".")[0] in {"support", "benchmarks", "conftest", "test"}
    ]
    assert not bad, "\n".join(bad)


def test_recording_core_imports_no_ros_link_or_live_view() -> None:
    bad = []
    for path in sorted((PACKAGE / "recording").rglob("*.py")):
        for line, target in _imports(path):
            top = target.split(".")[0]
            if top in CORE_FORBIDDEN or _layer(target) in {"link", "tablet", "live", "ros"}:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


def test_tablet_side_imports_only_the_link_protocol_and_keys() -> None:
    bad = []
    for path in sorted((PACKAGE / "tablet").rglob("*.py")):
        for line, target in _imports(path):
            layer = _layer(target)
            if layer in (None, "tablet", "errors") or not _modules().get(target):
                continue
            if target not in TABLET_MAY_IMPORT:
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "entry", ["xsquare_logger.cli.tablet", "xsquare_logger.tablet.console"]
)
def test_a_tablet_install_never_loads_the_robot_side(entry: str) -> None:
    """What `xsq-tablet` loads: no config tree, recorder, session store, ROS or uploader."""
    code = (
        f"import sys, {entry}; "
        "print('\\n'.join(m for m in sys.modules if m.startswith('xsquare_logger')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    robot_side = [
        m for m in out if _layer(m) in {"config", "session", "recording", "ros", "upload", "bag"}
    ]
    assert not robot_side, f"{entry} loads the robot side: {robot_side}"
    assert "rclpy" not in out
