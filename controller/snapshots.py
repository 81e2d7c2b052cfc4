"""Snapshot records, read by the controller so that every snapshot lands in the audit run log.

Design
------
The snapshot sidecar runs with the agent's task role: it may write its records to
``snapshots/{ns}/{name}/{stamp}-{id}.json`` in the control-plane bucket (see
:mod:`oab.controller.agent_sidecar`) but never the controller's run log. The controller ingests
those records instead:

- The agent's status keeps a marker, ``last_snapshot``: the key of the newest record already in
  the audit log. Record keys start with a UTC timestamp, so S3's lexicographic listing with
  ``StartAfter=marker`` returns exactly the newer records, oldest first.
- :class:`SnapshotRecords` is the small storage interface (one listing, one read per record);
  :class:`S3SnapshotRecords` is its S3 adapter and :func:`snapshot_call` the pure mapping of a
  record to the :class:`~oab.controller.status.AwsCall` the audit row carries
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

Time model: none; ordering comes from the keys the sidecar stamped with its wall clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.agent_sidecar import SnapshotId, SnapshotRecord, record_prefix
from oab.controller.api import AgentKey
from oab.controller.errors import classify_aws
from oab.controller.status import AwsCall, Phase

__all__ = [
    "MAX_RECORDS_PER_RUN",
    "NUDGE_PREFIX",
    "SNAPSHOT_ACTION",
    "FoundRecord",
    "S3SnapshotRecords",
    "SnapshotRecords",
    "calls_for",
    "snapshot_call",
    "wants_ingest",
]

log = logging.getLogger(__name__)

#: The audit call action of an ingested snapshot record.
SNAPSHOT_ACTION: Final = "s3:PutObject(snapshot)"
#: Upper bound of records one run ingests, so one audit row stays small.
MAX_RECORDS_PER_RUN: Final = 20
#: Change-record version ids with this prefix are ``oabctl snapshot``'s nudges.
NUDGE_PREFIX: Final = "snapshot:"


@dataclass(frozen=True, kw_only=True)
class FoundRecord:
    """A snapshot record and the object key it is stored under (the next marker)."""

    key: str
    record: SnapshotRecord


class SnapshotRecords(Protocol):
    """Where the controller finds an agent's snapshot records."""

    def after(self, agent: AgentKey, *, marker: str, limit: int) -> list[FoundRecord]:
        """Up to ``limit`` records stored after ``marker`` (an object key; "" = from the start).

        Oldest first. Raises :mod:`oab.controller.errors` types.
        """
        ...


class S3SnapshotRecords:
    """:class:`SnapshotRecords` on the control-plane bucket."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def after(self, agent: AgentKey, *, marker: str, limit: int) -> list[FoundRecord]:
        """One ListObjectsV2 (``StartAfter=marker``) and one GetObject per new record."""
        prefix = record_prefix(agent)
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix, "MaxKeys": limit}
        if marker.startswith(prefix):
            kwargs["StartAfter"] = marker
        try:
            listed = self._s3.list_objects_v2(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise classify_aws(exc, operation="ListObjectsV2") from exc
        keys = sorted(str(o["Key"]) for o in listed.get("Contents", []))
        found: list[FoundRecord] = []
        for key in keys[:limit]:
            if not key.endswith(".json"):
                continue
            try:
                body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError) as exc:
                raise classify_aws(exc, operation="GetObject") from exc
            try:
                record = SnapshotRecord.from_json(body)
            except (ValueError, TypeError) as exc:
                # A malformed record must not block the ones after it: audit it as a failure.
                log.warning("malformed snapshot record %s: %s", key, exc)
                record = _malformed(agent, key)
            found.append(FoundRecord(key=key, record=record))
        return found


def _malformed(agent: AgentKey, key: str) -> SnapshotRecord:
    return SnapshotRecord(
        agent=agent,
        id=SnapshotId(key.rsplit("/", 1)[-1].removesuffix(".json")),
        trigger="on-demand",
        status="failed",
        taken_at=0.0,
        error="malformed snapshot record",
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


def wants_ingest(*, reason: str, phase: Phase | None) -> bool:
    """Whether a run with this reason, on an agent in ``phase``, should look for new records.

    Changes (and ``oabctl snapshot``'s nudges, which are change records of kind ``apply``),
    resync findings, and runs while a deployment is in progress (``None``/``Pending``: the old
    task's SIGTERM snapshot arrives then) look; deletions never do.
    """
    if reason == "delete":
        return False
    return reason == "apply" or reason.startswith("resync") or phase in (None, "Pending")


def calls_for(found: Sequence[FoundRecord]) -> list[AwsCall]:
    """The audit calls of ``found``, in order."""
    return [snapshot_call(f.record) for f in found]
