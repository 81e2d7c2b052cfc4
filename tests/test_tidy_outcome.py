"""One error hierarchy and one outcome policy: every domain error the reconcile path raises is
an ``OabError``, and the worker's own failures (bad key, unreadable status, commit refused,
failed or voided) are decided by ``core.outcome.decide`` like any run's."""

from __future__ import annotations

import pytest

from oab.controller.base.errors import ClaimInDoubt, OabError, TerminalError
from oab.controller.core.outcome import (
    Cause,
    CommitFailed,
    CommitRejected,
    CorruptStatus,
    InvalidKey,
    decide,
    origin_of,
)
from oab.controller.core.status import IllegalTransition, check_transition
from oab.controller.core.stored import UnreadableItem
from oab.queue.errors import ClaimLost, ExtraConditionFailed


def test_an_illegal_transition_is_a_terminal_controller_error() -> None:
    with pytest.raises(TerminalError) as raised:
        check_transition("Terminating", "Running")
    assert isinstance(raised.value, IllegalTransition | OabError)
    assert (raised.value.retryable, raised.value.reason) == (False, "IllegalTransition")


def _unreadable() -> UnreadableItem:
    return UnreadableItem(
        table="state",
        item="agent#a/b/status",
        field="phase",
        problem="not a phase",
        reason="CorruptStatus",
    )


@pytest.mark.parametrize(
    ("error", "kind", "reason", "starts"),
    [
        (InvalidKey("no-slash"), "park", "InvalidKey", "InvalidKey: 'no-slash' is not"),
        (CorruptStatus("a/b", _unreadable()), "park", "CorruptStatus", "CorruptStatus: "),
        (
            CommitRejected(kind="done", cause=ValueError("too large")),
            "park",
            "CommitRejected",
            "CommitRejected: the run's outcome (done) could not be stored: too large",
        ),
        (
            CommitFailed(code="ThrottlingException", cause=ValueError("slow down")),
            "retry",
            "CommitFailed",
            "CommitFailed: ThrottlingException: slow down",
        ),
        (ExtraConditionFailed(1, "ConditionalCheckFailed"), "drop", "ClaimLost", "extra"),
        (ClaimInDoubt("deadline passed"), "drop", "ClaimLost", "deadline passed"),
        (IllegalTransition("Terminating", "Running"), "park", "IllegalTransition", "illegal"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_the_workers_own_failures_go_through_the_one_policy(
    error: BaseException, kind: str, reason: str, starts: str
) -> None:
    decision = decide(error=error)
    assert (decision.kind, decision.reason) == (kind, reason)
    assert decision.error.startswith(starts)


def test_a_corrupt_status_says_how_to_recover() -> None:
    decision = decide(error=CorruptStatus("a/b", _unreadable()))
    assert decision.error.endswith("repair or delete the item, then `oabctl queue retry a/b`")


def test_a_lost_claim_drops_the_unit() -> None:
    lost = ClaimLost(
        "a/b",
        claim_token="c1",
        current_state="claimed",
        current_owner="w2",
        current_claim_token="c2",
    )
    assert decide(error=lost).kind == "drop"


# ---------------------------------------------------------------- the origin of a work unit
_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("reason", "context", "cause", "detail", "epoch"),
    [
        # Rows as the previous version's scheduler wrote them (reason text, epoch in the map).
        ("apply", {"traceparent": _TRACEPARENT, "epoch": "7"}, Cause.APPLY, "", 7),
        ("delete", {"epoch": "3"}, Cause.DELETE, "", 3),
        ("resync:service missing", {"epoch": "12"}, Cause.RESYNC, "service missing", 12),
        # Rows the queue wrote itself, or that carry no context at all.
        ("park", None, Cause.PARK, "", 0),
        ("quarantine", {}, Cause.QUARANTINE, "", 0),
        # Garbage never stops the worker: unknown causes are kept as text, bad epochs are 0.
        ("frobnicate:x", {"epoch": "not a number"}, Cause.OTHER, "frobnicate:x", 0),
        ("apply", {"epoch": "-4"}, Cause.APPLY, "", 0),
    ],
)
def test_rows_of_every_version_decode(
    reason: str, context: dict[str, str] | None, cause: Cause, detail: str, epoch: int
) -> None:
    origin = origin_of(reason, context)
    assert (origin.cause, origin.detail, origin.epoch) == (cause, detail, epoch)
    assert "epoch" not in origin.trace  # the epoch is a field, not a trace header
    assert origin.reason() == reason


def test_the_stored_form_is_the_one_the_scheduler_writes() -> None:
    stored = {"traceparent": _TRACEPARENT, "tracestate": "k=v", "epoch": "9"}
    origin = origin_of("resync:drift", stored)
    assert origin.trace == {"traceparent": _TRACEPARENT, "tracestate": "k=v"}
    assert origin.context() == stored
    assert origin_of(origin.reason(), origin.context()) == origin
