"""Which discovered topics to record: the `ros2 bag record` selection rules."""

from __future__ import annotations

import re

from xsquare_logger.config.model import RecordingConfig

__all__ = ["TopicSelector"]


class TopicSelector:
    """Decides per topic name: explicit list, ``--all-topics``, ``--regex``, ``--exclude-regex``.

    As in rosbag2, explicit topics are always recorded; ``all_topics`` and
    ``regex`` add discovered topics unless they match ``exclude_regex``; hidden
    topics (a path segment starting with ``_``) need ``include_hidden_topics``.
    """

    def __init__(self, cfg: RecordingConfig, never: set[str] | None = None) -> None:
        self.explicit = set(cfg.topics)
        self.all = cfg.all_topics
        self.regex = re.compile(cfg.regex) if cfg.regex else None
        self.exclude = re.compile(cfg.exclude_regex) if cfg.exclude_regex else None
        self.hidden = cfg.include_hidden_topics
        self.never = never or set()

    def wants(self, topic: str) -> bool:
        if topic in self.never:
            return False
        if topic in self.explicit:
            return True
        if not self.hidden and any(part.startswith("_") for part in topic.split("/")):
            return False
        if self.exclude is not None and self.exclude.search(topic):
            return False
        if self.all:
            return True
        return bool(self.regex is not None and self.regex.search(topic))
