"""The lease record: what one lease item in the lease table holds, and its DynamoDB encoding.

Item layout (table keys ``pk`` S / ``sk`` S): ``pk = lease#{name}``, ``sk = lease``.

- ``holder`` (S): replica id of the current holder; absent when released.
- ``epoch`` (N): fencing token; +1 on every acquisition (so on every change of holder, and also
  when a holder re-acquires after stepping down); kept on release.
- ``revision`` (S): a fresh random value on every write, renewals included. Candidates judge
  expiry by watching it stay unchanged for a full ``lease_duration_ms`` on their own clock.
- ``lease_duration_ms`` (N): the holder's promise, in milliseconds; candidates use this stored
  value, not their own configuration.
- ``transitions`` (N): number of acquisitions so far.
- ``acquired_at`` / ``renewed_at`` (N, Unix seconds): wall clock of the writer, display only,
  never compared across hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NewType

ReplicaId = NewType("ReplicaId", str)
Epoch = NewType("Epoch", int)
Revision = NewType("Revision", str)

SORT_KEY = "lease"


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
        """The stored lease duration in seconds."""
        return self.lease_duration_ms / 1000.0

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
    def from_item(cls, item: dict[str, Any]) -> LeaseRecord:
        """Decode a low-level DynamoDB attribute map."""
        pk: str = item["pk"]["S"]
        holder = item.get("holder", {}).get("S") or None
        return cls(
            name=pk.removeprefix("lease#"),
            holder=ReplicaId(holder) if holder else None,
            epoch=Epoch(int(item["epoch"]["N"])),
            revision=Revision(item["revision"]["S"]),
            lease_duration_ms=int(item["lease_duration_ms"]["N"]),
            transitions=int(item.get("transitions", {}).get("N", "0")),
            acquired_at=float(item.get("acquired_at", {}).get("N", "0")),
            renewed_at=float(item.get("renewed_at", {}).get("N", "0")),
        )


def _num(value: float) -> str:
    # Millisecond precision is plenty for display values and keeps items short.
    return str(Decimal(str(round(value, 3))))
