"""One error hierarchy and one outcome policy: every domain error the reconcile path raises is
an ``OabError``, and the worker's own failures (bad key, unreadable status, commit refused,
failed or voided) are decided by ``core.outcome.decide`` like any run's."""

from __future__ import annotations

import pytest

from oab.controller.base.errors import ClaimInDoubt, OabError, TerminalError
from oab.controller.core.outcome import (
    CommitFailed,
    CommitRejected,
    CorruptStatus,
    InvalidKey,
    decide,
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
