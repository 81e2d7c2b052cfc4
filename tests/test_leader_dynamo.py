"""The DynamoDB lease store, fence and describe against the local emulator."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from emulated import Account

from oab.leader.config import ElectionConfig
from oab.leader.elector import LeaderElector
from oab.leader.errors import FencedOut, LeaderError, LeaseLost, LeaseUnavailable
from oab.leader.fence import Fence, fence_failed, raise_if_fenced
from oab.leader.lease import DynamoLeaseStore
from oab.leader.record import (
    MAX_LEASE_DURATION_MS,
    Epoch,
    LeaseRecord,
    ReplicaId,
    Revision,
    UnreadableLease,
)
from oab.leader.status import describe, render_text
from oab.leader.testing import FakeClock, wait_until


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
def store(aws: Account) -> DynamoLeaseStore:
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


def test_write_that_applied_but_timed_out_resolves_to_success(aws: Account) -> None:
    client = aws.client("dynamodb")
    store = DynamoLeaseStore(LostReply(client, apply=True), aws.tables.lease, "controller")
    got = store.try_acquire(record("a", 1, "r1"), expected=None)
    assert got.revision == "r1"
    assert got.holder == "a"


def test_write_that_did_not_apply_is_unavailable_not_success(aws: Account) -> None:
    client = aws.client("dynamodb")
    store = DynamoLeaseStore(LostReply(client, apply=False), aws.tables.lease, "controller")
    with pytest.raises(LeaseUnavailable):
        store.try_acquire(record("a", 1, "r1"), expected=None)
    assert store.get() is None


def test_fence_admits_the_holder_and_rejects_a_stale_epoch(
    aws: Account, store: DynamoLeaseStore
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


def test_fence_rejects_after_release(aws: Account, store: DynamoLeaseStore) -> None:
    client = aws.client("dynamodb")
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    store.release(record(None, 1, "r2"), current=first)
    fence = Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(1)
    )
    with pytest.raises(ClientError) as rejected:
        client.transact_write_items(TransactItems=[fence.condition_check()])
    assert fence_failed(rejected.value, 0)


def test_describe_reports_the_stored_lease(aws: Account, store: DynamoLeaseStore) -> None:
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
    assert info["readable"] is True
    assert info["problem"] is None
    assert "holder:         a" in render_text(info)


def test_describe_reports_an_unreadable_lease_instead_of_raising(aws: Account) -> None:
    client = aws.client("dynamodb")
    secret = "ghp_" + "a" * 36
    put_garbage(aws, {"revision": {"N": "1"}, "holder": {"S": secret}, "epoch": {"N": "41"}})
    info = describe(client, aws.tables.lease, "controller")
    assert info["readable"] is False
    assert info["holder"] is None
    assert info["epoch"] == 41
    assert info["problem"] == "unreadable lease item: revision: expected type S, got N"
    text = render_text(info)
    assert "unreadable" in text
    assert secret not in text
    assert secret not in json.dumps(info)
    put_garbage(aws, {"epoch": {"BOOL": False}})
    assert describe(client, aws.tables.lease, "controller")["epoch"] is None


def test_describe_shows_a_clamped_duration(aws: Account) -> None:
    put_garbage(aws, {"lease_duration_ms": {"N": "86400000"}})
    info = describe(aws.client("dynamodb"), aws.tables.lease, "controller")
    assert info["readable"] is True
    assert info["holder"] == "other"
    assert info["lease_duration_s"] == MAX_LEASE_DURATION_MS / 1000
    assert "86400000 ms exceeds the maximum" in info["problem"]
    assert "exceeds the maximum" in render_text(info)


@pytest.mark.slow
def test_two_electors_on_real_time_hand_off_on_release(aws: Account) -> None:
    leaders: list[tuple[str, int]] = []
    # A lease far longer than a handoff takes, even on a loaded machine: taking over within it
    # can only be the release path (expiry would need the whole lease duration).
    lease = 30.0

    def make(name: str) -> LeaderElector:
        config = ElectionConfig(
            identity=ReplicaId(name),
            lease_duration=lease,
            renew_deadline=20.0,
            retry_period=0.5,
            call_timeout=1.0,
        )
        client = aws.session.client(
            "dynamodb", endpoint_url=aws.emulator.endpoint, config=config.botocore_config()
        )

        def lead(epoch: Epoch, stop: threading.Event) -> None:
            leaders.append((name, int(epoch)))
            stop.wait(60)

        return LeaderElector(
            config,
            DynamoLeaseStore(client, aws.tables.lease, "controller"),
            on_started_leading=lead,
        )

    a, b = make("a"), make("b")
    a.start()
    wait_until(lambda: a.is_leader, timeout=lease, message="a leads")
    b.start()
    try:
        wait_until(lambda: ("a", 1) in leaders, timeout=lease, message="a's work started")
        assert a.release(drain_timeout=2)
        released_at = time.monotonic()
        wait_until(lambda: b.is_leader, timeout=lease, message="b takes over after release")
        assert time.monotonic() - released_at < lease, "took over by expiry, not by release"
        wait_until(lambda: len(leaders) == 2, timeout=lease, message="b's work started")
        assert leaders == [("a", 1), ("b", 2)]
    finally:
        b.stop()


# ------------------------------------------------------------------------------ guards


def test_acquire_on_a_stale_revision_is_rejected(store: DynamoLeaseStore) -> None:
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    renewed = store.renew(record("a", 1, "r2"), current=first)
    # A standby that last saw r1 and judged it expired must not win over the renewal r2.
    with pytest.raises(LeaseLost) as lost:
        store.try_acquire(record("b", 2, "b1"), expected=first)
    assert lost.value.current == renewed
    assert store.get() == renewed


def test_two_standbys_racing_from_the_same_revision_have_exactly_one_winner(
    aws: Account, store: DynamoLeaseStore
) -> None:
    seen = store.try_acquire(record("old", 4, "r-old"), expected=None)
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def standby(name: str) -> None:
        own = DynamoLeaseStore(aws.client("dynamodb"), aws.tables.lease, "controller")
        barrier.wait(10)
        try:
            own.try_acquire(record(name, 5, f"{name}-1"), expected=seen)
            outcomes[name] = "won"
        except LeaseLost:
            outcomes[name] = "lost"

    threads = [threading.Thread(target=standby, args=(n,)) for n in ("b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes.values()) == ["lost", "won"]
    (winner,) = [n for n, o in outcomes.items() if o == "won"]
    got = store.get()
    assert isinstance(got, LeaseRecord)
    assert (got.holder, got.epoch) == (winner, 5)


def test_old_fence_of_the_same_holder_is_rejected_after_it_reacquires(
    aws: Account, store: DynamoLeaseStore
) -> None:
    client = aws.client("dynamodb")
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    old = Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(1)
    )
    # a steps down and takes the lease again (its own revision was still there): epoch 2.
    store.try_acquire(record("a", 2, "r2"), expected=first)
    new = Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(2)
    )
    client.transact_write_items(TransactItems=[new.condition_check()])
    with pytest.raises(ClientError) as rejected:
        client.transact_write_items(TransactItems=[old.condition_check()])
    assert fence_failed(rejected.value, 0)


# ------------------------------------------------------------------------------ bad lease data

GOOD: dict[str, Any] = record("other", 3, "r0").to_item()

GARBAGE: dict[str, dict[str, Any]] = {
    "epoch a string": {"epoch": {"S": "3"}},
    "epoch a list": {"epoch": {"L": [{"N": "3"}]}},
    "epoch a map": {"epoch": {"M": {"n": {"N": "3"}}}},
    "epoch a number set": {"epoch": {"NS": ["3", "4"]}},
    "epoch null": {"epoch": {"NULL": True}},
    "epoch a boolean": {"epoch": {"BOOL": True}},
    "epoch binary": {"epoch": {"B": b"\x00\x03"}},
    "epoch not an integer": {"epoch": {"N": "3.5"}},
    "holder a string set": {"holder": {"SS": ["a", "b"]}},
    "revision missing": {"revision": None},
    "duration zero": {"lease_duration_ms": {"N": "0"}},
    "only the key": {k: None for k in GOOD if k not in ("pk", "sk")},
}


def put_garbage(aws: Account, changes: dict[str, Any]) -> None:
    item = {**GOOD, **changes}
    item = {k: v for k, v in item.items() if v is not None}
    aws.client("dynamodb").put_item(TableName=aws.tables.lease, Item=item)


@pytest.mark.parametrize("changes", GARBAGE.values(), ids=GARBAGE.keys())
def test_unreadable_item_is_reported_then_replaced_on_exactly_what_was_read(
    aws: Account, store: DynamoLeaseStore, changes: dict[str, Any]
) -> None:
    put_garbage(aws, changes)
    seen = store.get()
    assert isinstance(seen, UnreadableLease)
    assert seen.fingerprint == store.get().fingerprint  # type: ignore[union-attr]
    got = store.try_acquire(record("b", 4, "b1"), expected=seen)
    assert store.get() == got


REPAIRS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # garbage written first, then the repair that lands between the read and the replacement
    "value changed, same type": ({"epoch": {"S": "3"}}, {"epoch": {"S": "4"}}),
    "type changed": ({"epoch": {"S": "3"}}, {"epoch": {"N": "3"}, "revision": {"L": []}}),
    "missing attribute added": ({"revision": None}, {}),
    "attribute removed": ({"epoch": {"S": "3"}}, {"epoch": {"S": "3"}, "transitions": None}),
    "other attribute changed": ({"epoch": {"S": "3"}}, {"epoch": {"S": "3"}, "holder": {"S": "x"}}),
    "fixed by a valid record": ({"epoch": {"S": "3"}}, {"revision": {"S": "fixed"}}),
}


@pytest.mark.parametrize(("garbage", "repair"), REPAIRS.values(), ids=REPAIRS.keys())
def test_replacing_an_unreadable_item_loses_to_any_change_since_it_was_read(
    aws: Account, store: DynamoLeaseStore, garbage: dict[str, Any], repair: dict[str, Any]
) -> None:
    put_garbage(aws, garbage)
    seen = store.get()
    assert isinstance(seen, UnreadableLease)
    put_garbage(aws, repair)
    with pytest.raises(LeaseLost) as lost:
        store.try_acquire(record("b", 4, "b1"), expected=seen)
    assert lost.value.current == store.get()
    assert lost.value.current != seen


def test_renewal_overwrites_garbage_its_condition_does_not_read(
    aws: Account, store: DynamoLeaseStore
) -> None:
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    aws.client("dynamodb").put_item(
        TableName=aws.tables.lease, Item={**first.to_item(), "transitions": {"S": "lots"}}
    )
    assert isinstance(store.get(), UnreadableLease)
    renewed = store.renew(record("a", 1, "r2"), current=first)
    assert store.get() == renewed


def test_elector_replaces_an_unreadable_lease_after_one_lease_duration(aws: Account) -> None:
    put_garbage(aws, {"epoch": {"S": "3"}, "lease_duration_ms": {"N": str(10**12)}})
    clock = FakeClock()
    elector = LeaderElector(
        ElectionConfig(identity=ReplicaId("b"), watchdog=False),
        DynamoLeaseStore(aws.client("dynamodb"), aws.tables.lease, "controller"),
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=clock,
    )
    try:
        elector.step()
        clock.advance(5.99)
        elector.step()
        assert not elector.is_leader
        clock.advance(0.01)
        elector.step()
        assert elector.is_leader
        assert elector.epoch == 1
    finally:
        elector.stop()


def test_huge_stored_duration_is_clamped(aws: Account, store: DynamoLeaseStore) -> None:
    put_garbage(aws, {"lease_duration_ms": {"N": "9" * 38}})
    got = store.get()
    assert isinstance(got, LeaseRecord)
    assert got.duration_clamped
    assert got.lease_duration == MAX_LEASE_DURATION_MS / 1000


# ------------------------------------------------------------------------------ no winner returned


def drop_returned_item(client: Any) -> None:
    """Make ``client`` behave like an implementation that ignores ReturnValuesOnCCF."""

    def strip(parsed: dict[str, Any], **_: Any) -> None:
        parsed.pop("Item", None)

    client.meta.events.register("after-call.dynamodb.PutItem", strip)


def test_failed_condition_without_the_item_is_read_back(aws: Account) -> None:
    client = aws.client("dynamodb")
    drop_returned_item(client)
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    landed = store.renew(record("a", 1, "r2"), current=first)
    # A retry still conditional on r1 fails; the winner is known only by reading it back.
    with pytest.raises(LeaseLost) as lost:
        store.renew(record("a", 1, "r3"), current=first)
    assert lost.value.current == landed


def test_failed_condition_without_the_item_leaves_an_elector_leading_on_its_own_late_write(
    aws: Account,
) -> None:
    client = aws.client("dynamodb")
    drop_returned_item(client)
    clock = FakeClock()
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    elector = LeaderElector(
        ElectionConfig(identity=ReplicaId("a"), watchdog=False),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=clock,
    )
    try:
        elector.step()
        assert elector.is_leader
        # The next renewal is sent, times out, and lands late (a delayed request).
        held: list[dict[str, Any]] = []

        def delay(params: dict[str, Any], **_: Any) -> None:
            if not held:
                held.append(params)
                raise ReadTimeoutError(endpoint_url="http://emulator")

        client.meta.events.register("before-call.dynamodb.PutItem", delay)
        clock.advance(1.0)
        elector.step()
        client.meta.events.unregister("before-call.dynamodb.PutItem", delay)
        late = json.loads(held[0]["body"])
        aws.client("dynamodb").put_item(TableName=late["TableName"], Item=late["Item"])
        clock.advance(1.0)
        elector.step()  # conditional on the old revision: fails, no item returned
        assert elector.is_leader
        assert elector.epoch == 1
    finally:
        elector.stop()


# ------------------------------------------------------------------------------ guards (mutation)


@pytest.mark.parametrize(
    "forged",
    [{"holder": {"S": "intruder"}}, {"epoch": {"N": "2"}}],
    ids=["other holder", "other epoch"],
)
def test_renewal_condition_checks_holder_and_epoch_not_only_the_revision(
    aws: Account, store: DynamoLeaseStore, forged: dict[str, Any]
) -> None:
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    aws.client("dynamodb").put_item(TableName=aws.tables.lease, Item={**first.to_item(), **forged})
    with pytest.raises(LeaseLost):
        store.renew(record("a", 1, "r2"), current=first)


def count_calls(client: Any) -> list[str]:
    """The names of the API calls ``client`` makes from now on."""
    calls: list[str] = []

    def count(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-parameter-build.dynamodb", count)
    return calls


def fail_once(client: Any, event: str, exc: Exception) -> None:
    """Raise ``exc`` from the next ``event`` of ``client`` (before-call: never sent; after-call:
    applied, then failed)."""

    def fail(**_: Any) -> None:
        client.meta.events.unregister(event, fail)
        raise exc

    client.meta.events.register(event, fail)


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutItem",
    )


def test_a_5xx_after_the_write_applied_resolves_to_success(aws: Account) -> None:
    client = aws.client("dynamodb")
    fail_once(client, "after-call.dynamodb.PutItem", client_error("InternalServerError", 500))
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    got = store.try_acquire(record("a", 1, "r1"), expected=None)
    assert got.revision == "r1"


def test_every_5xx_not_only_500_is_ambiguous_and_read_back(aws: Account) -> None:
    client = aws.client("dynamodb")
    fail_once(client, "after-call.dynamodb.PutItem", client_error("ServiceUnavailable", 503))
    calls = count_calls(client)
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    got = store.try_acquire(record("a", 1, "r1"), expected=None)
    assert got.revision == "r1"
    assert calls == ["PutItem", "GetItem"]


def test_every_lease_read_is_strongly_consistent(aws: Account) -> None:
    # An eventually consistent read could show a standby a revision already replaced.
    client = aws.client("dynamodb")
    sent: list[dict[str, Any]] = []
    client.meta.events.register(
        "provide-client-params.dynamodb.GetItem", lambda params, **_: sent.append(dict(params))
    )
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    store.get()
    fail_once(client, "after-call.dynamodb.PutItem", ReadTimeoutError(endpoint_url="http://x"))
    store.try_acquire(record("a", 1, "r1"), expected=None)  # ambiguous: read back
    assert [params.get("ConsistentRead") for params in sent] == [True, True]


@pytest.mark.parametrize(
    ("code", "status"), [("AccessDeniedException", 400), ("ValidationException", 499)]
)
def test_a_4xx_rejection_is_final_and_not_read_back(aws: Account, code: str, status: int) -> None:
    client = aws.client("dynamodb")
    fail_once(client, "before-call.dynamodb.PutItem", client_error(code, status))
    calls = count_calls(client)
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    with pytest.raises(LeaderError) as rejected:
        store.try_acquire(record("a", 1, "r1"), expected=None)
    assert type(rejected.value) is LeaderError
    assert not rejected.value.retryable
    assert rejected.value.code == code
    assert calls == ["PutItem"]


def test_throttling_is_retryable_and_writes_nothing(aws: Account) -> None:
    client = aws.client("dynamodb")
    code = "ProvisionedThroughputExceededException"
    fail_once(client, "before-call.dynamodb.PutItem", client_error(code, 400))
    calls = count_calls(client)
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    with pytest.raises(LeaseUnavailable) as unavailable:
        store.try_acquire(record("a", 1, "r1"), expected=None)
    assert unavailable.value.retryable
    assert unavailable.value.code == code
    assert calls == ["PutItem"]  # definitely not applied: nothing to read back
    assert store.get() is None


def test_a_request_that_never_left_is_not_read_back(aws: Account) -> None:
    client = aws.client("dynamodb")
    unreachable = EndpointConnectionError(endpoint_url="http://emulator")
    fail_once(client, "before-call.dynamodb.PutItem", unreachable)
    calls = count_calls(client)
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    with pytest.raises(LeaseUnavailable):
        store.try_acquire(record("a", 1, "r1"), expected=None)
    assert calls == ["PutItem"]


def test_a_failed_condition_that_returns_the_winner_needs_no_read_back(aws: Account) -> None:
    client = aws.client("dynamodb")
    store = DynamoLeaseStore(client, aws.tables.lease, "controller")
    first = store.try_acquire(record("a", 1, "r1"), expected=None)
    calls = count_calls(client)
    with pytest.raises(LeaseLost) as lost:
        store.try_acquire(record("b", 1, "b1"), expected=None)
    assert lost.value.current == first
    assert calls == ["PutItem"]


def test_a_fence_from_before_an_unreadable_item_stays_rejected_at_an_equal_epoch(
    aws: Account, store: DynamoLeaseStore
) -> None:
    client = aws.client("dynamodb")
    store.try_acquire(record("a", 1, "r1"), expected=None)
    old = Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(1)
    )
    put_garbage(aws, {"epoch": {"S": "1"}})
    seen = store.get()
    # A replica that never saw epoch 1 replaces the garbage at epoch 1: only the holder differs.
    store.try_acquire(record("b", 1, "b1"), expected=seen)
    with pytest.raises(ClientError) as rejected:
        client.transact_write_items(TransactItems=[old.condition_check()])
    assert fence_failed(rejected.value, 0)


def test_fence_failed_is_false_for_anything_but_a_cancelled_fence_item(
    aws: Account, store: DynamoLeaseStore
) -> None:
    client = aws.client("dynamodb")
    store.try_acquire(record("a", 1, "r1"), expected=None)
    stale = Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(9)
    )
    with pytest.raises(ClientError) as rejected:
        client.transact_write_items(TransactItems=[stale.condition_check()])
    assert fence_failed(rejected.value, 0)
    assert not fence_failed(rejected.value, 1)  # no such item in the transaction
    assert not fence_failed(ValueError("not from DynamoDB"), 0)
    raise_if_fenced(ValueError("not from DynamoDB"), 0, stale)  # returns: not a fence failure
