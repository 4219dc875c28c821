"""``s3://BUCKET/PREFIX`` on any S3-compatible server (AWS, MinIO, Ceph RGW, rclone, ...).

Credentials come from ``upload.s3.credentials_file`` (AWS INI format) when set,
otherwise from botocore's usual chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``~/.aws/credentials``, ...).
They are handed to botocore and never logged, and error messages never contain them.

Every body goes out with Content-MD5, so the server itself rejects a part that
was damaged on the way (``BadDigest``); the payload is not SHA-256-signed
(botocore's default over plain http) because that would hash each byte twice.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import botocore.auth
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from xsquare_logger import __version__
from xsquare_logger.config.upload import S3Config
from xsquare_logger.upload.backends import (
    BackendError,
    NoSuchUpload,
    PermanentError,
    RemoteObject,
    RemotePart,
    TransientError,
)
from xsquare_logger.upload.throttle import Aborted, ThrottledBody, TokenBucket

__all__ = ["RangeRead", "S3Backend", "load_credentials_file"]

META_SHA256 = "sha256"  # stored as x-amz-meta-sha256

# botocore's DEBUG output prints every request's headers, the Authorization header
# (access key id) included, and `xsq -v` turns the root logger to DEBUG. These
# libraries get a floor of WARNING of their own, so no verbosity makes them log a
# credential; our own messages say what was sent and where.
for _name in ("botocore", "boto3", "s3transfer", "urllib3"):
    logging.getLogger(_name).setLevel(logging.WARNING)

log = logging.getLogger(__name__)


class _UnsignedPayloadSigV4(botocore.auth.S3SigV4Auth):
    """SigV4 with ``UNSIGNED-PAYLOAD`` over http as well as https.

    botocore SHA-256-signs every body sent over plain http whatever
    ``payload_signing_enabled`` says: a second SHA-256 pass over every byte, on top
    of ours, costing as much CPU as the upload itself on a 2-core robot. Bodies are
    checked anyway: Content-MD5 per part, or the whole-file ETag after completion.
    Headers and the request line stay signed.
    """

    def _should_sha256_sign_payload(self, request: Any) -> bool:
        return False


_SIGNER = "s3v4-xsq-unsigned-payload"
botocore.auth.AUTH_TYPE_MAPS.setdefault(_SIGNER, _UnsignedPayloadSigV4)

# Codes after which retrying with the same settings cannot succeed.
_PERMANENT = {
    "AccessDenied": "access denied: the credentials lack permission on the bucket",
    "AllAccessDisabled": "all access to the bucket is disabled",
    "InvalidAccessKeyId": "the access key id is not known to the server (wrong credentials)",
    "SignatureDoesNotMatch": "the server refused the secret key (wrong credentials)",
    "InvalidToken": "the session token is invalid",
    "ExpiredToken": "the session token has expired",
    "TokenRefreshRequired": "the session token has expired",
    "AccountProblem": "the account has a problem the server will not explain",
    "NoSuchBucket": "the bucket does not exist",
    "InvalidBucketName": "the bucket name is invalid",
    "InvalidArgument": "the server rejected a request argument",
    "NotImplemented": "the server does not implement a required S3 operation",
}


def load_credentials_file(path: Path, profile: str) -> dict[str, str]:
    """Read an AWS-format credentials file; returns botocore client keyword arguments."""
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as fh:
            parser.read_file(fh)
    except OSError as exc:
        raise PermanentError(
            f"cannot read S3 credentials file {path}: {exc.strerror or exc}"
        ) from None
    except configparser.Error as exc:
        raise PermanentError(f"S3 credentials file {path} is not valid INI: {exc}") from None
    section = profile or "default"
    if not parser.has_section(section):
        raise PermanentError(f"S3 credentials file {path} has no [{section}] profile")
    sec = parser[section]
    missing = [k for k in ("aws_access_key_id", "aws_secret_access_key") if not sec.get(k)]
    if missing:
        raise PermanentError(f"S3 credentials file {path} [{section}] lacks {', '.join(missing)}")
    creds = {
        "aws_access_key_id": sec["aws_access_key_id"].strip(),
        "aws_secret_access_key": sec["aws_secret_access_key"].strip(),
    }
    if sec.get("aws_session_token"):
        creds["aws_session_token"] = sec["aws_session_token"].strip()
    return creds


class RangeRead(NamedTuple):
    """What one ranged GET returned."""

    data: bytes  # exactly the bytes asked for (fewer only at the end of the object)
    size: int  # the whole object's size, from Content-Range
    transferred: int  # body bytes the server sent (more than asked if it ignored Range)


def _range_total(content_range: str | None) -> int | None:
    """Object size of a ``bytes START-END/TOTAL`` Content-Range (None: absent or ``*``)."""
    total = (content_range or "").rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _unquote(etag: str | None) -> str:
    return (etag or "").strip('"')


def _b64_to_hex(value: str | None) -> str | None:
    if not value or "-" in value:  # "-N" marks a composite (per-part) checksum
        return None
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return None


def _hex_to_b64(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode("ascii")


class S3Backend:
    """boto3/botocore client bound to one bucket and key prefix."""

    def __init__(
        self,
        url: str,
        config: S3Config,
        max_concurrency: int = 4,
        throttle: TokenBucket | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.url = url
        rest = url[len("s3://") :]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/")
        self._throttle = throttle
        self._cancelled = cancelled
        region = (
            config.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1"
        )
        session = botocore.session.Session()
        kwargs: dict[str, Any] = {}
        if config.credentials_file is not None:
            kwargs.update(load_credentials_file(config.credentials_file, config.profile))
        elif config.profile:
            session.set_config_variable("profile", config.profile)
        # None, not True, when no bundle is configured: botocore then reads AWS_CA_BUNDLE
        # (and the profile's ca_bundle); an explicit True would silently ignore both.
        verify: bool | str | None = False if not config.verify_tls else None
        if config.verify_tls and config.ca_bundle is not None:
            verify = str(config.ca_bundle)
        client_config = Config(
            signature_version=_SIGNER,
            s3={"addressing_style": config.addressing_style, "payload_signing_enabled": False},
            # Short botocore retries absorb blips; the uploader's own backoff handles outages.
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=config.connect_timeout,
            read_timeout=config.read_timeout,
            max_pool_connections=max(10, max_concurrency + 2),
            # We send Content-MD5 ourselves; a second (CRC) pass over each part is waste.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra=f"xsquare_logger/{__version__}",
        )
        try:
            self._client: Any = session.create_client(
                "s3",
                region_name=region,
                endpoint_url=config.endpoint_url or None,
                verify=verify,
                config=client_config,
                **kwargs,
            )
        except (BotoCoreError, ValueError) as exc:
            raise PermanentError(f"cannot set up the S3 client for {url}: {exc}") from None
        self.endpoint = self._client.meta.endpoint_url
        log.debug(
            "S3 client: bucket %s, prefix %r, endpoint %s, region %s",
            self.bucket,
            self.prefix,
            self.endpoint,
            region,
        )

    # -- errors -----------------------------------------------------------------------------
    def _error(self, exc: Exception, what: str) -> BackendError:
        where = f"{what} at {self.endpoint} (bucket {self.bucket})"
        if isinstance(exc, Aborted):
            return TransientError(f"{what}: stopped")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
            return PermanentError(
                f"{where}: no usable S3 credentials ({type(exc).__name__}); set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or upload.s3.credentials_file"
            )
        if isinstance(exc, SSLError):
            # Could be a wrong CA as well as a captive portal on hotel Wi-Fi: retry, loudly.
            return TransientError(
                f"{where}: TLS verification failed ({exc}); set upload.s3.ca_bundle (or "
                "AWS_CA_BUNDLE) for a private CA"
            )
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code == "NoSuchUpload":
                return NoSuchUpload(f"{where}: multipart upload is gone")
            if code in ("InvalidPart", "InvalidPartOrder") and what.startswith("completion"):
                # Retrying the same part list cannot succeed: start the file over.
                return NoSuchUpload(f"{where}: server refused the part list ({code})")
            if code in _PERMANENT:
                return PermanentError(f"{where}: {_PERMANENT[code]} ({code})")
            if status == 403 or code == "403":
                return PermanentError(
                    f"{where}: access denied (HTTP 403): wrong credentials or no permission"
                )
            if code in ("404", "NoSuchKey") and what.startswith("bucket"):
                return PermanentError(f"{where}: the bucket does not exist")
            message = err.get("Message") or code
            return TransientError(f"{where}: server error {status} {code}: {message}")
        if isinstance(exc, ConnectionError | BotoCoreError | OSError):
            return TransientError(f"{where}: {type(exc).__name__}: {exc}")
        return TransientError(f"{where}: unexpected {type(exc).__name__}: {exc}")

    def _call(self, what: str, fn: Callable[..., dict[str, Any]], **kw: Any) -> dict[str, Any]:
        try:
            return fn(Bucket=self.bucket, **kw)
        except Exception as exc:  # botocore raises a zoo; _error sorts it
            raise self._error(exc, what) from None

    def _body(self, data: bytes) -> bytes | ThrottledBody:
        if self._throttle is None:
            return data
        return ThrottledBody(data, self._throttle, self._cancelled)

    # -- Backend ----------------------------------------------------------------------------
    def probe(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            return  # it answered; a refusal surfaces, with its reason, on the first upload
        except Exception as exc:
            raise self._error(exc, "bucket check") from None

    def put(self, key: str, data: bytes, md5_hex: str, sha256_hex: str) -> str:
        r = self._call(
            f"upload of {key}",
            self._client.put_object,
            Key=key,
            Body=self._body(data),
            ContentMD5=_hex_to_b64(md5_hex),
            ChecksumSHA256=_hex_to_b64(sha256_hex),
            Metadata={META_SHA256: sha256_hex},
        )
        return _unquote(r.get("ETag"))

    def create_multipart(self, key: str, sha256_hex: str) -> str:
        r = self._call(
            f"start of multipart upload of {key}",
            self._client.create_multipart_upload,
            Key=key,
            Metadata={META_SHA256: sha256_hex},
        )
        return str(r["UploadId"])

    def upload_part(
        self, key: str, upload_id: str, number: int, offset: int, data: bytes, md5_hex: str
    ) -> str:
        r = self._call(
            f"upload of part {number} of {key}",
            self._client.upload_part,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=self._body(data),
            **({"ContentMD5": _hex_to_b64(md5_hex)} if md5_hex else {}),
        )
        return _unquote(r.get("ETag"))

    def list_parts(self, key: str, upload_id: str) -> dict[int, RemotePart]:
        parts: dict[int, RemotePart] = {}
        marker = 0
        while True:
            r = self._call(
                f"listing parts of {key}",
                self._client.list_parts,
                Key=key,
                UploadId=upload_id,
                PartNumberMarker=marker,
            )
            for p in r.get("Parts", []):
                parts[int(p["PartNumber"])] = RemotePart(int(p["Size"]), _unquote(p["ETag"]))
            if not r.get("IsTruncated"):
                return parts
            marker = int(r.get("NextPartNumberMarker", 0))
            if marker <= 0:
                return parts

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        r = self._call(
            f"completion of {key}",
            self._client.complete_multipart_upload,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": f'"{e}"'} for n, e in parts]},
        )
        return _unquote(r.get("ETag"))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:  # best effort: servers expire abandoned uploads themselves
            return

    def head(self, key: str) -> RemoteObject | None:
        try:
            r = self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return None
            raise self._error(exc, f"check of {key}") from None
        except Exception as exc:
            raise self._error(exc, f"check of {key}") from None
        meta = {k.lower(): v for k, v in (r.get("Metadata") or {}).items()}
        return RemoteObject(
            size=int(r["ContentLength"]),
            etag=_unquote(r.get("ETag")) or None,
            meta_sha256=meta.get(META_SHA256),
            checksum_sha256=_b64_to_hex(r.get("ChecksumSHA256")),
        )

    def delete(self, key: str) -> None:
        self._call(f"deletion of {key}", self._client.delete_object, Key=key)

    def list_keys(self, prefix: str) -> Iterator[str]:
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = self._call(
                f"listing of {prefix or 'the bucket'}", self._client.list_objects_v2, **kw
            )
            for obj in r.get("Contents", []):
                yield str(obj["Key"])
            token = r.get("NextContinuationToken")
            if not r.get("IsTruncated") or not token:
                return

    def get(self, key: str) -> bytes | None:
        try:
            r = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(r["Body"].read())
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                return None
            raise self._error(exc, f"download of {key}") from None
        except Exception as exc:
            raise self._error(exc, f"download of {key}") from None

    def get_range(self, key: str, start: int, end: int) -> RangeRead:
        """Bytes ``start`` .. ``end - 1`` of an object by one ranged GET (readers of the
        bucket: ``export/remote.py``); :class:`PermanentError` if there is no such object."""
        what = f"download of bytes {start}-{end - 1} of {key}"
        try:
            r = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}"
            )
            body = bytes(r["Body"].read())
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                raise PermanentError(
                    f"{what} at {self.endpoint} (bucket {self.bucket}): no such object"
                ) from None
            raise self._error(exc, what) from None
        except Exception as exc:
            raise self._error(exc, what) from None
        total = _range_total(r.get("ContentRange"))
        if total is None:  # a server that ignores Range sends the whole object (200)
            return RangeRead(body[start:end], len(body), len(body))
        return RangeRead(body, total, len(body))
