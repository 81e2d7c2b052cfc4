"""Unreadable work-unit rows and DynamoDB refusals: the queue skips, quarantines and goes on.

In memory (same encoding as DynamoDB) for the semantics, on the emulator for the conditions and
the error classes; bad rows are written straight into the store or table, as a corruption or a
hostile writer would leave them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from oab.controller.testing import AWS, FakeClock, SequentialIds
from oab.queue.config import QueueConfig
from oab.queue.errors import (
    ClaimLost,
    CorruptRow,
    ExtraConditionFailed,
    QueueRejected,
    QueueUnavailable,
)
from oab.queue.metrics import QueueMetrics
from oab.queue.row import Row, State, UnreadableRow
from oab.queue.store import MemoryStore, decode, from_item, pk_of, to_item
from oab.queue.workqueue import WorkQueue, idempotency_token

VIS = 30.0


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    yield reader
    reader.shutdown()


def make(
    *, store: Any = None, reader: InMemoryMetricReader | None = None, **cfg: Any
) -> tuple[WorkQueue, FakeClock, MemoryStore]:
    clock = FakeClock()
    config = QueueConfig(visibility_timeout=VIS, **cfg)
    store = store or MemoryStore(shards=config.shards)
    metrics = (
        QueueMetrics(MeterProvider(metric_readers=[reader]).get_meter("t")) if reader else None
    )
    q = WorkQueue(
        None,
        "unused",
        config=config,
        clock=clock,
        new_id=SequentialIds("id"),
        rng=random.Random(3),
        store=store,
        metrics=metrics,
    )
    return q, clock, store


def tok(key: str, gen: int) -> str:
    return idempotency_token(key, gen, "digest", "apply")


def corrupt(unit: str, /, **attrs: Any) -> dict[str, Any]:
    """A row item for ``unit`` with ``attrs`` replaced (``None`` removes one)."""
    item: dict[str, Any] = {
        "pk": {"S": pk_of(unit)},
        "sk": {"S": "unit"},
        "key": {"S": unit},
        "state": {"S": "ready"},
        "generation": {"N": "3"},
        "token": {"S": "t"},
        "reason": {"S": "apply"},
        "dirty": {"BOOL": False},
        "attempts": {"N": "0"},
        "version": {"N": "4"},
        "write_id": {"S": "w"},
        "updated_at": {"N": "1.0"},
        "ready_at": {"N": "1.0"},
        "ready_shard": {"S": "0"},
    }
    for name, value in attrs.items():
        if value is None:
            item.pop(name, None)
        else:
            item[name] = value
    return item


def poison_count(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    total = 0
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "oab.poison.items":
                    for point in metric.data.data_points:
                        assert dict(point.attributes or {}) == {
                            "oab.table": "queue",
                            "oab.kind": "row",
                        }
                        total += int(point.value)
    return total


# ---------------------------------------------------------------------------------- decoding

_VALID = to_item(
    Row(
        key="ns/a",  # type: ignore[arg-type]
        state=State.IN_FLIGHT,
        generation=2,
        token="tk",  # type: ignore[arg-type]
        reason="apply",
        trace_context={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
        attempts=1,
        ready_at=10.0,
        owner="r1/w0",  # type: ignore[arg-type]
        claim_token="c",  # type: ignore[arg-type]
        claim_deadline=10.0,
        claimed_generation=2,
        claimed_token="tk",  # type: ignore[arg-type]
        claimed_reason="apply",
        version=3,
        write_id="w",
        updated_at=1.0,
    ),
    shards=4,
)

_VALUES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"S": st.text(max_size=20)}),
    st.fixed_dictionaries({"N": st.sampled_from(["1", "-1", "1e400", "nan", "x", "2.5", ""])}),
    st.fixed_dictionaries({"BOOL": st.booleans()}),
    st.fixed_dictionaries({"M": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)}),
    st.fixed_dictionaries({"L": st.lists(st.integers(), max_size=2)}),
    st.integers(),
    st.just({"S": "x" * 5000}),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_VALID)), _VALUES, min_size=1, max_size=4))
def test_decoding_is_total(changes: dict[str, Any]) -> None:
    """Whatever is stored, decoding gives a row or CorruptRow: never KeyError/TypeError."""
    item = {**_VALID}
    for name, value in changes.items():
        if value is None:
            item.pop(name, None)
        else:
            item[name] = value
    got = decode(item)  # from_item, with CorruptRow turned into what could be read
    if isinstance(got, UnreadableRow):
        assert got.problem
        assert len(got.problem.encode()) <= 512
    else:
        assert isinstance(got, Row)


def test_a_key_that_disagrees_with_the_partition_key_is_corrupt() -> None:
    # Decoding it would make the next write land on another agent's row.
    with pytest.raises(CorruptRow, match="key: differs from the partition key"):
        from_item(corrupt("ns/a", key={"S": "ns/b"}))


def test_an_in_flight_row_without_its_claim_is_corrupt() -> None:
    with pytest.raises(CorruptRow, match="lacks its claim"):
        from_item(corrupt("ns/a", state={"S": "in_flight"}))


# ------------------------------------------------------------------------------ quarantine


def test_a_claim_quarantines_an_unreadable_row_and_takes_the_next(
    reader: InMemoryMetricReader,
) -> None:
    q, _, store = make(reader=reader, shards=1)
    store.put_raw(corrupt("ns/bad", generation={"S": "three"}))
    q.enqueue("ns/good", 1, "apply", tok("ns/good", 1))

    claims = [q.claim("w"), q.claim("w")]
    assert [c.key for c in claims if c is not None] == ["ns/good"]
    parked = q.get("ns/bad")
    assert parked.state is State.PARKED
    assert parked.last_error == "CorruptRow: generation: expected a number"
    assert parked.version == 5  # the readable version continued: no stale CAS can match
    assert poison_count(reader) == 1
    assert q.depth_by_state()["corrupt"] == 0


def test_an_enqueue_quarantines_then_applies_to_the_parked_row() -> None:
    q, _, store = make()
    store.put_raw(corrupt("ns/a", state={"S": "exploded"}, version={"S": "garbage"}))
    same = q.enqueue("ns/a", 3, "apply", tok("ns/a", 3))
    assert same.outcome == "parked"  # the generation the quarantine kept: stays parked
    row = q.get("ns/a")
    assert row.state is State.PARKED
    assert row.last_error is not None
    assert row.last_error.startswith("CorruptRow: state: not one of")
    assert row.version >= 1_800_000_000_000  # unreadable version: restarted past any writer's
    newer = q.enqueue("ns/a", 4, "apply", tok("ns/a", 4))
    assert newer.outcome == "added"
    assert q.get("ns/a").state is State.READY


def test_the_sweep_quarantines_with_the_fence_and_a_stale_fence_writes_nothing() -> None:
    fence_ok = {"ok": False}

    def check(_index: int, _item: Any) -> str | None:
        return None if fence_ok["ok"] else "ConditionalCheckFailed"

    q, _, store = make(store=MemoryStore(shards=4, extra_check=check))
    store.put_raw(corrupt("ns/a", attempts={"N": "-1"}))
    with pytest.raises(ExtraConditionFailed):
        q.expire_stale_claims(extra_condition={"ConditionCheck": {}})
    assert isinstance(next(iter(store.rows())), UnreadableRow)  # nothing written
    fence_ok["ok"] = True
    assert q.expire_stale_claims(extra_condition={"ConditionCheck": {}}) == ["ns/a"]
    assert q.get("ns/a").state is State.PARKED


def test_a_concurrent_repair_wins_over_the_quarantine() -> None:
    q, _, store = make()
    store.put_raw(corrupt("ns/a", dirty={"S": "yes"}))
    found = next(iter(store.rows()))
    assert isinstance(found, UnreadableRow)
    # An operator rewrites the row (a new write_id and version) before the quarantine lands.
    store.put_raw(corrupt("ns/a", version={"N": "9"}, write_id={"S": "fixed"}))
    assert q._quarantine(found) is None
    assert q.get("ns/a").version == 9


def test_a_row_whose_guard_is_too_large_is_reported_not_rewritten(
    reader: InMemoryMetricReader,
) -> None:
    q, _, store = make(reader=reader, shards=1)
    store.put_raw(corrupt("ns/a", version={"S": "9" * 5000}))
    assert q.expire_stale_claims() == []
    for _ in range(5):  # every claim poll meets it again: counted once, not per poll
        assert q.claim("w") is None
    assert poison_count(reader) == 1
    listed = q.scan()
    assert isinstance(listed[0], UnreadableRow)
    assert listed[0].as_json()["state"] == "corrupt"
    assert q.list_rows() == []
    assert q.depth_by_state()["corrupt"] == 1


def test_a_claim_whose_row_became_unreadable_is_lost() -> None:
    q, _, store = make()
    q.enqueue("ns/a", 1, "apply", tok("ns/a", 1))
    claim = q.claim("w")
    assert claim is not None
    store.put_raw(corrupt("ns/a", version={"N": "99"}, owner={"N": "1"}))
    with pytest.raises(ClaimLost, match="unreadable"):
        q.heartbeat(claim)
    with pytest.raises(ClaimLost):
        q.complete(claim)


def test_operator_retry_repairs_an_unreadable_row() -> None:
    q, _, store = make()
    store.put_raw(corrupt("ns/a", token=None))
    row = q.retry("ns/a")
    assert row.state is State.READY
    assert row.last_error == "CorruptRow: token: missing"
    assert q.claim("w") is not None


def test_park_writes_a_row_once_and_leaves_in_flight_rows_to_their_worker() -> None:
    q, _, _ = make()
    first = q.park("ns/a", "CorruptStatus: x")
    assert first is not None
    assert (first.state, first.generation, first.last_error) == (
        State.PARKED,
        0,
        "CorruptStatus: x",
    )
    again = q.park("ns/a", "CorruptStatus: x")
    assert again is not None
    assert again.version == first.version  # nothing rewritten
    q.enqueue("ns/b", 1, "apply", tok("ns/b", 1))
    claim = q.claim("w")
    assert claim is not None
    held = q.park("ns/b", "CorruptStatus: y")
    assert held is not None
    assert held.state is State.IN_FLIGHT


# ------------------------------------------------------------------------------- emulator


def dynamo_queue(aws: AWS, *, client: Any = None, shards: int = 4) -> WorkQueue:
    return WorkQueue(
        client or aws.client("dynamodb"),
        aws.tables.queue,
        config=QueueConfig(visibility_timeout=20.0, shards=shards),
        clock=FakeClock(wall=1_000.0),
        rng=random.Random(1),
    )


def refuse(code: str, message: str = "", **extra: Any) -> Any:
    def hook(**_kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": code, "Message": message}, **extra}, "op")

    return hook


@pytest.mark.parametrize(
    ("code", "reasons", "error"),
    [
        ("ValidationException", None, QueueRejected),
        (
            "TransactionCanceledException",
            [{"Code": "None"}, {"Code": "ValidationError"}],
            QueueRejected,
        ),
        ("ProvisionedThroughputExceededException", None, QueueUnavailable),
        ("TransactionCanceledException", [{"Code": "ThrottlingError"}], QueueUnavailable),
        ("InternalServerError", None, QueueUnavailable),
    ],
)
def test_refusals_that_can_never_succeed_are_not_retryable(
    aws: AWS, code: str, reasons: Any, error: type[Exception]
) -> None:
    client = aws.client("dynamodb")
    q = dynamo_queue(aws, client=client)
    q.enqueue("ns/a", 1, "apply", tok("ns/a", 1))
    claim = q.claim("w")
    assert claim is not None
    extra = {"CancellationReasons": reasons} if reasons else {}
    client.meta.events.register(
        "before-call.dynamodb.TransactWriteItems", refuse(code, "Item size has exceeded", **extra)
    )
    status_put = {
        "Put": {"TableName": aws.tables.state, "Item": {"pk": {"S": "x"}, "sk": {"S": "y"}}}
    }
    with pytest.raises(error) as raised:
        q.complete(claim, extra_items=[status_put])
    assert raised.value.retryable is (error is QueueUnavailable)


def test_an_unreadable_row_in_the_table_is_quarantined_on_dynamodb(aws: AWS) -> None:
    ddb = aws.client("dynamodb")
    q = dynamo_queue(aws, shards=1)
    ddb.put_item(TableName=aws.tables.queue, Item=corrupt("ns/bad", attempts={"S": "many"}))
    q.enqueue("ns/good", 1, "apply", tok("ns/good", 1))
    claimed = [c.key for c in (q.claim("w"), q.claim("w")) if c is not None]
    assert claimed == ["ns/good"]
    row = q.get("ns/bad")
    assert (row.state, row.last_error) == (State.PARKED, "CorruptRow: attempts: expected a number")
    # A repair that lands first wins: the guard is the raw version and write_id.
    ddb.put_item(TableName=aws.tables.queue, Item=corrupt("ns/bad2", dirty={"N": "1"}))
    found = next(r for r in q.scan() if isinstance(r, UnreadableRow))
    ddb.put_item(
        TableName=aws.tables.queue,
        Item=corrupt("ns/bad2", dirty={"N": "1"}, write_id={"S": "operator"}),
    )
    assert q._quarantine(found) is None
    assert isinstance(next(r for r in q.scan() if r.key == "ns/bad2"), UnreadableRow)


def test_one_failing_shard_does_not_stop_claims_from_the_others(aws: AWS) -> None:
    client = aws.client("dynamodb")
    q = dynamo_queue(aws, client=client, shards=4)
    for i in range(8):
        q.enqueue(f"ns/a{i}", 1, "apply", tok(f"ns/a{i}", 1))

    def fail_shard_zero(params: dict[str, Any], **_kwargs: Any) -> None:
        if params.get("ExpressionAttributeValues", {}).get(":s") == {"S": "0"}:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": ""}}, "Query")

    client.meta.events.register("provide-client-params.dynamodb.Query", fail_shard_zero)
    got = {c.key for c in iter(lambda: q.claim("w"), None)}
    from oab.queue.row import ready_shard_of

    assert got == {f"ns/a{i}" for i in range(8) if ready_shard_of(f"ns/a{i}", 4) != 0}
