"""Change records: a short-lived feed of accepted desired-state writes, in the ``state`` table.

Design
------
After every accepted S3 write of a manifest (create, update, tombstone) ``oabctl`` records one
item so that the scheduler can start a reconcile within about two seconds without listing the
bucket:

- ``pk = changes#{shard}`` with ``CHANGE_SHARDS`` shards
  (:func:`~oab.controller.base.names.change_shard_of`: ``crc32(key) % shards``) so a burst of
  applies does not land on one partition;
- ``sk = {epoch_ms:013d}#{key}#{generation}``: a range query per shard returns changes in
  write-time order;
- attributes ``key`` (the S3 object key: ``manifests/{ns}/{name}.yaml`` for an agent,
  ``fleets/{ns}/{name}.yaml`` for a fleet; :func:`~oab.controller.base.names.agent_key_of` maps the
  former to ``{ns}/{name}`` and the latter to None, since a fleet's children get their own records),
  ``generation``, ``kind`` (``apply`` | ``delete``), ``version_id`` (the S3
  version this change produced), ``at`` (ISO-8601), ``trace_context`` (W3C headers, JSON) and
  ``expires_at`` (TTL, :data:`RETENTION_SECONDS` after the write).

The item's shape is :class:`~oab.controller.adapters.models.ChangeRow`; the records are stored
through a small seam (:class:`ChangeRows`: the table, or :class:`MemoryChangeRows` in tests).

Invariants and recovery
-----------------------
- The S3 write is the source of truth; a change record is only a hint. It is written *after*
  the S3 write was accepted, so a record never announces a write that did not happen. If the
  record write fails (or the process dies between the two), the change is still picked up by
  the scheduler's periodic full resync of the bucket: no accepted change is lost, it is only
  noticed later.
- Readers dedupe: the same key may appear several times (several applies, or two writes in the
  same millisecond collapsing into one item); a reconcile is level-based, so reading a change
  twice is harmless.
- Records are untrusted when read (anyone who can write the table can write one): decoding is
  total and bounded (object keys must name an agent or fleet by DNS labels, a generation is a
  bounded integer, the trace context is a small flat object of W3C headers). A record that does
  not decode is *skipped and reported* once (``on_unreadable``), never fatal to the read: it is
  only a hint, and the change it may have announced is found by the next resync, which compares
  each manifest's ETag with its status. No unit is parked for it: parking a healthy agent
  because of a bad hint would let the feed block good work.

Time model
----------
``epoch_ms`` is the writer's wall clock (injected). Writers on different hosts disagree by some
skew, and a record may become visible after a later-stamped one, so :meth:`ChangeLog.read_since`
re-reads a :data:`LOOKBACK_MS` window behind its high-water mark and drops the sort keys it has
already returned (the cursor remembers them). A record that arrives later than the lookback is
left to the full resync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.adapters.models import ChangeRow, decode
from oab.controller.base.errors import OabError
from oab.controller.base.names import (
    CHANGE_SHARDS,
    change_partition_key,
    change_shard_of,
    change_sort_key,
    is_object_key,
)
from oab.controller.core.stored import UnreadableItem
from oab.controller.observability.telemetry import instruments

log = logging.getLogger(__name__)

__all__ = [
    "LOOKBACK_MS",
    "RETENTION_SECONDS",
    "Change",
    "ChangeLog",
    "ChangeLogError",
    "ChangeRows",
    "Cursor",
    "DynamoChangeRows",
    "MemoryChangeRows",
    "current_trace_context",
]

ChangeKind = Literal["apply", "delete"]

#: TTL of a change record (one day): the resync covers anything older.
RETENTION_SECONDS = 86_400
#: How far behind its high-water mark a reader looks again (clock skew, late visibility).
LOOKBACK_MS = 5_000

#: The only trace headers a change record carries on to the work unit.
_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


class ChangeLogError(OabError):
    """Writing or reading change records failed (retryable: an AWS/infra problem)."""

    retryable = True
    reason = "ChangeLogError"


def current_trace_context() -> dict[str, str]:
    """W3C trace headers of the current OpenTelemetry context (empty without a span)."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@dataclass(frozen=True, kw_only=True)
class Change:
    """One accepted desired-state write."""

    key: str
    generation: int
    kind: ChangeKind
    version_id: str
    at: str
    epoch_ms: int
    trace_context: Mapping[str, str] = field(default_factory=dict)

    @property
    def sort_key(self) -> str:
        """The item's range key."""
        return change_sort_key(
            epoch_ms=self.epoch_ms, object_key=self.key, generation=self.generation
        )


@dataclass(frozen=True)
class Cursor:
    """Read position per shard: high-water epoch ms and the sort keys seen inside the lookback."""

    high_water: Mapping[int, int] = field(default_factory=dict)
    seen: Mapping[int, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def starting_at(cls, epoch_ms: int, *, shards: int = CHANGE_SHARDS) -> Cursor:
        """A cursor that returns changes stamped at or after ``epoch_ms``."""
        return cls(high_water=dict.fromkeys(range(shards), epoch_ms))


class ChangeRows(Protocol):
    """Where change records are stored: the storage seam under :class:`ChangeLog`."""

    def put(self, item: Mapping[str, Any]) -> None:
        """Store one encoded record (unconditionally). Raises :class:`ChangeLogError`."""
        ...

    def query(self, partition: str, start_sk: str) -> list[Mapping[str, Any]]:
        """Every stored item of ``partition`` with a sort key ``>= start_sk``, in sort-key order
        (consistent read). Raises :class:`ChangeLogError`."""
        ...


class DynamoChangeRows:
    """Change records in the ``state`` table, through the low-level client."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb
        self._table = table

    def put(self, item: Mapping[str, Any]) -> None:
        """PutItem."""
        try:
            self._ddb.put_item(TableName=self._table, Item=dict(item))
        except (ClientError, BotoCoreError) as exc:
            key = _key_text(item, "key")
            raise ChangeLogError(f"cannot record change of {key}: {exc}") from exc

    def query(self, partition: str, start_sk: str) -> list[Mapping[str, Any]]:
        """A paginated, consistent range Query."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk >= :start",
            "ExpressionAttributeValues": {":pk": {"S": partition}, ":start": {"S": start_sk}},
            "ConsistentRead": True,
        }
        out: list[Mapping[str, Any]] = []
        try:
            while True:
                resp = self._ddb.query(**kwargs)
                out.extend(resp.get("Items", []))
                if "LastEvaluatedKey" not in resp:
                    return out
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            shard = partition.removeprefix("changes#")
            raise ChangeLogError(f"cannot read change shard {shard}: {exc}") from exc


class MemoryChangeRows:
    """In-memory :class:`ChangeRows` holding the same encoded items as the table would."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def put(self, item: Mapping[str, Any]) -> None:
        """Store ``item`` as it is, valid or not (tests plant unreadable records with it)."""
        with self._lock:
            self._items[(_key_text(item, "pk"), _key_text(item, "sk"))] = dict(item)

    def query(self, partition: str, start_sk: str) -> list[Mapping[str, Any]]:
        """The partition's items from ``start_sk`` on, in sort-key order."""
        with self._lock:
            found = [(k[1], v) for k, v in self._items.items() if k[0] == partition]
        return [v for sk, v in sorted(found, key=lambda kv: kv[0]) if sk >= start_sk]


class ChangeLog:
    """Records and reads change records in the ``state`` table."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        shards: int = CHANGE_SHARDS,
        wall_clock: Callable[[], float] = time.time,
        retention_seconds: int = RETENTION_SECONDS,
        lookback_ms: int = LOOKBACK_MS,
        on_unreadable: Callable[[UnreadableItem], None] | None = None,
        rows: ChangeRows | None = None,
    ) -> None:
        """``on_unreadable`` receives each record that does not decode (default: logged and
        counted in ``oab.poison.items{oab.table=state, oab.kind=change}``). ``rows`` replaces
        the ``dynamodb`` client and ``table`` as the storage (:class:`MemoryChangeRows` in
        tests)."""
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._rows = rows or DynamoChangeRows(dynamodb, table)
        self._shards = shards
        self._clock = wall_clock
        self._retention = retention_seconds
        self._lookback = lookback_ms
        self._on_unreadable = on_unreadable or report_unreadable

    @property
    def shards(self) -> int:
        """How many partitions change records are spread over."""
        return self._shards

    def record(
        self,
        key: str,
        *,
        generation: int,
        kind: ChangeKind,
        version_id: str,
        trace_context: Mapping[str, str] | None = None,
    ) -> Change:
        """Write one change record (unconditional put: a duplicate is harmless)."""
        now = self._clock()
        change = Change(
            key=key,
            generation=generation,
            kind=kind,
            version_id=version_id,
            at=datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="milliseconds"),
            epoch_ms=int(now * 1000),
            trace_context=dict(current_trace_context() if trace_context is None else trace_context),
        )
        item = ChangeRow(
            pk=change_partition_key(change_shard_of(key, shards=self._shards)),
            sk=change.sort_key,
            key=key,
            generation=generation,
            kind=kind,
            version_id=version_id,
            at=change.at,
            epoch_ms=change.epoch_ms,
            trace_context=dict(change.trace_context),
            expires_at=datetime.fromtimestamp(int(now) + self._retention, tz=UTC),
        ).serialize()
        self._rows.put(item)
        return change

    def read_since(self, cursor: Cursor | None = None) -> tuple[list[Change], Cursor]:
        """Every change after ``cursor`` over all shards, oldest first, and the next cursor.

        ``None`` reads everything still retained. A record that does not decode is left out and
        reported once (the log's ``on_unreadable``; the cursor remembers it like a returned one).
        """
        cursor = cursor or Cursor()
        changes: list[Change] = []
        high: dict[int, int] = {}
        seen: dict[int, frozenset[str]] = {}
        for shard in range(self._shards):
            mark = cursor.high_water.get(shard, 0)
            already = cursor.seen.get(shard, frozenset())
            start = max(0, mark - self._lookback)
            fresh: list[Change] = []
            bad: set[str] = set()
            for sk, found in self._query(shard, f"{start:013d}"):
                if sk in already:
                    continue
                if isinstance(found, UnreadableItem):
                    bad.add(sk)
                    self._on_unreadable(found)
                else:
                    fresh.append(found)
            changes.extend(fresh)
            new_mark = max([mark, *(c.epoch_ms for c in fresh)])
            floor = new_mark - self._lookback
            # Remember only what the next read can return again (inside its lookback window).
            keep = {s for s in already if _stamp_of(s) >= floor}
            keep |= {c.sort_key for c in fresh if c.epoch_ms >= floor}
            keep |= {s for s in bad if _stamp_of(s) >= floor}
            high[shard] = new_mark
            seen[shard] = frozenset(keep)
        changes.sort(key=lambda c: (c.epoch_ms, c.key, c.generation))
        return changes, Cursor(high_water=high, seen=seen)

    def _query(self, shard: int, start_sk: str) -> list[tuple[str, Change | UnreadableItem]]:
        out: list[tuple[str, Change | UnreadableItem]] = []
        for item in self._rows.query(change_partition_key(shard), start_sk):
            sk = _key_text(item, "sk")
            try:
                out.append((sk, _from_item(item)))
            except UnreadableItem as exc:
                out.append((sk, exc))
        return out


def _key_text(item: Mapping[str, Any], name: str) -> str:
    """A key attribute's string (DynamoDB enforces its type; "" if it were ever otherwise)."""
    value = item.get(name)
    text = value.get("S") if isinstance(value, Mapping) else None
    return text if isinstance(text, str) else ""


def report_unreadable(exc: UnreadableItem) -> None:
    """The default report of an unreadable change record: a warning and the poison counter."""
    instruments.poison_items.add(1, {"oab.table": "state", "oab.kind": "change"})
    log.warning("skipped an unreadable change record: %s", exc)


def _stamp_of(sort_key: str) -> int:
    """The epoch ms a sort key starts with (0 for a key that does not: read once, then gone)."""
    head = sort_key[:13]
    return int(head) if head.isdigit() else 0


def _from_item(item: Mapping[str, Any]) -> Change:
    """Decode one record through :class:`ChangeRow`; raises :class:`UnreadableItem` (reason
    ``CorruptChangeRecord``)."""
    name = f"changes/{_key_text(item, 'sk') or '?'}"
    row = decode(ChangeRow, item, table="state", name=name, reason="CorruptChangeRecord")

    def bad(field: str, problem: str) -> UnreadableItem:
        return UnreadableItem(
            table="state", item=name, field=field, problem=problem, reason="CorruptChangeRecord"
        )

    if not is_object_key(row["key"]):
        raise bad("key", "not manifests/{ns}/{name}.yaml or fleets/{ns}/{name}.yaml")
    if row["kind"] not in ("apply", "delete"):
        raise bad("kind", f"{row['kind']!r} is not apply|delete")
    context = row["trace_context"]
    if not isinstance(context, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise bad("trace_context", "expected a JSON object of strings")
    return Change(
        key=row["key"],
        generation=row["generation"],
        kind=row["kind"],
        version_id=row["version_id"],
        at=row["at"],
        epoch_ms=row["epoch_ms"],
        trace_context={k: v for k, v in context.items() if k in _TRACE_HEADERS},
    )
