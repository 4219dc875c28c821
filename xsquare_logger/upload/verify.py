"""Is the remote object the file we closed? Decided from hashes we computed ourselves.

Right after a file is sent, the server's answer to the request that created the
object decides (:func:`verified_on_arrival`); re-verification before deletion,
and any file whose answer does not decide, HEADs the object (:func:`verify_object`).

The sha256 in session.json was computed while the recorder wrote each file. The
uploader hashes again every byte it sends and refuses to finish a file whose
bytes no longer hash to that value. What the server reports is then compared
with what those same bytes predict:

* size: must be equal;
* ``x-amz-meta-sha256`` / a server checksum, if present: must be equal (a server
  may drop metadata on restart, so absence proves nothing either way);
* ETag: must equal an ETag our own MD5s predict: the MD5 of the body for a single
  PUT, ``md5(part md5s)-N`` for a multipart object (AWS, MinIO, Ceph), or the MD5
  of the whole file (servers such as rclone that report that instead). Only when
  the ETag is not MD5-based at all (AWS SSE-KMS) does a server-computed SHA-256
  stand in for it;
* file://: the backend hashes the stored file itself, which settles everything.

A metadata value alone never verifies anything: we wrote it ourselves.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from xsquare_logger.errors import XsqError
from xsquare_logger.upload.backends import RemoteObject

__all__ = [
    "VerificationFailed",
    "hash_file",
    "is_md5_etag",
    "multipart_etag",
    "verified_on_arrival",
    "verify_object",
]

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}(-[0-9]+)?$")
_BLOCK = 4 * 1024 * 1024


class VerificationFailed(XsqError):
    """The remote copy is not proven to match: the session stays local."""


def is_md5_etag(etag: str | None) -> bool:
    """True for ``<md5 hex>`` and ``<md5 hex>-N`` ETags (not for SSE-KMS/SSE-C ones)."""
    if not etag:
        return False
    return _MD5_ETAG.match(etag.lower()) is not None


def multipart_etag(part_md5_hex: list[str]) -> str:
    """The ETag S3 gives a multipart object: md5 of the concatenated part md5s, ``-N``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(h) for h in part_md5_hex)).hexdigest()
    return f"{digest}-{len(part_md5_hex)}"


def verified_on_arrival(etag: str | None, expected_etags: list[str]) -> bool:
    """Does the server's answer to the PUT / CompleteMultipartUpload prove the object?

    That ETag is computed by the server from the bytes it received: the MD5 of a
    PUT body, or for a multipart object the MD5 of its own MD5s of the parts it
    assembled, in the order it assembled them (AWS, MinIO, Ceph, rclone). Equal to
    what our MD5s of the bytes we read predict, it proves the object holds exactly
    those bytes (and so their size): a HEAD could only repeat it (on AWS it reports
    the same stored value), while rclone would re-read the whole object from disk to
    answer one. Anything else (no ETag, a non-MD5 one, a mismatch) is not proof:
    the caller HEADs the object.
    """
    if not is_md5_etag(etag):
        return False
    assert etag is not None
    return etag.lower() in {e.lower() for e in expected_etags}


def hash_file(path: Path) -> tuple[str, str]:
    """(md5 hex, sha256 hex) of a local file, in one pass."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def verify_object(
    name: str, size: int, sha256: str, remote: RemoteObject | None, expected_etags: list[str]
) -> str | None:
    """``None`` if ``remote`` is proven to hold the file, else the reason it is not.

    ``size`` (bytes) and ``sha256`` (hex) describe the local file;
    ``expected_etags`` are the ETags our hashes of the sent bytes predict.
    """
    if remote is None:
        return f"{name}: missing at the destination"
    if remote.size != size:
        return f"{name}: remote size {remote.size} bytes, local {size} bytes"
    if remote.content_sha256 is not None:
        if remote.content_sha256 != sha256:
            return f"{name}: remote sha256 {remote.content_sha256} != local {sha256}"
        return None
    if remote.meta_sha256 is not None and remote.meta_sha256.lower() != sha256:
        return f"{name}: remote x-amz-meta-sha256 {remote.meta_sha256} != local {sha256}"
    if remote.checksum_sha256 is not None and remote.checksum_sha256 != sha256:
        return f"{name}: server checksum sha256 {remote.checksum_sha256} != local {sha256}"
    etag = (remote.etag or "").lower()
    if is_md5_etag(etag):
        if etag in {e.lower() for e in expected_etags}:
            return None
        return f"{name}: remote ETag {etag} matches none of the bytes sent ({expected_etags})"
    if remote.checksum_sha256 == sha256:
        return None  # ETag not MD5-based (SSE-KMS): the server's own SHA-256 decides
    return f"{name}: cannot be verified (ETag {etag!r} is not MD5-based and no checksum)"
