"""Storage seam of the work queue: a small interface, a DynamoDB adapter and an in-memory twin.

The interface is compare-and-swap on a whole row: ``write(row, expected_version=...)`` succeeds
only if the stored row still has ``expected_version`` (``None``: the row must not exist). A failed
condition raises :class:`RowConflict` carrying the row that won (DynamoDB returns it with
``ReturnValuesOnConditionCheckFailure=ALL_OLD``, so no extra read is needed). The caller's extra
TransactWriteItems items (leader fence, status transition, audit row) commit atomically with the
row or not at all; their failures are told apart from the row's.

:class:`MemoryStore` keeps the same encoded items (the same ``to_item``/``from_item`` round trip,
millisecond rounding included) so tests of the algorithm see exactly what DynamoDB would return.

Invariant of both stores: an item carries ``ready_shard``/``ready_at`` (and so appears in the
sparse ``ready-index``) exactly when the row's ``ready_at`` is set, i.e. in states ready and
in_flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from oab.queue.errors import ExtraConditionFailed, QueueError, QueueUnavailable
from oab.queue.row import (
    AgentKey,
    ClaimToken,
    IdempotencyToken,
    Row,
    State,
    WorkerId,
    shard_of,
)

READY_INDEX = "ready-index"
SORT_KEY = "unit"
_PK_PREFIX = "unit#"

Item = dict[str, Any]
TransactItem = Mapping[str, Any]


class RowConflict(QueueError):
    """The row was not at the expected version; ``current`` is the row that won (``None``: no
    row). ``extra_failed`` is set when an extra transaction item failed in the same attempt."""

    retryable = True

    def __init__(self, current: Row | None, *, extra_failed: ExtraConditionFailed | None = None):
        super().__init__(
            f"row changed (now version {current.version if current else 'absent'})",
            code="ConditionalCheckFailed",
        )
        self.current = current
        self.extra_failed = extra_failed


class QueueStore(Protocol):
    """What the work queue needs from storage."""

    def get(self, key: AgentKey) -> Row | None:
        """The row, read consistently, or ``None``."""
        ...

    def write(
        self,
        row: Row,
        *,
        expected_version: int | None,
        extra_items: Sequence[TransactItem] = (),
    ) -> None:
        """Store ``row`` if the stored version is ``expected_version``, atomically with
        ``extra_items``. Raises :class:`RowConflict`, :class:`ExtraConditionFailed` or
        :class:`QueueUnavailable`."""
        ...

    def ready_keys(self, shard: int, *, now: float, limit: int) -> list[AgentKey]:
        """Up to ``limit`` keys of ``shard`` whose ``ready_at <= now``, oldest first. An index
        read: possibly stale, so the caller re-checks with a conditional write."""
        ...

    def rows(self) -> Iterator[Row]:
        """Every row (a full scan; for operators and gauges, not for the hot path)."""
        ...


def _ms(value: float) -> str:
    return f"{value:.3f}"


def pk_of(key: str) -> str:
    """Partition key of the work unit for ``key``."""
    return f"{_PK_PREFIX}{key}"


def to_item(row: Row, *, shards: int) -> Item:
    """DynamoDB attribute map of ``row`` (times in epoch seconds, millisecond precision)."""
    item: Item = {
        "pk": {"S": pk_of(row.key)},
        "sk": {"S": SORT_KEY},
        "key": {"S": row.key},
        "state": {"S": row.state.value},
        "generation": {"N": str(row.generation)},
        "token": {"S": row.token},
        "reason": {"S": row.reason},
        "dirty": {"BOOL": row.dirty},
        "attempts": {"N": str(row.attempts)},
        "version": {"N": str(row.version)},
        "write_id": {"S": row.write_id},
        "updated_at": {"N": _ms(row.updated_at)},
    }
    if row.ready_at is not None:
        item["ready_at"] = {"N": _ms(row.ready_at)}
        item["ready_shard"] = {"S": str(shard_of(row.key, shards))}
    if row.trace_context:
        item["trace_context"] = {"M": {k: {"S": v} for k, v in row.trace_context.items()}}
    optional_s = {
        "owner": row.owner,
        "claim_token": row.claim_token,
        "claimed_token": row.claimed_token,
        "claimed_reason": row.claimed_reason,
        "last_error": row.last_error,
    }
    for name, s_value in optional_s.items():
        if s_value is not None:
            item[name] = {"S": s_value}
    if row.claim_deadline is not None:
        item["claim_deadline"] = {"N": _ms(row.claim_deadline)}
    if row.claimed_generation is not None:
        item["claimed_generation"] = {"N": str(row.claimed_generation)}
    if row.completed_generation is not None:
        item["completed_generation"] = {"N": str(row.completed_generation)}
    return item


def from_item(item: Mapping[str, Any]) -> Row:
    """Inverse of :func:`to_item`."""

    def s(name: str) -> str | None:
        v = item.get(name)
        return None if v is None else str(v["S"])

    def n(name: str) -> float | None:
        v = item.get(name)
        return None if v is None else float(v["N"])

    def i(name: str) -> int | None:
        v = item.get(name)
        return None if v is None else int(v["N"])

    trace = item.get("trace_context")
    claimed_token = s("claimed_token")
    return Row(
        key=AgentKey(str(item["key"]["S"])),
        state=State(item["state"]["S"]),
        generation=int(item["generation"]["N"]),
        token=IdempotencyToken(str(item["token"]["S"])),
        reason=str(item["reason"]["S"]),
        trace_context={k: str(v["S"]) for k, v in trace["M"].items()} if trace else None,
        dirty=bool(item["dirty"]["BOOL"]),
        attempts=int(item["attempts"]["N"]),
        ready_at=n("ready_at"),
        owner=WorkerId(o) if (o := s("owner")) is not None else None,
        claim_token=ClaimToken(c) if (c := s("claim_token")) is not None else None,
        claim_deadline=n("claim_deadline"),
        claimed_generation=i("claimed_generation"),
        claimed_token=IdempotencyToken(claimed_token) if claimed_token is not None else None,
        claimed_reason=s("claimed_reason"),
        completed_generation=i("completed_generation"),
        last_error=s("last_error"),
        version=int(item["version"]["N"]),
        write_id=str(item["write_id"]["S"]),
        updated_at=float(item["updated_at"]["N"]),
        shard=int(shard["S"]) if (shard := item.get("ready_shard")) is not None else None,
    )


def _condition(expected_version: int | None) -> dict[str, Any]:
    if expected_version is None:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {
        "ConditionExpression": "#v = :v",
        "ExpressionAttributeNames": {"#v": "version"},
        "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
    }


class DynamoStore:
    """:class:`QueueStore` on a DynamoDB table (low-level boto3 client passed in)."""

    def __init__(self, client: Any, table: str, *, shards: int) -> None:
        self._client = client
        self._table = table
        self._shards = shards

    def get(self, key: AgentKey) -> Row | None:
        """GetItem with ConsistentRead."""
        try:
            resp = self._client.get_item(
                TableName=self._table,
                Key={"pk": {"S": pk_of(key)}, "sk": {"S": SORT_KEY}},
                ConsistentRead=True,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
        item = resp.get("Item")
        return from_item(item) if item else None

    def write(
        self,
        row: Row,
        *,
        expected_version: int | None,
        extra_items: Sequence[TransactItem] = (),
    ) -> None:
        """PutItem (no extra items) or TransactWriteItems, conditional on the version."""
        put = {
            "TableName": self._table,
            "Item": to_item(row, shards=self._shards),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            **_condition(expected_version),
        }
        if not extra_items:
            try:
                self._client.put_item(**put)
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    old = exc.response.get("Item")
                    raise RowConflict(from_item(old) if old else None) from exc
                raise _unavailable(exc) from exc
            except BotoCoreError as exc:
                raise _unavailable(exc) from exc
            return
        try:
            self._client.transact_write_items(
                TransactItems=[{"Put": put}, *[dict(x) for x in extra_items]]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "TransactionCanceledException":
                raise _unavailable(exc) from exc
            raise _cancellation(exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(exc) from exc

    def ready_keys(self, shard: int, *, now: float, limit: int) -> list[AgentKey]:
        """Query the sparse ready index of one shard (eventually consistent)."""
        try:
            resp = self._client.query(
                TableName=self._table,
                IndexName=READY_INDEX,
                KeyConditionExpression="ready_shard = :s AND ready_at <= :now",
                ExpressionAttributeValues={":s": {"S": str(shard)}, ":now": {"N": _ms(now)}},
                Limit=limit,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _unavailable(exc) from exc
        return [AgentKey(it["pk"]["S"][len(_PK_PREFIX) :]) for it in resp.get("Items", [])]

    def rows(self) -> Iterator[Row]:
        """Scan the table (consistent, paginated) for work-unit rows."""
        kwargs: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            try:
                resp = self._client.scan(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable(exc) from exc
            for item in resp.get("Items", []):
                if item.get("sk", {}).get("S") == SORT_KEY and "state" in item:
                    yield from_item(item)
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def _unavailable(exc: Exception) -> QueueUnavailable:
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    return QueueUnavailable(f"DynamoDB request failed: {code}", code=code)


def _cancellation(exc: ClientError) -> QueueError:
    """Map TransactWriteItems cancellation reasons to the item that failed: index 0 is the row,
    1.. are the caller's extra items."""
    reasons = exc.response.get("CancellationReasons") or []
    codes = [str(r.get("Code") or "None") for r in reasons]
    extra: ExtraConditionFailed | None = None
    for index, reason in enumerate(reasons[1:]):
        if codes[index + 1] == "ConditionalCheckFailed":
            extra = ExtraConditionFailed(index, codes[index + 1], message=reason.get("Message", ""))
            break
    if codes and codes[0] == "ConditionalCheckFailed":
        old = reasons[0].get("Item")
        return RowConflict(from_item(old) if old else None, extra_failed=extra)
    if extra is not None:
        return extra
    failing = next((c for c in codes if c != "None"), "TransactionCanceled")
    return QueueUnavailable(f"transaction cancelled: {failing}", code=failing)


ExtraCheck = Callable[[int, TransactItem], str | None]


class MemoryStore:
    """In-memory :class:`QueueStore` with DynamoDB's encoding and compare-and-swap semantics.

    ``extra_check(index, item)`` decides the caller's extra items: return a cancellation code
    (e.g. ``"ConditionalCheckFailed"``) to fail one, ``None`` to accept it. ``requests`` counts
    calls per operation, as the DynamoDB adapter's requests would be counted.
    """

    def __init__(self, *, shards: int, extra_check: ExtraCheck | None = None) -> None:
        self._shards = shards
        self._items: dict[str, Item] = {}
        self._lock = threading.Lock()
        self._extra_check = extra_check
        self.requests: dict[str, int] = {}

    def _count(self, op: str) -> None:
        self.requests[op] = self.requests.get(op, 0) + 1

    def get(self, key: AgentKey) -> Row | None:
        """The stored row or ``None``."""
        with self._lock:
            self._count("get")
            item = self._items.get(key)
            return from_item(item) if item else None

    def write(
        self,
        row: Row,
        *,
        expected_version: int | None,
        extra_items: Sequence[TransactItem] = (),
    ) -> None:
        """Compare-and-swap on ``version``; extra items judged by ``extra_check``."""
        with self._lock:
            self._count("write")
            old = self._items.get(row.key)
            current = from_item(old) if old else None
            extra: ExtraConditionFailed | None = None
            for index, x in enumerate(extra_items):
                code = self._extra_check(index, x) if self._extra_check else None
                if code is not None:
                    extra = ExtraConditionFailed(index, code)
                    break
            stored_version = current.version if current else None
            if stored_version != expected_version:
                raise RowConflict(current, extra_failed=extra if extra_items else None)
            if extra is not None:
                raise extra
            self._items[row.key] = to_item(row, shards=self._shards)

    def ready_keys(self, shard: int, *, now: float, limit: int) -> list[AgentKey]:
        """Keys of ``shard`` with ``ready_at <= now``, oldest first."""
        with self._lock:
            self._count("query")
            due = [
                (float(it["ready_at"]["N"]), k)
                for k, it in self._items.items()
                if "ready_at" in it
                and it["ready_shard"]["S"] == str(shard)
                and float(it["ready_at"]["N"]) <= float(_ms(now))
            ]
        return [AgentKey(k) for _, k in sorted(due)[:limit]]

    def rows(self) -> Iterator[Row]:
        """A snapshot of every row."""
        with self._lock:
            self._count("scan")
            items = list(self._items.values())
        return iter([from_item(it) for it in items])
