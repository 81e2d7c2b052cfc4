"""Agent status: the explicit phase machine, conditions, and the atomic status + audit write.

Design
------
Status lives in the ``state`` table (``pk = agent#{ns}/{name}``, ``sk = status``). Every change of
status is written together with exactly one row of the append-only audit run log (``runlog``
table, ``pk = {ns}/{name}``, ``seq = 1, 2, 3, ...``) in one ``TransactWriteItems``. The caller adds
the work unit's completion (conditional on its claim token) and, where the write is made on the
leader's authority, the leader's fence to the same transaction, so:

- no transition without its audit row, and no audit row without its transition;
- the per-agent audit sequence has no gaps: the status item holds ``audit_seq``; the transaction
  moves it from ``n`` to ``n + 1`` (condition on ``n``) and puts row ``n + 1`` (condition: absent);
- nothing is written by a worker whose claim was taken over, or by a deposed leader.

Invariants
----------
- Phases move only along :data:`ALLOWED_TRANSITIONS`; :func:`check_transition` refuses the rest
  with :class:`IllegalTransition` (a terminal error: a bug or a corrupted item, never retried).
- A condition's ``lastTransitionTime`` changes only when its ``status`` changes.
- Secret values never reach this module: messages are built from names, ARNs and versions only.
- Every free text is bounded (:mod:`oab.controller.core.stored`): errors and condition messages are
  cut to their budgets when a status, condition or call is *constructed*, so what is compared
  in memory is what is stored; an audit row's call list is cut to its byte budget when stored.
- Decoding is total: an item that does not decode raises
  :class:`~oab.controller.core.stored.UnreadableItem` (reason ``CorruptStatus`` for a status,
  ``CorruptAuditRow`` for a run-log row) naming the field; scans can skip such items and report
  them instead (``on_unreadable``). An audit row's sequence follows the newest row of the run log
  even when the status's stored sequence is behind it (a status item deleted or restored from an
  older backup): never downwards, never a gap (``log_seq`` of :func:`transition_items`).

Time model: wall-clock timestamps here are for display and retention (TTL); they are passed in by
the caller (injected clock) and never compared across hosts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from oab.controller.base.names import (
    STATUS_SORT_KEY,
    agent_of_status_partition,
    status_partition_key,
)
from oab.controller.core.stored import (
    AUDIT_CALLS_BYTES,
    AUDIT_ERROR_BYTES,
    CALL_FIELD_BYTES,
    CALL_NAME_BYTES,
    CONDITION_MESSAGE_BYTES,
    CONDITION_REASON_BYTES,
    ERROR_BYTES,
    TASK_ARNS_MAX,
    Attributes,
    UnreadableItem,
    clip,
)

Phase = Literal["Pending", "Running", "Failed", "Terminating"]
ConditionStatus = Literal["True", "False", "Unknown"]

PHASES: tuple[Phase, ...] = ("Pending", "Running", "Failed", "Terminating")

#: Every allowed phase change. ``None`` is "no status" (never reconciled, or deleted);
#: ``Terminating`` ends only in :func:`cleared` (deletion done), never back in a live phase.
ALLOWED_TRANSITIONS: Mapping[Phase | None, frozenset[Phase]] = {
    None: frozenset({"Pending", "Running", "Failed", "Terminating"}),
    "Pending": frozenset({"Pending", "Running", "Failed", "Terminating"}),
    "Running": frozenset({"Pending", "Running", "Failed", "Terminating"}),
    "Failed": frozenset({"Pending", "Running", "Failed", "Terminating"}),
    "Terminating": frozenset({"Terminating"}),
}

#: Condition types this controller sets.
CONDITION_TYPES = (
    "Available",
    "Progressing",
    "Degraded",
    "SecretsRefreshed",
    "SecretInjectionFailed",
)

RUNLOG_RETENTION_DAYS = 90


class IllegalTransition(Exception):
    """A phase change the machine does not allow (terminal: never retried)."""

    def __init__(self, current: Phase | None, target: Phase | None) -> None:
        super().__init__(f"illegal phase transition {current or '<none>'} -> {target or '<none>'}")
        self.current = current
        self.target = target


def check_transition(current: Phase | None, target: Phase) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> target`` is allowed."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(current, target)


def iso(ts: float) -> str:
    """Wall-clock seconds as an ISO-8601 UTC string (display only)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class Condition:
    """One status condition, Kubernetes style."""

    type: str
    status: ConditionStatus
    reason: str
    message: str
    last_transition_time: str

    def __post_init__(self) -> None:
        # Bounded at construction, so a condition compares equal to its stored form.
        object.__setattr__(self, "type", clip(self.type, CONDITION_REASON_BYTES))
        object.__setattr__(self, "reason", clip(self.reason, CONDITION_REASON_BYTES))
        object.__setattr__(self, "message", clip(self.message, CONDITION_MESSAGE_BYTES))

    def to_json(self) -> dict[str, str]:
        """The camelCase form stored and shown to users."""
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Condition:
        """Parse the stored camelCase form; ``ValueError`` names what is wrong."""
        fields = ("type", "status", "reason", "message", "lastTransitionTime")
        values = {f: data.get(f, "") for f in fields}
        bad = [f for f, v in values.items() if not isinstance(v, str)]
        if bad:
            raise ValueError(f"condition {bad[0]} is not a string")
        status = values["status"]
        if status not in ("True", "False", "Unknown"):
            raise ValueError(f"bad condition status {clip(status, 32)!r}")
        if not values["type"]:
            raise ValueError("condition without a type")
        return cls(
            type=values["type"],
            status=status,
            reason=values["reason"],
            message=values["message"],
            last_transition_time=values["lastTransitionTime"],
        )


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: str,
) -> tuple[Condition, ...]:
    """Return ``conditions`` with ``type`` set; keeps lastTransitionTime if status is unchanged."""
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type:
            out.append(cond)
            continue
        found = True
        when = cond.last_transition_time if cond.status == status else now
        out.append(
            Condition(
                type=type, status=status, reason=reason, message=message, last_transition_time=when
            )
        )
    if not found:
        out.append(
            Condition(
                type=type, status=status, reason=reason, message=message, last_transition_time=now
            )
        )
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return tuple(sorted(out, key=lambda c: (order.get(c.type, len(order)), c.type)))


def get_condition(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of ``type``, if set."""
    return next((c for c in conditions if c.type == type), None)


@dataclass(frozen=True, kw_only=True)
class AgentStatus:
    """The stored status of one agent (the ``status`` item of the state table)."""

    key: str
    phase: Phase | None = None
    observed_generation: int = 0
    conditions: tuple[Condition, ...] = ()
    task_arns: tuple[str, ...] = ()
    service_arn: str = ""
    task_definition_arn: str = ""
    task_definition_hash: str = ""
    last_reconciled: str = ""
    last_error: str = ""
    attempts: int = 0
    last_run_id: str = ""
    trace_id: str = ""
    secret_versions: Mapping[str, str] = field(default_factory=dict)
    #: Auto-restart secrets the resync watches: ``{env name: "ssm:<path>"}`` or
    #: ``{env name: "secretsmanager:<arn>"}``.
    watched_secrets: Mapping[str, str] = field(default_factory=dict)
    restart_marker: str = ""
    finalizer_step: str = ""
    manifest_etag: str = ""
    failed_hash: str = ""
    audit_seq: int = 0
    #: Key of the newest snapshot record already in the audit log
    # (``oab.controller.adapters.snapshots``).
    last_snapshot: str = ""

    def __post_init__(self) -> None:
        # Bounded at construction (see the module docstring).
        object.__setattr__(self, "last_error", clip(self.last_error, ERROR_BYTES))
        if len(self.task_arns) > TASK_ARNS_MAX:
            object.__setattr__(self, "task_arns", tuple(self.task_arns[:TASK_ARNS_MAX]))

    def condition(self, type: str) -> Condition | None:
        """The condition of ``type``, if set."""
        return get_condition(self.conditions, type)

    def material(self) -> tuple[Any, ...]:
        """What a status change must differ in to deserve an audit row."""
        return (
            self.phase,
            self.observed_generation,
            tuple((c.type, c.status, c.reason) for c in self.conditions),
            self.task_arns,
            self.service_arn,
            self.task_definition_arn,
            self.last_error,
            tuple(sorted(self.secret_versions.items())),
            self.restart_marker,
            self.finalizer_step,
            self.failed_hash,
            self.last_snapshot,
        )

    def to_json(self) -> dict[str, Any]:
        """The user-facing status document (``oabctl get -o json``)."""
        return {
            "phase": self.phase or "Pending",
            "observedGeneration": self.observed_generation,
            "conditions": [c.to_json() for c in self.conditions],
            "taskArns": list(self.task_arns),
            "serviceArn": self.service_arn,
            "taskDefinitionArn": self.task_definition_arn,
            "lastReconciled": self.last_reconciled,
            "lastError": self.last_error,
            "attempts": self.attempts,
            "lastRunId": self.last_run_id,
            "traceId": self.trace_id,
        }


def unreadable_json(key: str, problem: UnreadableItem) -> dict[str, Any]:
    """What ``oabctl`` shows for a status item that does not decode: phase ``Unknown``, reason
    ``CorruptStatus`` and the problem, in the shape of :meth:`AgentStatus.to_json`."""
    return {
        **AgentStatus(key=key).to_json(),
        "phase": "Unknown",
        "reason": problem.reason,
        "lastError": str(problem),
    }


def status_key(key: str) -> dict[str, dict[str, str]]:
    """DynamoDB key of an agent's status item."""
    return {"pk": {"S": status_partition_key(key)}, "sk": {"S": STATUS_SORT_KEY}}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def to_item(status: AgentStatus) -> dict[str, Any]:
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


def from_item(item: Mapping[str, Any]) -> AgentStatus:
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
                status = from_item(item)
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
    return from_item(item) if item else AgentStatus(key=key)


@dataclass(frozen=True, kw_only=True)
class AwsCall:
    """One mutating AWS call made by a run, as recorded in the audit log.

    ``adopted`` marks a call made by an earlier run that crashed before it could commit (so no
    audit row holds it): the run that found its result records it, with the result it found and
    no request id, so every resource the controller created appears in the log once.
    """

    action: str
    target: str
    result: str = ""
    request_id: str = ""
    adopted: bool = False

    def __post_init__(self) -> None:
        # Bounded at construction: a result may hold an agent's or AWS's text.
        object.__setattr__(self, "action", clip(self.action, CALL_NAME_BYTES))
        object.__setattr__(self, "target", clip(self.target, CALL_FIELD_BYTES))
        object.__setattr__(self, "result", clip(self.result, CALL_FIELD_BYTES))
        object.__setattr__(self, "request_id", clip(self.request_id, CALL_NAME_BYTES))

    def to_json(self) -> dict[str, Any]:
        """Stored form (``adopted`` only when set)."""
        out: dict[str, Any] = {
            "action": self.action,
            "target": self.target,
            "result": self.result,
            "requestId": self.request_id,
        }
        if self.adopted:
            out["adopted"] = True
        return out


#: The call that stands for the calls an audit row's byte budget left out.
OMITTED_CALLS_ACTION = "oab:OmittedCalls"


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


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One row of the append-only audit run log."""

    key: str
    seq: int
    run_id: str
    generation: int
    token: str
    replica: str
    epoch: int
    trace_id: str
    span_id: str
    from_phase: Phase | None
    to_phase: Phase | None
    calls: tuple[AwsCall, ...]
    outcome: str
    error: str
    duration_ms: int
    at: float
    event: str = "reconcile"

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", clip(self.error, AUDIT_ERROR_BYTES))

    def to_item(self, *, retention_days: int = RUNLOG_RETENTION_DAYS) -> dict[str, Any]:
        """Low-level DynamoDB item with its TTL (``expires_at``)."""
        return {
            "pk": _s(self.key),
            "seq": _n(self.seq),
            "run_id": _s(self.run_id),
            "event": _s(self.event),
            "generation": _n(self.generation),
            "token": _s(self.token),
            "replica": _s(self.replica),
            "epoch": _n(self.epoch),
            "trace_id": _s(self.trace_id),
            "span_id": _s(self.span_id),
            "from_phase": _s(self.from_phase or ""),
            "to_phase": _s(self.to_phase or ""),
            "calls": _s(stored_calls(self.calls)),
            "outcome": _s(self.outcome),
            "error": _s(self.error),
            "duration_ms": _n(self.duration_ms),
            "at": _s(iso(self.at)),
            "expires_at": _n(int(self.at) + retention_days * 86_400),
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> AuditRecord:
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
        return cls(
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

    def to_json(self) -> dict[str, Any]:
        """User-facing form (``oabctl history -o json``)."""
        return {
            "seq": self.seq,
            "runId": self.run_id,
            "event": self.event,
            "generation": self.generation,
            "token": self.token,
            "replica": self.replica,
            "epoch": self.epoch,
            "traceId": self.trace_id,
            "spanId": self.span_id,
            "from": self.from_phase,
            "to": self.to_phase,
            "calls": [c.to_json() for c in self.calls],
            "outcome": self.outcome,
            "error": self.error,
            "durationMs": self.duration_ms,
            "at": iso(self.at),
        }


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
                "Item": to_item(after),
                "ConditionExpression": cond,
                "ExpressionAttributeValues": {":prev": _n(before.audit_seq)},
            }
        },
        {
            "Put": {
                "TableName": runlog_table,
                "Item": audit.to_item(),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
    ]


def cleared(before: AgentStatus) -> AgentStatus:
    """The status left once an agent is deleted: no phase, only the audit sequence.

    The item is kept (not deleted) so that the agent's audit sequence continues without a gap, or
    a reused sequence number, if an agent of the same name is created again; readers treat a
    status without a phase as absent.
    """
    # The snapshot marker survives too, so records already audited are not audited again.
    return AgentStatus(
        key=before.key, audit_seq=before.audit_seq, last_snapshot=before.last_snapshot
    )


def next_status(before: AgentStatus, **changes: Any) -> AgentStatus:
    """``before`` with ``changes`` applied and the audit sequence advanced by one."""
    return replace(before, audit_seq=before.audit_seq + 1, **changes)


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
                rows.append(AuditRecord.from_item(item))
            except UnreadableItem as exc:
                if on_unreadable is None:
                    raise
                on_unreadable(exc)
        if "LastEvaluatedKey" not in resp or (limit is not None and len(rows) >= limit):
            return rows
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
