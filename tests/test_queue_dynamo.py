"""The work queue on the local DynamoDB emulator: the real adapter, index and transactions."""

from __future__ import annotations

import random
from typing import Any

import pytest
from emulated import Account

from oab.queue.config import QueueConfig
from oab.queue.errors import ClaimLost, ExtraConditionFailed
from oab.queue.row import EnqueueOutcome, State
from oab.queue.store import READY_INDEX
from oab.queue.testing import FakeClock
from oab.queue.workqueue import WorkQueue, idempotency_token


def make(aws: Account, clock: FakeClock | None = None, **cfg: Any) -> WorkQueue:
    return WorkQueue(
        aws.client("dynamodb"),
        aws.tables.queue,
        config=QueueConfig(visibility_timeout=20.0, **cfg),
        clock=clock or FakeClock(),
        rng=random.Random(1),
    )


def fence(aws: Account, epoch: int) -> dict[str, Any]:
    return {
        "ConditionCheck": {
            "TableName": aws.tables.lease,
            "Key": {"pk": {"S": "lease#controller"}, "sk": {"S": "lease"}},
            "ConditionExpression": "epoch = :e",
            "ExpressionAttributeValues": {":e": {"N": str(epoch)}},
        }
    }


def set_epoch(aws: Account, epoch: int) -> None:
    aws.client("dynamodb").put_item(
        TableName=aws.tables.lease,
        Item={"pk": {"S": "lease#controller"}, "sk": {"S": "lease"}, "epoch": {"N": str(epoch)}},
    )


def index_keys(aws: Account) -> set[str]:
    ddb = aws.client("dynamodb")
    items = ddb.scan(TableName=aws.tables.queue, IndexName=READY_INDEX)["Items"]
    return {it["pk"]["S"] for it in items}


def test_lifecycle_keeps_the_index_sparse_and_the_row_readable(aws: Account) -> None:
    clock = FakeClock()
    q = make(aws, clock, shards=3)
    for i in range(6):
        key = f"ns/a{i}"
        assert q.enqueue(key, 1, "spec", idempotency_token(key, 1, "d", "spec")).outcome is (
            EnqueueOutcome.ADDED
        )
    assert len(index_keys(aws)) == 6
    shards = {
        it["ready_shard"]["S"]
        for it in aws.client("dynamodb").scan(TableName=aws.tables.queue)["Items"]
    }
    assert shards <= {"0", "1", "2"}
    assert len(shards) > 1
    claims = [q.claim("w") for _ in range(6)]
    assert all(c is not None for c in claims)
    assert q.claim("w") is None
    assert len(index_keys(aws)) == 6  # in flight rows stay indexed at their claim deadline
    for c in claims:
        assert c is not None
        q.complete(c)
    assert index_keys(aws) == set()  # done rows leave the sparse index
    assert q.depth_by_state()["done"] == 6
    row = q.get("ns/a0")
    assert (row.state, row.generation, row.completed_generation) == (State.DONE, 1, 1)


def test_expired_claim_is_found_through_the_index_and_the_stale_completion_refused(
    aws: Account,
) -> None:
    clock = FakeClock()
    q = make(aws, clock)
    q.enqueue("ns/a", 1, "spec", "t1", trace_context={"traceparent": "00-ab-cd-01"})
    stale = q.claim("w1")
    assert stale is not None
    clock.advance(20.001)
    assert q.claim("w2") is None  # first sight of the expired claim: observe it for a while
    clock.advance(20.0)
    fresh = q.claim("w2")
    assert fresh is not None
    assert fresh.took_over == stale.claim_token
    assert fresh.trace_context == {"traceparent": "00-ab-cd-01"}
    with pytest.raises(ClaimLost) as lost:
        q.complete(stale)
    assert lost.value.current_owner == "w2"
    assert q.complete(fresh).state is State.DONE


def test_fenced_enqueue_by_a_deposed_leader_writes_nothing(aws: Account) -> None:
    set_epoch(aws, 5)
    q = make(aws)
    with pytest.raises(ExtraConditionFailed) as failed:
        q.enqueue("ns/a", 1, "spec", "t1", extra_condition=fence(aws, 4))
    assert (failed.value.index, failed.value.reason) == (0, "ConditionalCheckFailed")
    assert q.list_rows() == []
    assert q.enqueue("ns/a", 1, "spec", "t1", extra_condition=fence(aws, 5)).outcome is (
        EnqueueOutcome.ADDED
    )
    # an existing row takes the transactional path too
    with pytest.raises(ExtraConditionFailed):
        q.enqueue("ns/a", 2, "spec", "t2", extra_condition=fence(aws, 4))
    assert q.get("ns/a").generation == 1


def test_completion_commits_atomically_with_the_callers_items(aws: Account) -> None:
    set_epoch(aws, 7)
    q = make(aws)
    ddb = aws.client("dynamodb")
    q.enqueue("ns/a", 1, "spec", "t1")
    c = q.claim("w")
    assert c is not None

    def audit(seq: int) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": aws.tables.runlog,
                "Item": {"pk": {"S": "ns/a"}, "seq": {"N": str(seq)}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    with pytest.raises(ExtraConditionFailed) as failed:
        q.complete(c, extra_items=[audit(1), fence(aws, 6)])
    assert failed.value.index == 1
    assert q.get("ns/a").state is State.IN_FLIGHT
    assert "Item" not in ddb.get_item(
        TableName=aws.tables.runlog, Key={"pk": {"S": "ns/a"}, "seq": {"N": "1"}}
    )
    row = q.complete(c, extra_items=[audit(1), fence(aws, 7)])
    assert row.state is State.DONE
    assert "Item" in ddb.get_item(
        TableName=aws.tables.runlog, Key={"pk": {"S": "ns/a"}, "seq": {"N": "1"}}
    )


def test_dirty_complete_with_extra_items_retries_on_the_returned_row(aws: Account) -> None:
    set_epoch(aws, 1)
    q = make(aws)
    q.enqueue("ns/a", 1, "spec", "t1")
    c = q.claim("w")
    assert c is not None
    # A concurrent enqueue changes the row's version after our claim: the transaction's first
    # attempt fails its row condition, the transition is re-applied to the returned row.
    assert q.enqueue("ns/a", 2, "spec", "t2").outcome is EnqueueOutcome.DIRTIED
    row = q.complete(c, extra_items=[fence(aws, 1)])
    assert (row.state, row.generation, row.completed_generation) == (State.READY, 2, 1)
    c2 = q.claim("w")
    assert c2 is not None
    assert (c2.generation, c2.token) == (2, "t2")


def test_stale_claim_with_extra_items_is_claim_lost_not_an_extra_failure(aws: Account) -> None:
    set_epoch(aws, 1)
    clock = FakeClock()
    q = make(aws, clock)
    q.enqueue("ns/a", 1, "spec", "t1")
    stale = q.claim("w1")
    assert stale is not None
    clock.advance(21)
    assert q.claim("w2") is None  # observed first
    clock.advance(20)
    assert q.claim("w2") is not None
    with pytest.raises(ClaimLost):
        q.fail(stale, "boom", retryable=True, extra_items=[fence(aws, 1)])


def test_rows_stranded_by_fewer_shards_are_rewritten_by_the_sweep(aws: Account) -> None:
    clock = FakeClock()
    wide = make(aws, clock, shards=8)
    keys = [f"ns/a{i:02d}" for i in range(16)]
    for key in keys:
        wide.enqueue(key, 1, "spec", idempotency_token(key, 1, "d", "spec"))
    narrow = make(aws, clock, shards=2)
    stranded = {r.key for r in narrow.list_rows() if (r.shard or 0) >= 2}
    assert stranded  # some rows sit in shards 2-7, which the narrow queue never queries
    claimed: set[str] = set()
    while (c := narrow.claim("w")) is not None:
        claimed.add(c.key)
    assert claimed == set(keys) - stranded
    assert set(narrow.expire_stale_claims()) == stranded
    while (c := narrow.claim("w")) is not None:
        claimed.add(c.key)
    assert claimed == set(keys)
    assert narrow.expire_stale_claims() == []  # nothing left to move
