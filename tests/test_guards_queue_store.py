"""Guards of ``queue/store.py`` pinned by the mutation screening of that module (issue 15).

Each test kills mutants of ``queue/store.py`` that survived the queue's own tests (the screen runs
every cosmic-ray mutant against the tests that execute its line); the mutants judged equivalent
are in ``mutation/equivalent.md`` with their reason. Most guards are the reader's bounds on
untrusted stored items (``from_item`` is total: every bad item is :class:`CorruptRow`, every
bound accepts its limit and refuses one past it), the classification of DynamoDB's refusals and
cancellations, and the in-memory store's compare-and-swap. In-memory tests use
:class:`MemoryStore` and ``store.put_raw`` to plant raw items; the emulator tests (the ``aws``
fixture) cover what only the DynamoDB adapter does, with faults injected by botocore hooks on the
client the adapter uses. Cancellation replies are parsed from JSON, as botocore parses them, so
their strings are fresh objects (never the module's interned literals).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from oab.controller.testing import AWS, FakeClock, SequentialIds
from oab.queue.config import QueueConfig
from oab.queue.errors import (
    CorruptRow,
    ExtraConditionFailed,
    QueueRejected,
    QueueUnavailable,
)
from oab.queue.row import (
    MAX_TEXT_BYTES,
    MAX_TRACE_ENTRIES,
    AgentKey,
    IdempotencyToken,
    Row,
    State,
    UnreadableRow,
    clip_text,
)
from oab.queue.store import (
    DynamoStore,
    MemoryStore,
    RowConflict,
    _cancellation,
    _unavailable,
    decode,
    from_item,
    pk_of,
    to_item,
)
from oab.queue.workqueue import WorkQueue

SHARDS = 4


def _row(**changes: Any) -> Row:
    row = Row(
        key=AgentKey("ns/a"),
        state=State.READY,
        generation=1,
        token=IdempotencyToken("t"),
        reason="spec",
        ready_at=100.0,
        version=1,
        write_id="w1",
        updated_at=50.0,
    )
    return replace(row, **changes)


def _item(**attributes: Any) -> dict[str, Any]:
    """A valid stored item with some attributes replaced (``None``: removed)."""
    item = to_item(_row(), shards=SHARDS)
    for name, value in attributes.items():
        if value is None:
            item.pop(name, None)
        else:
            item[name] = value
    return item


def _queue(store: MemoryStore, clock: FakeClock | None = None) -> WorkQueue:
    return WorkQueue(
        None,
        "unused",
        config=QueueConfig(shards=SHARDS),
        clock=clock or FakeClock(),
        new_id=SequentialIds("id"),
        store=store,
    )


# ------------------------------------------------------------------ reading stored items


@pytest.mark.parametrize(
    "name",
    [
        "key",
        "state",
        "generation",
        "token",
        "reason",
        "dirty",
        "attempts",
        "version",
        "write_id",
        "updated_at",
    ],
)
def test_an_item_missing_a_required_attribute_is_unreadable(name: str) -> None:
    with pytest.raises(CorruptRow, match=f"{name}: missing"):
        from_item(_item(**{name: None}))


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("reason", {"S": "spec", "N": "1"}, "string"),
        ("generation", {"N": "1", "S": "1"}, "number"),
        ("dirty", {"BOOL": False, "NULL": True}, "boolean"),
        ("reason", {}, "string"),
        ("reason", {"N": "1"}, "string"),
        ("reason", "spec", "string"),
    ],
)
def test_an_attribute_must_hold_exactly_its_one_type(name: str, value: Any, expected: str) -> None:
    with pytest.raises(CorruptRow, match=f"{name}: expected a {expected}"):
        from_item(_item(**{name: value}))


def test_the_key_must_be_the_partition_keys_up_to_256_bytes() -> None:
    for other in ("ns/0", "ns/b"):  # sorting before and after the partition key's "ns/a"
        with pytest.raises(CorruptRow, match="key: differs from the partition key"):
            from_item(_item(key={"S": other}))
    longest = _row(key=AgentKey("ns/" + "k" * 253))
    assert from_item(to_item(longest, shards=SHARDS)) == longest
    too_long = "ns/" + "k" * 254
    with pytest.raises(CorruptRow, match="key: differs from the partition key") as unreadable:
        from_item(to_item(_row(key=AgentKey(too_long)), shards=SHARDS))
    assert unreadable.value.key == clip_text(too_long, 256)  # what is read of it: 256 bytes


def test_a_stored_count_with_a_fraction_is_not_an_integer() -> None:
    for name, value in (("generation", "1.5"), ("attempts", "0.5"), ("version", "7.25")):
        with pytest.raises(CorruptRow, match=f"{name}: not an integer"):
            from_item(_item(**{name: {"N": value}}))
    assert from_item(_item(generation={"N": "3.0"})).generation == 3  # a whole number is one


def test_a_row_stored_at_the_epoch_reads_back_unchanged() -> None:
    row = _row(ready_at=0.0, updated_at=0.0)
    assert from_item(to_item(row, shards=SHARDS)) == row


def test_only_ready_and_in_flight_rows_need_their_due_time() -> None:
    with pytest.raises(CorruptRow, match="ready_at: missing on a ready row"):
        from_item(_item(ready_at=None, ready_shard=None))
    for state in (State.PARKED, State.DONE):
        row = _row(state=state, ready_at=None)
        assert from_item(to_item(row, shards=SHARDS)) == row
    in_flight = _item(state={"S": "in_flight"})  # no claim token, deadline or claimed token
    with pytest.raises(CorruptRow, match="claim_token: an in-flight row lacks its claim"):
        from_item(in_flight)


def test_stored_strings_are_read_up_to_the_byte_limit() -> None:
    at_limit = "é" * (MAX_TEXT_BYTES // 2)  # two bytes each in UTF-8: the limit in bytes
    assert from_item(_item(reason={"S": at_limit})).reason == at_limit
    with pytest.raises(CorruptRow, match=f"reason: over {MAX_TEXT_BYTES} bytes"):
        from_item(_item(reason={"S": at_limit + "x"}))


def _trace(entries: dict[str, str]) -> dict[str, Any]:
    return {"M": {k: {"S": v} for k, v in entries.items()}}


def test_a_trace_context_is_bounded_in_entries_and_in_entry_bytes() -> None:
    most = {f"k{i}": "v" for i in range(MAX_TRACE_ENTRIES)}
    assert from_item(_item(trace_context=_trace(most))).trace_context == most
    with pytest.raises(CorruptRow, match="trace_context: expected a map of at most"):
        from_item(_item(trace_context=_trace({**most, "one-more": "v"})))
    widest = {"k": "v" * (MAX_TEXT_BYTES - 1)}  # key and value: the limit exactly
    assert from_item(_item(trace_context=_trace(widest))).trace_context == widest
    with pytest.raises(CorruptRow, match=f"trace_context: entry over {MAX_TEXT_BYTES} bytes"):
        from_item(_item(trace_context=_trace({"k": "v" * MAX_TEXT_BYTES})))


@pytest.mark.parametrize("value", ["abc", ["a"], 7])
def test_a_trace_context_that_is_not_a_map_is_unreadable(value: Any) -> None:
    with pytest.raises(CorruptRow, match="trace_context: expected a map"):
        from_item(_item(trace_context={"M": value}))


@pytest.mark.parametrize("entry", ["v", {"S": "v", "N": "1"}, {"N": "1"}, {}, {"S": 7}])
def test_a_trace_entry_must_be_exactly_one_string(entry: Any) -> None:
    with pytest.raises(CorruptRow, match="trace_context: expected a map of strings"):
        from_item(_item(trace_context={"M": {"traceparent": entry}}))


# --------------------------------------------------- what an unreadable item keeps for its repair


def test_what_is_read_of_an_unreadable_item_keeps_only_counts_in_range() -> None:
    def soft(version: str) -> UnreadableRow:
        found = decode(_item(state={"S": "bogus"}, version={"N": version}))
        assert isinstance(found, UnreadableRow)
        return found

    assert (soft("0").version, soft(str(2**53)).version) == (0, 2**53)
    assert (soft("-1").version, soft(str(2**53 + 1)).version, soft("1.5").version) == (None,) * 3
    found = decode(_item(state={"S": "bogus"}, generation={"N": str(2**53 + 1)}))
    assert isinstance(found, UnreadableRow)
    assert found.generation == 0


def test_an_unreadable_row_with_numbers_past_two_to_the_53_is_quarantined_readable() -> None:
    """The parked row that replaces it must not carry the out-of-range numbers over, or it
    would be unreadable in turn."""
    store = MemoryStore(shards=SHARDS)
    q = _queue(store)
    huge = {"N": str(2**60)}
    store.put_raw(_item(state={"S": "bogus"}, version=huge, generation=huge))
    assert q.expire_stale_claims() == ["ns/a"]
    parked = q.get("ns/a")
    assert (parked.state, parked.generation) == (State.PARKED, 0)
    assert parked.version <= 2**53  # started afresh from the time in milliseconds


def _guard_sized(size: int) -> dict[str, Any]:
    """An unreadable item whose guard (raw version and write_id) has a ``repr`` of ``size``."""
    empty = repr({"version": {"N": "1"}, "write_id": {"S": ""}})
    return _item(generation={"S": "three"}, write_id={"S": "x" * (size - len(empty))})


def test_an_unreadable_row_is_replaced_only_if_its_guard_is_at_most_1024_characters() -> None:
    store = MemoryStore(shards=SHARDS)
    q = _queue(store)
    item = _guard_sized(1024)
    store.put_raw(item)
    (found,) = store.rows()
    assert isinstance(found, UnreadableRow)
    assert found.guard == {"version": item["version"], "write_id": item["write_id"]}
    assert q.expire_stale_claims() == ["ns/a"]
    assert q.get("ns/a").state is State.PARKED

    store.put_raw(_guard_sized(1025))
    (found,) = store.rows()
    assert isinstance(found, UnreadableRow)
    assert found.guard is None  # too large to send back in a condition: reported, not rewritten
    assert q.expire_stale_claims() == []
    with pytest.raises(CorruptRow):
        q.get("ns/a")


# ---------------------------------------------------------------------- the memory store


def test_the_memory_store_judges_an_overwrites_guard_by_value() -> None:
    """The guard a repair sends back is compared as DynamoDB compares it: by value, whatever
    objects hold it (here, values parsed afresh from JSON)."""
    store = MemoryStore(shards=SHARDS)
    store.put_raw(_item(generation={"S": "three"}, write_id=None))
    guard = json.loads('{"version": {"N": "1"}, "write_id": null}')
    repaired = _row(state=State.PARKED, ready_at=None, version=2, write_id="w2")
    stale = json.loads('{"version": {"N": "1"}, "write_id": {"S": "w1"}}')
    with pytest.raises(RowConflict) as lost:
        store.overwrite(repaired, guard=stale)
    assert lost.value.current is None
    store.overwrite(repaired, guard=guard)
    assert store.get(AgentKey("ns/a")) == repaired


def test_a_lost_compare_and_swap_is_retryable() -> None:
    """Re-reading the row and applying the change again can succeed: the conflict says so."""
    store = MemoryStore(shards=SHARDS)
    store.write(_row(), expected_version=None)
    with pytest.raises(RowConflict) as lost:
        store.write(_row(version=2), expected_version=5)
    assert lost.value.retryable is True
    assert lost.value.code == "ConditionalCheckFailed"


def test_the_memory_store_names_a_failed_extra_item_with_a_lost_row() -> None:
    """As a DynamoDB cancellation names every item that failed: both the row's condition and
    the caller's extra item (the fence) are reported."""
    store = MemoryStore(shards=SHARDS, extra_check=lambda _i, _x: "ConditionalCheckFailed")
    store.write(_row(), expected_version=None)
    with pytest.raises(RowConflict) as lost:
        store.write(_row(version=2), expected_version=5, extra_items=[{"fence": "stale"}])
    assert lost.value.current == _row()
    assert lost.value.extra_failed is not None
    assert (lost.value.extra_failed.index, lost.value.extra_failed.reason) == (
        0,
        "ConditionalCheckFailed",
    )


# ----------------------------------------------------------- refusals and cancellations


def _cancelled(*reasons: dict[str, str]) -> ClientError:
    """A TransactWriteItems cancellation as botocore hands it over: parsed from the JSON body."""
    body = json.dumps(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"},
            "CancellationReasons": list(reasons),
        }
    )
    return ClientError(json.loads(body), "TransactWriteItems")


def test_a_refused_extra_item_is_a_rejection_with_its_own_message() -> None:
    error = _cancellation(
        _cancelled(
            {"Code": "None", "Message": "the row's reason"},
            {"Code": "ValidationError", "Message": "Item size has exceeded the maximum"},
        )
    )
    assert isinstance(error, QueueRejected)
    assert error.code == "ValidationError"
    assert str(error) == "transaction refused: ValidationError: Item size has exceeded the maximum"


@pytest.mark.parametrize("row_reason", [{}, {"Code": "None", "Message": "no error"}])
@pytest.mark.parametrize("code", ["ValidationError", "AccessDeniedException"])
def test_a_refusals_message_is_the_refused_items_own(row_reason: dict[str, str], code: str) -> None:
    error = _cancellation(_cancelled(row_reason, {"Code": code, "Message": "refused here"}))
    assert isinstance(error, QueueRejected)
    assert str(error) == f"transaction refused: {code}: refused here"


def test_a_cancellation_names_the_first_failing_extra_item() -> None:
    failed = {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}
    error = _cancellation(_cancelled({"Code": "None"}, failed, failed))
    assert isinstance(error, ExtraConditionFailed)
    assert error.index == 0
    error = _cancellation(_cancelled({"Code": "None"}, {"Code": "None"}, failed))
    assert isinstance(error, ExtraConditionFailed)
    assert (error.index, error.reason) == (1, "ConditionalCheckFailed")
    assert str(error) == (
        "extra transaction item 1 failed: ConditionalCheckFailed (The conditional request failed)"
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("ConditionalCheckFailed", RowConflict),
        ("AccessDeniedException", QueueRejected),  # sorts before ConditionalCheckFailed
        ("TransactionConflict", QueueUnavailable),
    ],
)
def test_a_cancelled_row_is_a_conflict_only_when_its_condition_failed(
    code: str, kind: type[Exception]
) -> None:
    error = _cancellation(_cancelled({"Code": code}, {"Code": "None"}))
    assert type(error) is kind
    assert error.code == code


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("ConditionalCheckFailed", ExtraConditionFailed),
        ("AccessDeniedException", QueueRejected),  # sorts before ConditionalCheckFailed
        ("TransactionConflict", QueueUnavailable),
    ],
)
def test_a_cancelled_extra_item_failed_its_condition_only_when_it_says_so(
    code: str, kind: type[Exception]
) -> None:
    error = _cancellation(_cancelled({"Code": "None"}, {"Code": code}))
    assert type(error) is kind
    assert error.code == code


def test_a_refusals_message_is_kept_up_to_256_bytes() -> None:
    def refused(message: str) -> tuple[str, str]:
        validation = {"Error": {"Code": "ValidationException", "Message": message}}
        cancelled = _cancelled({"Code": "ValidationError", "Message": message})
        return str(_unavailable(ClientError(validation, "PutItem"))), str(_cancellation(cancelled))

    whole, over = "m" * 256, "m" * 257
    assert refused(whole) == (
        f"DynamoDB refused the request: ValidationException: {whole}",
        f"transaction refused: ValidationError: {whole}",
    )
    clipped = clip_text(over, 256)
    assert len(clipped.encode()) == 256
    assert refused(over) == (
        f"DynamoDB refused the request: ValidationException: {clipped}",
        f"transaction refused: ValidationError: {clipped}",
    )


# ------------------------------------------------------------------------ on the emulator


def _throttle(**_: Any) -> None:
    raise ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        "DynamoDB",
    )


def _unreachable(**_: Any) -> None:
    raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (_throttle, "ProvisionedThroughputExceededException"),
        (_unreachable, "EndpointConnectionError"),
    ],
)
def test_every_failed_dynamodb_request_is_a_queue_error(
    aws: AWS, fault: Callable[..., None], code: str
) -> None:
    client = aws.client("dynamodb")
    store = DynamoStore(client, aws.tables.queue, shards=SHARDS)
    store.write(_row(), expected_version=None)
    for op in ("GetItem", "PutItem", "Query", "Scan", "TransactWriteItems"):
        client.meta.events.register(f"before-call.dynamodb.{op}", fault)
    extra = {
        "ConditionCheck": {
            "TableName": aws.tables.queue,
            "Key": {"pk": {"S": "x"}, "sk": {"S": "y"}},
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }
    calls = {
        "get": lambda: store.get(AgentKey("ns/a")),
        "write": lambda: store.write(_row(version=2), expected_version=1),
        "write with extra items": lambda: store.write(
            _row(version=2), expected_version=1, extra_items=[extra]
        ),
        "ready_keys": lambda: store.ready_keys(0, now=1e9, limit=10),
        "rows": lambda: list(store.rows()),
    }
    for name, call in calls.items():
        with pytest.raises(QueueUnavailable) as failed:
            call()
        assert failed.value.code == code, name


@pytest.mark.parametrize("code", ["AccessDeniedException", "ValidationException"])
def test_a_refused_write_is_a_rejection_not_a_conflict(aws: AWS, code: str) -> None:
    """Only a failed condition is a conflict, whatever the refusal's code sorts next to."""
    client = aws.client("dynamodb")
    store = DynamoStore(client, aws.tables.queue, shards=SHARDS)

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": code, "Message": "not allowed"}}, "PutItem")

    client.meta.events.register("before-call.dynamodb.PutItem", refuse)
    with pytest.raises(QueueRejected) as refused:
        store.write(_row(), expected_version=None)
    assert str(refused.value) == f"DynamoDB refused the request: {code}: not allowed"


def test_the_adapters_reads_of_the_table_are_consistent(aws: AWS) -> None:
    """A stale read of a row would undo a write just made (the sweep rewrites what it scanned);
    the emulator is always consistent, so the test checks what is asked of DynamoDB."""
    client = aws.client("dynamodb")
    store = DynamoStore(client, aws.tables.queue, shards=SHARDS)
    store.write(_row(), expected_version=None)
    asked: dict[str, Any] = {}

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        asked[model.name] = params.get("ConsistentRead")

    client.meta.events.register("before-parameter-build.dynamodb", record)
    assert store.get(AgentKey("ns/a")) == _row()
    assert list(store.rows()) == [_row()]
    assert asked == {"GetItem": True, "Scan": True}


def test_a_scan_yields_only_the_work_units_of_the_table(aws: AWS) -> None:
    client = aws.client("dynamodb")
    store = DynamoStore(client, aws.tables.queue, shards=SHARDS)
    store.write(_row(), expected_version=None)
    for sk in ("audit", "status", "zebra"):  # sorting before and after the units' "unit"
        client.put_item(
            TableName=aws.tables.queue,
            Item={"pk": {"S": pk_of("ns/a")}, "sk": {"S": sk}, "note": {"S": "not a unit"}},
        )
    assert list(store.rows()) == [_row()]
