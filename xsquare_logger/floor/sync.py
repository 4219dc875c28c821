"""``xsq floor sync``: make the catalog hold every session the bucket holds.

The uploader writes ``session.json`` last, so a ``.../<session>/session.json``
object marks a complete, verified session. Sync lists those markers through the
upload backends (s3:// or file://, credentials exactly as the uploader reads them,
never logged) and ingests each one the catalog lacks, or has with an upload state
before "verified", as ``verified`` at that location. Reports lost on the way from a
robot are thereby recovered, and running it again changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from xsquare_logger.config.upload import S3Config, UploadConfig
from xsquare_logger.floor.catalog import Catalog, CatalogConflict, SessionIdRefused
from xsquare_logger.floor.catalog.core import UPLOAD_RANK
from xsquare_logger.floor.protocol import SessionReport, session_bytes
from xsquare_logger.session.manifest import MANIFEST_NAME, SessionManifest
from xsquare_logger.upload.backends import Backend, open_backend, remote_url

__all__ = ["SyncResult", "open_destination", "sync"]


@dataclass
class SyncResult:
    markers: int = 0  # session.json objects found
    added: int = 0
    updated: int = 0
    unreadable: int = 0  # not a valid session.json
    conflicts: int = 0  # its session id is catalogued for another robot
    refused: int = 0  # its session id is not in its robot's namespace (session_id_prefix)
    problems: list[str] = field(default_factory=list)  # one line per marker not catalogued

    def line(self) -> str:
        text = (f"{self.markers} sessions in the bucket: {self.added} added, "
                f"{self.updated} updated")
        if self.unreadable:
            text += f", {self.unreadable} unreadable"
        if self.conflicts:
            text += f", {self.conflicts} in conflict"
        if self.refused:
            text += f", {self.refused} refused"
        return text


def open_destination(destination: str, s3: S3Config | None = None) -> Backend:
    """The destination as the uploader opens it (``UploadConfig`` validates the URL)."""
    try:
        config = UploadConfig(destination=destination, s3=s3 or S3Config())
    except ValidationError as exc:
        from xsquare_logger.floor.catalog import CatalogError

        msg = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
        raise CatalogError(f"--destination {destination!r}: {msg}") from None
    return open_backend(config)


def _markers(backend: Backend) -> list[str]:
    prefix = f"{backend.prefix}/" if backend.prefix else ""
    return sorted(
        k for k in backend.list_keys(prefix)
        if k == MANIFEST_NAME or k.endswith(f"/{MANIFEST_NAME}")
    )


def sync(catalog: Catalog, backend: Backend) -> SyncResult:
    """One pass over the destination's markers; backend errors propagate (BackendError)."""
    result = SyncResult()
    for key in _markers(backend):
        result.markers += 1
        folder = key[: -len(MANIFEST_NAME)].rstrip("/")
        session_id = folder.rsplit("/", 1)[-1]
        remote = remote_url(backend.url, folder)
        have = catalog.session_upload(session_id)
        if have is not None and UPLOAD_RANK.get(have[0], 0) >= UPLOAD_RANK["verified"] and have[1]:
            continue  # catalogued as uploaded already: no download
        data = backend.get(key)
        if data is None:
            continue  # deleted between the listing and now
        try:
            manifest = SessionManifest.model_validate(json.loads(data))
        except (ValueError, ValidationError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            result.unreadable += 1
            result.problems.append(f"{remote}/{MANIFEST_NAME}: not a valid session.json: {first}")
            continue
        report = SessionReport(
            manifest=manifest,
            upload_state="verified",
            remote=remote,
            bytes=session_bytes(manifest),
        )
        try:
            changed = catalog.ingest_session(report)
        except CatalogConflict as exc:
            # One bad marker (its id catalogued for another robot) must not keep every
            # marker after it out of the catalog: shown, skipped, the pass goes on.
            result.conflicts += 1
            result.problems.append(f"{remote}/{MANIFEST_NAME}: {exc}")
            continue
        except SessionIdRefused as exc:
            # The same rule as for a robot's own report: a marker whose id is not its
            # robot's (not made by the recorder's generator) would squat that id.
            result.refused += 1
            result.problems.append(f"{remote}/{MANIFEST_NAME}: {exc}")
            continue
        if changed:
            if have is None:
                result.added += 1
            else:
                result.updated += 1
    return result  # problems are the caller's to show (CLI: stderr; service: the log)
