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

Time model: wall-clock timestamps here are for display and retention (TTL); they are passed in by
the caller (injected clock) and never compared across hosts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

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
    def from_json(cls, data: Mapping[str, str]) -> Condition:
        """Parse the stored camelCase form."""
        status = data["status"]
        if status not in ("True", "False", "Unknown"):
            raise ValueError(f"bad condition status {status!r}")
        return cls(
            type=data["type"],
            status=status,  # type: ignore[arg-type]
            reason=data.get("reason", ""),
            message=data.get("message", ""),
            last_transition_time=data.get("lastTransitionTime", ""),
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
    #: Key of the newest snapshot record already in the audit log (``oab.controller.snapshots``).
    last_snapshot: str = ""

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


def status_key(key: str) -> dict[str, dict[str, str]]:
    """DynamoDB key of an agent's status item."""
    return {"pk": {"S": f"agent#{key}"}, "sk": {"S": "status"}}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


@dataclass(frozen=True)
class _ItemReader:
    """Reads of a low-level DynamoDB item; a missing attribute reads as ``""`` or ``0``."""

    item: Mapping[str, Any]

    def s(self, name: str) -> str:
        """The string attribute ``name``."""
        return str(self.item.get(name, {}).get("S", ""))

    def n(self, name: str) -> int:
        """The number attribute ``name`` as an int."""
        return int(self.item.get(name, {}).get("N", "0"))


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


def from_item(item: Mapping[str, Any]) -> AgentStatus:
    """Parse a low-level DynamoDB status item."""
    reader = _ItemReader(item)
    s, n = reader.s, reader.n
    phase = s("phase") or None
    if phase is not None and phase not in PHASES:
        raise ValueError(f"stored phase {phase!r} is not one of {PHASES}")
    return AgentStatus(
        key=s("key") or s("pk").removeprefix("agent#"),
        phase=phase,
        observed_generation=n("observed_generation"),
        conditions=tuple(Condition.from_json(c) for c in json.loads(s("conditions") or "[]")),
        task_arns=tuple(json.loads(s("task_arns") or "[]")),
        service_arn=s("service_arn"),
        task_definition_arn=s("task_definition_arn"),
        task_definition_hash=s("task_definition_hash"),
        last_reconciled=s("last_reconciled"),
        last_error=s("last_error"),
        attempts=n("attempts"),
        last_run_id=s("last_run_id"),
        trace_id=s("trace_id"),
        secret_versions=json.loads(s("secret_versions") or "{}"),
        watched_secrets=json.loads(s("watched_secrets") or "{}"),
        restart_marker=s("restart_marker"),
        finalizer_step=s("finalizer_step"),
        manifest_etag=s("manifest_etag"),
        failed_hash=s("failed_hash"),
        audit_seq=n("audit_seq"),
        last_snapshot=s("last_snapshot"),
    )


def scan_statuses(
    client: Any, table: str, *, on_page: Callable[[], None] | None = None
) -> dict[str, AgentStatus]:
    """Every agent's status in ``table``, by key (one consistent, paginated Scan).

    ``on_page`` is called once per request (the resync counts its AWS requests with it).
    """
    out: dict[str, AgentStatus] = {}
    kwargs: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": "sk = :s",
        "ExpressionAttributeValues": {":s": {"S": "status"}},
        "ConsistentRead": True,
    }
    while True:
        resp = client.scan(**kwargs)
        if on_page is not None:
            on_page()
        for item in resp.get("Items", []):
            status = from_item(item)
            out[status.key] = status
        if "LastEvaluatedKey" not in resp:
            return out
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def read_status(client: Any, table: str, key: str) -> AgentStatus:
    """Consistent read of an agent's status; a missing item is an empty status."""
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
            "calls": _s(json.dumps([c.to_json() for c in self.calls])),
            "outcome": _s(self.outcome),
            "error": _s(self.error),
            "duration_ms": _n(self.duration_ms),
            "at": _s(iso(self.at)),
            "expires_at": _n(int(self.at) + retention_days * 86_400),
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> AuditRecord:
        """Parse a stored run-log row."""
        reader = _ItemReader(item)
        s, n = reader.s, reader.n
        at = datetime.strptime(s("at"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        return cls(
            key=s("pk"),
            seq=n("seq"),
            run_id=s("run_id"),
            generation=n("generation"),
            token=s("token"),
            replica=s("replica"),
            epoch=n("epoch"),
            trace_id=s("trace_id"),
            span_id=s("span_id"),
            from_phase=(s("from_phase") or None),  # type: ignore[arg-type]
            to_phase=(s("to_phase") or None),  # type: ignore[arg-type]
            calls=tuple(
                AwsCall(
                    action=c["action"],
                    target=c["target"],
                    result=c.get("result", ""),
                    request_id=c.get("requestId", ""),
                    adopted=bool(c.get("adopted", False)),
                )
                for c in json.loads(s("calls") or "[]")
            ),
            outcome=s("outcome"),
            error=s("error"),
            duration_ms=n("duration_ms"),
            at=at,
            event=s("event") or "reconcile",
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
) -> list[dict[str, Any]]:
    """The two TransactWriteItems actions of one status transition and its audit row.

    ``after.audit_seq`` must be ``before.audit_seq + 1`` and equal ``audit.seq``; the status write
    is conditional on the stored sequence still being ``before.audit_seq`` (nobody else wrote in
    between), the audit put on its row being absent. Raises :class:`IllegalTransition`.
    """
    if after.phase is not None:
        check_transition(before.phase, after.phase)
    elif before.phase not in (None, "Terminating"):
        raise IllegalTransition(before.phase, None)  # only a finished deletion clears status
    if after.audit_seq != before.audit_seq + 1 or audit.seq != after.audit_seq:
        raise ValueError("audit sequence must advance by exactly one")
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


def read_runlog(
    client: Any, table: str, key: str, *, limit: int | None = None, newest_first: bool = True
) -> list[AuditRecord]:
    """Rows of an agent's audit run log (newest first by default)."""
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
        rows += [AuditRecord.from_item(i) for i in resp.get("Items", [])]
        if "LastEvaluatedKey" not in resp or (limit is not None and len(rows) >= limit):
            return rows
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
