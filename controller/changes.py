"""Change records: a short-lived feed of accepted desired-state writes, in the ``state`` table.

Design
------
After every accepted S3 write of a manifest (create, update, tombstone) ``oabctl`` records one
item so that the scheduler can start a reconcile within about two seconds without listing the
bucket:

- ``pk = changes#{shard}`` with :data:`SHARDS` shards (``crc32(key) % SHARDS``) so a burst of
  applies does not land on one partition;
- ``sk = {epoch_ms:013d}#{key}#{generation}``: a range query per shard returns changes in
  write-time order;
- attributes ``key`` (the S3 object key: ``manifests/{ns}/{name}.yaml`` for an agent,
  ``fleets/{ns}/{name}.yaml`` for a fleet; :func:`agent_key_of` maps the former to
  ``{ns}/{name}`` and the latter to None, since a fleet's children get their own records),
  ``generation``, ``kind`` (``apply`` | ``delete``), ``version_id`` (the S3
  version this change produced), ``at`` (ISO-8601), ``trace_context`` (W3C headers, JSON) and
  ``expires_at`` (TTL, :data:`RETENTION_SECONDS` after the write).

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

Time model
----------
``epoch_ms`` is the writer's wall clock (injected). Writers on different hosts disagree by some
skew, and a record may become visible after a later-stamped one, so :meth:`ChangeLog.read_since`
re-reads a :data:`LOOKBACK_MS` window behind its high-water mark and drops the sort keys it has
already returned (the cursor remembers them). A record that arrives later than the lookback is
left to the full resync.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.errors import OabError

__all__ = [
    "LOOKBACK_MS",
    "RETENTION_SECONDS",
    "SHARDS",
    "Change",
    "ChangeLog",
    "ChangeLogError",
    "Cursor",
    "agent_key_of",
    "current_trace_context",
    "shard_of",
]

ChangeKind = Literal["apply", "delete"]

#: Number of ``changes#{shard}`` partitions; readers query all of them.
SHARDS = 4
#: TTL of a change record (one day): the resync covers anything older.
RETENTION_SECONDS = 86_400
#: How far behind its high-water mark a reader looks again (clock skew, late visibility).
LOOKBACK_MS = 5_000


class ChangeLogError(OabError):
    """Writing or reading change records failed (retryable: an AWS/infra problem)."""

    retryable = True
    reason = "ChangeLogError"


def shard_of(key: str, *, shards: int = SHARDS) -> int:
    """Stable shard of an object key (crc32, not ``hash()``, which differs per process)."""
    return zlib.crc32(key.encode()) % shards


def agent_key_of(object_key: str) -> str | None:
    """``manifests/{ns}/{name}.yaml`` -> ``{ns}/{name}``; None for fleets and other keys."""
    if not (object_key.startswith("manifests/") and object_key.endswith(".yaml")):
        return None
    return object_key.removeprefix("manifests/").removesuffix(".yaml")


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
        return f"{self.epoch_ms:013d}#{self.key}#{self.generation}"


@dataclass(frozen=True)
class Cursor:
    """Read position per shard: high-water epoch ms and the sort keys seen inside the lookback."""

    high_water: Mapping[int, int] = field(default_factory=dict)
    seen: Mapping[int, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def starting_at(cls, epoch_ms: int, *, shards: int = SHARDS) -> Cursor:
        """A cursor that returns changes stamped at or after ``epoch_ms``."""
        return cls(high_water=dict.fromkeys(range(shards), epoch_ms))


class ChangeLog:
    """Records and reads change records in the ``state`` table."""

    def __init__(
        self,
        dynamodb: Any,
        table: str,
        *,
        shards: int = SHARDS,
        wall_clock: Callable[[], float] = time.time,
        retention_seconds: int = RETENTION_SECONDS,
        lookback_ms: int = LOOKBACK_MS,
    ) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self._ddb = dynamodb
        self._table = table
        self._shards = shards
        self._clock = wall_clock
        self._retention = retention_seconds
        self._lookback = lookback_ms

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
        item = {
            "pk": {"S": f"changes#{shard_of(key, shards=self._shards)}"},
            "sk": {"S": change.sort_key},
            "key": {"S": key},
            "generation": {"N": str(generation)},
            "kind": {"S": kind},
            "version_id": {"S": version_id},
            "at": {"S": change.at},
            "epoch_ms": {"N": str(change.epoch_ms)},
            "trace_context": {"S": json.dumps(dict(change.trace_context), sort_keys=True)},
            "expires_at": {"N": str(int(now) + self._retention)},
        }
        try:
            self._ddb.put_item(TableName=self._table, Item=item)
        except (ClientError, BotoCoreError) as exc:
            raise ChangeLogError(f"cannot record change of {key}: {exc}") from exc
        return change

    def read_since(self, cursor: Cursor | None = None) -> tuple[list[Change], Cursor]:
        """Every change after ``cursor`` over all shards, oldest first, and the next cursor.

        ``None`` reads everything still retained.
        """
        cursor = cursor or Cursor()
        changes: list[Change] = []
        high: dict[int, int] = {}
        seen: dict[int, frozenset[str]] = {}
        for shard in range(self._shards):
            mark = cursor.high_water.get(shard, 0)
            already = cursor.seen.get(shard, frozenset())
            start = max(0, mark - self._lookback)
            fresh = [c for c in self._query(shard, f"{start:013d}") if c.sort_key not in already]
            changes.extend(fresh)
            new_mark = max([mark, *(c.epoch_ms for c in fresh)])
            floor = new_mark - self._lookback
            # Remember only what the next read can return again (inside its lookback window).
            keep = {s for s in already if int(s[:13]) >= floor}
            keep |= {c.sort_key for c in fresh if c.epoch_ms >= floor}
            high[shard] = new_mark
            seen[shard] = frozenset(keep)
        changes.sort(key=lambda c: (c.epoch_ms, c.key, c.generation))
        return changes, Cursor(high_water=high, seen=seen)

    def _query(self, shard: int, start_sk: str) -> list[Change]:
        out: list[Change] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk >= :start",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"changes#{shard}"},
                ":start": {"S": start_sk},
            },
            "ConsistentRead": True,
        }
        try:
            while True:
                resp = self._ddb.query(**kwargs)
                out.extend(_from_item(i) for i in resp.get("Items", []))
                if "LastEvaluatedKey" not in resp:
                    return out
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        except (ClientError, BotoCoreError) as exc:
            raise ChangeLogError(f"cannot read change shard {shard}: {exc}") from exc


def _from_item(item: Mapping[str, Any]) -> Change:
    kind = item["kind"]["S"]
    if kind not in ("apply", "delete"):
        raise ValueError(f"stored change kind {kind!r} is not apply|delete")
    return Change(
        key=item["key"]["S"],
        generation=int(item["generation"]["N"]),
        kind=kind,
        version_id=item["version_id"]["S"],
        at=item["at"]["S"],
        epoch_ms=int(item["epoch_ms"]["N"]),
        trace_context=json.loads(item.get("trace_context", {}).get("S", "{}")),
    )
