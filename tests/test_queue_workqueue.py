"""Work-queue semantics on a fake clock over the in-memory store (same encoding as DynamoDB)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from oab.queue.config import QueueConfig
from oab.queue.errors import (
    ClaimLost,
    ExtraConditionFailed,
    InvalidQueueConfig,
    KeyNotFound,
    NotRetryable,
)
from oab.queue.metrics import QueueMetrics
from oab.queue.row import AgentKey, EnqueueOutcome, Row, State, backoff_delay, ready_shard_of
from oab.queue.store import MemoryStore, RowConflict, TransactItem
from oab.queue.testing import FakeClock, SequentialIds
from oab.queue.workqueue import WorkQueue, idempotency_token

VIS = 30.0


def make(
    *, store: Any = None, clock: FakeClock | None = None, seed: int = 7, **cfg: Any
) -> tuple[WorkQueue, FakeClock, Any]:
    clock = clock or FakeClock()
    config = QueueConfig(visibility_timeout=VIS, backoff_base=2.0, backoff_cap=60.0, **cfg)
    store = store or MemoryStore(shards=config.shards)
    q = WorkQueue(
        None,
        "unused",
        config=config,
        clock=clock,
        new_id=SequentialIds("id"),
        rng=random.Random(seed),
        store=store,
    )
    return q, clock, store


def tok(key: str, gen: int, reason: str = "spec") -> str:
    return idempotency_token(key, gen, "digest", reason)


def test_idempotency_token_is_deterministic_hex_and_covers_every_field() -> None:
    t = idempotency_token("ns/a", 3, "d1", "spec")
    assert t == idempotency_token("ns/a", 3, "d1", "spec")
    assert len(t) == 32
    int(t, 16)
    others = {
        idempotency_token("ns/b", 3, "d1", "spec"),
        idempotency_token("ns/a", 4, "d1", "spec"),
        idempotency_token("ns/a", 3, "d2", "spec"),
        idempotency_token("ns/a", 3, "d1", "resync"),
    }
    assert t not in others
    assert len(others) == 4


def test_enqueue_then_claim_hands_over_generation_token_reason_and_trace() -> None:
    q, _, _ = make()
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    res = q.enqueue("ns/a", 1, "spec", tok("ns/a", 1), trace_context=tp)
    assert res.outcome is EnqueueOutcome.ADDED
    assert res.token == tok("ns/a", 1)
    claim = q.claim("w1")
    assert claim is not None
    assert (claim.key, claim.generation, claim.token, claim.reason) == (
        "ns/a",
        1,
        tok("ns/a", 1),
        "spec",
    )
    assert claim.attempt == 1
    assert claim.trace_context == {"traceparent": tp}
    assert claim.deadline == pytest.approx(1_800_000_000.0 + VIS)
    assert q.claim("w2") is None  # never two live claims on one key


def test_same_token_again_writes_nothing() -> None:
    q, _, store = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    writes = store.requests["write"]
    again = q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    assert again.outcome is EnqueueOutcome.DUPLICATE
    assert store.requests["write"] == writes + 1  # the optimistic create, refused; no update
    assert q.get("ns/a").version == 1


def test_adds_while_waiting_coalesce_and_newest_generation_wins() -> None:
    q, _, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    assert q.enqueue("ns/a", 2, "spec", tok("ns/a", 2)).outcome is EnqueueOutcome.COALESCED
    assert q.enqueue("ns/a", 1, "late", tok("ns/a", 1, "late")).outcome is (
        EnqueueOutcome.SUPERSEDED
    )
    claim = q.claim("w1")
    assert claim is not None
    assert (claim.generation, claim.token) == (2, tok("ns/a", 2))
    q.complete(claim)
    assert q.claim("w1") is None
    assert q.get("ns/a").state is State.DONE


def test_add_while_in_flight_dirties_and_runs_once_more_with_newest_generation() -> None:
    q, _, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    first = q.claim("w1")
    assert first is not None
    assert q.enqueue("ns/a", 2, "spec", tok("ns/a", 2)).outcome is EnqueueOutcome.DIRTIED
    assert q.enqueue("ns/a", 3, "spec", tok("ns/a", 3)).outcome is EnqueueOutcome.COALESCED
    assert q.claim("w2") is None  # still in flight
    after = q.complete(first)
    assert after.state is State.READY
    assert after.completed_generation == 1
    second = q.claim("w2")
    assert second is not None
    assert second.generation == 3
    assert second.attempt == 1
    assert q.complete(second).state is State.DONE
    assert q.get("ns/a").completed_generation == 3


def test_done_row_is_added_again_by_a_new_token() -> None:
    q, _, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w")
    assert c is not None
    q.complete(c)
    assert q.enqueue("ns/a", 1, "resync", tok("ns/a", 1, "resync")).outcome is EnqueueOutcome.ADDED
    again = q.claim("w")
    assert again is not None
    assert again.reason == "resync"


def test_expired_claim_is_taken_over_and_the_stale_worker_is_rejected() -> None:
    reader = InMemoryMetricReader()
    metrics = QueueMetrics(MeterProvider(metric_readers=[reader]).get_meter("t"))
    clock = FakeClock()
    q, _, _ = make(clock=clock)
    q.metrics = metrics
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    stale = q.claim("w1")
    assert stale is not None
    clock.advance(VIS - 0.01)
    assert q.claim("w2") is None
    assert not stale.expired(clock.monotonic())
    clock.advance(0.02)
    assert stale.expired(clock.monotonic())
    assert q.claim("w2") is None  # first sight of the expired claim
    clock.advance(VIS)
    fresh = q.claim("w2")
    assert fresh is not None
    assert fresh.took_over == stale.claim_token
    assert fresh.attempt == 2
    assert fresh.sequence > stale.sequence
    for op in (lambda: q.complete(stale), lambda: q.fail(stale, "x", retryable=True)):
        with pytest.raises(ClaimLost) as lost:
            op()
        assert lost.value.current_owner == "w2"
        assert lost.value.current_claim_token == fresh.claim_token
    with pytest.raises(ClaimLost):
        q.heartbeat(stale)
    q.complete(fresh)
    with pytest.raises(ClaimLost) as after_done:
        q.release(stale)
    assert after_done.value.current_state == "done"
    got = _sums(reader)
    assert got["oab.queue.claim_expiries"] == 1
    assert got["oab.queue.claims_lost"] == 4


def _sums(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    out: dict[str, float] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                points = list(m.data.data_points)
                out[m.name] = sum(getattr(p, "value", getattr(p, "count", 0)) for p in points)
    return out


def test_heartbeat_extends_the_claim_past_its_first_deadline() -> None:
    q, clock, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w1")
    assert c is not None
    clock.advance(VIS * 0.8)
    c2 = q.heartbeat(c)
    assert c2.deadline == pytest.approx(c.deadline + VIS * 0.8)
    assert c2.local_deadline == pytest.approx(c.local_deadline + VIS * 0.8)
    clock.advance(VIS * 0.5)  # past the first deadline
    assert q.claim("w2") is None
    q.complete(c2)


def test_retryable_failures_back_off_with_full_jitter_persisted_on_the_row() -> None:
    q, clock, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    ceilings = [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    delays = []
    for attempt, ceiling in enumerate(ceilings, start=1):
        c = q.claim("w")
        assert c is not None
        assert c.attempt == attempt
        row = q.fail(c, f"boom {attempt}", retryable=True)
        assert row.state is State.READY
        assert row.last_error == f"boom {attempt}"
        assert row.ready_at is not None
        delay = row.ready_at - clock.time()
        assert 0.0 <= delay <= ceiling + 0.001
        delays.append(delay)
        if delay > 0.002:
            clock.advance(delay - 0.002)
            assert q.claim("w") is None  # not due before its backoff
        clock.advance(0.003)
    assert len({round(d, 3) for d in delays}) > 1  # jittered, not a fixed schedule
    c = q.claim("w")
    assert c is not None
    done = q.complete(c)
    assert (done.attempts, done.last_error, done.state) == (0, None, State.DONE)


def test_backoff_delay_is_capped_and_scaled_by_jitter() -> None:
    assert backoff_delay(1, base=1.0, cap=10.0, jitter=0.5) == 0.5
    assert backoff_delay(4, base=1.0, cap=10.0, jitter=1.0) == 8.0
    assert backoff_delay(5, base=1.0, cap=10.0, jitter=1.0) == 10.0
    assert backoff_delay(10_000, base=1.0, cap=10.0, jitter=0.25) == 2.5
    assert backoff_delay(1, base=1.0, cap=10.0, jitter=0.0) == 0.0


def test_terminal_failure_parks_until_newer_generation_or_operator_retry() -> None:
    q, _, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w")
    assert c is not None
    parked = q.fail(c, "invalid task definition", retryable=False)
    assert parked.state is State.PARKED
    assert parked.ready_at is None
    assert q.claim("w") is None
    assert q.enqueue("ns/a", 1, "resync", tok("ns/a", 1, "resync")).outcome is (
        EnqueueOutcome.PARKED
    )
    assert q.depth_by_state()["parked"] == 1
    revived = q.retry("ns/a")
    assert (revived.state, revived.attempts) == (State.READY, 0)
    c = q.claim("w")
    assert c is not None
    q.fail(c, "still invalid", retryable=False)
    assert q.enqueue("ns/a", 2, "spec", tok("ns/a", 2)).outcome is EnqueueOutcome.ADDED
    c = q.claim("w")
    assert c is not None
    assert (c.generation, c.attempt) == (2, 1)


def test_operator_retry_refuses_in_flight_and_unknown_rows() -> None:
    q, _, _ = make()
    with pytest.raises(KeyNotFound):
        q.retry("ns/none")
    with pytest.raises(KeyNotFound):
        q.get("ns/none")
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    assert q.claim("w") is not None
    with pytest.raises(NotRetryable):
        q.retry("ns/a")


def test_complete_with_requeue_after_reschedules_without_counting_a_failure() -> None:
    q, clock, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w")
    assert c is not None
    row = q.complete(c, requeue_after=10.0)
    assert (row.state, row.attempts, row.last_error) == (State.READY, 0, None)
    assert q.depth_by_state()["delayed"] == 1
    clock.advance(9.9)
    assert q.claim("w") is None
    clock.advance(0.2)
    again = q.claim("w")
    assert again is not None
    assert again.attempt == 1


def test_release_gives_the_claim_back_without_counting_it() -> None:
    q, _, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w")
    assert c is not None
    assert q.release(c).attempts == 0
    c = q.claim("w2")
    assert c is not None
    assert c.attempt == 1


def test_failure_of_a_dirtied_claim_retries_the_newer_generation_at_once() -> None:
    q, _, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w")
    assert c is not None
    q.enqueue("ns/a", 2, "spec", tok("ns/a", 2))
    row = q.fail(c, "old spec broke", retryable=False)
    assert (row.state, row.attempts) == (State.READY, 0)
    c = q.claim("w")
    assert c is not None
    assert c.generation == 2


def test_newer_generation_cancels_a_pending_backoff() -> None:
    q, clock, _ = make()
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    for _ in range(4):
        c = q.claim("w")
        assert c is not None
        row = q.fail(c, "boom", retryable=True)
        assert row.ready_at is not None
        clock.advance(row.ready_at - clock.time() + 0.01)
    c = q.claim("w")
    assert c is not None
    row = q.fail(c, "boom", retryable=True)
    assert row.ready_at is not None
    if row.ready_at > clock.time() + 0.002:
        assert q.claim("w") is None
    q.enqueue("ns/a", 2, "spec", tok("ns/a", 2))
    c = q.claim("w")
    assert c is not None
    assert (c.generation, c.attempt) == (2, 1)


class _LostResponseStore(MemoryStore):
    """Applies the first write, then reports a conflict carrying our own row: what a botocore
    retry of a write whose response was lost would see."""

    def __init__(self) -> None:
        super().__init__(shards=4)
        self.lost_once = False

    def write(
        self, row: Row, *, expected_version: int | None, extra_items: Sequence[TransactItem] = ()
    ) -> None:
        super().write(row, expected_version=expected_version, extra_items=extra_items)
        if not self.lost_once and row.state is State.DONE:
            self.lost_once = True
            raise RowConflict(self.get(row.key))


def test_a_write_whose_response_was_lost_is_recognised_as_ours() -> None:
    store = _LostResponseStore()
    q, _, _ = make(store=store)
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w")
    assert c is not None
    row = q.complete(c)  # no ClaimLost, no second write
    assert store.lost_once
    assert row.state is State.DONE
    assert q.get("ns/a").version == row.version


def test_failed_extra_item_writes_nothing_and_names_the_item() -> None:
    fenced = {"deposed": False}

    def check(index: int, item: TransactItem) -> str | None:
        if index == 1 and fenced["deposed"]:
            return "ConditionalCheckFailed"
        return None

    q, _, _ = make(store=MemoryStore(shards=4, extra_check=check))
    audit = {"Put": {"TableName": "audit", "Item": {}}}
    fence = {"ConditionCheck": {"TableName": "lease", "Key": {}}}
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1), extra_condition=fence)
    c = q.claim("w")
    assert c is not None
    fenced["deposed"] = True
    with pytest.raises(ExtraConditionFailed) as failed:
        q.complete(c, extra_items=[audit, fence])
    assert failed.value.index == 1
    assert q.get("ns/a").state is State.IN_FLIGHT
    fenced["deposed"] = False
    assert q.complete(c, extra_items=[audit, fence]).state is State.DONE


def test_list_rows_and_depth_by_state_show_the_operator_view() -> None:
    q, clock, _ = make()
    for i in range(5):
        q.enqueue(f"ns/a{i}", 1, "spec", tok(f"ns/a{i}", 1))
    c = q.claim("w")
    assert c is not None
    clock.advance(3.0)
    depth = q.depth_by_state()
    assert depth == {"ready": 4, "delayed": 0, "in_flight": 1, "done": 0, "parked": 0, "corrupt": 0}
    listed = q.list_rows()
    assert [r.key for r in listed] == sorted(f"ns/a{i}" for i in range(5))
    view = next(r for r in listed if r.key == c.key).as_json()
    assert view["state"] == "in_flight"
    assert view["owner"] == "w"
    assert set(view) >= {"key", "state", "generation", "token", "attempts", "ready_at"}
    assert set(view) >= {"owner", "last_error"}


def test_keys_spread_over_the_configured_shards() -> None:
    counts = [0] * 8
    for i in range(800):
        counts[ready_shard_of(f"ns/agent-{i}", 8)] += 1
    assert min(counts) > 60
    assert ready_shard_of("ns/x", 8) == ready_shard_of("ns/x", 8)


@pytest.mark.parametrize(
    "bad",
    [
        {"shards": 0},
        {"visibility_timeout": 0},
        {"backoff_base": -1},
        {"backoff_base": 10, "backoff_cap": 5},
        {"claim_scan": 0},
        {"max_conflict_retries": 0},
    ],
)
def test_config_rejects_out_of_range_values(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidQueueConfig):
        QueueConfig(**bad)


def test_long_errors_are_cut_to_the_configured_length_in_bytes_with_a_marker() -> None:
    q, clock, _ = make(max_error_length=32)
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    c = q.claim("w")
    assert c is not None
    row = q.fail(c, "x" * 500, retryable=True)
    assert row.last_error == "xxxxxxxxxxxx [... 488 bytes cut]"
    assert AgentKey("ns/a") == row.key
    clock.advance(120.0)  # past the backoff cap
    c = q.claim("w")
    assert c is not None
    # Multi-byte characters count as bytes and are never split; lone surrogates are replaced.
    row = q.fail(c, "\ud800" + "é" * 100, retryable=True)
    assert row.last_error is not None
    assert len(row.last_error.encode()) <= 32
    assert row.last_error.startswith("?é")


def test_a_host_whose_clock_runs_ahead_cannot_take_a_live_claim_over() -> None:
    owner_clock = FakeClock()
    # The other host's wall clock is 10 minutes ahead; monotonic clocks run at the same rate.
    ahead = FakeClock(wall=owner_clock.time() + 600)
    store = MemoryStore(shards=1)
    config = QueueConfig(shards=1, visibility_timeout=VIS)
    owner_q = WorkQueue(None, "t", config=config, clock=owner_clock, store=store)
    ahead_q = WorkQueue(None, "t", config=config, clock=ahead, store=store)
    owner_q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    claim = owner_q.claim("w1")
    assert claim is not None
    for _ in range(10):  # the owner heartbeats every VIS/3; the fast host keeps looking
        assert ahead_q.claim("w2") is None
        for c in (owner_clock, ahead):
            c.advance(VIS / 3)
        claim = owner_q.heartbeat(claim)
    owner_q.complete(claim)
    assert owner_q.get("ns/a").state.value == "done"


def test_a_crashed_claim_is_taken_over_after_a_visibility_timeout_of_silence() -> None:
    clock = FakeClock()
    store = MemoryStore(shards=1)
    config = QueueConfig(shards=1, visibility_timeout=VIS)
    q1 = WorkQueue(None, "t", config=config, clock=clock, store=store)
    q2 = WorkQueue(None, "t", config=config, clock=clock, store=store)
    q1.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    assert q1.claim("w1") is not None  # then the worker crashes: no more heartbeats
    clock.advance(VIS + 1)
    assert q2.claim("w2") is None  # deadline passed, first observation
    clock.advance(VIS - 1)
    assert q2.claim("w2") is None  # not silent for a whole visibility timeout yet
    clock.advance(1)
    taken = q2.claim("w2")
    assert taken is not None
    assert taken.took_over is not None


def test_takeover_observation_can_be_turned_off() -> None:
    clock = FakeClock()
    store = MemoryStore(shards=1)
    config = QueueConfig(shards=1, visibility_timeout=VIS, observe_takeover=False)
    q = WorkQueue(None, "t", config=config, clock=clock, store=store)
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    assert q.claim("w1") is not None
    clock.advance(VIS + 0.01)
    assert q.claim("w2") is not None


def test_work_ready_at_once_is_claimable_by_a_host_whose_clock_lags() -> None:
    writer = FakeClock()
    behind = FakeClock(wall=writer.time() - 600)  # this host's wall clock is 10 minutes late
    store = MemoryStore(shards=1)
    strict = QueueConfig(shards=1, visibility_timeout=VIS)
    tolerant = QueueConfig(shards=1, visibility_timeout=VIS, clock_skew_allowance=900)
    WorkQueue(None, "t", config=strict, clock=writer, store=store).enqueue(
        "ns/a", 1, "spec", tok("ns/a", 1)
    )
    assert WorkQueue(None, "t", config=strict, clock=behind, store=store).claim("w") is None
    WorkQueue(None, "t", config=tolerant, clock=writer, store=store).enqueue(
        "ns/b", 1, "spec", tok("ns/b", 1)
    )
    got = WorkQueue(None, "t", config=tolerant, clock=behind, store=store).claim("w")
    assert got is not None
    assert got.key == "ns/b"


def test_skew_allowance_does_not_shorten_backoff() -> None:
    clock = FakeClock()
    store = MemoryStore(shards=1)
    config = QueueConfig(
        shards=1,
        visibility_timeout=VIS,
        backoff_base=50.0,
        backoff_cap=50.0,
        clock_skew_allowance=900,
    )
    q = WorkQueue(None, "t", config=config, clock=clock, store=store, rng=random.Random(1))
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    claim = q.claim("w1")
    assert claim is not None
    row = q.fail(claim, "boom", retryable=True)
    assert row.ready_at is not None
    assert row.ready_at >= clock.time()  # the delay is measured from now, not shifted back


def test_the_claims_of_a_dead_fast_clock_worker_are_given_back_by_an_observer() -> None:
    normal = FakeClock()
    fast = FakeClock(wall=normal.time() + 600)  # stores deadlines 10 minutes in our future
    store = MemoryStore(shards=1)
    config = QueueConfig(shards=1, visibility_timeout=VIS, clock_skew_allowance=900)
    fast_q = WorkQueue(None, "t", config=config, clock=fast, store=store)
    normal_q = WorkQueue(None, "t", config=config, clock=normal, store=store)
    fast_q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    assert fast_q.claim("w-fast") is not None  # ... and the fast worker dies
    assert normal_q.expire_stale_claims() == []  # first sight
    normal.advance(VIS / 2)
    fast.advance(VIS / 2)
    assert normal_q.expire_stale_claims() == []  # not silent for a whole timeout yet
    assert normal_q.claim("w") is None  # its stored deadline is still in our future
    normal.advance(VIS / 2)
    assert normal_q.expire_stale_claims() == ["ns/a"]
    taken = normal_q.claim("w")
    assert taken is not None
    assert taken.attempt == 2  # the dead worker's attempt stays counted


def test_a_heartbeating_claim_is_never_given_back() -> None:
    clock = FakeClock()
    store = MemoryStore(shards=1)
    config = QueueConfig(shards=1, visibility_timeout=VIS)
    q = WorkQueue(None, "t", config=config, clock=clock, store=store)
    observer = WorkQueue(None, "t", config=config, clock=clock, store=store)
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    claim = q.claim("w1")
    assert claim is not None
    for _ in range(6):
        assert observer.expire_stale_claims() == []
        clock.advance(VIS / 3)
        claim = q.heartbeat(claim)
    q.complete(claim)


def test_expiring_with_a_failed_fence_writes_nothing() -> None:
    clock = FakeClock()
    fenced = MemoryStore(shards=1, extra_check=lambda _i, _item: "ConditionalCheckFailed")
    config = QueueConfig(shards=1, visibility_timeout=VIS)
    q = WorkQueue(None, "t", config=config, clock=clock, store=fenced)
    q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    assert q.claim("w1") is not None
    q.expire_stale_claims(extra_condition={"ConditionCheck": {}})
    clock.advance(VIS)
    with pytest.raises(ExtraConditionFailed):
        q.expire_stale_claims(extra_condition={"ConditionCheck": {}})
    assert q.get("ns/a").state is State.IN_FLIGHT


def test_a_requeue_written_by_a_fast_clock_host_is_pulled_in_by_an_observer() -> None:
    normal = FakeClock()
    fast = FakeClock(wall=normal.time() + 600)
    store = MemoryStore(shards=1)
    config = QueueConfig(
        shards=1, visibility_timeout=VIS, backoff_cap=60.0, clock_skew_allowance=900
    )
    fast_q = WorkQueue(None, "t", config=config, clock=fast, store=store)
    normal_q = WorkQueue(None, "t", config=config, clock=normal, store=store)
    fast_q.enqueue("ns/a", 1, "spec", tok("ns/a", 1))
    fast_q.enqueue("ns/b", 1, "spec", tok("ns/b", 1))
    claim = fast_q.claim("w-fast")
    assert claim is not None
    fast_q.complete(claim, requeue_after=2.0)  # due in 2 s on the fast clock: 602 s for us
    assert normal_q.claim("w") is not None  # the other row was enqueued due at once
    assert normal_q.claim("w") is None
    assert normal_q.expire_stale_claims() == [claim.key]
    assert normal_q.claim("w") is not None
    # An ordinary backoff within the cap is left alone.
    normal_q.enqueue("ns/c", 1, "spec", tok("ns/c", 1))
    c = normal_q.claim("w")
    assert c is not None
    normal_q.fail(c, "x", retryable=True)
    assert normal_q.expire_stale_claims() == []
