"""A reconcile run's request and result, and the one outcome policy that maps them to the queue.

Design (controller-runtime's ``pkg/reconcile`` and ``reconcileHandler``, STYLE.md trait 5)
------------------------------------------------------------------------------------------
- :class:`Request` is what the worker hands the reconciler for one claimed work unit: the key
  only, plus a :class:`RunContext` (run id, attempt, idempotency token and the decoded
  :class:`Origin`, whose :class:`Cause` is an enum: no meaning is read out of strings); the
  reconciler answers with a :class:`Result` (the status to commit, ``requeue_after`` while a
  deployment progresses, a recorded terminal failure) or raises.
- :func:`decide` is the policy for every outcome: done; requeue after N s; retry with the queue's
  persisted full-jitter backoff (retryable errors, throttling); park (terminal errors, until a
  newer generation or ``oabctl queue retry``); drop (claim lost or in doubt: someone else owns
  the key now). The worker applies the :class:`Decision` it returns, and passes the failures
  of its own reads and commits through it too (:class:`InvalidKey`, :class:`CorruptStatus`,
  :class:`CommitRejected`, :class:`CommitFailed`, a voided commit), so no decision is written
  anywhere else.

Invariants: pure; :class:`Origin`'s stored form (the queue row's ``reason`` and context map) is
the one every version wrote (``apply``, ``delete``, ``resync:<drift>``, ``schedule@<instant>``,
``park``, ``quarantine``, any other text kept verbatim; the trace headers plus ``epoch``), so rows
written before and after this module decode alike; every error text a decision carries is
scrubbed and bounded (:mod:`oab.controller.core.stored`), since it is stored in status, audit and
queue rows.

Time model: none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.api.service import AgentKey
from oab.controller.base.errors import (
    ClaimInDoubt,
    OabError,
    RetryableError,
    TerminalError,
    classify_aws,
)
from oab.controller.core.status import AgentStatus, iso
from oab.controller.core.stored import ERROR_BYTES, UnreadableItem, clip, safe_text
from oab.queue.errors import ClaimLost, ExtraConditionFailed

__all__ = [
    "Cause",
    "CommitFailed",
    "CommitRejected",
    "CorruptStatus",
    "Decision",
    "InvalidKey",
    "Kind",
    "Origin",
    "Request",
    "Result",
    "RunContext",
    "decide",
    "origin_of",
]


class Cause(StrEnum):
    """Why a work unit was enqueued: the first part of the queue row's ``reason``."""

    APPLY = "apply"  # a change record (``oabctl apply``, ``restart``, ``snapshot``'s nudge)
    DELETE = "delete"  # a change record of a deletion
    RESYNC = "resync"  # the leader's periodic comparison found drift (``detail``: which)
    SCHEDULE = "schedule"  # a spec.schedules transition (``at``: its instant)
    PARK = "park"  # written by the queue when it parks a unit
    QUARANTINE = "quarantine"  # written by the queue for a row that does not decode
    OTHER = "other"  # anything else (``detail`` keeps the stored text)


#: The queue row's context key that carries the leader's epoch (beside the W3C trace headers).
_EPOCH_KEY = "epoch"
_TRACE_KEYS = ("traceparent", "tracestate")
#: A schedule transition's stored reason is ``schedule@<instant>`` (not ``:``), as written since
#: schedules exist; the instant is ``%Y-%m-%dT%H:%M:%SZ``.
_AT = "@"
_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: Causes stored as ``cause`` or ``cause:detail`` (SCHEDULE has its instant, OTHER its text).
_PLAIN = frozenset({Cause.APPLY, Cause.DELETE, Cause.RESYNC, Cause.PARK, Cause.QUARANTINE})


@dataclass(frozen=True, kw_only=True)
class Origin:
    """Why, and on which leader's authority, a work unit was enqueued.

    Decoded once from the queue row (:func:`origin_of`); :meth:`reason` and :meth:`context` are
    its stored form, the one the scheduler has always written (``reason`` ``"resync:<drift>"``,
    a context map of the trace headers plus ``"epoch"``), so rows of every version decode.
    """

    cause: Cause
    #: The rest of the stored reason (a resync's drift, or the whole text of an unknown one).
    detail: str = ""
    #: The leader epoch whose fence admitted the enqueue (0: unknown, e.g. a row the queue wrote).
    epoch: int = 0
    #: The W3C trace headers of the enqueue span (``traceparent``, ``tracestate``), only.
    trace: Mapping[str, str] = field(default_factory=dict)
    #: A schedule transition's instant (epoch seconds, whole); ``None`` for every other cause.
    at: float | None = None

    def __post_init__(self) -> None:
        if (self.cause is Cause.SCHEDULE) != (self.at is not None):
            raise ValueError("an Origin has an instant exactly when its cause is SCHEDULE")

    def reason(self) -> str:
        """The stored ``reason``: ``cause``, ``cause:detail`` or ``schedule@<instant>``."""
        if self.cause is Cause.OTHER:
            return self.detail
        if self.at is not None:
            return f"{self.cause}{_AT}{iso(self.at)}"
        return f"{self.cause}:{self.detail}" if self.detail else str(self.cause)

    def context(self) -> dict[str, str]:
        """The stored context map: the trace headers and the epoch."""
        trace = {k: v for k, v in self.trace.items() if k in _TRACE_KEYS}
        return {**trace, _EPOCH_KEY: str(self.epoch)}


def _instant(text: str) -> float | None:
    try:
        return datetime.strptime(text, _AT_FORMAT).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def origin_of(reason: str, context: Mapping[str, str] | None) -> Origin:
    """Decode a queue row's ``reason`` and context map (any version's; never raises): a reason
    that names no known cause, or a schedule instant that does not parse, is kept verbatim as
    :attr:`Cause.OTHER`, so :meth:`Origin.reason` gives back the same text."""
    head, colon, detail = reason.partition(":")
    schedule, _, instant = reason.partition(_AT)
    at = _instant(instant) if schedule == Cause.SCHEDULE else None
    if at is not None:
        cause, detail = Cause.SCHEDULE, ""
    elif head in _PLAIN and bool(colon) == bool(detail):
        cause = Cause(head)
    else:
        cause, detail = Cause.OTHER, reason
    ctx = context or {}
    try:
        epoch = max(0, int(ctx.get(_EPOCH_KEY, "0")))
    except ValueError:
        epoch = 0
    trace = {k: ctx[k] for k in _TRACE_KEYS if k in ctx}
    return Origin(cause=cause, detail=detail, epoch=epoch, trace=trace, at=at)


@dataclass(frozen=True, kw_only=True)
class RunContext:
    """What one run of a request knows beside the key (the worker builds it from the claim)."""

    #: This run's id (audit row, spans, ``oabctl trace``).
    run_id: str
    #: The claim's attempt number (1 on the first run of a unit).
    attempt: int
    #: The work unit's idempotency token: the base of the run's AWS client tokens.
    token: str
    #: Why the unit was enqueued, decoded once from the queue row.
    origin: Origin


@dataclass(frozen=True, kw_only=True)
class Request:
    """One reconcile request: the key only (level-based: the run reads everything else), and the
    context of this run."""

    key: AgentKey
    run: RunContext


@dataclass(frozen=True, kw_only=True)
class Result:
    """What a run concluded. ``status`` is written by the worker with the run's audit row."""

    status: AgentStatus
    requeue_after: float | None = None
    #: A failure recorded in status that retrying the same input cannot fix (not an exception:
    #: the run itself succeeded in observing it).
    failure: str = ""


Kind = Literal["done", "requeue", "retry", "park", "drop"]


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do with a work unit after a run."""

    kind: Kind
    requeue_after: float | None = None
    error: str = ""
    reason: str = ""


class InvalidKey(TerminalError):
    """A work unit whose key is not ``namespace/name`` (DNS labels): nothing can reconcile it."""

    reason = "InvalidKey"

    def __init__(self, key: str) -> None:
        super().__init__(f"InvalidKey: {clip(key, 200)!r} is not namespace/name (DNS labels)")
        self.key = key


class CorruptStatus(TerminalError):
    """The unit's status item does not decode: park until it is repaired or deleted."""

    reason = "CorruptStatus"

    def __init__(self, key: str, problem: UnreadableItem) -> None:
        super().__init__(
            f"CorruptStatus: {problem}; repair or delete the item, then `oabctl queue retry {key}`"
        )
        self.key = key
        self.problem = problem


class CommitRejected(TerminalError):
    """DynamoDB refused a run's outcome as invalid (an item too large, ...): storing the same
    outcome again cannot succeed, so the unit parks."""

    reason = "CommitRejected"

    def __init__(self, *, kind: Kind, cause: BaseException) -> None:
        super().__init__(
            f"CommitRejected: the run's outcome ({kind}) could not be stored: {cause}; the unit "
            "is parked until a new generation or `oabctl queue retry`"
        )


class CommitFailed(RetryableError):
    """A run's outcome could not be stored for a reason that may pass (throttling, 5xx after
    botocore's retries): back off."""

    reason = "CommitFailed"

    def __init__(self, *, code: str, cause: BaseException) -> None:
        super().__init__(f"CommitFailed: {code}: {cause}")
        self.code = code


#: Errors that mean someone else owns the key now (the claim was taken over or is in doubt, or
#: another writer moved the status first): the run is void and writes nothing more.
_VOID = (ClaimInDoubt, ClaimLost, ExtraConditionFailed)


def decide(*, result: Result | None = None, error: BaseException | None = None) -> Decision:
    """The one outcome policy: a run's result or error -> queue action.

    The worker calls it for every outcome, including those of its own reads and commits (an
    invalid key, an unreadable status, a commit refused or failed, a commit voided by another
    writer), so no decision is made anywhere else. The error text is scrubbed and bounded here
    (it is stored in status, audit and queue rows).
    """
    if error is None:
        assert result is not None
        if result.requeue_after is not None:
            return Decision(kind="requeue", requeue_after=result.requeue_after)
        return Decision(kind="done", error=result.failure)
    if isinstance(error, ClientError | BotoCoreError):
        error = classify_aws(error, operation="DynamoDB")
    text = safe_text(str(error), ERROR_BYTES)
    if isinstance(error, _VOID):
        return Decision(kind="drop", error=text, reason="ClaimLost")
    if isinstance(error, OabError):
        kind: Kind = "retry" if error.retryable else "park"
        return Decision(kind=kind, error=text, reason=error.reason)
    # Unknown exceptions are bugs or unclassified infrastructure failures: retry with backoff
    # (bounded by the queue's cap) rather than park a healthy agent forever.
    text = safe_text(f"{type(error).__name__}: {error}", ERROR_BYTES)
    return Decision(kind="retry", error=text, reason="Error")
