"""Free local disk: delete verified sessions, by age or under disk pressure. Never others.

Which sessions go is a pure function (:func:`plan_deletions`); :class:`Retention`
then re-checks each one (still verified in the queue, the directory still holds
that session, no recorder lock, remote copy still matches) before removing it.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from xsquare_logger.config.upload import RetentionConfig
from xsquare_logger.session.manifest import ManifestError, read_manifest
from xsquare_logger.upload.queue import VERIFIED, SessionRow, UploadQueue
from xsquare_logger.upload.scan import lock_is_held

__all__ = ["Retention", "plan_deletions"]

log = logging.getLogger(__name__)


def plan_deletions(
    verified: list[SessionRow],
    now_ns: int,
    delete_after: float | None,
    free_bytes: int,
    reserve_bytes: int,
) -> list[SessionRow]:
    """Sessions to delete, oldest first.

    ``verified`` must hold only verified, not yet deleted sessions. A session goes
    when it was verified at least ``delete_after`` seconds ago, or, while
    ``free_bytes`` is under ``reserve_bytes``, oldest first until the reserve
    would be met again.
    """
    chosen: dict[str, SessionRow] = {}
    if delete_after is not None:
        limit = now_ns - int(delete_after * 1e9)
        for row in verified:
            if row.verified_ns is not None and row.verified_ns <= limit:
                chosen[row.session_id] = row
    freed = sum(r.total_bytes for r in chosen.values())
    for row in sorted(verified, key=lambda r: (r.started_ns, r.session_id)):
        if free_bytes + freed >= reserve_bytes:
            break
        if row.session_id not in chosen:
            chosen[row.session_id] = row
            freed += row.total_bytes
    return sorted(chosen.values(), key=lambda r: (r.started_ns, r.session_id))


class Retention:
    """Applies the retention policy to sessions under ``data_root``.

    ``reverify(row)`` returns None when the remote copy still matches, a reason
    when it does not, and raises the backend's TransientError when the destination
    cannot be asked (then the earlier verification stands).
    """

    def __init__(
        self,
        config: RetentionConfig,
        queue: UploadQueue,
        data_root: Path,
        reverify: Callable[[SessionRow], str | None] | None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.data_root = data_root
        self.reverify = reverify

    def _free_bytes(self) -> int:
        root = self.data_root if self.data_root.exists() else self.data_root.parent
        return shutil.disk_usage(root).free

    def run(self) -> list[str]:
        """Delete what the policy says may go; returns the deleted session ids."""
        verified = self.queue.sessions((VERIFIED,))
        if not verified:
            return []
        plan = plan_deletions(
            verified,
            time.time_ns(),
            self.config.delete_after,
            self._free_bytes(),
            self.config.free_disk_reserve,
        )
        deleted = []
        for row in plan:
            if self._delete(row):
                deleted.append(row.session_id)
        return deleted

    def _delete(self, row: SessionRow) -> bool:
        current = self.queue.session(row.session_id)
        if current is None or current.state != VERIFIED:
            return False
        directory = row.dir
        if not directory.exists():
            self.queue.mark_deleted(row.session_id)
            return False
        try:
            same = read_manifest(directory).session_id == row.session_id
        except ManifestError:
            same = False
        if not same:
            log.error("not deleting %s: it no longer holds session %s", directory, row.session_id)
            return False
        if lock_is_held(directory):
            return False
        if self.config.reverify_before_delete and self.reverify is not None:
            problem = self.reverify(row)
            if problem is not None:
                log.error("keeping %s: remote copy no longer verified: %s", directory, problem)
                return False
        shutil.rmtree(directory)
        self.queue.mark_deleted(row.session_id)
        log.info("deleted local copy of verified session %s (%s)", row.session_id, directory)
        return True
