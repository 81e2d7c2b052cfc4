"""Snapshot records and requests in S3: ingested into the audit run log, requested by oabctl.

Design
------
The protocol's types are :mod:`oab.controller.core.snapshot`. This module holds both S3 sides
the controller's own processes play: the requester (``oabctl snapshot``:
:func:`request_snapshot`, :func:`wait_snapshot`) and the ingestion described below.

The snapshot sidecar runs with the agent's task role: it may write its records to
``snapshots/{ns}/{name}/{stamp}-{id}.json`` in the control-plane bucket (see
:mod:`oab.controller.agent.sidecar`) but never the controller's run log. The controller ingests
those records instead:

- The agent's status keeps a marker, ``last_snapshot``: the key of the newest record already in
  the audit log. Record keys start with a UTC timestamp, so S3's lexicographic listing with
  ``StartAfter=marker`` returns exactly the newer records, oldest first.
- :class:`SnapshotRecords` is the small storage interface (one listing, one read per record);
  :class:`S3SnapshotRecords` is its S3 adapter and :func:`snapshot_call` the pure mapping of a
  record to the :class:`~oab.controller.core.status.AwsCall` the audit row carries
  (``s3:PutObject(snapshot)`` on the ``bootstrapFrom`` URI; the result is the new object version,
  or ``failed: <why>``).
- :func:`wants_ingest` says which runs look: only runs that already exist for another reason and
  where a snapshot is likely (a change or its nudge, a resync finding, a deployment in progress
  or just finishing: SIGTERM snapshots happen during deployments). A no-op resync enqueues no
  run, so idle agents cost nothing; a run that looks costs one ListObjectsV2 plus one GetObject
  per new record. ``oabctl snapshot`` nudges the agent (a change record) after each success so
  its record is ingested within seconds.

Invariants
----------
- A record enters the audit log at most once: the marker advances in the same transaction as the
  audit row that holds the record's call (the worker's status + audit write). A run that fails
  writes neither, so the next run ingests the same records again.
- Records are ingested in key (time) order; at most :data:`MAX_RECORDS_PER_RUN` per run, the
  rest by later runs.
- Records contain no secret (ids, URIs, versions, sizes and the sidecar's error text only).
- Records are *untrusted* (the agent's task role writes them; a hostile or broken agent may write
  anything there): a record is never copied verbatim. Its listed size is checked before any
  GET (:data:`~oab.controller.core.stored.SNAPSHOT_RECORD_BYTES`), the GET is ranged to that cap,
  the JSON's nesting is bounded before parsing, and the result is validated by a strict model
  (types, enumerated values, bounded strings, the agent it names). The sidecar's error text is
  scrubbed and cut to :data:`~oab.controller.core.stored.SNAPSHOT_ERROR_BYTES`. A record that fails
  any check is audited once as a failed snapshot saying why (bounded text) and the marker moves
  past it, so a bad record never blocks the ones after it nor is retried forever. A record
  that cannot be fetched for a transient reason (throttling, 5xx) ends this run's ingestion at
  that record; the next run tries it again.

Time model: ingestion reads no clock (ordering comes from the keys the sidecar stamped with its
wall clock); :func:`wait_snapshot` waits on the injected clock's monotonic reading and searches
records from its wall reading minus :data:`CLOCK_SKEW_ALLOWANCE`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from oab.controller.api.service import AgentKey, Phase
from oab.controller.base import names
from oab.controller.base.clock import Clock, SystemClock
from oab.controller.base.errors import AwsError, classify_aws, precondition_failed
from oab.controller.base.names import snapshot_record_prefix
from oab.controller.core.outcome import Cause
from oab.controller.core.snapshot import (
    MAX_RECORD_BYTES,
    MalformedSnapshotRecord,
    SnapshotAlreadyRequested,
    SnapshotFailed,
    SnapshotId,
    SnapshotRecord,
    SnapshotRequest,
    SnapshotTimeout,
    new_snapshot_id,
)
from oab.controller.core.status import AwsCall
from oab.controller.core.stored import (
    SNAPSHOT_ERROR_BYTES,
    SNAPSHOT_RECORD_BYTES,
    SNAPSHOT_RECORD_DEPTH,
    clip,
    json_depth,
    safe_text,
)

__all__ = [
    "MAX_RECORDS_PER_RUN",
    "SNAPSHOT_ACTION",
    "FoundRecord",
    "S3SnapshotRecords",
    "SnapshotRecords",
    "calls_for",
    "request_snapshot",
    "snapshot_call",
    "wait_snapshot",
    "wants_ingest",
]

log = logging.getLogger(__name__)

#: The audit call action of an ingested snapshot record.
SNAPSHOT_ACTION: Final = "s3:PutObject(snapshot)"
#: Upper bound of records one run ingests, so one audit row stays small.
MAX_RECORDS_PER_RUN: Final = 20


@dataclass(frozen=True, kw_only=True)
class FoundRecord:
    """A snapshot record and the object key it is stored under (the next marker)."""

    key: str
    record: SnapshotRecord


class SnapshotRecords(Protocol):
    """Where the controller finds an agent's snapshot records."""

    def after(self, agent: AgentKey, *, marker: str, limit: int) -> list[FoundRecord]:
        """Up to ``limit`` records stored after ``marker`` (an object key; "" = from the start).

        Oldest first. Raises :mod:`oab.controller.base.errors` types.
        """
        ...


_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\x00-\x1f]{1,1000}")


class _RecordModel(BaseModel):
    """A snapshot record as the controller accepts it (strict types, bounded, enumerated).

    Fields the sidecar may add later are ignored, never copied.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    agent: str = Field(max_length=127)
    id: str = Field(max_length=64)
    trigger: Literal["on-demand", "shutdown"]
    status: Literal["uploaded", "failed"]
    taken_at: float = Field(ge=0, le=1e11, allow_inf_nan=False)
    location: str | None = Field(default=None, max_length=1100)
    version_id: str | None = Field(default=None, max_length=1024)
    members: int = Field(default=0, ge=0, le=10**9)
    size_bytes: int = Field(default=0, ge=0, le=2**53)
    excluded: int = Field(default=0, ge=0, le=10**9)
    error: str | None = Field(default=None, max_length=64 * 1024)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if _ID.fullmatch(value) is None:
            raise ValueError("not an id of letters, digits, '_', '.', '-'")
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        if value is not None and _S3_URI.fullmatch(value) is None:
            raise ValueError("not an s3://bucket/key URI")
        return value


def parse_record(body: bytes, *, agent: AgentKey) -> SnapshotRecord:
    """Validate a stored record of ``agent`` (see the module docstring); raises
    :class:`MalformedSnapshotRecord`. Pure."""
    if len(body) > SNAPSHOT_RECORD_BYTES:
        raise MalformedSnapshotRecord(f"record over {SNAPSHOT_RECORD_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedSnapshotRecord("record is not UTF-8") from None
    if json_depth(text) > SNAPSHOT_RECORD_DEPTH:
        raise MalformedSnapshotRecord(f"record nested deeper than {SNAPSHOT_RECORD_DEPTH}")
    try:
        raw = json.loads(text)
    except ValueError:
        raise MalformedSnapshotRecord("record is not valid JSON") from None
    if not isinstance(raw, dict):
        raise MalformedSnapshotRecord("record is not a JSON object")
    try:
        model = _RecordModel.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "record"
        raise MalformedSnapshotRecord(
            f"{where}: {clip(str(first.get('msg', 'invalid')), 120)}"
        ) from None
    if model.agent != agent:
        raise MalformedSnapshotRecord("agent: names another agent")
    return SnapshotRecord(
        agent=agent,
        id=SnapshotId(model.id),
        trigger=model.trigger,
        status=model.status,
        taken_at=model.taken_at if math.isfinite(model.taken_at) else 0.0,
        location=model.location,
        version_id=model.version_id,
        members=model.members,
        size_bytes=model.size_bytes,
        excluded=model.excluded,
        error=safe_text(model.error, SNAPSHOT_ERROR_BYTES) if model.error is not None else None,
    )


class S3SnapshotRecords:
    """:class:`SnapshotRecords` on the control-plane bucket."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def after(self, agent: AgentKey, *, marker: str, limit: int) -> list[FoundRecord]:
        """One ListObjectsV2 (``StartAfter=marker``) and one ranged GetObject per new record of
        at most :data:`~oab.controller.core.stored.SNAPSHOT_RECORD_BYTES`; larger ones are refused
        from the listing alone."""
        prefix = snapshot_record_prefix(agent)
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix, "MaxKeys": limit}
        if marker.startswith(prefix):
            kwargs["StartAfter"] = marker
        try:
            listed = self._s3.list_objects_v2(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise classify_aws(exc, operation="ListObjectsV2") from exc
        objects = sorted(
            (o for o in listed.get("Contents", []) if isinstance(o.get("Key"), str)),
            key=lambda o: str(o["Key"]),
        )
        found: list[FoundRecord] = []
        for obj in objects[:limit]:
            key = str(obj["Key"])
            try:
                record = self._read(agent, key, obj)
            except MalformedSnapshotRecord as exc:
                # A bad record must not block the ones after it: audit it once as a failure.
                log.warning("unreadable snapshot record %s: %s", clip(key, 300), exc)
                record = _malformed(agent, key, str(exc))
            except AwsError as exc:
                if exc.retryable:
                    break  # the next run tries this record again; keep what came before
                log.warning("snapshot record %s cannot be read: %s", clip(key, 300), exc.code)
                record = _malformed(agent, key, f"cannot be read: {exc.code}")
            if record is not None:
                found.append(FoundRecord(key=key, record=record))
        return found

    def _read(self, agent: AgentKey, key: str, listed: Mapping[str, Any]) -> SnapshotRecord | None:
        """One record, or ``None`` when it is gone since the listing."""
        if not key.endswith(".json"):
            raise MalformedSnapshotRecord("not a snapshot record key (.json)")
        size = listed.get("Size")
        if isinstance(size, int) and size > SNAPSHOT_RECORD_BYTES:
            raise MalformedSnapshotRecord(f"record of {size} bytes is over {SNAPSHOT_RECORD_BYTES}")
        try:
            # Ranged: the object may have grown since the listing; read one byte past the cap.
            resp = self._s3.get_object(
                Bucket=self._bucket, Key=key, Range=f"bytes=0-{SNAPSHOT_RECORD_BYTES}"
            )
            body = resp["Body"].read(SNAPSHOT_RECORD_BYTES + 1)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in ("NoSuchKey", "404"):
                return None
            raise classify_aws(exc, operation="GetObject") from exc
        except BotoCoreError as exc:
            raise classify_aws(exc, operation="GetObject") from exc
        return parse_record(body, agent=agent)


def _malformed(agent: AgentKey, key: str, why: str = "malformed snapshot record") -> SnapshotRecord:
    name = key.rsplit("/", 1)[-1].removesuffix(".json")
    return SnapshotRecord(
        agent=agent,
        id=SnapshotId(clip(name, 96)),
        trigger="on-demand",
        status="failed",
        taken_at=0.0,
        error=f"unreadable snapshot record: {clip(why, 200)}",
    )


def snapshot_call(record: SnapshotRecord) -> AwsCall:
    """The audit-log call of one snapshot attempt (pure)."""
    if record.status == "uploaded":
        result = record.version_id or "uploaded (unversioned bucket)"
    else:
        result = f"failed: {record.error or 'unknown error'}"
    return AwsCall(
        action=SNAPSHOT_ACTION,
        target=record.location or "",
        result=result,
        request_id=f"{record.trigger}:{record.id}",
    )


def wants_ingest(*, cause: Cause, phase: Phase | None) -> bool:
    """Whether a run enqueued for ``cause``, on an agent in ``phase``, should look for new
    records.

    Changes (and ``oabctl snapshot``'s nudges, which are change records of kind ``apply``),
    resync findings, and runs while a deployment is in progress (``None``/``Pending``: the old
    task's SIGTERM snapshot arrives then) look; deletions never do.
    """
    if cause is Cause.DELETE:
        return False
    return cause in (Cause.APPLY, Cause.RESYNC) or phase in (None, "Pending")


def calls_for(found: Sequence[FoundRecord]) -> list[AwsCall]:
    """The audit calls of ``found``, in order."""
    return [snapshot_call(f.record) for f in found]


# ------------------------------------------------------------------- the requester (oabctl)

# wait_snapshot looks for records from a little before the request: the task's clock and the
# requester's may disagree by this much.
CLOCK_SKEW_ALLOWANCE: Final = 300.0


def request_snapshot(
    s3: Any,
    bucket: str,
    key: AgentKey,
    *,
    clock: Clock | None = None,
    new_id: Callable[[], str] = new_snapshot_id,
) -> SnapshotRequest:
    """Ask the agent ``key`` (``ns/name``) for an on-demand snapshot; returns the request.

    Raises ``SnapshotAlreadyRequested`` (with the pending request) when one is outstanding.
    """
    clk = clock or SystemClock()
    request = SnapshotRequest(agent=key, id=SnapshotId(new_id()), requested_at=clk.time())
    try:
        s3.put_object(
            Bucket=bucket,
            Key=names.snapshot_request_key(key),
            Body=request.to_json(),
            ContentType="application/json",
            IfNoneMatch="*",
        )
    except ClientError as exc:
        if precondition_failed(exc, key=names.snapshot_request_key(key)) is None:
            raise classify_aws(exc, operation="PutObject") from exc
        try:
            body = s3.get_object(Bucket=bucket, Key=names.snapshot_request_key(key))["Body"].read()
        except ClientError as again:
            raise classify_aws(again, operation="GetObject") from again
        raise SnapshotAlreadyRequested(SnapshotRequest.from_json(body)) from exc
    return request


def wait_snapshot(
    s3: Any,
    bucket: str,
    request: SnapshotRequest,
    *,
    timeout: float,
    interval: float = 2.0,
    clock: Clock | None = None,
) -> SnapshotRecord:
    """Wait until the sidecar records ``request``; return the record if the upload succeeded.

    Raises ``SnapshotFailed`` (the record says why) or ``SnapshotTimeout``. ``timeout`` should
    exceed the sidecar's poll interval plus the time to archive HOME.
    """
    clk = clock or SystemClock()
    prefix = names.snapshot_record_prefix(request.agent)
    start_after = names.snapshot_records_after(
        request.agent, max(0.0, request.requested_at - CLOCK_SKEW_ALLOWANCE)
    )
    suffix = f"-{request.id}.json"
    deadline = clk.monotonic() + timeout
    while True:
        try:
            paginator = s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, StartAfter=start_after):
                for obj in page.get("Contents", []):
                    if obj["Key"].endswith(suffix):
                        got = s3.get_object(Bucket=bucket, Key=obj["Key"])
                        record = SnapshotRecord.from_json(got["Body"].read(MAX_RECORD_BYTES + 1))
                        if record.status != "uploaded":
                            raise SnapshotFailed(record)
                        return record
        except ClientError as exc:
            raise classify_aws(exc, operation="ListObjectsV2") from exc
        if clk.monotonic() >= deadline:
            raise SnapshotTimeout(
                f"no snapshot record for request {request.id} of {request.agent}"
                f" after {timeout:.0f} s (is the agent running?)"
            )
        clk.sleep(interval)
