"""The DynamoDB lease store, fence and describe against the local emulator."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from oab.controller.testing import AWS, FakeClock, wait_until
from oab.leader.config import ElectionConfig
from oab.leader.elector import LeaderElector
from oab.leader.errors import FencedOut, LeaseLost, LeaseUnavailable
from oab.leader.fence import Fence, fence_failed, raise_if_fenced
from oab.leader.lease import DynamoLeaseStore
from oab.leader.record import Epoch, LeaseRecord, ReplicaId, Revision
from oab.leader.status import describe, render_text


def record(holder: str | None, epoch: int, rev: str) -> LeaseRecord:
    return LeaseRecord(
        name="controller",
        holder=ReplicaId(holder) if holder else None,
        epoch=Epoch(epoch),
        revision=Revision(rev),
        lease_duration_ms=6000,
        transitions=epoch,
        acquired_at=1_800_000_000.0,
        renewed_at=1_800_000_001.5,
    )


class LostReply:
    """A client whose ``put_item`` reaches the server and then times out (or never is sent)."""

    def __init__(self, client: Any, *, apply: bool) -> None:
        self._client = client
        self._apply = apply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_item(self, **kwargs: Any) -> Any:
        if self._apply:
            self._client.put_item(**kwargs)
        raise ReadTimeoutError(endpoint_url="http://emulator")


@pytest.fixture
def store(aws: AWS) -> DynamoLeaseStore:
    return DynamoLeaseStore(aws.client("dynamodb"), aws.tables.lease, "controller")


def test_acquire_renew_release_round_trip(store: DynamoLeaseStore) -> None:
    assert store.get() is None
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    assert store.get() == first
    renewed = store.renew(record("a", 1, "r2"), current=first)
    released = store.release(record(None, 1, "r3"), current=renewed)
    got = store.get()
    assert got == released
    assert got is not None
    assert got.holder is None
    assert got.epoch == 1


def test_conditional_failure_carries_the_winner(store: DynamoLeaseStore) -> None:
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    with pytest.raises(LeaseLost) as lost:
        store.try_acquire(record("b", 1, "b1"), expected=None)
    assert lost.value.current == first
    store.try_acquire(record("b", 2, "b2"), expected=first)
    with pytest.raises(LeaseLost) as stale:
        store.renew(record("a", 1, "r2"), current=first)
    assert stale.value.current is not None
    assert stale.value.current.holder == "b"


def test_write_that_applied_but_timed_out_resolves_to_success(aws: AWS) -> None:
    client = aws.client("dynamodb")
    store = DynamoLeaseStore(LostReply(client, apply=True), aws.tables.lease, "controller")
    got = store.try_acquire(record("a", 1, "r1"), expected=None)
    assert got.revision == "r1"
    assert got.holder == "a"


def test_write_that_did_not_apply_is_unavailable_not_success(aws: AWS) -> None:
    client = aws.client("dynamodb")
    store = DynamoLeaseStore(LostReply(client, apply=False), aws.tables.lease, "controller")
    with pytest.raises(LeaseUnavailable):
        store.try_acquire(record("a", 1, "r1"), expected=None)
    assert store.get() is None


def test_fence_admits_the_holder_and_rejects_a_stale_epoch(
    aws: AWS, store: DynamoLeaseStore
) -> None:
    client = aws.client("dynamodb")
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    fence_a = Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(1)
    )

    def write(fence: Fence, value: str) -> None:
        client.transact_write_items(
            TransactItems=[
                fence.condition_check(),
                {
                    "Put": {
                        "TableName": aws.tables.state,
                        "Item": {"pk": {"S": "fenced"}, "sk": {"S": value}},
                    }
                },
            ]
        )

    write(fence_a, "by-a")
    store.try_acquire(record("b", 2, "b1"), expected=first)
    with pytest.raises(ClientError) as rejected:
        write(fence_a, "stale")
    assert fence_failed(rejected.value, 0)
    assert not fence_failed(rejected.value, 1)
    with pytest.raises(FencedOut) as fenced:
        raise_if_fenced(rejected.value, 0, fence_a)
    assert fenced.value.epoch == 1
    write(
        Fence(
            table=aws.tables.lease, lease_name="controller", holder=ReplicaId("b"), epoch=Epoch(2)
        ),
        "by-b",
    )
    items = client.query(
        TableName=aws.tables.state,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "fenced"}},
    )["Items"]
    assert sorted(i["sk"]["S"] for i in items) == ["by-a", "by-b"]


def test_fence_rejects_after_release(aws: AWS, store: DynamoLeaseStore) -> None:
    client = aws.client("dynamodb")
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    store.release(record(None, 1, "r2"), current=first)
    fence = Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(1)
    )
    with pytest.raises(ClientError) as rejected:
        client.transact_write_items(TransactItems=[fence.condition_check()])
    assert fence_failed(rejected.value, 0)


def test_describe_reports_the_stored_lease(aws: AWS, store: DynamoLeaseStore) -> None:
    client = aws.client("dynamodb")
    empty = describe(client, aws.tables.lease, "controller")
    assert empty["holder"] is None
    assert empty["epoch"] == 0
    store.try_acquire(record("a", 1, "r1"), expected=None)
    clock = FakeClock(wall=1_800_000_004.0)
    info = describe(client, aws.tables.lease, "controller", clock=clock)
    assert info["holder"] == "a"
    assert info["epoch"] == 1
    assert info["lease_duration_s"] == 6.0
    assert info["renewed_at"].startswith("2027-01-15T08:00:01.500")
    assert info["renewed_age_s"] == 2.5
    assert info["transitions"] == 1
    assert "holder:         a" in render_text(info)


@pytest.mark.slow
def test_two_electors_on_real_time_hand_off_on_release(aws: AWS) -> None:
    leaders: list[tuple[str, int]] = []

    def make(name: str) -> LeaderElector:
        config = ElectionConfig(
            identity=ReplicaId(name),
            lease_duration=3.0,
            renew_deadline=2.0,
            retry_period=0.5,
            call_timeout=1.0,
        )
        client = aws.session.client(
            "dynamodb", endpoint_url=aws.emulator.endpoint, config=config.botocore_config()
        )

        def lead(epoch: Epoch, stop: threading.Event) -> None:
            leaders.append((name, int(epoch)))
            stop.wait(30)

        return LeaderElector(
            config,
            DynamoLeaseStore(client, aws.tables.lease, "controller"),
            on_started_leading=lead,
        )

    a, b = make("a"), make("b")
    a.start()
    wait_until(lambda: a.is_leader, timeout=10, message="a leads")
    b.start()
    try:
        assert a.release(drain_timeout=2)
        wait_until(lambda: b.is_leader, timeout=3, message="b takes over after release")
        assert leaders == [("a", 1), ("b", 2)]
    finally:
        b.stop()
