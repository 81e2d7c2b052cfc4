"""The key-only reconcile request (issue 12): the reconciler gets the key and a run context whose
``Origin`` carries a ``Cause`` enum, decoded once from the queue row; the stored form is the one
every version wrote, so rows written before and after decode alike (both ways)."""

from __future__ import annotations

import dataclasses

import pytest

from oab.controller.core.outcome import Cause, Origin, Request, origin_of
from oab.controller.core.schedule import evaluation_instant
from oab.controller.testing import AWS, reconcile_request
from oab.queue.config import QueueConfig
from oab.queue.workqueue import WorkQueue, idempotency_token

_AT = 1_799_046_000.0  # 2027-01-04T07:00:00Z


def test_a_request_is_the_key_and_a_run_context() -> None:
    assert [f.name for f in dataclasses.fields(Request)] == ["key", "run"]
    req = reconcile_request("team/bot", reason="resync:secret-rotated", attempt=3, run_id="r7")
    assert (req.key, req.run.attempt, req.run.run_id) == ("team/bot", 3, "r7")
    assert (req.run.origin.cause, req.run.origin.detail) == (Cause.RESYNC, "secret-rotated")


@pytest.mark.parametrize(
    ("reason", "origin"),
    [
        # The previous version's scheduler and queue wrote exactly these reasons.
        ("apply", Origin(cause=Cause.APPLY)),
        ("delete", Origin(cause=Cause.DELETE)),
        ("resync:config-changed", Origin(cause=Cause.RESYNC, detail="config-changed")),
        ("schedule@2027-01-04T07:00:00Z", Origin(cause=Cause.SCHEDULE, at=_AT)),
        ("park", Origin(cause=Cause.PARK)),
        ("quarantine", Origin(cause=Cause.QUARANTINE)),
    ],
)
def test_each_cause_is_stored_as_the_previous_version_wrote_it(reason: str, origin: Origin) -> None:
    assert origin.reason() == reason  # new rows are readable by the previous version
    assert origin_of(reason, {"epoch": "0"}) == origin  # its rows are readable by this one


@pytest.mark.parametrize(
    "reason",
    ["schedule@garbage", "schedule:x", "schedule", "other:x", "other", "apply:", "", "t"],
)
def test_text_that_names_no_cause_is_kept_verbatim(reason: str) -> None:
    origin = origin_of(reason, None)
    assert (origin.cause, origin.at) == (Cause.OTHER, None)
    assert origin.reason() == reason


def test_a_schedule_origin_and_only_it_has_an_instant() -> None:
    with pytest.raises(ValueError, match="SCHEDULE"):
        Origin(cause=Cause.SCHEDULE)
    with pytest.raises(ValueError, match="SCHEDULE"):
        Origin(cause=Cause.APPLY, at=_AT)
    run = reconcile_request("team/bot", reason="schedule@2027-01-04T07:00:00Z").run
    assert evaluation_instant(_AT - 3, run.origin.at) == _AT


def test_a_row_enqueued_as_the_previous_scheduler_did_decodes_for_the_worker(aws: AWS) -> None:
    """A queue row as the previous version stored it (reason text, the epoch beside the trace
    headers in the context map), claimed through the real queue: the worker's decoding."""
    ddb = aws.client("dynamodb")
    queue = WorkQueue(ddb, aws.tables.queue, config=QueueConfig(visibility_timeout=30.0))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    queue.enqueue(
        "team/bot",
        4,
        "resync:service-missing",
        idempotency_token("team/bot", 4, "etag", "resync:1"),
        trace_context={"traceparent": traceparent, "epoch": "12"},
    )
    claim = queue.claim("w1")
    assert claim is not None
    origin = origin_of(claim.reason, claim.trace_context)
    assert (origin.cause, origin.detail, origin.epoch) == (Cause.RESYNC, "service-missing", 12)
    assert origin.trace == {"traceparent": traceparent}
    # And the scheduler's encoding of the same origin is the row's, byte for byte.
    assert (origin.reason(), origin.context()) == (claim.reason, claim.trace_context)
