"""Unit tests of the elector on a fake clock and the in-memory store (every election path)."""

from __future__ import annotations

import threading
from typing import NoReturn

import pytest

from oab.controller.testing import FakeClock, SequentialIds, wait_until
from oab.leader.config import ElectionConfig
from oab.leader.elector import EXIT_STUCK, LeaderElector, NotLeader
from oab.leader.errors import LeaseLost
from oab.leader.record import Epoch, LeaseRecord, ReplicaId, Revision
from oab.leader.testing import Fault, MemoryLeaseStore

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
