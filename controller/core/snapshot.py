"""The snapshot protocol: requests and records shared by ``oabctl``, the sidecar and the controller.

Design
------
Three parties meet in the control-plane bucket (keys: :mod:`oab.controller.base.names`):

- ``oabctl snapshot`` writes a :class:`SnapshotRequest` to ``snapshot-requests/{ns}/{name}``
  (at most one pending per agent) and waits for its record
  (:mod:`oab.controller.adapters.snapshots`);
- the sidecar in the agent's task (:mod:`oab.controller.agent.sidecar`) answers every attempt,
  on demand or at shutdown, with a :class:`SnapshotRecord` under ``snapshots/{ns}/{name}/``;
- the controller ingests those records into the audit run log
  (:mod:`oab.controller.adapters.snapshots`).

Invariants: records are written by the agent's task role, so they are untrusted when read: size
capped (:data:`MAX_RECORD_BYTES`) and every field type-checked (:meth:`SnapshotRecord.from_json`);
a request id is 1-64 characters of ``[A-Za-z0-9_.-]``.

Time model: ``requested_at`` and ``taken_at`` are wall-clock seconds of the writer (display and
the record search window); nothing here reads a clock.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Final, Literal, NewType

from pydantic import TypeAdapter, ValidationError

from oab.controller.api.service import AgentKey
from oab.controller.base import names
from oab.controller.base.errors import AgentError

__all__ = [
    "MAX_RECORD_BYTES",
    "MalformedSnapshotRecord",
    "Outcome",
    "SnapshotAlreadyRequested",
    "SnapshotError",
    "SnapshotFailed",
    "SnapshotId",
    "SnapshotRecord",
    "SnapshotRecorder",
    "SnapshotRequest",
    "SnapshotTimeout",
    "Trigger",
    "new_snapshot_id",
    "record_key",
]

SnapshotId = NewType("SnapshotId", str)

_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# A record is a few hundred bytes; anything past this is not one (records are agent-written).
MAX_RECORD_BYTES: Final = 64 * 1024

Trigger = Literal["on-demand", "shutdown"]
Outcome = Literal["uploaded", "failed"]


def new_snapshot_id() -> str:
    """A fresh request or record id (16 hex digits)."""
    return uuid.uuid4().hex[:16]


class SnapshotError(AgentError):
    """A snapshot could not be requested, taken or found."""

    reason = "SnapshotFailed"


class MalformedSnapshotRecord(SnapshotError, ValueError):
    """A stored record is not a valid one (too large, not JSON, wrong fields or types).

    Also a ``ValueError``: readers that skip unparsable records catch that.
    """

    reason = "MalformedSnapshotRecord"


class SnapshotAlreadyRequested(SnapshotError):
    """Another on-demand request for this agent is still pending; ``pending`` is the winner."""

    reason = "SnapshotAlreadyRequested"

    def __init__(self, pending: SnapshotRequest) -> None:
        super().__init__(
            f"a snapshot of {pending.agent} is already pending (request {pending.id});"
            " wait for it or let it time out"
        )
        self.pending = pending


class SnapshotFailed(SnapshotError):
    """The sidecar answered the request with a failure record."""

    def __init__(self, record: SnapshotRecord) -> None:
        super().__init__(f"snapshot {record.id} of {record.agent} failed: {record.error}")
        self.record = record


class SnapshotTimeout(SnapshotError):
    """No record for the request appeared in time (agent not running, or slow)."""

    retryable = True
    reason = "SnapshotTimeout"


@dataclass(frozen=True, kw_only=True)
class SnapshotRequest:
    """A pending on-demand request as stored under ``snapshot-requests/``."""

    agent: AgentKey
    id: SnapshotId
    requested_at: float  # wall-clock epoch seconds, for display and the record search window

    def to_json(self) -> bytes:
        """The stored body."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> SnapshotRequest:
        """Parse a stored body; ``SnapshotError`` if it is not a valid request."""
        try:
            raw = json.loads(body)
            request = cls(
                agent=AgentKey(str(raw["agent"])),
                id=SnapshotId(str(raw["id"])),
                requested_at=float(raw["requested_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"malformed snapshot request: {exc}") from exc
        if not _ID_RE.match(request.id):
            raise SnapshotError(f"malformed snapshot request id {request.id!r}")
        return request


@dataclass(frozen=True, kw_only=True)
class SnapshotRecord:
    """One snapshot attempt, as written to ``snapshots/{ns}/{name}/`` and the audit hook."""

    agent: AgentKey
    id: SnapshotId
    trigger: Trigger
    status: Outcome
    taken_at: float  # wall-clock epoch seconds
    location: str | None = None  # s3://bucket/key of the archive
    version_id: str | None = None  # S3 object version (None when the bucket is unversioned)
    members: int = 0
    size_bytes: int = 0  # uncompressed bytes of file data in the archive
    excluded: int = 0  # members dropped by the denylist or as special files
    error: str | None = None

    def to_json(self) -> bytes:
        """The stored body."""
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> SnapshotRecord:
        """Parse a stored record; ``MalformedSnapshotRecord`` for anything that is not one.

        Records are written by the agent's task (its role may write them), so they are
        untrusted: size-capped (:data:`MAX_RECORD_BYTES`), and every field type-checked.
        """
        if len(body) > MAX_RECORD_BYTES:
            raise MalformedSnapshotRecord(f"snapshot record larger than {MAX_RECORD_BYTES} bytes")
        try:
            return _RECORD.validate_json(body, strict=True)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) or "(record)" for e in exc.errors())
            raise MalformedSnapshotRecord(
                f"malformed snapshot record (bad fields: {fields})"
            ) from None


SnapshotRecorder = Callable[[SnapshotRecord], None]
_RECORD: Final = TypeAdapter(SnapshotRecord)


def record_key(record: SnapshotRecord) -> str:
    """Key of a record: sortable by time, findable by id (:func:`names.snapshot_record_key`)."""
    return names.snapshot_record_key(record.agent, taken_at=record.taken_at, snapshot_id=record.id)
