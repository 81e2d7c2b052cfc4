"""The controller's own DynamoDB state: status items and run-log rows, encoded, read, written.

Design
------
Status lives in the ``state`` table (``pk = agent#{ns}/{name}``, ``sk = status``:
:mod:`oab.controller.base.names`). Every change of status is written together with exactly one
row of the append-only audit run log (``runlog`` table, ``pk = {ns}/{name}``,
``seq = 1, 2, 3, ...``) in one ``TransactWriteItems``. The caller adds the work unit's completion
(conditional on its claim token) and, where the write is made on the leader's authority, the
leader's fence to the same transaction, so:

- no transition without its audit row, and no audit row without its transition;
- the per-agent audit sequence has no gaps: the status item holds ``audit_seq``; the transaction
  moves it from ``n`` to ``n + 1`` (condition on ``n``) and puts row ``n + 1`` (condition: absent);
- nothing is written by a worker whose claim was taken over, or by a deposed leader.

The domain types (:class:`~oab.controller.core.status.AgentStatus`,
:class:`~oab.controller.core.status.AuditRecord`) and the phase machine are
:mod:`oab.controller.core.status`; the items' shape is declared once by the PynamoDB models of
:mod:`oab.controller.adapters.models` (:class:`~oab.controller.adapters.models.StatusRow`,
:class:`~oab.controller.adapters.models.RunLogRow`); this module is the mapping between the two
(``*_to_item`` / ``*_from_item``) and the reads and the transition items built on it. Every
request goes through the low-level client (the models never do I/O), and the transition items are
low-level ``TransactWriteItems`` actions the work queue sends in the caller's order, so that a
cancellation reason maps back to its item by position (PynamoDB's own transactions reorder items,
upstream issue 1284). :mod:`oab.controller.adapters.statestore` wraps these functions in the one
state-store interface and its in-memory twin.

Invariants
----------
- Decoding is total: an item that does not decode raises
  :class:`~oab.controller.core.stored.UnreadableItem` (reason ``CorruptStatus`` for a status,
  ``CorruptAuditRow`` for a run-log row) naming the field; scans can skip such items and report
  them instead (``on_unreadable``). Absent optional attributes read as their defaults.
- An audit row's call list is cut to its byte budget when stored (:func:`stored_calls`).
- An audit row's sequence follows the newest row of the run log even when the status's stored
  sequence is behind it (a status item deleted or restored from an older backup): never
  downwards, never a gap (``log_seq`` of :func:`transition_items`).

Time model: the run log's TTL is the row's own wall-clock stamp plus the retention; nothing here
reads a clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from oab.controller.adapters.models import RunLogRow, StatusRow, decode
from oab.controller.base.names import (
    RUN_INDEX,
    STATUS_SORT_KEY,
    agent_of_status_partition,
    status_partition_key,
)
from oab.controller.core.status import (
    OMITTED_CALLS_ACTION,
    PHASES,
    AgentStatus,
    AuditRecord,
    AwsCall,
    Condition,
    IllegalTransition,
    check_transition,
    iso,
)
from oab.controller.core.stored import (
    AUDIT_CALLS_BYTES,
    SHORT_TEXT_BYTES,
    Attributes,
    UnreadableItem,
    clip,
)

__all__ = [
    "RUNLOG_RETENTION_DAYS",
    "audit_from_item",
    "audit_to_item",
    "newest_audit_seq",
    "read_run",
    "read_runlog",
    "read_status",
    "scan_statuses",
    "status_from_item",
    "status_key",
    "status_to_item",
    "stored_audit_seq",
    "stored_calls",
    "transition_items",
]

RUNLOG_RETENTION_DAYS = 90


def status_key(key: str) -> dict[str, dict[str, str]]:
    """DynamoDB key of an agent's status item."""
    return {"pk": {"S": status_partition_key(key)}, "sk": {"S": STATUS_SORT_KEY}}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def status_to_item(status: AgentStatus) -> dict[str, Any]:
    """Serialise to a low-level DynamoDB item (key included), through :class:`StatusRow`."""
    row = StatusRow(
        pk=status_partition_key(status.key),
        sk=STATUS_SORT_KEY,
        key=status.key,
        phase=status.phase,
        observed_generation=status.observed_generation,
        conditions=[c.to_json() for c in status.conditions],
        task_arns=list(status.task_arns),
        service_arn=status.service_arn,
        task_definition_arn=status.task_definition_arn,
        task_definition_hash=status.task_definition_hash,
        last_reconciled=status.last_reconciled,
        last_error=status.last_error,
        attempts=status.attempts,
        last_run_id=status.last_run_id,
        trace_id=status.trace_id,
        secret_versions=dict(sorted(status.secret_versions.items())),
        watched_secrets=dict(sorted(status.watched_secrets.items())),
        restart_marker=status.restart_marker,
        finalizer_step=status.finalizer_step,
        manifest_etag=status.manifest_etag,
        failed_hash=status.failed_hash,
        audit_seq=status.audit_seq,
        last_snapshot=status.last_snapshot,
        ingress=dict(sorted(status.ingress.items())),
        webhook_urls=list(status.webhook_urls),
    )
    return row.serialize()


def _status_name(item: Mapping[str, Any]) -> str:
    pk = item.get("pk")
    name = pk.get("S") if isinstance(pk, Mapping) else None
    return f"{name if isinstance(name, str) else '?'}/status"


def _status_reader(item: Mapping[str, Any]) -> Attributes:
    return Attributes(item, table="state", item=_status_name(item), reason="CorruptStatus")


def _bad(table: str, name: str, reason: str, field: str, problem: str) -> UnreadableItem:
    return UnreadableItem(table=table, item=name, field=field, problem=problem, reason=reason)


def _strings(value: Any, *, field: str, bad: Callable[[str, str], UnreadableItem]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad(field, "expected a JSON list of strings")
    return [clip(v, SHORT_TEXT_BYTES) for v in value]


def _string_map(
    value: Any, *, field: str, bad: Callable[[str, str], UnreadableItem]
) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise bad(field, "expected a JSON object of strings")
    return {clip(k, SHORT_TEXT_BYTES): clip(v, SHORT_TEXT_BYTES) for k, v in value.items()}


def _objects(
    value: Any, *, field: str, bad: Callable[[str, str], UnreadableItem]
) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise bad(field, "expected a JSON list of objects")
    return value


def status_from_item(item: Mapping[str, Any]) -> AgentStatus:
    """Parse a low-level DynamoDB status item through :class:`StatusRow`; raises
    :class:`UnreadableItem` (reason ``CorruptStatus``) naming the field when it does not decode.
    Absent optional attributes read as their defaults (items written by older versions lack the
    newer ones)."""
    name = _status_name(item)
    row = decode(StatusRow, item, table="state", name=name, reason="CorruptStatus")

    def bad(field: str, problem: str) -> UnreadableItem:
        return _bad("state", name, "CorruptStatus", field, problem)

    phase = row["phase"] or None
    if phase is not None and phase not in PHASES:
        raise bad("phase", f"{phase!r} is not one of {', '.join(PHASES)}")
    try:
        conditions = tuple(
            Condition.from_json(c) for c in _objects(row["conditions"], field="conditions", bad=bad)
        )
    except ValueError as exc:
        raise bad("conditions", str(exc)) from None
    return AgentStatus(
        key=row["key"] or agent_of_status_partition(row["pk"]),
        phase=phase,
        observed_generation=row["observed_generation"],
        conditions=conditions,
        task_arns=tuple(_strings(row["task_arns"], field="task_arns", bad=bad)),
        service_arn=row["service_arn"],
        task_definition_arn=row["task_definition_arn"],
        task_definition_hash=row["task_definition_hash"],
        last_reconciled=row["last_reconciled"],
        last_error=row["last_error"],
        attempts=row["attempts"],
        last_run_id=row["last_run_id"],
        trace_id=row["trace_id"],
        secret_versions=_string_map(row["secret_versions"], field="secret_versions", bad=bad),
        watched_secrets=_string_map(row["watched_secrets"], field="watched_secrets", bad=bad),
        restart_marker=row["restart_marker"],
        finalizer_step=row["finalizer_step"],
        manifest_etag=row["manifest_etag"],
        failed_hash=row["failed_hash"],
        audit_seq=row["audit_seq"],
        last_snapshot=row["last_snapshot"],
        ingress=_string_map(row["ingress"], field="ingress", bad=bad),
        webhook_urls=tuple(_strings(row["webhook_urls"], field="webhook_urls", bad=bad)),
    )


def stored_audit_seq(item: Mapping[str, Any]) -> int | None:
    """The audit sequence of a status item that may not decode as a whole, if it is readable
    (a repair must never move an agent's audit sequence downwards)."""
    try:
        return _status_reader(item).n("audit_seq")
    except UnreadableItem:
        return None


def scan_statuses(
    client: Any,
    table: str,
    *,
    on_page: Callable[[], None] | None = None,
    on_unreadable: Callable[[str, UnreadableItem], None] | None = None,
) -> dict[str, AgentStatus]:
    """Every agent's status in ``table``, by key (one consistent, paginated Scan).

    ``on_page`` is called once per request (the resync counts its AWS requests with it).
    ``on_unreadable(key, error)`` receives each item that does not decode, which is then left
    out; without it such an item raises :class:`UnreadableItem`.
    """
    out: dict[str, AgentStatus] = {}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "sk = :s",
        "ExpressionAttributeValues": {":s": {"S": STATUS_SORT_KEY}},
        "ConsistentRead": True,
    }
    while True:
        resp = client.scan(**kwargs)
        if on_page is not None:
            on_page()
        for item in resp.get("Items", []):
            try:
                status = status_from_item(item)
            except UnreadableItem as exc:
                if on_unreadable is None:
                    raise
                pk = item.get("pk")
                name = pk.get("S") if isinstance(pk, Mapping) else None
                on_unreadable(agent_of_status_partition(name) if isinstance(name, str) else "", exc)
                continue
            out[status.key] = status
        if "LastEvaluatedKey" not in resp:
            return out
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def read_status(client: Any, table: str, key: str) -> AgentStatus:
    """Consistent read of an agent's status; a missing item is an empty status. Raises
    :class:`UnreadableItem` (``CorruptStatus``) when the item does not decode."""
    resp = client.get_item(TableName=table, Key=status_key(key), ConsistentRead=True)
    item = resp.get("Item")
    return status_from_item(item) if item else AgentStatus(key=key)


def _stored_call_entries(calls: Sequence[AwsCall], *, budget: int) -> list[dict[str, Any]]:
    """An audit row's call entries within ``budget`` bytes of stored JSON (see
    :func:`stored_calls`)."""
    reserve = 200  # room for the omitted-calls entry
    entries: list[dict[str, Any]] = []
    size = 2  # the brackets
    for n, call in enumerate(calls):
        entry = call.to_json()
        length = len(json.dumps(entry).encode())
        if size + length + 1 > budget - reserve:
            left = AwsCall(
                action=OMITTED_CALLS_ACTION,
                target="",
                result=f"{len(calls) - n} more call(s) over the audit row's {budget}-byte budget",
            )
            entries.append(left.to_json())
            break
        entries.append(entry)
        size += length + 1
    return entries


def stored_calls(calls: Sequence[AwsCall], *, budget: int = AUDIT_CALLS_BYTES) -> str:
    """The JSON of an audit row's call list within ``budget`` bytes: calls in order while they
    fit, then one :data:`OMITTED_CALLS_ACTION` entry saying how many were left out."""
    return RunLogRow.calls.serialize(_stored_call_entries(calls, budget=budget))


def transition_items(
    *,
    state_table: str,
    runlog_table: str,
    before: AgentStatus,
    after: AgentStatus,
    audit: AuditRecord,
    log_seq: int | None = None,
) -> list[dict[str, Any]]:
    """The two TransactWriteItems actions of one status transition and its audit row.

    ``after.audit_seq`` must be one past the newest row, ``max(before.audit_seq, log_seq)``, and
    equal ``audit.seq``; the status write is conditional on the stored sequence still being
    ``before.audit_seq`` (nobody else wrote in between), the audit put on its row being absent.
    ``log_seq`` is the run log's newest sequence when it is ahead of the status's (found after
    the audit put failed on an existing row): the new row follows it, so the sequence never goes
    down and has no gap. Raises :class:`IllegalTransition`.
    """
    if after.phase is not None:
        check_transition(before.phase, after.phase)
    elif before.phase not in (None, "Terminating"):
        raise IllegalTransition(before.phase, None)  # only a finished deletion clears status
    newest = max(before.audit_seq, log_seq or 0)
    if after.audit_seq != newest + 1 or audit.seq != after.audit_seq:
        raise ValueError("audit sequence must advance by exactly one past the newest row")
    if before.audit_seq == 0:
        cond = "attribute_not_exists(pk) OR audit_seq = :prev"
    else:
        cond = "audit_seq = :prev"
    return [
        {
            "Put": {
                "TableName": state_table,
                "Item": status_to_item(after),
                "ConditionExpression": cond,
                "ExpressionAttributeValues": {":prev": _n(before.audit_seq)},
            }
        },
        {
            "Put": {
                "TableName": runlog_table,
                "Item": audit_to_item(audit),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
    ]


def newest_audit_seq(client: Any, table: str, key: str) -> int:
    """The sequence of the newest row of an agent's run log (0 when it has none): one Query,
    keys only."""
    resp = client.query(
        TableName=table,
        KeyConditionExpression="pk = :k",
        ExpressionAttributeValues={":k": _s(key)},
        ScanIndexForward=False,
        Limit=1,
        ProjectionExpression="seq",
        ConsistentRead=True,
    )
    items = resp.get("Items", [])
    if not items:
        return 0
    return Attributes(items[0], table="runlog", item=key, reason="CorruptAuditRow").n("seq")


def read_runlog(
    client: Any,
    table: str,
    key: str,
    *,
    limit: int | None = None,
    newest_first: bool = True,
    on_unreadable: Callable[[UnreadableItem], None] | None = None,
) -> list[AuditRecord]:
    """Rows of an agent's audit run log (newest first by default).

    ``on_unreadable`` receives each row that does not decode, which is then left out; without
    it such a row raises :class:`UnreadableItem`.
    """
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :k",
        "ExpressionAttributeValues": {":k": _s(key)},
        "ScanIndexForward": not newest_first,
    }
    rows: list[AuditRecord] = []
    while True:
        if limit is not None:
            kwargs["Limit"] = max(1, limit - len(rows))
        resp = client.query(**kwargs)
        for item in resp.get("Items", []):
            try:
                rows.append(audit_from_item(item))
            except UnreadableItem as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(exc)
        if "LastEvaluatedKey" not in resp or (limit is not None and len(rows) >= limit):
            return rows
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def read_run(client: Any, table: str, run_id: str) -> AuditRecord | None:
    """The audit row of run ``run_id`` through the ``run-index`` GSI (one Query), or None.
    Raises :class:`UnreadableItem` (``CorruptAuditRow``) when the row does not decode."""
    resp = client.query(
        TableName=table,
        IndexName=RUN_INDEX,
        KeyConditionExpression="run_id = :r",
        ExpressionAttributeValues={":r": _s(run_id)},
        Limit=1,
    )
    items = resp.get("Items", [])
    return audit_from_item(items[0]) if items else None


def audit_to_item(
    record: AuditRecord, *, retention_days: int = RUNLOG_RETENTION_DAYS
) -> dict[str, Any]:
    """A run-log row as a low-level DynamoDB item with its TTL (``expires_at``), through
    :class:`RunLogRow`."""
    row = RunLogRow(
        pk=record.key,
        seq=record.seq,
        run_id=record.run_id,
        event=record.event,
        generation=record.generation,
        token=record.token,
        replica=record.replica,
        epoch=record.epoch,
        trace_id=record.trace_id,
        span_id=record.span_id,
        from_phase=record.from_phase or "",
        to_phase=record.to_phase or "",
        calls=_stored_call_entries(record.calls, budget=AUDIT_CALLS_BYTES),
        outcome=record.outcome,
        error=record.error,
        duration_ms=record.duration_ms,
        at=iso(record.at),
        expires_at=datetime.fromtimestamp(int(record.at) + retention_days * 86_400, tz=UTC),
    )
    return row.serialize()


def _audit_name(item: Mapping[str, Any]) -> str:
    pk, seq = item.get("pk"), item.get("seq")
    return (
        f"{pk.get('S', '?') if isinstance(pk, Mapping) else '?'}#"
        f"{seq.get('N', '?') if isinstance(seq, Mapping) else '?'}"
    )


def audit_from_item(item: Mapping[str, Any]) -> AuditRecord:
    """Parse a stored run-log row through :class:`RunLogRow`; raises :class:`UnreadableItem`
    (``CorruptAuditRow``)."""
    name = _audit_name(item)
    row = decode(RunLogRow, item, table="runlog", name=name, reason="CorruptAuditRow")

    def bad(field: str, problem: str) -> UnreadableItem:
        return _bad("runlog", name, "CorruptAuditRow", field, problem)

    try:
        at = datetime.strptime(row["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise bad("at", "not an ISO-8601 UTC time") from None
    phases = {p: row[p] or None for p in ("from_phase", "to_phase")}
    for field, phase in phases.items():
        if phase is not None and phase not in PHASES:
            raise bad(field, f"{phase!r} is not one of {', '.join(PHASES)}")
    calls: list[AwsCall] = []
    for raw in _objects(row["calls"], field="calls", bad=bad):
        fields = {f: raw.get(f, "") for f in ("action", "target", "result", "requestId")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise bad("calls", "a call field is not a string")
        calls.append(
            AwsCall(
                action=fields["action"],
                target=fields["target"],
                result=fields["result"],
                request_id=fields["requestId"],
                adopted=raw.get("adopted") is True,
            )
        )
    return AuditRecord(
        key=row["pk"],
        seq=row["seq"],
        run_id=row["run_id"],
        generation=row["generation"],
        token=row["token"],
        replica=row["replica"],
        epoch=row["epoch"],
        trace_id=row["trace_id"],
        span_id=row["span_id"],
        from_phase=phases["from_phase"],
        to_phase=phases["to_phase"],
        calls=tuple(calls),
        outcome=row["outcome"],
        error=row["error"],
        duration_ms=row["duration_ms"],
        at=at,
        event=row["event"] or "reconcile",
    )
