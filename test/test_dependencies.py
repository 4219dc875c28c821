"""The declared dependencies match the code, so an install from setup.py alone runs.

setup.py's INSTALL_REQUIRES / EXTRAS_REQUIRE are the one list of runtime dependencies.
These tests read the imports of every module of xsquare_logger/ (ast: top-level,
function-level and literal ``importlib.import_module("x")`` imports), map them to
distributions with importlib.metadata.packages_distributions() and check both ways:
every third-party import is declared, every declaration is imported (or says here why
not). ROS packages are checked against package.xml (apt on a ROS install) and the
``ros-wheels`` extra (PyPI off ROS). Every declared requirement is pinned in
constraints.txt at a version its specifier allows, and no other file keeps a second
hand-written list of them.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "xsquare_logger"

# ROS import name -> its PyPI wheel (the ros-wheels extra), or None when it is built
# from this repository (msg/) and has no wheel. On a ROS install every one of them is a
# package.xml <exec_depend> of the same name.
ROS_IMPORTS: dict[str, str | None] = {
    "rclpy": "ros-rclpy",
    "std_msgs": "ros-std-msgs",
    "sensor_msgs": "ros-sensor-msgs",
    "geometry_msgs": "ros-geometry-msgs",
    "builtin_interfaces": "ros-builtin-interfaces",
    "ament_index_python": "ros-ament-index-python",
    "xsquare_logger_msgs": None,
}

# Declared but not imported by name, and why.
NOT_IMPORTED = {
    # bag/schema.py reads share/builtin_interfaces/msg/Time.msg (every Header's stamp)
    # to embed full message definitions; no Python import of it.
    "ros-builtin-interfaces": "message definitions read from share/ for MCAP schemas",
    # The PostgreSQL driver: SQLAlchemy loads it for postgresql+psycopg:// catalog URLs.
    "psycopg": "driver SQLAlchemy loads for postgresql:// floor catalogs",
}


def _setup_lists() -> tuple[list[str], dict[str, list[str]]]:
    """install_requires and extras_require of setup.py's setup() call, without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    assigned = {
        node.targets[0].id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    setup_call = next(
        n for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"
    )

    def value(key: str, default: object) -> object:
        node = next((k.value for k in setup_call.keywords if k.arg == key), None)
        if node is None:
            return default
        if isinstance(node, ast.Name):  # a module-level list, e.g. INSTALL_REQUIRES
            node = assigned[node.id]
        return ast.literal_eval(node)

    return value("install_requires", []), value("extras_require", {})  # type: ignore[return-value]


INSTALL_REQUIRES, EXTRAS_REQUIRE = _setup_lists()


def _requirements(group: str | None = None) -> list[Requirement]:
    if group is None:
        lines = INSTALL_REQUIRES + [r for v in EXTRAS_REQUIRE.values() for r in v]
    elif group == "install":
        lines = INSTALL_REQUIRES
    else:
        lines = EXTRAS_REQUIRE[group]
    return [Requirement(line) for line in lines]


def _is_import_call(func: ast.expr) -> bool:
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__", "_import")


@functools.cache
def module_imports() -> dict[str, set[str]]:
    """Top-level import name -> modules of xsquare_logger/ that import it."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif (
                isinstance(node, ast.Call)
                and _is_import_call(node.func)
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names = [node.args[0].value]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(rel)
    return found


def third_party_imports() -> dict[str, set[str]]:
    return {
        name: where
        for name, where in module_imports().items()
        if name not in sys.stdlib_module_names
        and name != "xsquare_logger"
        and name not in ROS_IMPORTS
    }


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    return dict(md.packages_distributions())  # scans every installed distribution: slow


def _distributions_of(import_name: str) -> set[str]:
    return {canonicalize_name(d) for d in _packages_distributions().get(import_name, [])}


def test_walker_sees_lazy_and_dynamic_imports() -> None:
    # The walker itself: the lazy imports that only run for some configs must be found,
    # or the checks below would pass on a blind walker.
    imports = module_imports()
    for name in ("cv2", "av", "foxglove", "zmq", "rclpy", "xsquare_logger_msgs"):
        assert name in imports, f"walker missed {name}"


def test_every_third_party_import_is_declared() -> None:
    declared = {canonicalize_name(r.name) for r in _requirements()}
    problems = []
    for name, where in sorted(third_party_imports().items()):
        dists = _distributions_of(name)
        if not dists:
            problems.append(f"{name} (imported by {sorted(where)}): not installed here, so its "
                            "distribution is unknown; install it and declare it in setup.py")
        elif not dists & declared:
            problems.append(f"{name} (imported by {sorted(where)}): distribution "
                            f"{sorted(dists)} is not in setup.py install_requires or an extra")
    assert not problems, "\n".join(problems)


def test_every_declared_requirement_is_used() -> None:
    imported = third_party_imports()
    used = {d for name in imported for d in _distributions_of(name)}
    used |= {canonicalize_name(w) for n, w in ROS_IMPORTS.items() if w and n in module_imports()}
    unused = [
        r.name for r in _requirements()
        if canonicalize_name(r.name) not in used and r.name not in NOT_IMPORTED
    ]
    assert not unused, f"declared in setup.py but imported nowhere in xsquare_logger/: {unused}"


def test_optional_imports_are_in_extras_not_install_requires() -> None:
    # av is GPL (libx264): it must stay opt-in.
    install = {canonicalize_name(r.name) for r in _requirements("install")}
    assert "av" not in install
    assert "av" in {canonicalize_name(r.name) for r in _requirements("h264")}


def _package_xml() -> tuple[set[str], str]:
    text = (ROOT / "package.xml").read_text()
    root = ET.fromstring(text)
    return {e.text or "" for e in root.iter("exec_depend")}, text


def test_ros_imports_come_from_package_xml_and_the_ros_wheels_extra() -> None:
    exec_depends, _ = _package_xml()
    wheels = {canonicalize_name(r.name) for r in _requirements("ros-wheels")}
    problems = []
    for name in sorted(set(module_imports()) & set(ROS_IMPORTS)):
        if name not in exec_depends:
            problems.append(f"{name}: imported but not an <exec_depend> in package.xml")
        wheel = ROS_IMPORTS[name]
        if wheel and canonicalize_name(wheel) not in wheels:
            problems.append(f"{name}: imported but {wheel} is not in the ros-wheels extra")
    assert not problems, "\n".join(problems)
    # rclpy needs a middleware from the wheels, or `import rclpy` fails off ROS.
    rclpy = next(r for r in _requirements("ros-wheels") if r.name == "ros-rclpy")
    assert "fastrtps" in rclpy.extras


def test_runtime_requirements_are_named_in_package_xml() -> None:
    # Each runtime dependency appears in package.xml, as the pip name next to its rosdep
    # key's <exec_depend>, or in the comment listing those without a key.
    _, text = _package_xml()
    missing = [r.name for r in _requirements("install") + _requirements("h264")
               if not re.search(rf"\b{re.escape(r.name)}\b", text)]
    assert not missing, f"package.xml does not mention {missing}"


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_every_requirement_is_pinned_in_constraints() -> None:
    pins = _constraints()
    problems = []
    for req in _requirements():
        version = pins.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{req.name}: not pinned in constraints.txt (run make constraints)")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} in constraints.txt is outside {req} "
                            "of setup.py")
    assert not problems, "\n".join(problems)


def test_requirements_txt_refers_to_setup_py_instead_of_repeating_it() -> None:
    runtime = {canonicalize_name(r.name) for r in _requirements()}
    project_lines = []
    repeated = []
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-e ."):
            project_lines.append(line)
            continue
        name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
        if canonicalize_name(name) in runtime:
            repeated.append(line)
    assert project_lines, "requirements.txt must install the project (-e .[...])"
    extras = set(re.findall(r"\[(.*)\]", project_lines[0])[0].split(","))
    assert extras == set(EXTRAS_REQUIRE), f"requirements.txt installs extras {extras}"
    assert not repeated, f"requirements.txt repeats setup.py's requirements: {repeated}"


def test_no_hand_kept_dependency_list_in_dockerfile_or_readme() -> None:
    # The image and the colcon instructions pip-install the project itself; a pip line
    # naming a runtime dependency there would be a second list that drifts.
    runtime = {canonicalize_name(r.name) for r in _requirements("install")}
    for rel in ("docker/Dockerfile", "README.md"):
        text = (ROOT / rel).read_text()
        # Join continuation lines, then look at every pip install command.
        for cmd in re.findall(r"pip3? install[^\n]*", text.replace("\\\n", " ")):
            named = {canonicalize_name(w.strip("\"'").split("=")[0].split("[")[0])
                     for w in cmd.split()[2:] if not w.startswith("-")}
            assert not named & runtime, f"{rel}: `{cmd.strip()}` lists {named & runtime}"


def test_python_requires_matches_the_code() -> None:
    # The code needs 3.11 (datetime.UTC, enum.StrEnum): 3.10 must be refused at install.
    tree = ast.parse((ROOT / "setup.py").read_text())
    spec = next(
        ast.literal_eval(k.value) for n in ast.walk(tree) if isinstance(n, ast.Call)
        for k in n.keywords if k.arg == "python_requires"
    )
    allowed = SpecifierSet(spec)
    assert "3.10" not in allowed and "3.11" in allowed and "3.12" in allowed, spec
