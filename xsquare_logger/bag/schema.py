"""ROS 2 message definitions for MCAP Schema records, built from installed ``.msg`` files.

The text is built the way rosbag2 builds it (``rosbag2_cpp``'s
``LocalMessageDefinitionSource::get_full_text``), so our schemas are byte-identical to those of
``ros2 bag record -s mcap`` and Foxglove, ``mcap_ros2`` and ``rosbags`` decode them:

* the top-level ``.msg`` file's text, unchanged (comments included);
* then, depth-first, for each dependency not emitted yet: a newline, a line of 80 ``=``,
  a line ``MSG: <type as referenced>``, and that type's ``.msg`` text. Dependencies of one
  definition are visited in sorted order (rosbag2 collects them in a ``std::set``).
* A dependency named without a package (``Header`` inside ``std_msgs``) belongs to the package
  of the definition that references it. The ``MSG:`` line uses the name as referenced in the
  ``.msg`` files, i.e. ``pkg/Type`` without ``/msg/`` (``MSG: std_msgs/Header``,
  ``MSG: builtin_interfaces/Time``). Readers accept both spellings.

Definitions are looked up as ``<prefix>/share/<pkg>/msg/<Type>.msg`` for each prefix in
``AMENT_PREFIX_PATH`` (colon separated), then ``sys.prefix`` (the venv the pip-installed ROS
wheels live in).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

from xsquare_logger.errors import XsqError

__all__ = [
    "SchemaNotFoundError",
    "normalize_type_name",
    "ros2msg_schema",
    "search_prefixes",
    "type_description_hash",
]

_DELIMITER = "=" * 80 + "\n"

# Field types in a .msg file: the first word of a line, optionally followed by an array suffix
# ("foo_msgs/Bar[] bars", "float64[36] covariance"). Same expression rosbag2 uses, so the same
# dependencies are found.
_FIELD_TYPE = re.compile(r"(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+")

# rosbag2's list, plus wstring (a valid ROS 2 primitive rosbag2 forgets, which makes it fall
# back to IDL; we keep the .msg form instead).
_PRIMITIVE_TYPES = frozenset(
    {
        "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
        "int32", "uint32", "int64", "uint64", "string", "wstring",
    }
)  # fmt: skip

_NAME = r"[a-zA-Z][a-zA-Z0-9_]*"
_TYPE_NAME = re.compile(rf"^({_NAME})/(?:({_NAME})/)?({_NAME})$")


class SchemaNotFoundError(XsqError, LookupError):
    """No ``.msg`` definition for a ROS type (or one of its dependencies) was found."""

    def __init__(self, type_name: str, searched: list[str], needed_by: str | None = None) -> None:
        self.type_name = type_name
        self.searched = searched
        self.needed_by = needed_by
        pkg, namespace, name = _split(type_name)
        where = ", ".join(searched) if searched else "(no prefixes)"
        context = f" (needed by {needed_by!r})" if needed_by and needed_by != type_name else ""
        super().__init__(
            f"no message definition for {type_name!r}{context}: "
            f"share/{pkg}/{namespace}/{name}.msg not found under {where} "
            "(set AMENT_PREFIX_PATH or install the interface package)"
        )


def _split(type_name: str) -> tuple[str, str, str]:
    """Split ``pkg/Type`` or ``pkg/msg/Type`` into (package, namespace, type)."""
    match = _TYPE_NAME.match(type_name)
    if match is None:
        raise ValueError(
            f"not a ROS message type name: {type_name!r} (expected 'pkg/msg/Type' or 'pkg/Type')"
        )
    pkg, namespace, name = match.groups()
    return pkg, namespace or "msg", name


def normalize_type_name(type_name: str) -> str:
    """Return the canonical ``pkg/msg/Type`` form of ``pkg/Type`` or ``pkg/msg/Type``.

    Raises:
        ValueError: if ``type_name`` is not a ROS type name.
    """
    pkg, namespace, name = _split(type_name)
    return f"{pkg}/{namespace}/{name}"


def search_prefixes() -> tuple[str, ...]:
    """Install prefixes searched for ``share/<pkg>/...``: AMENT_PREFIX_PATH, then sys.prefix."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    prefixes.append(sys.prefix)
    return tuple(dict.fromkeys(prefixes))  # de-duplicate, keep order


def _find(pkg: str, namespace: str, name: str, ext: str, prefixes: tuple[str, ...]) -> Path | None:
    for prefix in prefixes:
        candidate = Path(prefix, "share", pkg, namespace, f"{name}{ext}")
        if candidate.is_file():
            return candidate
    return None


def _dependencies(text: str, package: str) -> list[str]:
    """Non-primitive field types in ``text``, package-qualified, sorted like rosbag2's set."""
    deps: set[str] = set()
    for match in _FIELD_TYPE.finditer(text):
        field_type = match.group(1)
        if field_type in _PRIMITIVE_TYPES:
            continue
        deps.add(field_type if "/" in field_type else f"{package}/{field_type}")
    return sorted(deps)


@functools.lru_cache(maxsize=1024)
def _load(type_name: str, prefixes: tuple[str, ...]) -> tuple[str, str] | None:
    """Return (text, package) of one definition, or None if no .msg file exists."""
    pkg, namespace, name = _split(type_name)
    path = _find(pkg, namespace, name, ".msg", prefixes)
    if path is None:
        return None
    # Bytes decoded as-is (no newline translation): rosbag2 copies the file verbatim.
    return path.read_bytes().decode("utf-8"), pkg


@functools.lru_cache(maxsize=256)
def _schema(type_name: str, prefixes: tuple[str, ...]) -> bytes:
    seen: set[str] = set()

    def append(name: str, depth: int) -> str:
        if depth <= 0:
            raise ValueError(f"message definition of {type_name!r} nests too deeply (a cycle?)")
        loaded = _load(name, prefixes)
        if loaded is None:
            raise SchemaNotFoundError(name, list(prefixes), needed_by=type_name)
        text, package = loaded
        parts = [text]
        for dep in _dependencies(text, package):
            if dep not in seen:
                seen.add(dep)
                parts.append(f"\n{_DELIMITER}MSG: {dep}\n")
                parts.append(append(dep, depth - 1))
        return "".join(parts)

    return append(type_name, 50).encode("utf-8")


def ros2msg_schema(type_name: str) -> bytes:
    """Return the ``ros2msg`` schema text for a ROS 2 message type, as rosbag2 writes it.

    Args:
        type_name: ``pkg/msg/Type`` (as in ``get_topic_names_and_types``) or ``pkg/Type``.

    Returns:
        UTF-8 schema data for an MCAP Schema record with encoding ``"ros2msg"``.

    Raises:
        SchemaNotFoundError: if the type or one of its dependencies has no ``.msg`` file in
            the search prefixes (the message names the type and the prefixes searched).
        ValueError: if ``type_name`` is not a ROS message type name.
    """
    _split(type_name)  # fail early, with a clear message, on malformed names
    try:
        return _schema(type_name, search_prefixes())
    except SchemaNotFoundError:
        # Types we write ourselves but that no PyPI wheel installs (foxglove_msgs/
        # CompressedVideo): an installed definition wins, else the embedded text.
        from xsquare_logger.bag.embedded import embedded_schema

        embedded = embedded_schema(type_name)
        if embedded is None:
            raise
        return embedded


@functools.lru_cache(maxsize=1024)
def _type_hash(type_name: str, prefixes: tuple[str, ...]) -> str | None:
    pkg, namespace, name = _split(type_name)
    path = _find(pkg, namespace, name, ".json", prefixes)
    if path is None:
        return None
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
        hashes = description["type_hashes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    wanted = f"{pkg}/{namespace}/{name}"
    # The first entry is the type itself; match by name anyway in case the order changes.
    for entry in hashes if isinstance(hashes, list) else []:
        if isinstance(entry, dict) and entry.get("type_name") == wanted:
            value = entry.get("hash_string")
            return value if isinstance(value, str) else None
    return None


def type_description_hash(type_name: str) -> str | None:
    """Return the ROS 2 type hash (``"RIHS01_<hex>"``) of a message type, or None if unknown.

    Read from the ``share/<pkg>/msg/<Type>.json`` type description rosidl installs next to the
    ``.msg`` file. It equals the hash ``get_publishers_info_by_topic`` reports, and is what
    rosbag2 stores as ``type_description_hash`` (metadata.yaml) and ``topic_type_hash``
    (MCAP channel metadata).

    Args:
        type_name: ``pkg/msg/Type`` or ``pkg/Type``.
    """
    return _type_hash(type_name, search_prefixes())
