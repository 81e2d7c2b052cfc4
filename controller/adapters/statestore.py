"""One state store for the controller's own tables: status, run log and change records.

Design
------
The storage seam under the worker, the scheduler and the CLI's status reads, as
:mod:`oab.queue.store` is the work queue's: a small interface (:class:`StateStore`), a DynamoDB
adapter (:class:`DynamoStateStore`) and an in-memory twin (:class:`MemoryStateStore`) that keeps
the *same encoded items* (the one encoding, :mod:`oab.controller.adapters.state` on the models of
:mod:`oab.controller.adapters.models`), so a test of an algorithm sees what DynamoDB would return,
unreadable items included.

- Status: :meth:`~StateStore.read_status` (consistent, a missing item is an empty status) and
  :meth:`~StateStore.statuses` (every agent's, one paginated Scan on DynamoDB).
- Transitions: :meth:`~StateStore.transition_items` builds the status put and its audit row as
  low-level ``TransactWriteItems`` actions; the worker passes them to the work queue's transaction
  (status transition + audit row + queue completion stay ONE transaction, sent by the queue's
  low-level client in the caller's order, so a cancellation reason maps back to its item by
  position: PynamoDB's own ``TransactWrite`` would reorder them, upstream issue 1284).
  :meth:`~StateStore.commit` sends them on their own (repairs and tests), raising
  :class:`TransitionRefused` with the index of the item whose condition failed.
- Run log: :meth:`~StateStore.newest_audit_seq`, :meth:`~StateStore.read_runlog` and
  :meth:`~StateStore.run` (a run by id, through the ``run-index`` GSI).
- Change records: :attr:`~StateStore.changes`, a :class:`~oab.controller.adapters.changes.
  ChangeLog` over this store's rows.

Invariants
----------
- Reads are total (the one decoding): an item that does not decode is reported to
  ``on_unreadable`` and left out, or raises :class:`~oab.controller.core.stored.UnreadableItem`.
- The twin judges exactly the conditions :func:`~oab.controller.adapters.state.transition_items`
  writes, all items before any write (all or nothing), and refuses any other condition rather
  than guess at it.

Time model: none here; the change log's clock is injected into it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from botocore.exceptions import ClientError

from oab.controller.adapters import state
from oab.controller.adapters.changes import ChangeLog, MemoryChangeRows
from oab.controller.adapters.models import TableModels
from oab.controller.base.errors import OabError
from oab.controller.base.names import STATUS_SORT_KEY, TableNames, status_partition_key
from oab.controller.core.status import AgentStatus, AuditRecord
from oab.controller.core.stored import UnreadableItem

__all__ = [
    "DynamoStateStore",
    "MemoryStateStore",
    "StateStore",
    "TransactItem",
    "TransitionRefused",
]

TransactItem = dict[str, Any]


class TransitionRefused(OabError):
    """A transition's transaction was refused: ``index`` is the item whose condition failed (0 the
    status put, 1 the audit row; ``-1`` when no item was named) and ``code`` the cancellation
    code. Retryable: read the status and the run log again and rebuild the transition."""

    retryable = True
    reason = "TransitionRefused"

    def __init__(self, index: int, code: str) -> None:
        super().__init__(f"transition refused at item {index}: {code}")
        self.index = index
        self.code = code


class StateStore(Protocol):
    """What the controller needs from the storage of its own state (see the module doc)."""

    @property
    def changes(self) -> ChangeLog:
        """The change records in this store."""
        ...

    def read_status(self, key: str) -> AgentStatus:
        """An agent's status (empty when absent); raises :class:`UnreadableItem`."""
        ...

    def statuses(
        self,
        *,
        on_page: Callable[[], None] | None = None,
        on_unreadable: Callable[[str, UnreadableItem], None] | None = None,
    ) -> dict[str, AgentStatus]:
        """Every agent's status by key; ``on_unreadable(key, error)`` as in
        :func:`~oab.controller.adapters.state.scan_statuses`."""
        ...

    def transition_items(
        self,
        *,
        before: AgentStatus,
        after: AgentStatus,
        audit: AuditRecord,
        log_seq: int | None = None,
    ) -> list[TransactItem]:
        """The status put and audit row of one transition, for the queue's transaction."""
        ...

    def commit(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Write transition items on their own, all or nothing; raises
        :class:`TransitionRefused`."""
        ...

    def newest_audit_seq(self, key: str) -> int:
        """The newest run-log sequence of an agent (0: none)."""
        ...

    def read_runlog(
        self,
        key: str,
        *,
        limit: int | None = None,
        newest_first: bool = True,
        on_unreadable: Callable[[UnreadableItem], None] | None = None,
    ) -> list[AuditRecord]:
        """An agent's audit rows."""
        ...

    def run(self, run_id: str) -> AuditRecord | None:
        """The audit row of run ``run_id`` (``run-index``), or ``None``."""
        ...


class DynamoStateStore:
    """:class:`StateStore` on DynamoDB, through the low-level client of the bound models
    (:func:`oab.controller.adapters.aws.make_table_models`)."""

    def __init__(self, models: TableModels, *, changes: ChangeLog | None = None) -> None:
        """``changes`` replaces the default change log (its clock and shards)."""
        self._client = models.client
        self._names = models.names
        self._changes = changes or ChangeLog(models.client, models.names.state)

    @property
    def changes(self) -> ChangeLog:
        """The change records in the ``state`` table."""
        return self._changes

    def read_status(self, key: str) -> AgentStatus:
        """GetItem, consistent."""
        return state.read_status(self._client, self._names.state, key)

    def statuses(
        self,
        *,
        on_page: Callable[[], None] | None = None,
        on_unreadable: Callable[[str, UnreadableItem], None] | None = None,
    ) -> dict[str, AgentStatus]:
        """One consistent, paginated Scan."""
        return state.scan_statuses(
            self._client, self._names.state, on_page=on_page, on_unreadable=on_unreadable
        )

    def transition_items(
        self,
        *,
        before: AgentStatus,
        after: AgentStatus,
        audit: AuditRecord,
        log_seq: int | None = None,
    ) -> list[TransactItem]:
        """See :func:`~oab.controller.adapters.state.transition_items`."""
        return state.transition_items(
            state_table=self._names.state,
            runlog_table=self._names.runlog,
            before=before,
            after=after,
            audit=audit,
            log_seq=log_seq,
        )

    def commit(self, items: Sequence[Mapping[str, Any]]) -> None:
        """One TransactWriteItems, the items in the caller's order."""
        try:
            self._client.transact_write_items(TransactItems=[dict(x) for x in items])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = exc.response.get("CancellationReasons") or []
            for index, reason in enumerate(reasons):
                code = reason.get("Code", "None")
                if code != "None":
                    raise TransitionRefused(index, code) from exc
            raise TransitionRefused(-1, "TransactionCanceled") from exc

    def newest_audit_seq(self, key: str) -> int:
        """One keys-only Query."""
        return state.newest_audit_seq(self._client, self._names.runlog, key)

    def read_runlog(
        self,
        key: str,
        *,
        limit: int | None = None,
        newest_first: bool = True,
        on_unreadable: Callable[[UnreadableItem], None] | None = None,
    ) -> list[AuditRecord]:
        """A paginated Query."""
        return state.read_runlog(
            self._client,
            self._names.runlog,
            key,
            limit=limit,
            newest_first=newest_first,
            on_unreadable=on_unreadable,
        )

    def run(self, run_id: str) -> AuditRecord | None:
        """A Query of the ``run-index`` GSI (eventually consistent, as every GSI read)."""
        return state.read_run(self._client, self._names.runlog, run_id)


def _text(item: Mapping[str, Any], name: str) -> str:
    value = item.get(name)
    text = value.get("S") if isinstance(value, Mapping) else None
    return text if isinstance(text, str) else ""


def _seq_of(item: Mapping[str, Any]) -> int:
    value = item.get("seq")
    number = value.get("N") if isinstance(value, Mapping) else None
    return int(number) if isinstance(number, str) and number.isdigit() else 0


class MemoryStateStore:
    """In-memory :class:`StateStore` holding the same encoded items as the tables (see the
    module doc). ``put_raw`` plants any item, as an integration test writes straight into a
    table; ``requests`` counts calls per operation."""

    def __init__(self, *, names: TableNames | None = None, changes: ChangeLog | None = None):
        """``changes`` replaces the default change log (it must use :class:`MemoryChangeRows`
        to stay in memory)."""
        self._names = names or TableNames()
        self._status: dict[str, dict[str, Any]] = {}
        self._runlog: dict[tuple[str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._changes = changes or ChangeLog(None, self._names.state, rows=MemoryChangeRows())
        self.requests: dict[str, int] = {}

    def _count(self, op: str) -> None:
        self.requests[op] = self.requests.get(op, 0) + 1

    @property
    def changes(self) -> ChangeLog:
        """The change records, in memory."""
        return self._changes

    def put_raw(self, table: str, item: Mapping[str, Any]) -> None:
        """Store ``item`` in ``table`` (``state`` or ``runlog`` by the store's names) as it is."""
        with self._lock:
            if table == self._names.state:
                self._status[_text(item, "pk")] = dict(item)
            elif table == self._names.runlog:
                self._runlog[(_text(item, "pk"), _seq_of(item))] = dict(item)
            else:
                raise ValueError(f"no table {table!r} in this store")

    def read_status(self, key: str) -> AgentStatus:
        """The stored status, decoded."""
        with self._lock:
            self._count("get")
            item = self._status.get(status_partition_key(key))
        return state.status_from_item(item) if item else AgentStatus(key=key)

    def statuses(
        self,
        *,
        on_page: Callable[[], None] | None = None,
        on_unreadable: Callable[[str, UnreadableItem], None] | None = None,
    ) -> dict[str, AgentStatus]:
        """A snapshot of every status, decoded as the Scan decodes it (one page)."""
        with self._lock:
            self._count("scan")
            items = [it for it in self._status.values() if _text(it, "sk") == STATUS_SORT_KEY]
        return state.scan_statuses(
            _OnePage(items), self._names.state, on_page=on_page, on_unreadable=on_unreadable
        )

    def transition_items(
        self,
        *,
        before: AgentStatus,
        after: AgentStatus,
        audit: AuditRecord,
        log_seq: int | None = None,
    ) -> list[TransactItem]:
        """See :func:`~oab.controller.adapters.state.transition_items`."""
        return state.transition_items(
            state_table=self._names.state,
            runlog_table=self._names.runlog,
            before=before,
            after=after,
            audit=audit,
            log_seq=log_seq,
        )

    def commit(self, items: Sequence[Mapping[str, Any]]) -> None:
        """Judge every item's condition, then write all of them (or none)."""
        with self._lock:
            self._count("transact")
            writes: list[tuple[str, dict[str, Any]]] = []
            for index, raw in enumerate(items):
                put = raw.get("Put")
                if not isinstance(put, Mapping) or len(raw) != 1:
                    raise ValueError("the in-memory state store commits Put items only")
                table, item = put["TableName"], dict(put["Item"])
                old = self._old(table, item)
                if not self._holds(put, old):
                    raise TransitionRefused(index, "ConditionalCheckFailed")
                writes.append((table, item))
            for table, item in writes:
                if table == self._names.state:
                    self._status[_text(item, "pk")] = item
                else:
                    self._runlog[(_text(item, "pk"), _seq_of(item))] = item

    def _old(self, table: str, item: Mapping[str, Any]) -> dict[str, Any] | None:
        if table == self._names.state:
            return self._status.get(_text(item, "pk"))
        if table == self._names.runlog:
            return self._runlog.get((_text(item, "pk"), _seq_of(item)))
        raise ValueError(f"no table {table!r} in this store")

    @staticmethod
    def _holds(put: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
        # Exactly the conditions state.transition_items writes, judged on the raw stored item.
        condition = put.get("ConditionExpression")
        prev = put.get("ExpressionAttributeValues", {}).get(":prev")
        if condition == "attribute_not_exists(pk)":
            return old is None
        if condition == "audit_seq = :prev":
            return old is not None and old.get("audit_seq") == prev
        if condition == "attribute_not_exists(pk) OR audit_seq = :prev":
            return old is None or old.get("audit_seq") == prev
        raise ValueError(f"the in-memory state store cannot judge {condition!r}")

    def newest_audit_seq(self, key: str) -> int:
        """The largest stored sequence of the agent's rows."""
        with self._lock:
            self._count("query")
            return max((seq for pk, seq in self._runlog if pk == key), default=0)

    def read_runlog(
        self,
        key: str,
        *,
        limit: int | None = None,
        newest_first: bool = True,
        on_unreadable: Callable[[UnreadableItem], None] | None = None,
    ) -> list[AuditRecord]:
        """The agent's rows in sequence order, decoded as the Query decodes them."""
        with self._lock:
            self._count("query")
            found = sorted(
                ((seq, it) for (pk, seq), it in self._runlog.items() if pk == key),
                key=lambda pair: pair[0],
                reverse=newest_first,
            )
        rows: list[AuditRecord] = []
        for _, item in found:
            if limit is not None and len(rows) >= limit:
                break
            try:
                rows.append(state.audit_from_item(item))
            except UnreadableItem as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(exc)
        return rows

    def run(self, run_id: str) -> AuditRecord | None:
        """The row whose ``run_id`` is ``run_id``, as the ``run-index`` finds it."""
        with self._lock:
            self._count("query")
            found = [it for it in self._runlog.values() if _text(it, "run_id") == run_id]
        return state.audit_from_item(found[0]) if found else None


class _OnePage:
    """A client answering one Scan with ``items`` (the twin reuses the Scan's decoding)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self._items = items

    def scan(self, **_: Any) -> dict[str, Any]:
        return {"Items": self._items}
