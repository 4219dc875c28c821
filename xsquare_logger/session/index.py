"""The one builder of a session's two indexes: ``metadata.yaml`` and ``session.json``.

The session writer (at every split and at close), crash recovery and ``xsq clip``
all describe a session by the same facts: its files, its topics with their
counters (:class:`~xsquare_logger.session.counters.TopicStats`), tasks, visit and
provenance (in the :class:`~xsquare_logger.session.manifest.SessionManifest`).
:class:`SessionIndex` turns those facts into both documents, so they cannot
disagree: a topic's ``message_count`` in metadata.yaml is its ``written`` in
session.json, and the loss counters in ``custom_data`` are those of session.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xsquare_logger.bag.qos import QosDict
from xsquare_logger.session.counters import TopicStats, counters_json
from xsquare_logger.session.manifest import FileEntry, SessionManifest, TopicEntry, write_manifest
from xsquare_logger.session.metadata import (
    BagFile,
    BagTopic,
    build_metadata,
    write_metadata_yaml,
)

__all__ = ["CALIBRATION_KEY", "COUNTERS_KEY", "IndexedTopic", "SessionIndex"]

#: metadata.yaml ``custom_data`` key holding :func:`counters_document` as JSON.
COUNTERS_KEY = "xsquare.counters"
#: metadata.yaml ``custom_data`` key: the calibration files (name, size, sha256) as JSON.
CALIBRATION_KEY = "xsquare.calibration"


@dataclass
class IndexedTopic:
    """One topic of a session as both indexes list it.

    ``in_bag`` False: counted in session.json but not a channel of the bag (a raw
    camera recorded only compressed, on ``compressed_to``).
    """

    stats: TopicStats
    type_hash: str = ""
    qos: list[QosDict] = field(default_factory=list)
    compressed_to: str | None = None
    in_bag: bool = True

    @property
    def name(self) -> str:
        return self.stats.topic


@dataclass
class SessionIndex:
    """The facts of a session; :meth:`write` stores metadata.yaml, then session.json.

    ``extra_custom`` adds ``custom_data`` entries (a clip's ``xsquare.clip_of``).
    """

    manifest: SessionManifest
    topics: Sequence[IndexedTopic]
    files: Sequence[FileEntry]
    extra_custom: dict[str, str] = field(default_factory=dict)

    def custom_data(self) -> dict[str, str]:
        m = self.manifest
        return {
            "xsquare.session_id": m.session_id,
            "xsquare.robot_id": m.robot_id,
            "xsquare.software_version": m.software_version,
            COUNTERS_KEY: counters_json({t.name: t.stats for t in self.topics}),
            **self._calibration(),
            **self.extra_custom,
        }

    def _calibration(self) -> dict[str, str]:
        """``xsquare.calibration``: the stored calibration files (name, size, sha256)."""
        files = self.manifest.calibration
        if not files:
            return {}
        doc = [{"name": f.name, "size": f.size, "sha256": f.sha256} for f in files]
        return {CALIBRATION_KEY: json.dumps(doc, separators=(",", ":"))}

    def metadata_doc(self) -> dict[str, Any]:
        """The ``rosbag2_bagfile_information`` document (also embedded in each MCAP file)."""
        topics = [
            BagTopic(t.name, t.stats.type, t.type_hash, t.qos, t.stats.written)
            for t in self.topics
            if t.in_bag
        ]
        files = [
            BagFile(f.path, f.start_ns, max(0, f.end_ns - f.start_ns), f.message_count)
            for f in self.files
        ]
        return build_metadata(topics, files, self.custom_data())

    def update_manifest(self) -> SessionManifest:
        """Fill the manifest's ``files``, ``topics`` and ``drops`` from the facts."""
        m = self.manifest
        m.files = list(self.files)
        m.topics = {t.name: TopicEntry.from_stats(t.stats, t.compressed_to) for t in self.topics}
        total = TopicStats.total(t.stats for t in self.topics).to_dict()
        m.drops = {k: v for k, v in total.items() if k not in ("received", "written")}
        m.drops["total"] = total["lost"]
        return m

    def write(self, directory: Path) -> SessionManifest:
        """Write metadata.yaml, then session.json (each atomically); return the manifest."""
        write_metadata_yaml(directory, self.metadata_doc())
        manifest = self.update_manifest()
        write_manifest(directory, manifest)
        return manifest
