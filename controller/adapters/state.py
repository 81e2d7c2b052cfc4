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
:mod:`oab.controller.core.status`; this module is their one encoding (``*_to_item`` /
``*_from_item``) and the reads and the transition items built on it.

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

from oab.controller.base.names import (
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
    AUDIT_ERROR_BYTES,
    ERROR_BYTES,
    Attributes,
    UnreadableItem,
)

__all__ = [
    "RUNLOG_RETENTION_DAYS",
    "audit_from_item",
    "audit_to_item",
    "newest_audit_seq",
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
    """Serialise to a low-level DynamoDB item (key included)."""
    item: dict[str, Any] = {
        **status_key(status.key),
        "key": _s(status.key),
        "observed_generation": _n(status.observed_generation),
        "conditions": _s(json.dumps([c.to_json() for c in status.conditions])),
        "task_arns": _s(json.dumps(list(status.task_arns))),
        "service_arn": _s(status.service_arn),
        "task_definition_arn": _s(status.task_definition_arn),
        "task_definition_hash": _s(status.task_definition_hash),
        "last_reconciled": _s(status.last_reconciled),
        "last_error": _s(status.last_error),
        "attempts": _n(status.attempts),
        "last_run_id": _s(status.last_run_id),
        "trace_id": _s(status.trace_id),
        "secret_versions": _s(json.dumps(dict(sorted(status.secret_versions.items())))),
        "watched_secrets": _s(json.dumps(dict(sorted(status.watched_secrets.items())))),
        "restart_marker": _s(status.restart_marker),
        "finalizer_step": _s(status.finalizer_step),
        "manifest_etag": _s(status.manifest_etag),
        "failed_hash": _s(status.failed_hash),
        "audit_seq": _n(status.audit_seq),
        "last_snapshot": _s(status.last_snapshot),
        "ingress": _s(json.dumps(dict(sorted(status.ingress.items())))),
        "webhook_urls": _s(json.dumps(list(status.webhook_urls))),
    }
    if status.phase is not None:
        item["phase"] = _s(status.phase)
    return item


def _status_reader(item: Mapping[str, Any]) -> Attributes:
    pk = item.get("pk")
    name = pk.get("S") if isinstance(pk, Mapping) else None
    return Attributes(
        item,
        table="state",
        item=f"{name if isinstance(name, str) else '?'}/status",
        reason="CorruptStatus",
    )


def status_from_item(item: Mapping[str, Any]) -> AgentStatus:
    """Parse a low-level DynamoDB status item; raises :class:`UnreadableItem` (reason
    ``CorruptStatus``) naming the field when it does not decode. Absent optional attributes
    read as their defaults (items written by older versions lack the newer ones)."""
    a = _status_reader(item)
    key = a.s("key") or agent_of_status_partition(a.s("pk", required=True))
    phase = a.s("phase") or None
    if phase is not None and phase not in PHASES:
        raise a.error("phase", f"{phase!r} is not one of {', '.join(PHASES)}")
    try:
        conditions = tuple(Condition.from_json(c) for c in a.objects("conditions"))
    except ValueError as exc:
        raise a.error("conditions", str(exc)) from None
    return AgentStatus(
        key=key,
        phase=phase,
        observed_generation=a.n("observed_generation"),
        conditions=conditions,
        task_arns=tuple(a.strings("task_arns")),
        service_arn=a.s("service_arn"),
        task_definition_arn=a.s("task_definition_arn"),
        task_definition_hash=a.s("task_definition_hash"),
        last_reconciled=a.s("last_reconciled"),
        last_error=a.s("last_error", budget=ERROR_BYTES),
        attempts=a.n("attempts"),
        last_run_id=a.s("last_run_id"),
        trace_id=a.s("trace_id"),
        secret_versions=a.string_map("secret_versions"),
        watched_secrets=a.string_map("watched_secrets"),
        restart_marker=a.s("restart_marker"),
        finalizer_step=a.s("finalizer_step"),
        manifest_etag=a.s("manifest_etag"),
        failed_hash=a.s("failed_hash"),
        audit_seq=a.n("audit_seq"),
        last_snapshot=a.s("last_snapshot"),
        ingress=a.string_map("ingress"),
        webhook_urls=tuple(a.strings("webhook_urls")),
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


def stored_calls(calls: Sequence[AwsCall], *, budget: int = AUDIT_CALLS_BYTES) -> str:
    """The JSON of an audit row's call list within ``budget`` bytes: calls in order while they
    fit, then one :data:`OMITTED_CALLS_ACTION` entry saying how many were left out."""
    reserve = 200  # room for the omitted-calls entry
    parts: list[str] = []
    size = 2  # the brackets
    for n, call in enumerate(calls):
        text = json.dumps(call.to_json())
        if size + len(text.encode()) + 1 > budget - reserve:
            left = AwsCall(
                action=OMITTED_CALLS_ACTION,
                target="",
                result=f"{len(calls) - n} more call(s) over the audit row's {budget}-byte budget",
            )
            parts.append(json.dumps(left.to_json()))
            break
        parts.append(text)
        size += len(text.encode()) + 1
    return "[" + ",".join(parts) + "]"


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


def audit_to_item(
    record: AuditRecord, *, retention_days: int = RUNLOG_RETENTION_DAYS
) -> dict[str, Any]:
    """A run-log row as a low-level DynamoDB item with its TTL (``expires_at``)."""
    return {
        "pk": _s(record.key),
        "seq": _n(record.seq),
        "run_id": _s(record.run_id),
        "event": _s(record.event),
        "generation": _n(record.generation),
        "token": _s(record.token),
        "replica": _s(record.replica),
        "epoch": _n(record.epoch),
        "trace_id": _s(record.trace_id),
        "span_id": _s(record.span_id),
        "from_phase": _s(record.from_phase or ""),
        "to_phase": _s(record.to_phase or ""),
        "calls": _s(stored_calls(record.calls)),
        "outcome": _s(record.outcome),
        "error": _s(record.error),
        "duration_ms": _n(record.duration_ms),
        "at": _s(iso(record.at)),
        "expires_at": _n(int(record.at) + retention_days * 86_400),
    }


def audit_from_item(item: Mapping[str, Any]) -> AuditRecord:
    """Parse a stored run-log row; raises :class:`UnreadableItem` (``CorruptAuditRow``)."""
    pk, seq = item.get("pk"), item.get("seq")
    a = Attributes(
        item,
        table="runlog",
        item=f"{pk.get('S', '?') if isinstance(pk, Mapping) else '?'}#"
        f"{seq.get('N', '?') if isinstance(seq, Mapping) else '?'}",
        reason="CorruptAuditRow",
    )
    stamp = a.s("at", required=True)
    try:
        at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise a.error("at", "not an ISO-8601 UTC time") from None
    phases = {p: a.s(p) or None for p in ("from_phase", "to_phase")}
    for name, phase in phases.items():
        if phase is not None and phase not in PHASES:
            raise a.error(name, f"{phase!r} is not one of {', '.join(PHASES)}")
    calls: list[AwsCall] = []
    for raw in a.objects("calls", budget=AUDIT_CALLS_BYTES):
        fields = {f: raw.get(f, "") for f in ("action", "target", "result", "requestId")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise a.error("calls", "a call field is not a string")
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
        key=a.s("pk", required=True),
        seq=a.n("seq", required=True),
        run_id=a.s("run_id"),
        generation=a.n("generation"),
        token=a.s("token"),
        replica=a.s("replica"),
        epoch=a.n("epoch"),
        trace_id=a.s("trace_id"),
        span_id=a.s("span_id"),
        from_phase=phases["from_phase"],  # type: ignore[arg-type]
        to_phase=phases["to_phase"],  # type: ignore[arg-type]
        calls=tuple(calls),
        outcome=a.s("outcome"),
        error=a.s("error", budget=AUDIT_ERROR_BYTES),
        duration_ms=a.n("duration_ms"),
        at=at,
        event=a.s("event") or "reconcile",
    )
