"""Guards of ``queue/row.py``, ``queue/errors.py`` and ``queue/config.py`` pinned by mutation
screening (issue 15).

Each mutant of these modules that survived the queue's own tests is killed by a test here or
listed in ``mutation/equivalent.md`` with the reason no input can tell it apart. The row rules are
pure functions, so the tests call them on hand-built rows, including rows the queue itself never
writes but the decoder accepts from the table (stored rows are untrusted); the stored encoding is
checked through :class:`MemoryStore`, which shares the DynamoDB adapter's ``to_item``/``from_item``.
Values read back from the table are new objects, so tests build equal-but-distinct ints and strings
where a comparison must be by value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import pytest

from oab.queue import row as rows
from oab.queue.config import QueueConfig
from oab.queue.errors import (
    ClaimLost,
    Contention,
    CorruptRow,
    ExtraConditionFailed,
    InvalidQueueConfig,
    KeyNotFound,
    NotRetryable,
    QueueError,
    QueueRejected,
    QueueUnavailable,
)
from oab.queue.row import (
    AgentKey,
    ClaimToken,
    IdempotencyToken,
    Row,
    State,
    UnreadableRow,
    WorkerId,
    backoff_delay,
    clip_text,
    ready_shard_of,
)
from oab.queue.store import MemoryStore, from_item, to_item

KEY = AgentKey("ns/a")
TOKEN = ClaimToken("m-claim")


def _row(state: State = State.READY, **fields: Any) -> Row:
    base: dict[str, Any] = {
        "key": KEY,
        "generation": 1,
        "token": IdempotencyToken("t"),
        "reason": "spec",
        "ready_at": 100.0,
    }
    return Row(state=state, **{**base, **fields})


def _flying(**fields: Any) -> Row:
    """An in-flight row held by ``TOKEN`` until 130.0 (its ``ready_at`` mirrors the deadline)."""
    base: dict[str, Any] = {
        "owner": WorkerId("w0"),
        "claim_token": TOKEN,
        "claim_deadline": 130.0,
        "ready_at": 130.0,
        "claimed_generation": 1,
        "claimed_token": IdempotencyToken("t"),
        "claimed_reason": "spec",
        "attempts": 1,
    }
    return _row(State.IN_FLIGHT, **{**base, **fields})


def _version(n: int) -> int:
    # Versions read back from DynamoDB are new int objects: past 256 identity is not equality.
    return int(str(n))


# ----------------------------------------------------------------------------------- config


def test_config_is_immutable_and_built_from_keywords_only() -> None:
    config = QueueConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.shards = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        QueueConfig(8)  # type: ignore[misc]


def test_config_error_budget_reaches_what_a_reader_accepts_and_no_further() -> None:
    # The write budget of ``last_error`` is bounded by the decoder's MAX_TEXT_BYTES (4096).
    assert QueueConfig(max_error_length=4096).max_error_length == 4096
    with pytest.raises(InvalidQueueConfig, match=r"max_error_length must be in 16\.\.4096"):
        QueueConfig(max_error_length=4097)


@pytest.mark.parametrize("field", ["visibility_timeout", "backoff_base"])
def test_config_refuses_negative_durations_not_only_zero(field: str) -> None:
    with pytest.raises(InvalidQueueConfig, match=field):
        QueueConfig(**{field: -1.0})


def test_config_accepts_a_positive_clock_skew_allowance() -> None:
    assert QueueConfig(clock_skew_allowance=5.0).clock_skew_allowance == 5.0


# ----------------------------------------------------------------------------------- errors


def test_each_queue_error_says_whether_retrying_the_same_call_can_help() -> None:
    unreadable = UnreadableRow(key=KEY, problem="state: missing")
    retryable: list[QueueError] = [QueueUnavailable("throttled"), Contention("busy")]
    final: list[QueueError] = [
        QueueError("x"),
        InvalidQueueConfig("shards"),
        QueueRejected("too large"),
        CorruptRow(unreadable),
        KeyNotFound("ns/a"),
        NotRetryable("ns/a", "done"),
        ClaimLost(
            "ns/a",
            claim_token="c",
            current_state=None,
            current_owner=None,
            current_claim_token=None,
        ),
        ExtraConditionFailed(0, "ConditionalCheckFailed"),
    ]
    assert [e.retryable for e in retryable] == [True, True]
    assert [e.retryable for e in final] == [False] * len(final)


def test_a_lost_claim_names_the_winner_only_when_there_is_one() -> None:
    taken = ClaimLost(
        "ns/a",
        claim_token="c1",
        current_state="in_flight",
        current_owner="w2",
        current_claim_token="c2",
    )
    assert str(taken) == "claim c1 on ns/a lost: row is in_flight, owned by w2"
    gone = ClaimLost(
        "ns/a", claim_token="c1", current_state=None, current_owner=None, current_claim_token=None
    )
    assert str(gone) == "claim c1 on ns/a lost: row is None"


def test_a_failed_extra_item_adds_the_message_only_when_there_is_one() -> None:
    failed = ExtraConditionFailed(1, "ConditionalCheckFailed", message="fence moved")
    assert str(failed) == "extra transaction item 1 failed: ConditionalCheckFailed (fence moved)"
    assert failed.code == "ConditionalCheckFailed"
    bare = ExtraConditionFailed(0, "TransactionConflict")
    assert str(bare) == "extra transaction item 0 failed: TransactionConflict"


# ------------------------------------------------------------------------------ row records


@pytest.mark.parametrize(
    "record", [_row(), UnreadableRow(key=KEY, problem="state: missing")], ids=["row", "unreadable"]
)
def test_row_records_are_immutable_and_built_from_keywords_only(record: Any) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.key = AgentKey("ns/b")
    fields = [f.name for f in dataclasses.fields(record) if f.default is dataclasses.MISSING]
    with pytest.raises(TypeError):
        type(record)(*[getattr(record, name) for name in fields])


def test_an_unreadable_row_shows_the_operator_view_of_a_row_as_corrupt_and_clean() -> None:
    view = UnreadableRow(key=KEY, problem="state: missing", generation=3).as_json()
    assert set(view) == set(_row().as_json())
    assert (view["state"], view["generation"], view["dirty"]) == ("corrupt", 3, False)
    assert view["last_error"] == "CorruptRow: state: missing"


def test_a_row_read_back_equals_the_row_written_whatever_shard_indexes_it() -> None:
    store = MemoryStore(shards=4)
    written = _row(version=1)
    store.write(written, expected_version=None)
    back = store.get(KEY)
    assert back is not None
    assert (written.shard, back.shard) == (None, ready_shard_of(KEY, 4))
    assert back == written


def test_a_stored_trace_context_is_accepted_up_to_eight_entries() -> None:
    eight = to_item(_row(trace_context={f"k{i}": "v" for i in range(8)}), shards=4)
    assert from_item(eight).trace_context == {f"k{i}": "v" for i in range(8)}
    nine = to_item(_row(trace_context={f"k{i}": "v" for i in range(9)}), shards=4)
    with pytest.raises(CorruptRow, match="trace_context: expected a map of at most 8 strings"):
        from_item(nine)


def test_claimability_is_judged_by_the_state_and_that_states_own_deadline() -> None:
    ready = _row(ready_at=100.0)
    assert [ready.claimable(t) for t in (99.999, 100.0, 100.001)] == [False, True, True]
    # In flight: the claim deadline decides, not ready_at (a decoded row may disagree).
    flying = _flying(claim_deadline=130.0, ready_at=0.0)
    assert [flying.claimable(t) for t in (129.999, 130.0, 130.001)] == [False, True, True]
    assert not _flying(claim_deadline=None, ready_at=0.0).claimable(1e12)
    # Done and parked rows are never claimable, whatever times a stored item carries.
    for state in (State.DONE, State.PARKED):
        assert not _row(state, ready_at=0.0, claim_deadline=0.0).claimable(1e12)


# --------------------------------------------------------------------------------- clip_text


def test_a_text_within_its_budget_is_kept_whole() -> None:
    assert clip_text("x" * 32, 32) == "x" * 32
    assert clip_text("short", 32) == "short"


def _longest_fit(text: str, budget: int) -> str:
    """Reference: the longest prefix of ``text`` (whole characters) that fits with the marker
    naming the bytes it leaves out."""
    size = len(text.encode())
    fits = ""
    for i in range(len(text) + 1):
        kept = text[:i]
        candidate = kept + rows.CLIP_MARKER.format(n=size - len(kept.encode()))
        if len(candidate.encode()) <= budget:
            fits = candidate
    return fits


def test_a_cut_text_keeps_the_longest_prefix_whose_marker_names_the_bytes_removed() -> None:
    # The marker's length depends on the count it names (one more digit past 9, 99, ...), and a
    # cut never splits a character: the count must settle on the bytes really removed, and no
    # more is removed than the marker needs.
    for text in ("x" * 150, "é" * 75, "a𝄞" * 60, "𝄞" * 40):
        for budget in range(24, 130):
            if len(text.encode()) > budget:
                assert clip_text(text, budget) == _longest_fit(text, budget), (text[:2], budget)


def test_a_budget_smaller_than_the_marker_keeps_nothing_but_the_marker_cut_to_size() -> None:
    assert clip_text("x" * 100, 10) == " [... 100 "
    assert clip_text("x" * 100, 0) == ""


# ----------------------------------------------------------------------------- shard, backoff


def test_the_ready_shard_of_a_key_is_pinned_by_its_sha256() -> None:
    # Stored in every indexed item (``ready_shard``): the first 8 digest bytes, big-endian,
    # modulo the shard count (with 256 shards, digest byte 7). Pinned so that it never drifts.
    keys = [f"ns/agent-{i}" for i in range(6)]
    assert [ready_shard_of(k, 256) for k in keys] == [87, 56, 149, 53, 87, 236]
    assert [ready_shard_of(k, 7) for k in keys] == [5, 5, 6, 1, 6, 2]


def test_attempts_below_one_back_off_as_the_first_attempt() -> None:
    # Stored attempts are untrusted: a decoded in-flight row may say 0.
    assert backoff_delay(0, base=2.0, cap=100.0, jitter=1.0) == 2.0
    assert backoff_delay(1, base=2.0, cap=100.0, jitter=1.0) == 2.0


def test_backoff_doubles_per_attempt_up_to_attempt_63_when_the_cap_is_out_of_reach() -> None:
    # The overflow guard clamps the exponent only past the formula's 2**62 (attempt 63).
    assert backoff_delay(63, base=1.0, cap=1e300, jitter=1.0) == 2.0**62
    # and from attempt 64 on it stays at 2**62, however many attempts a row claims.
    assert backoff_delay(64, base=1.0, cap=1e300, jitter=1.0) == 2.0**62
    assert backoff_delay(2**53, base=1.0, cap=1e300, jitter=1.0) == 2.0**62


# ----------------------------------------------------------------------------- claim checks


_NOT_OURS = [
    pytest.param(None, id="missing"),
    pytest.param(_flying(claim_token=ClaimToken("a-other")), id="another-claim-before"),
    pytest.param(_flying(claim_token=ClaimToken("z-other")), id="another-claim-after"),
    # Rows the queue never writes (it clears the token out of flight) but a decoder accepts.
    pytest.param(_row(State.READY, claim_token=TOKEN), id="ready-with-our-token"),
    pytest.param(_row(State.DONE, claim_token=TOKEN, ready_at=None), id="done-with-our-token"),
    pytest.param(_row(State.PARKED, claim_token=TOKEN, ready_at=None), id="parked-with-our-token"),
]


def _finish_all(row: Row | None) -> list[Row]:
    return [
        rows.heartbeat(row, key=KEY, claim_token=TOKEN, now=120.0, visibility_timeout=30.0),
        rows.complete(row, key=KEY, claim_token=TOKEN, now=120.0, requeue_after=None),
        rows.fail(
            row,
            key=KEY,
            claim_token=TOKEN,
            now=120.0,
            error="boom",
            retryable=True,
            backoff_base=1.0,
            backoff_cap=8.0,
            jitter=0.5,
        ),
        rows.release(row, key=KEY, claim_token=TOKEN, now=120.0),
    ]


def test_the_holder_of_the_in_flight_claim_may_write() -> None:
    # A token read back from the table is another string object: compared by value.
    assert len(_finish_all(_flying(claim_token=ClaimToken("".join(TOKEN))))) == 4


@pytest.mark.parametrize("row", _NOT_OURS)
def test_nobody_else_may_write_and_the_refusal_names_the_row_as_found(row: Row | None) -> None:
    writes = [
        lambda: rows.heartbeat(row, key=KEY, claim_token=TOKEN, now=1.0, visibility_timeout=30.0),
        lambda: rows.complete(row, key=KEY, claim_token=TOKEN, now=1.0, requeue_after=None),
        lambda: rows.release(row, key=KEY, claim_token=TOKEN, now=1.0),
    ]
    found = (row.state.value, row.owner, row.claim_token) if row else (None, None, None)
    for write in writes:
        with pytest.raises(ClaimLost) as lost:
            write()
        e = lost.value
        assert (e.key, e.claim_token) == (KEY, TOKEN)
        assert (e.current_state, e.current_owner, e.current_claim_token) == found


def test_a_release_gives_back_exactly_the_attempt_it_took() -> None:
    back = rows.release(_flying(attempts=3, dirty=True), key=KEY, claim_token=TOKEN, now=120.0)
    assert (back.state, back.attempts, back.ready_at, back.dirty) == (State.READY, 2, 120.0, False)


def test_a_release_never_writes_a_negative_attempt_count() -> None:
    # A decoded in-flight row may say 0 attempts (the decoder does not tie the count to the
    # claim); -1 would make the row unreadable, as the decoder refuses negative counts.
    back = rows.release(_flying(attempts=0), key=KEY, claim_token=TOKEN, now=120.0)
    assert back.attempts == 0
    assert from_item(to_item(back, shards=4)).attempts == 0


# --------------------------------------------------------------------------------- enqueue


def test_an_enqueue_of_the_same_large_generation_is_not_a_newer_spec() -> None:
    # Generations read back from DynamoDB are new int objects: compared by value, not identity.
    waiting = _row(generation=_version(1000), attempts=3, ready_at=200.0)
    outcome, new = rows.enqueue(
        waiting,
        key=KEY,
        generation=_version(1000),
        token=IdempotencyToken("t2"),
        reason="resync",
        trace_context=None,
        now=150.0,
    )
    assert outcome is rows.EnqueueOutcome.COALESCED
    assert new is not None
    assert (new.attempts, new.ready_at, new.token) == (3, 200.0, "t2")


def test_an_enqueue_keeps_the_pending_trace_unless_it_brings_its_own() -> None:
    waiting = _row(trace_context={"traceparent": "old"})
    new_trace = {"traceparent": "new"}
    for trace, want in ((None, {"traceparent": "old"}), (new_trace, new_trace)):
        _, new = rows.enqueue(
            waiting,
            key=KEY,
            generation=2,
            token=IdempotencyToken(f"t-{trace}"),
            reason="spec",
            trace_context=trace,
            now=150.0,
        )
        assert new is not None
        assert new.trace_context == want


# ------------------------------------------------------------ observer transitions (version)


def test_expire_gives_back_only_the_observed_version_of_an_in_flight_row() -> None:
    seen = _version(1000)
    for row in (
        None,
        _row(State.READY, version=seen),
        _row(State.DONE, version=seen, ready_at=None),
        _row(State.PARKED, version=seen, ready_at=None),
        _flying(version=_version(999)),
        _flying(version=_version(1001)),
    ):
        assert rows.expire(row, key=KEY, version=seen, now=150.0) is None, row
    back = rows.expire(
        _flying(version=_version(1000), dirty=True), key=KEY, version=seen, now=150.0
    )
    assert back is not None
    assert (back.state, back.ready_at, back.dirty, back.attempts) == (State.READY, 150.0, False, 1)
    assert (back.owner, back.claim_token, back.claim_deadline) == (None, None, None)


def test_pull_in_and_reshard_touch_only_the_observed_version_of_a_waiting_row() -> None:
    seen = _version(1000)
    for row in (
        None,
        _flying(version=seen),
        _row(State.DONE, version=seen, ready_at=None),
        _row(State.PARKED, version=seen, ready_at=None),
        _row(State.READY, version=_version(999)),
        _row(State.READY, version=_version(1001)),
    ):
        assert rows.pull_in(row, key=KEY, version=seen, now=50.0) is None, row
        assert rows.reshard(row, key=KEY, version=seen) is None, row
    waiting = _row(State.READY, version=_version(1000), ready_at=100.0)
    assert rows.pull_in(waiting, key=KEY, version=seen, now=50.0) == replace(waiting, ready_at=50.0)
    assert rows.reshard(waiting, key=KEY, version=seen) is waiting


# ------------------------------------------------------------------------------------ park


def test_park_of_a_missing_row_makes_a_parked_row_of_generation_zero() -> None:
    parked = rows.park(None, key=KEY, error="status unreadable", now=1.0)
    assert parked is not None
    assert (parked.state, parked.generation, parked.last_error) == (
        State.PARKED,
        0,
        "status unreadable",
    )


def test_park_rewrites_any_row_but_an_in_flight_one_or_the_same_parked_finding() -> None:
    error = "m-status unreadable"
    assert rows.park(_flying(), key=KEY, error=error, now=1.0) is None
    # The finding read back from the table is another string object: compared by value.
    same = _row(State.PARKED, last_error="".join(error), ready_at=None)
    assert rows.park(same, key=KEY, error=error, now=1.0) is None
    for row in (
        _row(State.READY, last_error=error, dirty=True),  # a waiting row that failed the same way
        _row(State.DONE, last_error=error, ready_at=None),
        _row(State.PARKED, last_error="a-other finding", ready_at=None),
        _row(State.PARKED, last_error="z-other finding", ready_at=None),
    ):
        parked = rows.park(row, key=KEY, error=error, now=1.0)
        assert parked is not None, row
        assert (parked.state, parked.last_error, parked.ready_at, parked.dirty) == (
            State.PARKED,
            error,
            None,
            False,
        )
