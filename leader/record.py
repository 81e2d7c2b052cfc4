"""The lease record: what one lease item in the lease table holds, and its DynamoDB codec.

Item layout (table keys ``pk`` S / ``sk`` S): ``pk = lease#{name}``, ``sk = lease``.

- ``holder`` (S, 1-256 characters): replica id of the current holder; absent when released.
- ``epoch`` (N, integer 0..2^63-1): fencing token; +1 on every acquisition (so on every change of
  holder, and also when a holder re-acquires after stepping down); kept on release.
- ``revision`` (S, 1-256 characters): a fresh random value on every write, renewals included.
  Candidates judge expiry by watching it stay unchanged for a full lease duration on their own
  clock.
- ``lease_duration_ms`` (N, integer >= 1): the holder's promise, in milliseconds; candidates use
  this stored value, not their own configuration, **clamped** to :data:`MAX_LEASE_DURATION_MS`.
- ``transitions`` (N, optional, integer >= 0): number of acquisitions so far (display only).
- ``acquired_at`` / ``renewed_at`` (N, optional, Unix seconds 0..year 9999): wall clock of the
  writer, display only, never compared across hosts.

Untrusted input
---------------
The item is read from a table that operators, scripts and other versions can write, so decoding is
strict and total: :func:`decode_item` returns either a :class:`LeaseRecord` or an
:class:`UnreadableLease` (never raises) naming the first attribute that is missing, of the wrong
DynamoDB type or out of range. Problems never quote stored values (they may be huge or secret);
only attribute names, types and sizes. Unknown attributes are ignored (forward compatibility).

An unreadable item is identified by its :attr:`UnreadableLease.fingerprint` (a digest of the lease
attributes exactly as read), so a candidate can watch it stay *unchanged* for a lease duration as
it watches a revision, and then replace it conditionally on exactly those stored values (see
:mod:`oab.leader.lease`). Whatever of it still decodes (its epoch) is kept to continue the epoch
sequence.

Maximum lease duration
----------------------
:data:`MAX_LEASE_DURATION_MS` = 60 s (10 x the 6 s default). A stored duration beyond it is
clamped when judging expiry (a corrupt or hostile item cannot keep every standby waiting for
days), and :class:`~oab.leader.config.ElectionConfig` refuses longer durations, so clamping never
shortens a promise a real holder made. 60 s bounds the failover delay such an item can cause to
one minute while leaving room for deployments that need longer leases than the default (slow
networks, large GC pauses).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NewType

from oab.leader.errors import LeaseItemInvalid

__all__ = [
    "LEASE_ATTRIBUTES",
    "MAX_EPOCH",
    "MAX_ID_LENGTH",
    "MAX_LEASE_DURATION_MS",
    "Epoch",
    "LeaseRecord",
    "ReplicaId",
    "Revision",
    "StoredLease",
    "UnreadableLease",
    "decode_item",
    "lease_key",
]

ReplicaId = NewType("ReplicaId", str)
Epoch = NewType("Epoch", int)
Revision = NewType("Revision", str)

SORT_KEY = "lease"

#: Longest stored lease duration a candidate honours; longer values are clamped (see above).
MAX_LEASE_DURATION_MS = 60_000
#: Longest holder id and revision accepted (the daemon's replica ids are at most 128).
MAX_ID_LENGTH = 256
#: Largest epoch (DynamoDB numbers are wider; fences and metrics use signed 64-bit integers).
MAX_EPOCH = 2**63 - 1
#: Largest display timestamp (9999-12-31T23:59:59Z): beyond it, formatting dates fails.
MAX_TIMESTAMP = 253_402_300_799.0
#: The attributes this codec owns: what an unreadable item is fingerprinted and replaced on.
LEASE_ATTRIBUTES = (
    "holder",
    "epoch",
    "revision",
    "lease_duration_ms",
    "transitions",
    "acquired_at",
    "renewed_at",
)


def lease_key(name: str) -> dict[str, dict[str, str]]:
    """The low-level DynamoDB key of lease ``name``."""
    return {"pk": {"S": f"lease#{name}"}, "sk": {"S": SORT_KEY}}


@dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    """One stored version of a lease item. ``holder is None`` means released."""

    name: str
    holder: ReplicaId | None
    epoch: Epoch
    revision: Revision
    lease_duration_ms: int
    transitions: int
    acquired_at: float
    renewed_at: float

    @property
    def lease_duration(self) -> float:
        """Seconds a candidate waits on this revision: the stored duration, clamped."""
        return min(self.lease_duration_ms, MAX_LEASE_DURATION_MS) / 1000.0

    @property
    def duration_clamped(self) -> bool:
        """True when the stored duration exceeds :data:`MAX_LEASE_DURATION_MS`."""
        return self.lease_duration_ms > MAX_LEASE_DURATION_MS

    @property
    def released(self) -> bool:
        """True when nobody holds the lease."""
        return self.holder is None

    def to_item(self) -> dict[str, dict[str, str]]:
        """Low-level DynamoDB attribute map for ``PutItem``."""
        item: dict[str, dict[str, str]] = {
            **lease_key(self.name),
            "epoch": {"N": str(int(self.epoch))},
            "revision": {"S": self.revision},
            "lease_duration_ms": {"N": str(self.lease_duration_ms)},
            "transitions": {"N": str(self.transitions)},
            "acquired_at": {"N": _num(self.acquired_at)},
            "renewed_at": {"N": _num(self.renewed_at)},
        }
        if self.holder is not None:
            item["holder"] = {"S": self.holder}
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> LeaseRecord:
        """Decode a low-level DynamoDB attribute map; :class:`LeaseItemInvalid` if it does not."""
        pk = _string(item, "pk", required=True, limit=MAX_ID_LENGTH + 6)
        assert pk is not None
        holder = _string(item, "holder", required=False, limit=MAX_ID_LENGTH)
        revision = _string(item, "revision", required=True, limit=MAX_ID_LENGTH)
        assert revision is not None
        return cls(
            name=pk.removeprefix("lease#"),
            holder=ReplicaId(holder) if holder is not None else None,
            epoch=Epoch(_integer(item, "epoch", required=True, low=0, high=MAX_EPOCH)),
            revision=Revision(revision),
            lease_duration_ms=_integer(item, "lease_duration_ms", required=True, low=1, high=None),
            transitions=_integer(item, "transitions", required=False, low=0, high=MAX_EPOCH),
            acquired_at=_timestamp(item, "acquired_at"),
            renewed_at=_timestamp(item, "renewed_at"),
        )


@dataclass(frozen=True, kw_only=True)
class UnreadableLease:
    """A stored lease item that does not decode: why, what it held, and what could be salvaged.

    Nobody holds an unreadable lease; candidates replace it once its :attr:`fingerprint` has been
    seen unchanged for their configured lease duration.
    """

    name: str
    #: The first problem found: attribute name and what is wrong (never a stored value).
    problem: str
    #: The item's :data:`LEASE_ATTRIBUTES` exactly as read (low-level values); absent ones omitted.
    attributes: Mapping[str, Any]
    #: Digest of :attr:`attributes`: equal fingerprints mean the item did not change.
    fingerprint: str
    #: The stored epoch when that attribute alone decodes, else ``None``.
    epoch: Epoch | None
    #: The stored transitions count when that attribute alone decodes, else ``None``.
    transitions: int | None

    @classmethod
    def of(cls, item: Mapping[str, Any], *, name: str, problem: str) -> UnreadableLease:
        """Describe ``item`` (which failed to decode with ``problem``)."""
        attributes = {k: item[k] for k in LEASE_ATTRIBUTES if k in item}
        return cls(
            name=name,
            problem=problem,
            attributes=attributes,
            fingerprint=_fingerprint(attributes),
            epoch=Epoch(epoch) if (epoch := _salvage(item, "epoch")) is not None else None,
            transitions=_salvage(item, "transitions"),
        )


#: What a lease read can find (``None`` aside: no item).
StoredLease = LeaseRecord | UnreadableLease


def decode_item(item: Mapping[str, Any], *, name: str) -> StoredLease:
    """Decode the stored item of lease ``name``; never raises: garbage is an ``UnreadableLease``."""
    try:
        return LeaseRecord.from_item(item)
    except LeaseItemInvalid as exc:
        return UnreadableLease.of(item, name=name, problem=str(exc))


# ------------------------------------------------------------------------------ field decoders


def _value(item: Mapping[str, Any], field: str, kind: str, *, required: bool) -> Any:
    """The payload of attribute ``field`` of DynamoDB type ``kind`` (None: absent, optional)."""
    if not isinstance(item, Mapping):
        raise LeaseItemInvalid("item: not an attribute map", field="item")
    if field not in item:
        if required:
            raise LeaseItemInvalid(f"{field}: missing", field=field)
        return None
    attr = item[field]
    if not isinstance(attr, Mapping) or len(attr) != 1:
        raise LeaseItemInvalid(f"{field}: not a DynamoDB attribute value", field=field)
    (got,) = attr.keys()
    if got != kind:
        raise LeaseItemInvalid(f"{field}: expected type {kind}, got {str(got)[:8]}", field=field)
    return attr[kind]


def _string(item: Mapping[str, Any], field: str, *, required: bool, limit: int) -> str | None:
    raw = _value(item, field, "S", required=required)
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise LeaseItemInvalid(f"{field}: empty string", field=field)
    if len(raw) > limit:
        raise LeaseItemInvalid(f"{field}: {len(raw)} characters, more than {limit}", field=field)
    return raw


def _number(item: Mapping[str, Any], field: str, *, required: bool) -> Decimal | None:
    raw = _value(item, field, "N", required=required)
    if raw is None:
        return None
    # DynamoDB numbers have at most 38 significant digits; anything longer is not one.
    if not isinstance(raw, str) or len(raw) > 64:
        raise LeaseItemInvalid(f"{field}: not a number", field=field)
    try:
        number = Decimal(raw)
    except InvalidOperation:
        raise LeaseItemInvalid(f"{field}: not a number", field=field) from None
    if not number.is_finite():
        raise LeaseItemInvalid(f"{field}: not a finite number", field=field)
    return number


def _integer(
    item: Mapping[str, Any], field: str, *, required: bool, low: int, high: int | None
) -> int:
    number = _number(item, field, required=required)
    if number is None:
        return 0
    if number != number.to_integral_value():
        raise LeaseItemInvalid(f"{field}: not an integer", field=field)
    value = int(number)
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise LeaseItemInvalid(f"{field}: out of range (allowed {bounds})", field=field)
    return value


def _timestamp(item: Mapping[str, Any], field: str) -> float:
    number = _number(item, field, required=False)
    if number is None:
        return 0.0
    value = float(number)
    if not (math.isfinite(value) and 0.0 <= value <= MAX_TIMESTAMP):
        raise LeaseItemInvalid(f"{field}: out of range (0..{MAX_TIMESTAMP:.0f})", field=field)
    return value


def _salvage(item: Mapping[str, Any], field: str) -> int | None:
    try:
        return _integer(item, field, required=True, low=0, high=MAX_EPOCH)
    except LeaseItemInvalid:
        return None


def _fingerprint(attributes: Mapping[str, Any]) -> str:
    canonical = json.dumps(_canonical(attributes), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """A JSON-ready form of a low-level attribute value that ignores set order."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            if key in ("SS", "NS", "BS") and isinstance(inner, list):
                out[str(key)] = sorted(json.dumps(_canonical(v)) for v in inner)
            else:
                out[str(key)] = _canonical(inner)
        return out
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return {"$b64": base64.b64encode(bytes(value)).decode()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(type(value))


def _num(value: float) -> str:
    # Millisecond precision is plenty for display values and keeps items short.
    return str(Decimal(str(round(value, 3))))
