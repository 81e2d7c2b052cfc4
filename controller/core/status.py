"""Agent status: the explicit phase machine, conditions, the status and its audit record.

Design
------
Pure: what a status is, which phase changes are allowed and how conditions move. How status
items and run-log rows are stored and written together (one ``TransactWriteItems`` per change:
the status transition, its audit row, the work unit's completion and, on the leader's authority,
the fence) is :mod:`oab.controller.adapters.state`.

Invariants
----------
- Phases move only along :data:`ALLOWED_TRANSITIONS`; :func:`check_transition` refuses the rest
  with :class:`IllegalTransition` (a terminal error: a bug or a corrupted item, never retried).
- A condition's ``lastTransitionTime`` changes only when its ``status`` changes.
- Secret values never reach this module: messages are built from names, ARNs and versions only.
- Every free text is bounded (:mod:`oab.controller.core.stored`): errors and condition messages
  are cut to their budgets when a status, condition or call is *constructed*, so what is compared
  in memory is what is stored.
- Each change advances the audit sequence by exactly one (:func:`next_status`); a deleted agent
  keeps its sequence (:func:`cleared`), so a re-created one continues it without a gap.

Time model: wall-clock timestamps here are for display and retention (TTL); they are passed in by
the caller (injected clock) and never compared across hosts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, get_args

from oab.controller.api.service import ConditionStatus, Phase
from oab.controller.base.errors import TerminalError
from oab.controller.core.stored import (
    AUDIT_ERROR_BYTES,
    CALL_FIELD_BYTES,
    CALL_NAME_BYTES,
    CONDITION_MESSAGE_BYTES,
    CONDITION_REASON_BYTES,
    ERROR_BYTES,
    TASK_ARNS_MAX,
    UnreadableItem,
    clip,
)

#: Every phase, in the order of :data:`~oab.controller.api.service.Phase` (the API defines them).
PHASES: tuple[Phase, ...] = get_args(Phase)

#: Every allowed phase change. ``None`` is "no status" (never reconciled, or deleted);
#: ``Terminating`` ends only in :func:`cleared` (deletion done), never back in a live phase.
#: ``Suspended`` (desired count 0: ``spec.suspend`` or a schedule) is a live phase: it comes from
#: and goes to every live phase, and deletion may start from it.
ALLOWED_TRANSITIONS: Mapping[Phase | None, frozenset[Phase]] = {
    None: frozenset({"Pending", "Running", "Suspended", "Failed", "Terminating"}),
    "Pending": frozenset({"Pending", "Running", "Suspended", "Failed", "Terminating"}),
    "Running": frozenset({"Pending", "Running", "Suspended", "Failed", "Terminating"}),
    "Suspended": frozenset({"Pending", "Running", "Suspended", "Failed", "Terminating"}),
    "Failed": frozenset({"Pending", "Running", "Suspended", "Failed", "Terminating"}),
    "Terminating": frozenset({"Terminating"}),
}

#: Condition types this controller sets.
CONDITION_TYPES = (
    "Available",
    "Progressing",
    "Degraded",
    "SecretsRefreshed",
    "SecretInjectionFailed",
    "Suspended",
    "Scheduled",
)


class IllegalTransition(TerminalError):
    """A phase change the machine does not allow (terminal: never retried; the outcome policy
    parks the unit with reason ``IllegalTransition``)."""

    reason = "IllegalTransition"

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
    #: Exact ids of the agent's webhook ingress (``oab.controller.core.ingress.IngressRecord``).
    ingress: Mapping[str, str] = field(default_factory=dict)
    #: Public webhook URLs, one per ``spec.ingress.paths`` entry, once the ingress is ready.
    webhook_urls: tuple[str, ...] = ()

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
            tuple(sorted(self.ingress.items())),
            self.webhook_urls,
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
            "webhookUrls": list(self.webhook_urls),
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
