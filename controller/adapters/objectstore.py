"""The bucket under the desired-state store: a small storage interface, S3, and an in-memory twin.

Design
------
:class:`ObjectStore` is the handful of operations the desired-state store's algorithm
(:mod:`oab.controller.adapters.store`) needs: read the current version, write or delete it
conditionally (``If-None-Match: *`` / ``If-Match: <etag>``), list keys, list and read versions.
:class:`S3ObjectStore` implements it on one versioned S3 bucket; :class:`MemoryObjectStore` is
its in-memory twin (same conditions, same byte cap), so the algorithm is tested without S3 and
the adapter without the algorithm (STYLE.md trait 3).

Invariants
----------
- A failed condition is :class:`PreconditionFailed` (S3's 412, and 409 for a concurrent
  conditional write), never a generic error; every other S3 failure is a :class:`StorageError`
  that keeps the AWS error code and says whether a retry can help.
- A body larger than the store's byte cap is never downloaded (its size comes from
  ``ContentLength``): the :class:`Blob` says ``oversize`` and carries no body.

Time model: none (S3 stamps ``last_modified``; nothing here reads a clock).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.api.intake import MAX_STORED_BYTES
from oab.controller.base.errors import (
    OabError,
    PreconditionFailed,
    classify_aws,
    precondition_failed,
)

__all__ = [
    "Blob",
    "MemoryObjectStore",
    "ObjectStore",
    "PreconditionFailed",
    "S3ObjectStore",
    "StorageError",
    "StoreError",
    "VersionInfo",
]


class StoreError(OabError):
    """Base of every store error; ``retryable`` says whether trying again may succeed."""

    retryable = False
    reason = "StoreError"


class StorageError(StoreError):
    """S3 failed (network, throttling, permissions); keeps the AWS error code."""

    reason = "StorageError"

    def __init__(self, message: str, *, code: str = "", retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


@dataclass(frozen=True)
class Blob:
    """One object version as read from the bucket.

    ``oversize`` is the object's size when it exceeded the ``max_bytes`` of the read: its body
    was not read (``body`` is empty). ``metadata`` is the S3 user metadata.
    """

    body: bytes
    etag: str
    version_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    oversize: int | None = None


@dataclass(frozen=True)
class VersionInfo:
    """One entry of an object's version list (newest first)."""

    version_id: str
    last_modified: datetime
    is_latest: bool
    is_delete_marker: bool


class ObjectStore(Protocol):
    """The few bucket operations the desired-state store needs; a conditional write or delete
    whose condition fails raises :class:`PreconditionFailed`."""

    def read(self, key: str) -> Blob | None:
        """The current version, or None if absent; a body over the store's byte cap is not
        read (:attr:`Blob.oversize`)."""

    def put(
        self,
        key: str,
        body: bytes,
        *,
        if_match: str | None,
        metadata: Mapping[str, str],
    ) -> Blob:
        """Write conditionally: ``if_match=None`` means create-only (If-None-Match: *)."""

    def remove(self, key: str, *, if_match: str) -> None:
        """Delete the current version if its ETag still matches."""

    def list_keys(self, prefix: str) -> list[str]:
        """Every current key under ``prefix``, sorted."""

    def versions(self, key: str) -> list[VersionInfo]:
        """Versions of exactly ``key``, newest first."""

    def read_version(self, key: str, version_id: str) -> tuple[Blob, Mapping[str, str]]:
        """A specific version's body (unread over the byte cap) and user metadata."""


def _aws_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


class S3ObjectStore:
    """:class:`ObjectStore` on one S3 bucket (boto3 client passed in).

    ``max_bytes`` (default :data:`~oab.controller.api.intake.MAX_STORED_BYTES`): a body larger than
    this is never downloaded; its size comes from ``ContentLength``.
    """

    def __init__(self, s3: Any, bucket: str, *, max_bytes: int = MAX_STORED_BYTES) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._max_bytes = max_bytes

    def _fail(self, what: str, exc: Exception) -> StorageError:
        aws = classify_aws(exc, operation="s3")
        return StorageError(
            f"s3://{self.bucket}/{what}: {aws.code}: {exc}", code=aws.code, retryable=aws.retryable
        )

    def read(self, key: str) -> Blob | None:
        try:
            resp = self._s3.get_object(Bucket=self.bucket, Key=key)
            return _bounded_blob(resp, max_bytes=self._max_bytes, version_id="null")
        except ClientError as exc:
            if _aws_error(exc) in ("NoSuchKey", "404"):
                return None
            raise self._fail(key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, exc) from exc

    def put(
        self, key: str, body: bytes, *, if_match: str | None, metadata: Mapping[str, str]
    ) -> Blob:
        cond = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            resp = self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/yaml",
                Metadata=dict(metadata),
                **cond,
            )
        except ClientError as exc:
            # NoSuchKey on If-Match: the object read was removed meanwhile (someone won).
            lost = precondition_failed(exc, key=key)
            if lost is not None or _aws_error(exc) == "NoSuchKey":
                raise lost or PreconditionFailed(key, code="NoSuchKey") from exc
            raise self._fail(key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, exc) from exc
        return Blob(body, resp["ETag"], resp.get("VersionId", "null"))

    def remove(self, key: str, *, if_match: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=if_match)
        except ClientError as exc:
            # NoSuchKey on If-Match: the object read was removed meanwhile (someone won).
            lost = precondition_failed(exc, key=key)
            if lost is not None or _aws_error(exc) == "NoSuchKey":
                raise lost or PreconditionFailed(key, code="NoSuchKey") from exc
            raise self._fail(key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail(key, exc) from exc

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(o["Key"] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(prefix, exc) from exc
        return sorted(keys)

    def versions(self, key: str) -> list[VersionInfo]:
        out: list[VersionInfo] = []
        try:
            pages = self._s3.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=key
            )
            for page in pages:
                for v in page.get("Versions", []):
                    if v["Key"] == key:
                        out.append(
                            VersionInfo(v["VersionId"], v["LastModified"], v["IsLatest"], False)
                        )
                for m in page.get("DeleteMarkers", []):
                    if m["Key"] == key:
                        out.append(
                            VersionInfo(m["VersionId"], m["LastModified"], m["IsLatest"], True)
                        )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, exc) from exc
        out.sort(key=lambda v: (v.is_latest, v.last_modified), reverse=True)
        return out

    def read_version(self, key: str, version_id: str) -> tuple[Blob, Mapping[str, str]]:
        try:
            resp = self._s3.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
            blob = _bounded_blob(resp, max_bytes=self._max_bytes, version_id=version_id)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"{key}?versionId={version_id}", exc) from exc
        return blob, blob.metadata


def _bounded_blob(resp: Mapping[str, Any], *, max_bytes: int, version_id: str) -> Blob:
    """A GetObject response as a :class:`Blob`, reading at most ``max_bytes`` of its body.

    The size comes from ``ContentLength`` before anything is read; a body longer than it says
    is still cut at ``max_bytes + 1``. Closing an unread body drops its connection, which is
    cheaper than downloading what would be refused.
    """
    stream = resp["Body"]
    etag, version = str(resp["ETag"]), str(resp.get("VersionId", version_id))
    metadata = {str(k): str(v) for k, v in dict(resp.get("Metadata") or {}).items()}
    try:
        length = resp.get("ContentLength")
        if isinstance(length, int) and length > max_bytes:
            return Blob(b"", etag, version, metadata, oversize=length)
        body: bytes = stream.read(max_bytes + 1)
    finally:
        stream.close()
    if len(body) > max_bytes:
        return Blob(b"", etag, version, metadata, oversize=len(body))
    return Blob(body, etag, version, metadata)


class MemoryObjectStore:
    """:class:`ObjectStore` in memory with S3's versioning and condition semantics (tests)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.time, max_bytes: int = MAX_STORED_BYTES
    ) -> None:
        self._objects: dict[str, list[tuple[Blob, dict[str, str], datetime]]] = {}
        self._clock = clock
        self._max_bytes = max_bytes
        self._n = 0

    def read(self, key: str) -> Blob | None:
        history = self._objects.get(key)
        if not history:
            return None
        blob, meta, _when = history[-1]
        return _capped(blob, meta, self._max_bytes)

    def put(
        self, key: str, body: bytes, *, if_match: str | None, metadata: Mapping[str, str]
    ) -> Blob:
        current = self.read(key)
        if (if_match is None and current is not None) or (
            if_match is not None and (current is None or current.etag != if_match)
        ):
            raise PreconditionFailed(key)
        self._n += 1
        blob = Blob(body, f'"{hashlib.md5(body).hexdigest()}"', f"v{self._n:08d}", dict(metadata))
        when = datetime.fromtimestamp(self._clock(), tz=UTC)
        self._objects.setdefault(key, []).append((blob, dict(metadata), when))
        return blob

    def remove(self, key: str, *, if_match: str) -> None:
        current = self.read(key)
        if current is None or current.etag != if_match:
            raise PreconditionFailed(key)
        del self._objects[key]

    def list_keys(self, prefix: str) -> list[str]:
        return sorted(k for k in self._objects if k.startswith(prefix))

    def versions(self, key: str) -> list[VersionInfo]:
        history = self._objects.get(key, [])
        n = len(history)
        return [
            VersionInfo(b.version_id, when, i == n - 1, False)
            for i, (b, _m, when) in reversed(list(enumerate(history)))
        ]

    def read_version(self, key: str, version_id: str) -> tuple[Blob, Mapping[str, str]]:
        for blob, meta, _when in self._objects.get(key, []):
            if blob.version_id == version_id:
                return _capped(blob, meta, self._max_bytes), meta
        raise StorageError(f"{key}?versionId={version_id}: NoSuchVersion", code="NoSuchVersion")


def _capped(blob: Blob, metadata: Mapping[str, str], max_bytes: int) -> Blob:
    if len(blob.body) > max_bytes:
        return Blob(b"", blob.etag, blob.version_id, dict(metadata), oversize=len(blob.body))
    return blob
