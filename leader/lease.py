"""Lease storage: a small conditional-write interface under the elector, and its DynamoDB adapter.

Design
------
Every lease write is a full-item conditional put; the condition is the only concurrency tool:

- acquire: the item is absent, or its ``revision`` is still the one the candidate watched expire
  (or saw released);
- renew / release: ``revision``, ``holder`` and ``epoch`` are still the caller's.

A failed condition becomes :class:`~oab.leader.errors.LeaseLost` carrying the record that won
(DynamoDB returns it with ``ReturnValuesOnConditionCheckFailure=ALL_OLD``).

Ambiguous writes (read timeout, dropped connection, HTTP 5xx: the write may or may not have been
applied) are resolved by reading the item back with a consistent read:

- stored revision == the revision we tried to write -> the write landed: success;
- stored item still satisfies our precondition -> it did not land (yet): ``LeaseUnavailable``
  (the elector retries; if the write lands later, the elector recognises the revision as its own);
- anything else -> someone else won: ``LeaseLost``;
- read fails too -> ``LeaseUnavailable``; an unknown outcome is never taken for success.

So a write that in fact succeeded is never mistaken for a loss, and a loss is never mistaken for
success. Absence read from the store never decides anything by itself: the next conditional write
does.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from oab.leader.errors import LeaderError, LeaseLost, LeaseUnavailable
from oab.leader.record import Epoch, LeaseRecord, ReplicaId, Revision, lease_key

__all__ = [
    "AmbiguousWrite",
    "ConditionalLeaseStore",
    "DynamoLeaseStore",
    "LeaseStore",
    "Precondition",
]


class AmbiguousWrite(LeaseUnavailable):
    """A write whose outcome is unknown (raised by adapters, resolved by read-back)."""


@dataclass(frozen=True, kw_only=True)
class Precondition:
    """What must hold for a lease write to apply. ``revision is None`` means "item absent"."""

    revision: Revision | None
    holder: ReplicaId | None = None
    epoch: Epoch | None = None

    def holds_for(self, record: LeaseRecord | None) -> bool:
        """Whether ``record`` satisfies this precondition (evaluated locally, for read-back)."""
        if self.revision is None:
            return record is None
        if record is None or record.revision != self.revision:
            return False
        if self.holder is not None and record.holder != self.holder:
            return False
        return self.epoch is None or record.epoch == self.epoch


class LeaseStore(Protocol):
    """The storage the elector needs: one read and three conditional writes of one lease."""

    @property
    def name(self) -> str:
        """The lease name."""
        ...

    @property
    def table(self) -> str:
        """The table holding the lease item (what fences name)."""
        ...

    def get(self) -> LeaseRecord | None:
        """The current record (consistent read), or ``None`` when there is no item."""
        ...

    def try_acquire(self, new: LeaseRecord, *, expected: LeaseRecord | None) -> LeaseRecord:
        """Write ``new`` if the stored lease is still ``expected`` (``None``: no item)."""
        ...

    def renew(self, new: LeaseRecord, *, current: LeaseRecord) -> LeaseRecord:
        """Write ``new`` if the stored lease is still ``current`` (same revision, holder, epoch)."""
        ...

    def release(self, new: LeaseRecord, *, current: LeaseRecord) -> LeaseRecord:
        """Write the released ``new`` (no holder) if the stored lease is still ``current``."""
        ...


class ConditionalLeaseStore(abc.ABC):
    """The :class:`LeaseStore` operations and ambiguity resolution over two primitives.

    Adapters implement ``_read`` (raising ``LeaseUnavailable``) and ``_put`` (raising
    ``LeaseLost``, ``AmbiguousWrite`` or ``LeaseUnavailable``).
    """

    def __init__(self, table: str, name: str) -> None:
        self._table = table
        self._name = name

    @property
    def name(self) -> str:
        """The lease name."""
        return self._name

    @property
    def table(self) -> str:
        """The table holding the lease item (what fences name)."""
        return self._table

    @abc.abstractmethod
    def _read(self) -> LeaseRecord | None: ...

    @abc.abstractmethod
    def _put(self, new: LeaseRecord, pre: Precondition) -> None: ...

    def get(self) -> LeaseRecord | None:
        """The current record (consistent read), or ``None`` when there is no item."""
        return self._read()

    def try_acquire(self, new: LeaseRecord, *, expected: LeaseRecord | None) -> LeaseRecord:
        """Write ``new`` if the stored lease is still ``expected`` (``None``: no item)."""
        pre = Precondition(revision=None if expected is None else expected.revision)
        return self._write(new, pre)

    def renew(self, new: LeaseRecord, *, current: LeaseRecord) -> LeaseRecord:
        """Write ``new`` if the stored lease is still ``current`` (same revision, holder, epoch)."""
        return self._write(new, _exact(current))

    def release(self, new: LeaseRecord, *, current: LeaseRecord) -> LeaseRecord:
        """Write the released ``new`` (no holder) if the stored lease is still ``current``."""
        if new.holder is not None:
            raise ValueError("a released record has no holder")
        return self._write(new, _exact(current))

    def _write(self, new: LeaseRecord, pre: Precondition) -> LeaseRecord:
        if new.name != self._name:
            raise ValueError(f"record for lease {new.name!r} written to store {self._name!r}")
        try:
            self._put(new, pre)
        except AmbiguousWrite as exc:
            return self._resolve(new, pre, exc)
        return new

    def _resolve(self, new: LeaseRecord, pre: Precondition, cause: AmbiguousWrite) -> LeaseRecord:
        try:
            current = self._read()
        except LeaseUnavailable as exc:
            raise LeaseUnavailable(
                f"outcome of lease write unknown and read-back failed: {exc}", code=exc.code
            ) from cause
        if current is not None and current.revision == new.revision:
            return current
        if pre.holds_for(current):
            raise LeaseUnavailable(
                "lease write was not applied (outcome was ambiguous)", code=cause.code
            ) from cause
        raise LeaseLost(
            "lease changed while our write's outcome was unknown", current=current, code=cause.code
        ) from cause


def _exact(current: LeaseRecord) -> Precondition:
    return Precondition(revision=current.revision, holder=current.holder, epoch=current.epoch)


_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)


class DynamoLeaseStore(ConditionalLeaseStore):
    """:class:`LeaseStore` on a DynamoDB table (low-level ``client``, keys ``pk``/``sk``).

    Give it a client built with :meth:`ElectionConfig.botocore_config` so no call outlives half
    the renew deadline and botocore never retries behind the elector's back.
    """

    def __init__(self, client: Any, table: str, name: str) -> None:
        super().__init__(table, name)
        self._client = client

    def _read(self) -> LeaseRecord | None:
        try:
            resp = self._client.get_item(
                TableName=self._table, Key=lease_key(self._name), ConsistentRead=True
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            raise LeaseUnavailable(f"reading lease {self._name} failed: {code}", code=code) from exc
        except BotoCoreError as exc:
            raise LeaseUnavailable(f"reading lease {self._name} failed: {exc}") from exc
        item = resp.get("Item")
        return LeaseRecord.from_item(item) if item else None

    def _put(self, new: LeaseRecord, pre: Precondition) -> None:
        names: dict[str, str] = {}
        values: dict[str, dict[str, str]] = {}
        if pre.revision is None:
            condition = "attribute_not_exists(pk)"
        else:
            names["#rev"] = "revision"
            values[":rev"] = {"S": pre.revision}
            clauses = ["#rev = :rev"]
            if pre.holder is not None:
                names["#holder"] = "holder"
                values[":holder"] = {"S": pre.holder}
                clauses.append("#holder = :holder")
            if pre.epoch is not None:
                names["#epoch"] = "epoch"
                values[":epoch"] = {"N": str(int(pre.epoch))}
                clauses.append("#epoch = :epoch")
            condition = " AND ".join(clauses)
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Item": new.to_item(),
            "ConditionExpression": condition,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
            kwargs["ExpressionAttributeValues"] = values
        try:
            self._client.put_item(**kwargs)
        except ClientError as exc:
            raise _classify(exc, self._name) from exc
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            # The request never reached the server: definitely not applied.
            raise LeaseUnavailable(f"lease store unreachable: {exc}") from exc
        except BotoCoreError as exc:
            # Read timeouts, dropped connections, truncated responses: it may have applied.
            raise AmbiguousWrite(f"lease write outcome unknown: {exc}") from exc


def _classify(exc: ClientError, name: str) -> LeaderError:
    error = exc.response.get("Error", {})
    code = error.get("Code")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code == "ConditionalCheckFailedException":
        old = exc.response.get("Item")
        current = LeaseRecord.from_item(old) if old else None
        return LeaseLost(f"lease {name} is no longer as expected", current=current, code=code)
    if code in _THROTTLED:
        return LeaseUnavailable(f"lease store throttled: {code}", code=code)
    if status >= 500:
        return AmbiguousWrite(f"lease store error {status} {code}", code=code)
    return LeaderError(f"lease write rejected: {code}: {error.get('Message')}", code=code)
