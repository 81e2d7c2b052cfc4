"""Lease storage: a small conditional-write interface under the elector, and its DynamoDB adapter.

Design
------
Every lease write is a full-item conditional put; the condition is the only concurrency tool:

- acquire: the item is absent, or its ``revision`` is still the one the candidate watched expire
  (or saw released);
- replace an unreadable item (see :class:`~oab.leader.record.UnreadableLease`): every one of
  :data:`~oab.leader.record.LEASE_ATTRIBUTES` still holds exactly the raw value read (type
  included), or is still absent. Any write in between, a repair by an operator or another
  candidate's replacement, changes one of them, so the replacement loses to it;
- renew / release: ``revision``, ``holder`` and ``epoch`` are still the caller's.

A failed condition becomes :class:`~oab.leader.errors.LeaseLost` carrying what won (DynamoDB
returns it with ``ReturnValuesOnConditionCheckFailure=ALL_OLD``), decoded like a read: a record or
an unreadable item. A failed condition that comes back *without* the stored item (an
implementation that does not honour ``ReturnValuesOnConditionCheckFailure``, or an item that is
gone) says nothing about the winner, so it is resolved like an ambiguous write, by reading back.

Reads never raise on a garbage item: :meth:`LeaseStore.get` returns an ``UnreadableLease`` and the
elector decides what to do with it.

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
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from oab.leader.errors import LeaderError, LeaseLost, LeaseUnavailable
from oab.leader.record import (
    LEASE_ATTRIBUTES,
    Epoch,
    LeaseRecord,
    ReplicaId,
    Revision,
    StoredLease,
    UnreadableLease,
    decode_item,
    lease_key,
)

__all__ = [
    "AmbiguousWrite",
    "ConditionalLeaseStore",
    "DynamoLeaseStore",
    "LeaseStore",
    "Precondition",
]


class AmbiguousWrite(LeaseUnavailable):
    """A write whose outcome or winner is unknown (raised by adapters, resolved by read-back).

    Raised for timeouts and 5xx (it may have applied) and for a failed condition reported without
    the stored item (it did not apply, but what won is unknown).
    """


@dataclass(frozen=True, kw_only=True)
class Precondition:
    """What must hold for a lease write to apply.

    ``unreadable`` set: the stored item is still exactly that unreadable item. Otherwise
    ``revision is None`` means "item absent", else the stored record has that revision (and
    ``holder`` / ``epoch`` when given).
    """

    revision: Revision | None
    holder: ReplicaId | None = None
    epoch: Epoch | None = None
    unreadable: UnreadableLease | None = None

    def holds_for(self, record: StoredLease | None) -> bool:
        """Whether ``record`` satisfies this precondition (evaluated locally, for read-back)."""
        if self.unreadable is not None:
            return (
                isinstance(record, UnreadableLease)
                and record.fingerprint == self.unreadable.fingerprint
            )
        if self.revision is None:
            return record is None
        if isinstance(record, UnreadableLease):
            # As DynamoDB evaluates it, on the stored values: garbage in other attributes does
            # not fail a renewal's condition (the renewal then overwrites the garbage).
            return (
                _stored_equals(record, "revision", {"S": self.revision})
                and (self.holder is None or _stored_equals(record, "holder", {"S": self.holder}))
                and (
                    self.epoch is None
                    or _stored_equals(record, "epoch", {"N": str(int(self.epoch))})
                )
            )
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

    def get(self) -> StoredLease | None:
        """The current item (consistent read), decoded; ``None`` when there is no item."""
        ...

    def try_acquire(self, new: LeaseRecord, *, expected: StoredLease | None) -> LeaseRecord:
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
    def _read(self) -> StoredLease | None: ...

    @abc.abstractmethod
    def _put(self, new: LeaseRecord, pre: Precondition) -> None: ...

    def get(self) -> StoredLease | None:
        """The current item (consistent read), decoded; ``None`` when there is no item."""
        return self._read()

    def try_acquire(self, new: LeaseRecord, *, expected: StoredLease | None) -> LeaseRecord:
        """Write ``new`` if the stored lease is still ``expected`` (``None``: no item)."""
        if isinstance(expected, UnreadableLease):
            pre = Precondition(revision=None, unreadable=expected)
        else:
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
        if isinstance(current, LeaseRecord) and current.revision == new.revision:
            return current
        if pre.holds_for(current):
            raise LeaseUnavailable(
                "lease write was not applied (outcome was ambiguous)", code=cause.code
            ) from cause
        raise LeaseLost(
            "lease changed while our write's outcome was unknown", current=current, code=cause.code
        ) from cause


def _stored_equals(record: UnreadableLease, attribute: str, expected: dict[str, str]) -> bool:
    """DynamoDB's ``attribute = :value`` on an item as read (numbers compare by value)."""
    stored = record.attributes.get(attribute)
    if stored == expected:
        return True
    if not (isinstance(stored, dict) and set(stored) == {"N"} and "N" in expected):
        return False
    try:
        return Decimal(str(stored["N"])) == Decimal(expected["N"])
    except InvalidOperation:
        return False


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

    def _read(self) -> StoredLease | None:
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
        return decode_item(item, name=self._name) if item else None

    def _put(self, new: LeaseRecord, pre: Precondition) -> None:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if pre.unreadable is not None:
            condition = _unchanged(pre.unreadable, names, values)
        elif pre.revision is None:
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
        if values:  # DynamoDB rejects an empty map (an item with no lease attribute at all)
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


def _unchanged(expected: UnreadableLease, names: dict[str, str], values: dict[str, Any]) -> str:
    """A condition that holds only while every lease attribute is exactly as ``expected`` read."""
    clauses = ["attribute_exists(pk)"]
    for i, attribute in enumerate(LEASE_ATTRIBUTES):
        names[f"#a{i}"] = attribute
        if attribute in expected.attributes:
            values[f":a{i}"] = expected.attributes[attribute]
            clauses.append(f"#a{i} = :a{i}")
        else:
            clauses.append(f"attribute_not_exists(#a{i})")
    return " AND ".join(clauses)


def _classify(exc: ClientError, name: str) -> LeaderError:
    error = exc.response.get("Error", {})
    code = error.get("Code")
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code == "ConditionalCheckFailedException":
        old = exc.response.get("Item")
        if not old:
            # Not applied, but the winner is unknown: never conclude "lost" without reading it.
            return AmbiguousWrite(
                f"lease {name}: condition failed and the stored item was not returned", code=code
            )
        current = decode_item(old, name=name)
        return LeaseLost(f"lease {name} is no longer as expected", current=current, code=code)
    if code in _THROTTLED:
        return LeaseUnavailable(f"lease store throttled: {code}", code=code)
    if status >= 500:
        return AmbiguousWrite(f"lease store error {status} {code}", code=code)
    return LeaderError(f"lease write rejected: {code}: {error.get('Message')}", code=code)
