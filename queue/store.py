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

Stored items are untrusted when read: :func:`from_item` is total (any item that is not a valid
row raises :class:`~oab.queue.errors.CorruptRow` carrying what could be read of it, never
``KeyError``/``TypeError``), ``rows()`` yields such items as
:class:`~oab.queue.row.UnreadableRow`, and ``overwrite`` replaces one conditionally on the raw
``version`` and ``write_id`` that were read. Refusals are classified: DynamoDB refusing a
request as invalid (:data:`REJECTED_CODES`) is :class:`~oab.queue.errors.QueueRejected` (never
retryable as is), anything else :class:`~oab.queue.errors.QueueUnavailable`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from oab.queue.errors import (
    CorruptRow,
    ExtraConditionFailed,
    QueueError,
    QueueRejected,
    QueueUnavailable,
)
from oab.queue.row import (
    MAX_COUNT,
    MAX_TEXT_BYTES,
    MAX_TRACE_ENTRIES,
    AgentKey,
    ClaimToken,
    IdempotencyToken,
    Row,
    State,
    UnreadableRow,
    WorkerId,
    clip_text,
    ready_shard_of,
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
        """The row, read consistently, or ``None``; :class:`CorruptRow` when it is unreadable."""
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

    def overwrite(
        self,
        row: Row,
        *,
        guard: Mapping[str, Any],
        extra_items: Sequence[TransactItem] = (),
    ) -> None:
        """Store ``row`` over an unreadable item whose ``version`` and ``write_id`` are still the
        raw values in ``guard`` (``None``: absent), atomically with ``extra_items``. Raises
        :class:`RowConflict` (with ``current=None``: the winner may be unreadable too),
        :class:`ExtraConditionFailed` or :class:`QueueUnavailable`."""
        ...

    def rows(self) -> Iterator[Row | UnreadableRow]:
        """Every row, unreadable ones as what could be read of them (a full scan; for
        operators, gauges and the leader's sweep, not for the hot path)."""
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
        item["ready_shard"] = {"S": str(ready_shard_of(row.key, shards))}
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


#: Bounds a reader accepts for stored numbers: counts and versions, and epoch-second times.
_MAX_COUNT = MAX_COUNT
_MAX_TIME = 1e11  # year 5138: any stored time past it is garbage, not a clock skew
#: Largest raw ``version``/``write_id`` value sent back in a replacement's condition.
_MAX_GUARD_BYTES = 1024


class _Reader:
    """Total reads of one low-level item: every problem raises :class:`CorruptRow`."""

    def __init__(self, item: Mapping[str, Any]) -> None:
        self.item = item
        pk = item.get("pk")
        raw = pk.get("S") if isinstance(pk, Mapping) else None
        text = raw if isinstance(raw, str) else ""
        self.key = AgentKey(clip_text(text.removeprefix(_PK_PREFIX), 256))

    def bad(self, field: str, why: str) -> CorruptRow:
        return CorruptRow(
            UnreadableRow(
                key=self.key,
                problem=clip_text(f"{field}: {why}", 512),
                generation=self._soft_int("generation"),
                version=self._soft_int("version", default=None),
                guard=_guard(self.item),
            )
        )

    def _soft_int(self, name: str, default: int | None = 0) -> Any:
        try:
            value = int(self.item[name]["N"])
        except (KeyError, TypeError, ValueError):
            return default
        return value if 0 <= value <= _MAX_COUNT else default

    def _raw(self, name: str, tag: str, *, optional: bool) -> Any:
        value = self.item.get(name)
        if value is None:
            if optional:
                return None
            raise self.bad(name, "missing")
        if not isinstance(value, Mapping) or len(value) != 1 or tag not in value:
            raise self.bad(name, f"expected a {_TYPES[tag]}")
        return value[tag]

    def s(self, name: str, *, optional: bool = False) -> str | None:
        value = self._raw(name, "S", optional=optional)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.bad(name, "expected a string")
        if len(value.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
            raise self.bad(name, f"over {MAX_TEXT_BYTES} bytes")
        return value

    def text(self, name: str) -> str:
        value = self.s(name)
        assert value is not None
        return value

    def n(self, name: str, *, optional: bool = False, limit: float = _MAX_COUNT) -> float | None:
        value = self._raw(name, "N", optional=optional)
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.bad(name, "not a number") from None
        if not 0 <= number <= limit:  # also refuses NaN
            raise self.bad(name, f"out of range 0..{limit:g}")
        return number

    def i(self, name: str, *, optional: bool = False) -> int | None:
        number = self.n(name, optional=optional)
        if number is None:
            return None
        if number != int(number):
            raise self.bad(name, "not an integer")
        return int(number)

    def count(self, name: str) -> int:
        value = self.i(name)
        assert value is not None
        return value

    def time(self, name: str, *, optional: bool = False) -> float | None:
        return self.n(name, optional=optional, limit=_MAX_TIME)

    def flag(self, name: str) -> bool:
        value = self._raw(name, "BOOL", optional=False)
        if not isinstance(value, bool):
            raise self.bad(name, "expected a boolean")
        return value

    def trace(self, name: str) -> dict[str, str] | None:
        value = self._raw(name, "M", optional=True)
        if value is None:
            return None
        if not isinstance(value, Mapping) or len(value) > MAX_TRACE_ENTRIES:
            raise self.bad(name, f"expected a map of at most {MAX_TRACE_ENTRIES} strings")
        out: dict[str, str] = {}
        for k, v in value.items():
            s = v.get("S") if isinstance(v, Mapping) and len(v) == 1 else None
            if not isinstance(k, str) or not isinstance(s, str):
                raise self.bad(name, "expected a map of strings")
            if len(k) + len(s.encode("utf-8", "replace")) > MAX_TEXT_BYTES:
                raise self.bad(name, f"entry over {MAX_TEXT_BYTES} bytes")
            out[k] = s
        return out


_TYPES = {"S": "string", "N": "number", "BOOL": "boolean", "M": "map"}


def _guard(item: Mapping[str, Any]) -> dict[str, Any] | None:
    guard = {name: item.get(name) for name in ("version", "write_id")}
    if len(repr(guard)) > _MAX_GUARD_BYTES:
        return None
    return guard


def from_item(item: Mapping[str, Any]) -> Row:
    """Inverse of :func:`to_item`; total: any item that is not a valid row (wrong types,
    missing or out-of-range attributes, a key that disagrees with the partition key, strings
    over :data:`~oab.queue.row.MAX_TEXT_BYTES`) raises :class:`CorruptRow`, never
    ``KeyError``/``TypeError``."""
    r = _Reader(item)
    pk = item.get("pk")
    if not (
        isinstance(pk, Mapping) and isinstance(pk.get("S"), str) and pk["S"].startswith(_PK_PREFIX)
    ):
        raise r.bad("pk", f"expected a string starting with {_PK_PREFIX!r}")
    key = r.text("key")
    if key != r.key:
        raise r.bad("key", "differs from the partition key")
    try:
        state = State(r.text("state"))
    except ValueError:
        raise r.bad("state", f"not one of {', '.join(s.value for s in State)}") from None
    claimed_token = r.s("claimed_token", optional=True)
    shard = r.s("ready_shard", optional=True)
    row = Row(
        key=AgentKey(key),
        state=state,
        generation=r.count("generation"),
        token=IdempotencyToken(r.text("token")),
        reason=r.text("reason"),
        trace_context=r.trace("trace_context"),
        dirty=r.flag("dirty"),
        attempts=r.count("attempts"),
        ready_at=r.time("ready_at", optional=True),
        owner=WorkerId(o) if (o := r.s("owner", optional=True)) is not None else None,
        claim_token=ClaimToken(c) if (c := r.s("claim_token", optional=True)) is not None else None,
        claim_deadline=r.time("claim_deadline", optional=True),
        claimed_generation=r.i("claimed_generation", optional=True),
        claimed_token=IdempotencyToken(claimed_token) if claimed_token is not None else None,
        claimed_reason=r.s("claimed_reason", optional=True),
        completed_generation=r.i("completed_generation", optional=True),
        last_error=r.s("last_error", optional=True),
        version=r.count("version"),
        write_id=r.text("write_id"),
        updated_at=r.time("updated_at") or 0.0,
        shard=int(shard) if shard is not None and shard.isdigit() else None,
    )
    # What the queue's own code relies on for each state (a row missing it would be stuck).
    if state is State.READY and row.ready_at is None:
        raise r.bad("ready_at", "missing on a ready row")
    if state is State.IN_FLIGHT and None in (
        row.claim_token,
        row.claim_deadline,
        row.ready_at,
        row.claimed_generation,
        row.claimed_token,
    ):
        raise r.bad("claim_token", "an in-flight row lacks its claim")
    return row


def decode(item: Mapping[str, Any]) -> Row | UnreadableRow:
    """:func:`from_item`, or what could be read of an unreadable item."""
    try:
        return from_item(item)
    except CorruptRow as exc:
        return exc.row


def _condition(expected_version: int | None) -> dict[str, Any]:
    if expected_version is None:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    return {
        "ConditionExpression": "#v = :v",
        "ExpressionAttributeNames": {"#v": "version"},
        "ExpressionAttributeValues": {":v": {"N": str(expected_version)}},
    }


def _guard_condition(guard: Mapping[str, Any]) -> dict[str, Any]:
    """A condition that holds while the item exists with exactly the raw ``guard`` values."""
    parts = ["attribute_exists(pk)"]
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    for i, (attr, raw) in enumerate(sorted(guard.items())):
        names[f"#g{i}"] = attr
        if raw is None:
            parts.append(f"attribute_not_exists(#g{i})")
        else:
            parts.append(f"#g{i} = :g{i}")
            values[f":g{i}"] = raw
    out: dict[str, Any] = {"ConditionExpression": " AND ".join(parts)}
    if names:
        out["ExpressionAttributeNames"] = names
    if values:
        out["ExpressionAttributeValues"] = values
    return out


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
        self._put(row, _condition(expected_version), extra_items)

    def overwrite(
        self,
        row: Row,
        *,
        guard: Mapping[str, Any],
        extra_items: Sequence[TransactItem] = (),
    ) -> None:
        """Like :meth:`write`, conditional on the unreadable item's raw ``guard`` values."""
        try:
            self._put(row, _guard_condition(guard), extra_items)
        except CorruptRow as exc:
            raise RowConflict(None) from exc  # the item changed, and is unreadable still

    def _put(
        self, row: Row, condition: Mapping[str, Any], extra_items: Sequence[TransactItem]
    ) -> None:
        put = {
            "TableName": self._table,
            "Item": to_item(row, shards=self._shards),
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            **condition,
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

    def rows(self) -> Iterator[Row | UnreadableRow]:
        """Scan the table (consistent, paginated) for work-unit rows."""
        kwargs: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        while True:
            try:
                resp = self._client.scan(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise _unavailable(exc) from exc
            for item in resp.get("Items", []):
                # Every item under sort key "unit" is a work unit: one without a state is an
                # unreadable one, not someone else's item.
                sk = item.get("sk")
                if isinstance(sk, Mapping) and sk.get("S") == SORT_KEY:
                    yield decode(item)
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


#: DynamoDB error codes for which the same request can never succeed: the item or a value is
#: invalid (over 400 KB, a bad attribute), or the caller may not make it.
REJECTED_CODES = frozenset(
    {
        "ValidationException",
        "ValidationError",  # a TransactWriteItems cancellation reason
        "SerializationException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ResourceNotFoundException",
        "ItemCollectionSizeLimitExceededException",
        "ParamValidationError",  # botocore's own client-side validation
    }
)


def _unavailable(exc: Exception) -> QueueError:
    """The queue error for a failed request: :class:`QueueRejected` when retrying the same
    request cannot help (:data:`REJECTED_CODES`), else :class:`QueueUnavailable`."""
    if isinstance(exc, ClientError):
        code, message = exc.response["Error"]["Code"], str(exc.response["Error"].get("Message", ""))
    else:
        code, message = type(exc).__name__, ""
    if code in REJECTED_CODES:
        detail = f": {clip_text(message, 256)}" if message else ""
        return QueueRejected(f"DynamoDB refused the request: {code}{detail}", code=code)
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
    if failing in REJECTED_CODES:
        message = next((str(r.get("Message", "")) for r in reasons if r.get("Code") == failing), "")
        detail = f": {clip_text(message, 256)}" if message else ""
        return QueueRejected(f"transaction refused: {failing}{detail}", code=failing)
    return QueueUnavailable(f"transaction cancelled: {failing}", code=failing)


ExtraCheck = Callable[[int, TransactItem], str | None]


def _indexed(item: Item, shard: int) -> bool:
    """Whether ``item`` is in ``shard`` of the ready index (DynamoDB indexes only items whose
    index keys have the declared types)."""
    try:
        float(item["ready_at"]["N"])
        return bool(item["ready_shard"]["S"] == str(shard))
    except (KeyError, TypeError, ValueError):
        return False


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
        """The stored row or ``None``; :class:`CorruptRow` when it is unreadable."""
        with self._lock:
            self._count("get")
            item = self._items.get(key)
        return from_item(item) if item else None

    def put_raw(self, item: Item) -> None:
        """Store ``item`` as it is, valid or not (tests plant unreadable rows with it, as an
        integration test writes straight into the table)."""
        with self._lock:
            self._items[str(item["pk"]["S"]).removeprefix(_PK_PREFIX)] = dict(item)

    def write(
        self,
        row: Row,
        *,
        expected_version: int | None,
        extra_items: Sequence[TransactItem] = (),
    ) -> None:
        """Compare-and-swap on ``version``; extra items judged by ``extra_check``."""
        expected = None if expected_version is None else {"N": str(expected_version)}
        self._put(row, lambda old: (old.get("version") if old else None) == expected, extra_items)

    def overwrite(
        self,
        row: Row,
        *,
        guard: Mapping[str, Any],
        extra_items: Sequence[TransactItem] = (),
    ) -> None:
        """Store over an unreadable item still holding the raw ``guard`` values."""

        def holds(old: Item | None) -> bool:
            return old is not None and all(old.get(k) == v for k, v in guard.items())

        try:
            self._put(row, holds, extra_items)
        except CorruptRow as exc:
            raise RowConflict(None) from exc

    def _put(
        self,
        row: Row,
        holds: Callable[[Item | None], bool],
        extra_items: Sequence[TransactItem],
    ) -> None:
        # The condition is judged on the raw item, as DynamoDB judges it: an unreadable item
        # whose version still matches is simply overwritten.
        with self._lock:
            self._count("write")
            old = self._items.get(row.key)
            extra: ExtraConditionFailed | None = None
            for index, x in enumerate(extra_items):
                code = self._extra_check(index, x) if self._extra_check else None
                if code is not None:
                    extra = ExtraConditionFailed(index, code)
                    break
            if not holds(old):
                current = from_item(old) if old else None
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
                if _indexed(it, shard) and float(it["ready_at"]["N"]) <= float(_ms(now))
            ]
        return [AgentKey(k) for _, k in sorted(due)[:limit]]

    def rows(self) -> Iterator[Row | UnreadableRow]:
        """A snapshot of every row."""
        with self._lock:
            self._count("scan")
            items = list(self._items.values())
        return iter([decode(it) for it in items])
