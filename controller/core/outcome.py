"""A reconcile run's request and result, and the one outcome policy that maps them to the queue.

Design (controller-runtime's ``pkg/reconcile`` and ``reconcileHandler``, STYLE.md trait 5)
------------------------------------------------------------------------------------------
- :class:`Request` is what the worker hands the reconciler for one claimed work unit; the
  reconciler answers with a :class:`Result` (the status to commit, ``requeue_after`` while a
  deployment progresses, a recorded terminal failure) or raises.
- :func:`decide` is the policy for every outcome: done; requeue after N s; retry with the queue's
  persisted full-jitter backoff (retryable errors, throttling); park (terminal errors, until a
  newer generation or ``oabctl queue retry``); drop (claim lost or in doubt: someone else owns
  the key now). The worker applies the :class:`Decision` it returns.

Invariants: pure; every error text a decision carries is scrubbed and bounded
(:mod:`oab.controller.core.stored`), since it is stored in status, audit and queue rows.

Time model: none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError

from oab.controller.api.service import AgentKey
from oab.controller.base.errors import ClaimInDoubt, OabError, classify_aws
from oab.controller.core.status import AgentStatus, IllegalTransition
from oab.controller.core.stored import ERROR_BYTES, safe_text
from oab.queue.errors import ClaimLost

__all__ = ["Decision", "Kind", "Request", "Result", "decide"]


@dataclass(frozen=True, kw_only=True)
class Request:
    """One reconcile request: the key, and what makes its side effects idempotent."""

    key: AgentKey
    generation: int
    token: str
    reason: str
    attempt: int
    run_id: str


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


def decide(*, result: Result | None = None, error: BaseException | None = None) -> Decision:
    """The one outcome policy: a run's result or error -> queue action.

    The error text is scrubbed and bounded here (it is stored in status, audit and queue rows).
    """
    if error is not None:
        text = safe_text(str(error), ERROR_BYTES)
        if isinstance(error, ClaimInDoubt | ClaimLost):
            return Decision(kind="drop", error=text, reason="ClaimLost")
        if isinstance(error, IllegalTransition):
            return Decision(kind="park", error=text, reason="IllegalTransition")
        if isinstance(error, OabError):
            kind: Kind = "retry" if error.retryable else "park"
            return Decision(kind=kind, error=text, reason=error.reason)
        if isinstance(error, ClientError | BotoCoreError):
            return decide(error=classify_aws(error, operation="DynamoDB"))
        # Unknown exceptions are bugs or unclassified infrastructure failures: retry with backoff
        # (bounded by the queue's cap) rather than park a healthy agent forever.
        text = safe_text(f"{type(error).__name__}: {error}", ERROR_BYTES)
        return Decision(kind="retry", error=text, reason="Error")
    assert result is not None
    if result.requeue_after is not None:
        return Decision(kind="requeue", requeue_after=result.requeue_after)
    return Decision(kind="done", error=result.failure)
