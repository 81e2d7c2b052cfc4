"""Unit tests of the elector on a fake clock and the in-memory store (every election path)."""

from __future__ import annotations

import logging
import threading
from typing import NoReturn

import pytest

from oab.leader.config import ElectionConfig
from oab.leader.elector import EXIT_STUCK, LeaderElector, NotLeader
from oab.leader.errors import LeaseLost
from oab.leader.record import (
    MAX_LEASE_DURATION_MS,
    Epoch,
    LeaseRecord,
    ReplicaId,
    Revision,
    StoredLease,
    UnreadableLease,
)
from oab.leader.testing import FakeClock, Fault, MemoryLeaseStore, SequentialIds, wait_until

LEASE = 6.0
DEADLINE = 4.0
RETRY = 1.0


class Exited(Exception):
    """Raised by the fake ``os._exit``."""


def fake_exit(code: int) -> NoReturn:
    raise Exited(code)


class Replica:
    """An elector plus everything its callbacks saw."""

    def __init__(
        self,
        name: str,
        store: MemoryLeaseStore,
        clock: FakeClock,
        *,
        work: object = None,
    ) -> None:
        self.started: list[Epoch] = []
        self.stops: list[threading.Event] = []
        self.stopped = 0
        self.leaders: list[str] = []
        self.drained = threading.Event()
        self.elector = LeaderElector(
            ElectionConfig(
                identity=ReplicaId(name),
                lease_duration=LEASE,
                renew_deadline=DEADLINE,
                retry_period=RETRY,
                watchdog=False,
            ),
            store,
            on_started_leading=self._started,
            on_stopped_leading=self._stopped,
            on_new_leader=self.leaders.append,
            clock=clock,
            new_revision=SequentialIds(f"{name}-rev"),
            exit_process=fake_exit,
        )

    def _started(self, epoch: Epoch, stop: threading.Event) -> None:
        self.started.append(epoch)
        self.stops.append(stop)
        stop.wait(10)
        self.drained.set()

    def _stopped(self) -> None:
        self.stopped += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryLeaseStore:
    return MemoryLeaseStore("controller")


def held_by(store: MemoryLeaseStore, holder: str, *, epoch: int = 3, rev: str = "r0") -> None:
    store.record = LeaseRecord(
        name="controller",
        holder=ReplicaId(holder),
        epoch=Epoch(epoch),
        revision=Revision(rev),
        lease_duration_ms=int(LEASE * 1000),
        transitions=epoch,
        acquired_at=1.0,
        renewed_at=1.0,
    )


def renew_as(store: MemoryLeaseStore, rev: str) -> None:
    """Another replica's renewal: same holder and epoch, new revision."""
    assert store.record is not None
    store.record = LeaseRecord(**{**store.record.__dict__, "revision": Revision(rev)})


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"identity": ReplicaId("")}, "identity"),
        ({"lease_duration": 4.0, "renew_deadline": 4.0}, "lease_duration"),
        ({"renew_deadline": 1.2, "retry_period": 1.0}, "1.2"),
        ({"retry_period": 0.0}, "> 0"),
        ({"call_timeout": 2.5}, "call_timeout"),
    ],
)
def test_config_rejects_unsafe_timings(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"identity": ReplicaId("a")}
    with pytest.raises(ValueError, match=message):
        ElectionConfig(**{**base, **kwargs})  # type: ignore[arg-type]


def test_config_defaults_and_lease_client_config() -> None:
    config = ElectionConfig(identity=ReplicaId("a"))
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (6.0, 4.0, 1.0)
    assert config.crash_failover_bound == 8.0
    boto = config.botocore_config()
    assert boto.connect_timeout <= config.renew_deadline / 2
    assert boto.read_timeout <= config.renew_deadline / 2
    assert boto.retries == {"mode": "standard", "total_max_attempts": 1}


# ----------------------------------------------------------------------------- acquire


def test_empty_lease_is_acquired_at_once_with_epoch_1(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    assert a.elector.is_leader
    assert a.elector.epoch == 1
    assert store.record is not None
    assert (store.record.holder, store.record.epoch, store.record.transitions) == ("a", 1, 1)
    assert store.record.lease_duration_ms == 6000
    wait_until(lambda: a.started == [1], timeout=5, message="on_started_leading")
    assert a.leaders == ["a"]
    fence = a.elector.fence()
    assert (fence.holder, fence.epoch, fence.table) == ("a", 1, "memory-lease")


def test_held_lease_is_taken_only_after_its_revision_is_unchanged_for_a_lease_duration(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    held_by(store, "other", epoch=3)
    b = Replica("b", store, clock)
    wait = b.elector.step()
    assert not b.elector.is_leader
    assert wait == RETRY
    assert b.leaders == ["other"]
    clock.advance(LEASE - 0.01)
    b.elector.step()
    assert not b.elector.is_leader
    clock.advance(0.01)
    b.elector.step()
    assert b.elector.is_leader
    assert store.record is not None
    assert (store.record.holder, store.record.epoch, store.record.transitions) == ("b", 4, 4)


def test_renewals_by_the_holder_keep_a_standby_waiting(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    held_by(store, "other")
    b = Replica("b", store, clock)
    for i in range(20):
        b.elector.step()
        clock.advance(RETRY)
        renew_as(store, f"r{i + 1}")
    b.elector.step()
    assert not b.elector.is_leader
    assert store.record is not None
    assert store.record.holder == "other"


def test_standby_uses_the_stored_lease_duration(store: MemoryLeaseStore, clock: FakeClock) -> None:
    held_by(store, "other")
    assert store.record is not None
    store.record = LeaseRecord(**{**store.record.__dict__, "lease_duration_ms": 20_000})
    b = Replica("b", store, clock)
    b.elector.step()
    clock.advance(LEASE + 1)
    b.elector.step()
    assert not b.elector.is_leader
    clock.advance(20 - LEASE - 1)
    b.elector.step()
    assert b.elector.is_leader


def test_contested_acquire_has_one_winner(store: MemoryLeaseStore, clock: FakeClock) -> None:
    a = Replica("a", store, clock)
    b = Replica("b", store, clock)

    # b reads the empty lease, then a acquires before b writes.
    seen = store.get()
    a.elector.step()
    with pytest.raises(LeaseLost) as lost:
        store.try_acquire(
            LeaseRecord(
                name="controller",
                holder=ReplicaId("b"),
                epoch=Epoch(1),
                revision=Revision("b-x"),
                lease_duration_ms=6000,
                transitions=1,
                acquired_at=0,
                renewed_at=0,
            ),
            expected=seen,
        )
    assert lost.value.current is not None
    assert lost.value.current.holder == "a"
    b.elector.step()
    assert a.elector.is_leader
    assert not b.elector.is_leader
    assert store.record is not None
    assert store.record.epoch == 1


def test_contested_acquire_through_the_elector(store: MemoryLeaseStore, clock: FakeClock) -> None:
    held_by(store, "old")
    a = Replica("a", store, clock)
    b = Replica("b", store, clock)
    a.elector.step()
    b.elector.step()
    clock.advance(LEASE)
    a.elector.step()  # a takes the expired lease first
    b.elector.step()  # b now sees a's fresh revision
    assert a.elector.is_leader
    assert not b.elector.is_leader
    assert store.record is not None
    assert store.record.epoch == 4
    clock.advance(RETRY)
    a.elector.step()
    b.elector.step()
    assert a.elector.is_leader
    assert not b.elector.is_leader
    assert b.leaders == ["old", "a"]


# ----------------------------------------------------------------------------- renew


def test_leader_renews_every_retry_period_with_same_epoch(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    revisions = set()
    for _ in range(30):
        wait = a.elector.step()
        assert wait == pytest.approx(RETRY)
        assert store.record is not None
        revisions.add(store.record.revision)
        clock.advance(wait)
    assert len(revisions) == 30
    assert store.record is not None
    assert store.record.epoch == 1
    assert a.elector.is_leader
    assert a.stopped == 0


def test_renew_deadline_step_down_happens_before_anyone_can_acquire(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    b = Replica("b", store, clock)
    a.elector.step()
    last_renewal_sent = clock.monotonic()
    b.elector.step()  # b sees a's revision right away (the earliest it can)
    wait_until(lambda: a.stops, timeout=5, message="leader work started")
    store.fail_writes(*[Fault.UNAVAILABLE] * 10)
    while clock.monotonic() - last_renewal_sent < DEADLINE - 1e-9:
        clock.advance(a.elector.step() or RETRY)
        assert a.elector.is_leader == (clock.monotonic() - last_renewal_sent < DEADLINE)
        b.elector.step()
        assert not b.elector.is_leader
    a.elector.step()
    assert not a.elector.is_leader
    assert a.stops[0].is_set()
    assert a.stopped == 1
    with pytest.raises(NotLeader):
        a.elector.fence()
    # b may only take over a full lease after it saw the revision: later than a's step-down.
    assert clock.monotonic() - last_renewal_sent < LEASE
    b.elector.step()
    assert not b.elector.is_leader


def test_renew_lost_to_another_writer_steps_down_at_once(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    held_by(store, "intruder", epoch=2, rev="x")
    clock.advance(RETRY)
    a.elector.step()
    assert not a.elector.is_leader
    assert a.stopped == 1
    assert a.leaders == ["a", "intruder"]


def test_step_down_then_reacquire_uses_a_new_epoch(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    store.fail_writes(*[Fault.UNAVAILABLE] * 5)
    while a.elector.is_leader or a.stopped == 0:
        clock.advance(a.elector.step() or 0.5)
    assert a.stopped == 1
    # The store is back and still shows a's own last revision: re-acquire at once, epoch + 1.
    while not a.elector.is_leader:
        a.elector.step()
    assert a.elector.epoch == 2
    wait_until(lambda: a.started == [1, 2], timeout=5, message="second term started")


# ----------------------------------------------------------------------------- ambiguity


def test_renew_that_applied_but_timed_out_is_not_a_loss(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    store.fail_writes(Fault.LOST_REPLY)
    clock.advance(RETRY)
    a.elector.step()
    assert a.elector.is_leader
    assert a.stopped == 0
    assert store.record is not None
    assert store.record.revision == "a-rev-000002"
    clock.advance(RETRY)
    a.elector.step()  # conditional on the revision that landed: succeeds
    assert store.record.revision == "a-rev-000003"
    assert a.elector.is_leader


def test_renew_that_did_not_apply_is_retried_not_taken_for_success(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    sent = clock.monotonic()
    store.fail_writes(*[Fault.NOT_APPLIED] * 10)
    clock.advance(RETRY)
    a.elector.step()
    assert a.elector.is_leader
    assert store.record is not None
    assert store.record.revision == "a-rev-000001"
    # Unapplied writes never extend the deadline: it is still measured from the first send.
    while a.elector.is_leader:
        clock.advance(a.elector.step() or 0.1)
    assert clock.monotonic() - sent == pytest.approx(DEADLINE)


def test_renew_that_lands_late_is_recognised_as_ours(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    store.fail_writes(Fault.DEFERRED)
    clock.advance(RETRY)
    a.elector.step()  # ambiguous; read-back shows the old revision: not applied (yet)
    assert store.deliver_deferred() == 1  # the delayed request lands
    clock.advance(RETRY)
    a.elector.step()  # conditional on the old revision fails, but the winner is our own write
    assert a.elector.is_leader
    assert a.stopped == 0
    clock.advance(RETRY)
    a.elector.step()
    assert a.elector.is_leader
    assert store.record is not None
    assert store.record.holder == "a"
    assert store.record.epoch == 1


def test_acquire_that_applied_but_timed_out_is_leadership(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    store.fail_writes(Fault.LOST_REPLY)
    a.elector.step()
    assert a.elector.is_leader
    assert a.elector.epoch == 1


def test_ambiguous_write_with_failed_read_back_is_not_success(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    store.fail_writes(Fault.LOST_REPLY)
    store.fail_reads(None, Fault.UNAVAILABLE)  # the step's first read works, the read-back fails
    a.elector.step()
    assert store.record is not None
    assert store.record.holder == "a"
    assert not a.elector.is_leader
    # Next step sees its own revision in the store and takes the lease (new epoch) at once.
    a.elector.step()
    assert a.elector.is_leader
    assert a.elector.epoch == 2


def test_ambiguous_acquire_that_lost_is_a_loss(store: MemoryLeaseStore, clock: FakeClock) -> None:
    class Interleaved(MemoryLeaseStore):
        """After a's write is lost in transit, b writes first."""

        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.holder == "a":
                held_by(self, "b", epoch=1, rev="b-1")
                from oab.leader.lease import AmbiguousWrite

                raise AmbiguousWrite("injected")
            super()._put(new, pre)  # type: ignore[arg-type]

    racy = Interleaved("controller")
    a = Replica("a", racy, clock)
    a.elector.step()
    assert not a.elector.is_leader
    assert a.leaders == ["b"]


# ----------------------------------------------------------------------------- release


def test_release_drains_work_then_clears_holder_and_keeps_epoch(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    b = Replica("b", store, clock)
    a.elector.step()
    b.elector.step()
    wait_until(lambda: a.stops, timeout=5, message="leader work started")
    assert a.elector.release(drain_timeout=5)
    assert a.drained.is_set()
    assert a.stopped == 1
    assert store.record is not None
    assert store.record.holder is None
    assert store.record.epoch == 1
    assert not a.elector.is_leader
    b.elector.step()  # no waiting for expiry
    assert b.elector.is_leader
    assert b.elector.epoch == 2
    a.elector.step()  # a released elector never campaigns again
    assert store.record.holder == "b"


def test_release_waits_for_stubborn_work_only_up_to_the_drain_timeout(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    gate = threading.Event()

    def stubborn(_epoch: Epoch, _stop: threading.Event) -> None:
        gate.wait(30)

    elector = LeaderElector(
        ElectionConfig(identity=ReplicaId("a"), watchdog=False),
        store,
        on_started_leading=stubborn,
        clock=clock,
    )
    elector.step()
    assert elector.release(drain_timeout=0.2)
    gate.set()
    assert store.record is not None
    assert store.record.holder is None


def test_release_when_the_store_fails_leaves_expiry_to_standbys(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    store.fail_writes(Fault.UNAVAILABLE)
    assert not a.elector.release(drain_timeout=1)
    assert a.stopped == 1
    assert store.record is not None
    assert store.record.holder == "a"


# ----------------------------------------------------------------------------- watchdog


def test_watchdog_self_fences_at_the_deadline_even_if_the_loop_never_runs(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    wait_until(lambda: a.stops, timeout=5, message="leader work started")
    clock.advance(DEADLINE - 0.01)
    a.elector.watchdog_check()
    assert not a.stops[0].is_set()
    clock.advance(0.01)
    a.elector.watchdog_check()
    assert a.stops[0].is_set()
    assert not a.elector.is_leader


def test_watchdog_ends_the_process_when_a_step_is_stuck(clock: FakeClock) -> None:
    class HangingStore(MemoryLeaseStore):
        def _read(self) -> LeaseRecord | None:
            clock.advance(LEASE + 0.5)  # a call that hangs past the lease duration
            checker.elector.watchdog_check()
            return super()._read()

    hanging = HangingStore("controller")
    checker = Replica("a", hanging, clock)
    with pytest.raises(Exited) as exited:
        checker.elector.step()
    assert exited.value.args == (EXIT_STUCK,)


def test_watchdog_does_not_fire_after_a_whole_process_pause(clock: FakeClock) -> None:
    class PausedStore(MemoryLeaseStore):
        def _read(self) -> LeaseRecord | None:
            clock.advance(LEASE + 5)  # SIGSTOP/SIGCONT: everything paused, watchdog too
            checker.elector.watchdog_check(paused_until=clock.monotonic())
            return super()._read()

    paused = PausedStore("controller")
    checker = Replica("a", paused, clock)
    checker.elector.step()
    assert checker.elector.is_leader


def test_idle_loop_is_not_stuck(store: MemoryLeaseStore, clock: FakeClock) -> None:
    a = Replica("b", store, clock)
    held_by(store, "other")
    a.elector.step()
    clock.advance(100)
    a.elector.watchdog_check()
    assert a.elector.stuck_for() == 0.0


# ----------------------------------------------------------------------------- metrics


def test_metric_values_follow_the_role(store: MemoryLeaseStore, clock: FakeClock) -> None:
    held_by(store, "old")
    assert store.record is not None
    store.record = LeaseRecord(**{**store.record.__dict__, "holder": None})  # released
    a = Replica("a", store, clock)
    b = Replica("b", store, clock)
    store.fail_writes(Fault.UNAVAILABLE)
    b.elector.step()  # b sees the lease vacant but cannot write
    assert not b.elector.is_leader
    clock.advance(2)
    values = b.elector.metric_values()
    assert values["oab.leader.seconds_without_leader"] == pytest.approx(2)
    a.elector.step()
    clock.advance(0.5)
    values = a.elector.metric_values()
    assert values["oab.leader.is_leader"] == 1.0
    assert values["oab.leader.epoch"] == 4.0  # the released lease kept epoch 3
    assert values["oab.leader.seconds_since_renew"] == pytest.approx(0.5)
    b.elector.step()
    assert b.elector.metric_values()["oab.leader.seconds_without_leader"] == 0.0


# ----------------------------------------------------------------------------- bad lease data

GOOD: dict[str, dict[str, str]] = {
    "holder": {"S": "other"},
    "epoch": {"N": "3"},
    "revision": {"S": "r0"},
    "lease_duration_ms": {"N": "6000"},
    "transitions": {"N": "3"},
    "acquired_at": {"N": "1"},
    "renewed_at": {"N": "1"},
}

GARBAGE = {
    "epoch of the wrong type": {**GOOD, "epoch": {"S": "3"}},
    "epoch missing": {k: v for k, v in GOOD.items() if k != "epoch"},
    "epoch negative": {**GOOD, "epoch": {"N": "-1"}},
    "epoch not an integer": {**GOOD, "epoch": {"N": "3.5"}},
    "epoch beyond int64": {**GOOD, "epoch": {"N": str(2**63)}},
    "epoch not a number": {**GOOD, "epoch": {"N": "three"}},
    "epoch infinite": {**GOOD, "epoch": {"N": "Infinity"}},
    "duration not a number": {**GOOD, "lease_duration_ms": {"N": "NaN"}},
    "revision missing": {k: v for k, v in GOOD.items() if k != "revision"},
    "revision empty": {**GOOD, "revision": {"S": ""}},
    "revision a list": {**GOOD, "revision": {"L": [{"S": "r0"}]}},
    "holder a map": {**GOOD, "holder": {"M": {"id": {"S": "other"}}}},
    "holder too long": {**GOOD, "holder": {"S": "x" * 257}},
    "holder empty": {**GOOD, "holder": {"S": ""}},
    "duration zero": {**GOOD, "lease_duration_ms": {"N": "0"}},
    "duration missing": {k: v for k, v in GOOD.items() if k != "lease_duration_ms"},
    "duration null": {**GOOD, "lease_duration_ms": {"NULL": True}},
    "transitions negative": {**GOOD, "transitions": {"N": "-4"}},
    "renewed_at infinite": {**GOOD, "renewed_at": {"N": "Infinity"}},
    "renewed_at past year 9999": {**GOOD, "renewed_at": {"N": "1e20"}},
    "acquired_at a string set": {**GOOD, "acquired_at": {"SS": ["a", "b"]}},
    "two types in one value": {**GOOD, "epoch": {"N": "3", "S": "3"}},
    "no lease attribute at all": {},
}


def garbage_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "lease item is unreadable" in r.getMessage()]


@pytest.mark.parametrize("item", GARBAGE.values(), ids=GARBAGE.keys())
def test_unreadable_lease_is_replaced_once_unchanged_for_a_lease_duration(
    store: MemoryLeaseStore,
    clock: FakeClock,
    item: dict[str, dict[str, object]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="oab.leader")
    store.store_item(item)
    assert isinstance(store.record, UnreadableLease)
    b = Replica("b", store, clock)
    assert b.elector.step() == RETRY
    clock.advance(LEASE - 0.01)
    b.elector.step()
    assert not b.elector.is_leader
    assert b.leaders == []  # an unreadable item names no leader
    clock.advance(0.01)
    b.elector.step()
    assert b.elector.is_leader
    assert isinstance(store.record, LeaseRecord)
    assert store.record.holder == "b"
    # Logged once for the one observed item (three steps saw it), naming the lease.
    (logged,) = garbage_logs(caplog)
    assert logged.levelno == logging.WARNING
    assert getattr(logged, "lease", None) == "controller"


def test_unreadable_problem_names_the_attribute_and_never_the_stored_value(
    store: MemoryLeaseStore,
) -> None:
    store.store_item({**GOOD, "holder": {"S": "sk-ant-" + "x" * 300}})
    assert isinstance(store.record, UnreadableLease)
    assert store.record.problem == "holder: 307 characters, more than 256"
    store.store_item({**GOOD, "epoch": {"S": "hunter2"}})
    assert isinstance(store.record, UnreadableLease)
    assert store.record.problem == "epoch: expected type N, got S"


def test_an_unreadable_item_that_changes_restarts_the_wait(
    store: MemoryLeaseStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oab.leader")
    store.store_item(GARBAGE["epoch of the wrong type"])
    b = Replica("b", store, clock)
    b.elector.step()
    clock.advance(LEASE - 1)
    store.store_item(GARBAGE["revision missing"])  # someone keeps writing: not abandoned
    b.elector.step()
    clock.advance(LEASE - 0.01)
    b.elector.step()
    assert not b.elector.is_leader
    clock.advance(0.01)
    b.elector.step()
    assert b.elector.is_leader
    assert len(garbage_logs(caplog)) == 2  # once per observed item


def test_unreadable_item_is_judged_on_the_candidates_own_lease_duration(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    # The stored duration of an unreadable item is not trusted, however readable it is.
    store.store_item({**GARBAGE["epoch missing"], "lease_duration_ms": {"N": "1000"}})
    b = Replica("b", store, clock)
    b.elector.step()
    clock.advance(LEASE - 0.01)
    b.elector.step()
    assert not b.elector.is_leader


def test_replacing_an_unreadable_item_keeps_its_readable_epoch(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    store.store_item({**GOOD, "epoch": {"N": "7"}, "transitions": {"N": "9"}, "revision": {}})
    b = Replica("b", store, clock)
    b.elector.step()
    clock.advance(LEASE)
    b.elector.step()
    assert b.elector.epoch == 8
    assert isinstance(store.record, LeaseRecord)
    assert store.record.transitions == 10


def test_replacing_an_unreadable_epoch_continues_from_the_highest_epoch_seen(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    held_by(store, "other", epoch=5)
    b = Replica("b", store, clock)
    b.elector.step()  # b sees epoch 5
    store.store_item({k: v for k, v in GOOD.items() if k != "transitions"} | {"epoch": {"S": "x"}})
    b.elector.step()
    clock.advance(LEASE)
    b.elector.step()
    assert b.elector.epoch == 6
    assert isinstance(store.record, LeaseRecord)
    assert store.record.transitions == 6  # unknown history: one acquisition per epoch


def test_no_replica_holds_an_epoch_twice_even_after_the_epoch_went_backwards(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    held_by(store, "old", epoch=4)
    a = Replica("a", store, clock)
    a.elector.step()
    clock.advance(LEASE)
    a.elector.step()
    assert a.elector.epoch == 5
    # The item turns to garbage; a replica that never saw the history replaces it at epoch 1.
    store.store_item(GARBAGE["epoch of the wrong type"])
    c = Replica("c", store, clock)
    c.elector.step()
    clock.advance(RETRY)
    a.elector.step()  # a's renewal fails against the garbage: a steps down
    assert not a.elector.is_leader
    clock.advance(LEASE - RETRY)
    c.elector.step()
    assert c.elector.epoch == 1
    a.elector.step()
    assert c.elector.release(drain_timeout=1)
    # a's fences of epoch 5 must never match a later term of a: a continues above its history.
    a.elector.step()
    assert a.elector.epoch == 6


def test_leader_whose_item_turns_unreadable_steps_down_then_replaces_it(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    store.store_item({**GOOD, "holder": {"S": "a"}, "epoch": {"S": "1"}})
    clock.advance(RETRY)
    a.elector.step()  # renewal's condition fails against the garbage: lost, at once
    assert not a.elector.is_leader
    assert a.stopped == 1
    clock.advance(LEASE)
    a.elector.step()
    assert a.elector.is_leader
    assert a.elector.epoch == 2


def test_garbage_the_renewal_condition_does_not_read_is_repaired_by_the_next_renewal(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    assert isinstance(store.record, LeaseRecord)
    item = {**store.record.to_item(), "transitions": {"S": "lots"}}
    store.store_item(item)
    assert isinstance(store.record, UnreadableLease)
    clock.advance(RETRY)
    a.elector.step()  # revision, holder and epoch still match: the renewal overwrites it
    assert a.elector.is_leader
    assert a.stopped == 0
    assert isinstance(store.record, LeaseRecord)
    assert store.record.transitions == 1


def test_replacement_loses_to_a_repair_made_after_the_item_was_read(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    store.store_item(GARBAGE["epoch of the wrong type"])
    seen = store.get()
    assert isinstance(seen, UnreadableLease)
    held_by(store, "repairer", epoch=4, rev="fixed")
    with pytest.raises(LeaseLost) as lost:
        store.try_acquire(
            LeaseRecord(
                name="controller",
                holder=ReplicaId("b"),
                epoch=Epoch(1),
                revision=Revision("b-1"),
                lease_duration_ms=6000,
                transitions=1,
                acquired_at=0,
                renewed_at=0,
            ),
            expected=seen,
        )
    assert isinstance(lost.value.current, LeaseRecord)
    assert lost.value.current.holder == "repairer"


# ----------------------------------------------------------------------------- stored duration


def test_huge_stored_duration_is_clamped_and_logged_once(
    store: MemoryLeaseStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oab.leader")
    held_by(store, "other")
    store.store_item({**GOOD, "lease_duration_ms": {"N": str(10**30)}})
    assert isinstance(store.record, LeaseRecord)
    b = Replica("b", store, clock)
    b.elector.step()
    clock.advance(MAX_LEASE_DURATION_MS / 1000 - 0.01)
    b.elector.step()
    assert not b.elector.is_leader
    clock.advance(0.01)
    b.elector.step()
    assert b.elector.is_leader
    clamped = [r for r in caplog.records if "exceeds the maximum" in r.getMessage()]
    assert len(clamped) == 1
    assert getattr(clamped[0], "lease", None) == "controller"


def test_stored_duration_at_the_maximum_is_honoured_exactly(
    store: MemoryLeaseStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="oab.leader")
    store.store_item({**GOOD, "lease_duration_ms": {"N": str(MAX_LEASE_DURATION_MS)}})
    b = Replica("b", store, clock)
    b.elector.step()
    clock.advance(MAX_LEASE_DURATION_MS / 1000 - 0.01)
    b.elector.step()
    assert not b.elector.is_leader
    assert not [r for r in caplog.records if "exceeds the maximum" in r.getMessage()]


def test_config_refuses_a_lease_the_standbys_would_clamp() -> None:
    with pytest.raises(ValueError, match="at most"):
        ElectionConfig(
            identity=ReplicaId("a"),
            lease_duration=MAX_LEASE_DURATION_MS / 1000 + 1,
            renew_deadline=4.0,
        )
    ElectionConfig(identity=ReplicaId("a"), lease_duration=MAX_LEASE_DURATION_MS / 1000)


# ----------------------------------------------------------------------------- no winner returned


def test_failed_condition_without_the_winner_is_read_back_not_taken_as_a_loss(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    store.fail_writes(Fault.DEFERRED)
    clock.advance(RETRY)
    a.elector.step()  # ambiguous; not applied yet
    assert store.deliver_deferred() == 1  # ... then it lands
    store.fail_writes(Fault.NO_WINNER)
    clock.advance(RETRY)
    a.elector.step()  # condition fails, no item in the reply: the read-back finds our own write
    assert a.elector.is_leader
    assert a.stopped == 0


def test_failed_condition_without_the_winner_still_loses_to_a_real_winner(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    held_by(store, "intruder", epoch=2, rev="x")
    store.fail_writes(Fault.NO_WINNER)
    clock.advance(RETRY)
    a.elector.step()
    assert not a.elector.is_leader
    assert a.leaders == ["a", "intruder"]


# ----------------------------------------------------------------------------- shutdown


def test_shutdown_during_start_up_starts_nothing(store: MemoryLeaseStore, clock: FakeClock) -> None:
    # A SIGTERM handled before the elector started: release() first, then start() runs late.
    elector = LeaderElector(
        ElectionConfig(identity=ReplicaId("a")),  # with the watchdog thread
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=clock,
        exit_process=fake_exit,
    )
    before = set(threading.enumerate())
    assert not elector.release(drain_timeout=1)
    elector.start()
    wait_until(
        lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()],
        timeout=5,
        message="no elector or watchdog thread left running",
    )
    assert not elector.running
    assert store.record is None


def test_release_does_not_wait_forever_on_a_step_stuck_in_a_store_call(clock: FakeClock) -> None:
    entered, unblock = threading.Event(), threading.Event()

    class Stuck(MemoryLeaseStore):
        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.holder == "a" and new.epoch == 2:
                entered.set()
                unblock.wait(60)  # a call that outlives every timeout
            super()._put(new, pre)  # type: ignore[arg-type]

    stuck = Stuck("controller")
    held_by(stuck, "other", epoch=1, rev="old")
    elector = LeaderElector(
        ElectionConfig(identity=ReplicaId("a"), watchdog=False),
        stuck,
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=clock,
        new_revision=SequentialIds("a-rev"),
        watchdog_timeout=0.2,
    )
    elector.step()  # observes other's lease; it expires one lease duration later
    clock.advance(LEASE)
    stepper = threading.Thread(target=elector.step, daemon=True)
    stepper.start()
    assert entered.wait(5)
    released: list[bool] = []
    releaser = threading.Thread(target=lambda: released.append(elector.release(drain_timeout=0)))
    releaser.start()
    releaser.join(10)  # the call stays stuck meanwhile; release gives up after 0.2 s
    unblock.set()
    assert released == [False], "release() waited on the stuck step"
    stepper.join(5)
    # The acquisition that was in flight landed after release() returned: handed straight back.
    assert not elector.is_leader
    assert isinstance(stuck.record, LeaseRecord)
    assert stuck.record.holder is None
    assert stuck.record.epoch == 2


# ----------------------------------------------------------------------------- guards (mutation)


@pytest.mark.parametrize(
    "forged",
    [
        {"holder": ReplicaId("intruder")},  # our revision, someone else's name
        {"epoch": Epoch(2)},  # our revision and name, another epoch
        {"revision": Revision("foreign")},  # our name and epoch, a revision we never wrote
    ],
    ids=["holder", "epoch", "revision"],
)
def test_a_record_that_differs_from_our_term_in_any_field_ends_the_term(
    store: MemoryLeaseStore, clock: FakeClock, forged: dict[str, object]
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    assert isinstance(store.record, LeaseRecord)
    store.record = LeaseRecord(**{**store.record.__dict__, **forged})
    clock.advance(RETRY)
    a.elector.step()
    assert not a.elector.is_leader
    assert a.stopped == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("revision", {"S": "foreign"}), ("holder", {"S": "intruder"}), ("epoch", {"N": "2"})],
)
def test_renewal_fails_on_garbage_whose_revision_holder_or_epoch_differ(
    store: MemoryLeaseStore, clock: FakeClock, field: str, value: dict[str, str]
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    assert isinstance(store.record, LeaseRecord)
    store.store_item({**store.record.to_item(), "transitions": {"S": "lots"}, field: value})
    clock.advance(RETRY)
    a.elector.step()
    assert not a.elector.is_leader
    assert isinstance(store.record, UnreadableLease)


def test_renewal_condition_compares_a_garbage_items_numbers_by_value(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    assert isinstance(store.record, LeaseRecord)
    # DynamoDB compares numbers by value: epoch "1.0" is epoch 1 for the condition.
    store.store_item({**store.record.to_item(), "transitions": {"S": "x"}, "epoch": {"N": "1.0"}})
    clock.advance(RETRY)
    a.elector.step()
    assert a.elector.is_leader
    assert isinstance(store.record, LeaseRecord)


def test_replacement_loses_to_other_garbage_written_after_the_read(
    store: MemoryLeaseStore,
) -> None:
    store.store_item(GARBAGE["epoch of the wrong type"])
    seen = store.get()
    store.store_item(GARBAGE["revision missing"])
    with pytest.raises(LeaseLost) as lost:
        store.try_acquire(
            LeaseRecord(
                name="controller",
                holder=ReplicaId("b"),
                epoch=Epoch(1),
                revision=Revision("b-1"),
                lease_duration_ms=6000,
                transitions=1,
                acquired_at=0,
                renewed_at=0,
            ),
            expected=seen,
        )
    assert isinstance(lost.value.current, UnreadableLease)
    assert lost.value.current != seen


def test_fingerprint_ignores_the_order_of_stored_sets() -> None:
    one = UnreadableLease.of({"epoch": {"SS": ["a", "b"]}}, name="controller", problem="p")
    two = UnreadableLease.of({"epoch": {"SS": ["b", "a"]}}, name="controller", problem="p")
    other = UnreadableLease.of({"epoch": {"SS": ["a", "c"]}}, name="controller", problem="p")
    assert one.fingerprint == two.fingerprint != other.fingerprint


def test_release_refuses_a_record_that_still_names_a_holder(store: MemoryLeaseStore) -> None:
    held_by(store, "a", epoch=1, rev="r1")
    assert isinstance(store.record, LeaseRecord)
    with pytest.raises(ValueError, match="no holder"):
        store.release(store.record, current=store.record)


def test_a_lease_naming_us_with_a_revision_we_never_wrote_is_waited_out(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    # e.g. a replica restarted under a fixed id: its predecessor may still be alive somewhere.
    held_by(store, "a", epoch=3, rev="predecessor")
    a = Replica("a", store, clock)
    a.elector.step()
    assert not a.elector.is_leader
    clock.advance(LEASE)
    a.elector.step()
    assert a.elector.is_leader
    assert a.elector.epoch == 4


def test_our_revision_under_another_holder_is_waited_out(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    held_by(store, "intruder", epoch=2, rev="x")
    clock.advance(RETRY)
    a.elector.step()  # renewal a-rev-000002 lost: a is a standby that remembers that revision
    assert not a.elector.is_leader
    held_by(store, "intruder", epoch=2, rev="a-rev-000002")
    a.elector.step()
    assert not a.elector.is_leader  # not "ours" just because the revision is


def test_leader_whose_loop_stalled_past_the_deadline_steps_down_instead_of_renewing(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    wait_until(lambda: a.stops, timeout=5, message="leader work started")
    clock.advance(DEADLINE)  # e.g. a long GC pause: no step ran
    assert a.elector.step() == 0.0
    assert a.stopped == 1
    assert a.stops[0].is_set()
    a.elector.step()  # its own revision is still stored: a new term at once
    assert a.elector.epoch == 2


def test_renewal_that_returns_after_the_watchdog_stopped_the_term_does_not_resume_it(
    clock: FakeClock,
) -> None:
    class Slow(MemoryLeaseStore):
        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.revision == "a-rev-000002":
                clock.advance(DEADLINE)  # the renewal takes longer than the renew deadline
                a.elector.watchdog_check()  # the watchdog stops the term's work meanwhile
            super()._put(new, pre)  # type: ignore[arg-type]

    slow = Slow("controller")
    a = Replica("a", slow, clock)
    a.elector.step()
    wait_until(lambda: a.stops, timeout=5, message="leader work started")
    clock.advance(RETRY)
    a.elector.step()
    assert a.stops[0].is_set()
    assert a.stopped == 1  # stepped down in that very step, not one step later
    assert not a.elector.is_leader


def test_a_step_running_while_release_begins_does_not_acquire(clock: FakeClock) -> None:
    reading, go_on = threading.Event(), threading.Event()

    class Gated(MemoryLeaseStore):
        def _read(self) -> StoredLease | None:
            reading.set()
            go_on.wait(30)
            return super()._read()

    gated = Gated("controller")
    a = Replica("a", gated, clock)
    stepper = threading.Thread(target=a.elector.step)
    stepper.start()
    assert reading.wait(5)
    releaser = threading.Thread(target=a.elector.release, kwargs={"drain_timeout": 0})
    releaser.start()
    # release() has flagged itself and now waits for the step (a private flag, read only to sync).
    wait_until(lambda: a.elector._releasing, timeout=5, message="release begun")
    go_on.set()
    stepper.join(5)
    releaser.join(5)
    assert gated.record is None  # never acquired (and so nothing to hand back)
    assert gated.writes == 0


def test_release_gives_up_without_writing_while_a_renewal_is_stuck(clock: FakeClock) -> None:
    entered, unblock = threading.Event(), threading.Event()

    class Stuck(MemoryLeaseStore):
        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.revision == "a-rev-000002":
                entered.set()
                unblock.wait(60)
            super()._put(new, pre)  # type: ignore[arg-type]

    stuck = Stuck("controller")
    elector = LeaderElector(
        ElectionConfig(identity=ReplicaId("a"), watchdog=False),
        stuck,
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=clock,
        new_revision=SequentialIds("a-rev"),
        watchdog_timeout=0.2,
    )
    elector.step()
    clock.advance(RETRY)
    stepper = threading.Thread(target=elector.step, daemon=True)
    stepper.start()
    assert entered.wait(5)
    released: list[bool] = []
    releaser = threading.Thread(target=lambda: released.append(elector.release(drain_timeout=0)))
    releaser.start()
    releaser.join(10)
    assert released == [False]
    # The store client is what hangs: no second call on it; the lease expires for the standbys.
    assert isinstance(stuck.record, LeaseRecord)
    assert stuck.record.holder == "a"
    unblock.set()
    stepper.join(5)


def test_fence_is_refused_once_the_renew_deadline_passed(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    a.elector.fence()
    clock.advance(DEADLINE)  # no step ran: the term is still recorded, but over
    with pytest.raises(NotLeader):
        a.elector.fence()


def test_a_stopped_elector_never_campaigns(store: MemoryLeaseStore, clock: FakeClock) -> None:
    a = Replica("a", store, clock)
    a.elector.stop(timeout=1)
    a.elector.step()
    assert store.record is None


def test_failed_renewals_wake_exactly_at_the_renew_deadline(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = Replica("a", store, clock)
    a.elector.step()
    sent = clock.monotonic()
    store.fail_writes(*[Fault.UNAVAILABLE] * 10)
    clock.advance(RETRY / 2)  # out of phase with the retry period
    waits = []
    while a.elector.is_leader:
        wait = a.elector.step()
        waits.append(wait)
        clock.advance(wait)
    assert waits[-1] == pytest.approx(RETRY / 2)  # the last wait is cut to the deadline
    assert clock.monotonic() - sent == pytest.approx(DEADLINE)


def test_standby_wakes_exactly_when_the_lease_expires(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    held_by(store, "other")
    b = Replica("b", store, clock)
    b.elector.step()
    clock.advance(LEASE - 0.3)
    assert b.elector.step() == pytest.approx(0.3)


def test_a_late_write_older_than_the_remembered_revisions_is_not_taken_for_ours(
    store: MemoryLeaseStore, clock: FakeClock
) -> None:
    a = LeaderElector(
        ElectionConfig(identity=ReplicaId("a"), watchdog=False, recent_revisions=1),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=clock,
        new_revision=SequentialIds("a-rev"),
    )
    a.step()
    store.fail_writes(Fault.DEFERRED)
    clock.advance(RETRY)
    a.step()  # rev 2 held back
    store.fail_writes(Fault.NOT_APPLIED)
    clock.advance(RETRY)
    a.step()  # rev 3 not applied: only rev 3 is remembered now
    assert store.deliver_deferred() == 1  # rev 2 lands
    clock.advance(RETRY)
    a.step()
    assert not a.is_leader  # a write it no longer remembers counts as someone else's
