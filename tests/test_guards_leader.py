"""Leader guards pinned by the mutation run over ``leader/`` (issue 15): each test kills survivors.

``make mutate`` (cosmic-ray, ``mutation/leader.toml``) left these mutants alive against the
leader's own tests; the mutants judged equivalent are in ``mutation/equivalent.md`` with their
reason. Everything here runs on the leader's own doubles (:mod:`oab.leader.testing`: the in-memory
store with fault injection, the fake clock); where a store call has to hang, a subclass of the
in-memory store blocks in its primitive, as the elector's own tests do. Real time appears only as
deadlines of ``wait_until`` for threads the elector starts itself (its loop and its watchdog).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import NoReturn

import pytest
from botocore.exceptions import ClientError

from oab.leader.config import ElectionConfig, lease_client_config
from oab.leader.elector import EXIT_STUCK, LeaderElector
from oab.leader.errors import FencedOut, LeaderError, LeaseLost, LeaseUnavailable
from oab.leader.fence import Fence, fence_failed
from oab.leader.lease import ConditionalLeaseStore, Precondition
from oab.leader.record import (
    MAX_LEASE_DURATION_MS,
    Epoch,
    LeaseRecord,
    ReplicaId,
    Revision,
    StoredLease,
    UnreadableLease,
    decode_item,
    lease_key,
)
from oab.leader.testing import FakeClock, Fault, MemoryLeaseStore, SequentialIds, wait_until

LEASE = 6.0
DEADLINE = 4.0
RETRY = 1.0


def _config(name: str = "a", **overrides: object) -> ElectionConfig:
    settings: dict[str, object] = {
        "identity": ReplicaId(name),
        "lease_duration": LEASE,
        "renew_deadline": DEADLINE,
        "retry_period": RETRY,
        "watchdog": False,
        **overrides,
    }
    return ElectionConfig(**settings)  # type: ignore[arg-type]


def _elector(
    store: MemoryLeaseStore,
    clock: FakeClock | None,
    *,
    name: str = "a",
    started: list[Epoch] | None = None,
    **kwargs: object,
) -> LeaderElector:
    def on_started(epoch: Epoch, stop: threading.Event) -> None:
        if started is not None:
            started.append(epoch)
        stop.wait(10)

    return LeaderElector(
        _config(name, **kwargs.pop("config", {})),  # type: ignore[arg-type]
        store,
        on_started_leading=on_started,
        clock=clock,
        new_revision=SequentialIds(f"{name}-rev"),
        **kwargs,  # type: ignore[arg-type]
    )


class Blocking(MemoryLeaseStore):
    """An in-memory store whose reads hang while ``gate`` is clear (a call that never returns)."""

    def __init__(self) -> None:
        super().__init__("controller")
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def _read(self) -> StoredLease | None:
        if not self.gate.is_set():
            self.entered.set()
            self.gate.wait(60)
        return super()._read()


# ----------------------------------------------------------------------------- config


def test_config_is_immutable_and_keyword_only() -> None:
    config = ElectionConfig(identity=ReplicaId("a"))
    # Validated once at construction: a later assignment would bypass every timing check.
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lease_duration = 100.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        ElectionConfig("a")  # type: ignore[misc]  # keyword-only on purpose


def test_config_documented_defaults() -> None:
    config = ElectionConfig(identity=ReplicaId("a"))
    assert config.watchdog is True  # the watchdog is on unless a test turns it off
    assert config.recent_revisions == 8
    assert config.lease_name == "controller"
    assert config.call_timeout == 1.0


def test_config_rejects_a_blank_identity() -> None:
    with pytest.raises(ValueError, match="identity"):
        ElectionConfig(identity=ReplicaId("   "))


def test_exit_status_of_a_stuck_loop_is_ex_software() -> None:
    # Supervisors (ECS, systemd) see this code: it must stay EX_SOFTWARE.
    assert EXIT_STUCK == os.EX_SOFTWARE == 70


def test_only_an_unavailable_store_is_worth_retrying() -> None:
    assert LeaderError("rejected").retryable is False
    assert LeaseLost("lost", current=None).retryable is False
    assert FencedOut(lease="controller", holder="a", epoch=Epoch(1)).retryable is False
    assert LeaseUnavailable("timed out").retryable is True


# ----------------------------------------------------------------------------- construction


@pytest.mark.parametrize("store_name", ["a-lease", "z-lease"])
def test_elector_refuses_a_store_for_another_lease(store_name: str) -> None:
    with pytest.raises(ValueError, match="store is for lease"):
        _elector(MemoryLeaseStore(store_name), FakeClock(), config={"lease_name": "m-lease"})


def test_elector_accepts_a_store_whose_name_is_equal_but_not_the_same_object() -> None:
    name = "".join(["contr", "oller"])  # built at run time: equal, not identical
    assert name == "controller"
    elector = _elector(MemoryLeaseStore(name), FakeClock())
    assert elector.config.lease_name == "controller"


# ----------------------------------------------------------------------------- steps


def test_a_renewal_failing_past_the_deadline_steps_down_and_campaigns_at_once() -> None:
    clock = FakeClock()

    class Slow(MemoryLeaseStore):
        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.revision == "a-rev-000002":
                clock.advance(DEADLINE)  # the call outlives the renew deadline, then fails
                raise LeaseUnavailable("injected: timed out")
            super()._put(new, pre)  # type: ignore[arg-type]

    store = Slow("controller")
    elector = _elector(store, clock)
    elector.step()
    clock.advance(RETRY)
    assert elector.step() == 0.0  # no waiting: the next step campaigns for a new epoch
    assert not elector.is_leader
    elector.step()
    assert elector.epoch == 2


@pytest.mark.parametrize(
    "forged",
    [{"holder": "a"}, {"holder": "c"}, {"epoch": 1}, {"epoch": 3}],
    ids=["holder before ours", "holder after ours", "older epoch", "newer epoch"],
)
def test_a_leader_never_adopts_its_revision_under_another_holder_or_epoch(
    forged: dict[str, object],
) -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    store.record = _record("old", epoch=1, rev="old")
    store.record = dataclasses.replace(store.record, holder=None)  # released: b takes epoch 2
    elector = _elector(store, clock, name="b")
    elector.step()
    assert elector.epoch == 2
    assert isinstance(store.record, LeaseRecord)
    # Someone rewrote the item with our revision but another holder or epoch.
    store.record = dataclasses.replace(store.record, **forged)  # type: ignore[arg-type]
    clock.advance(RETRY)
    elector.step()
    assert not elector.is_leader


def test_a_late_renewal_as_old_as_the_remembered_window_is_still_ours() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = _elector(store, clock, config={"recent_revisions": 3})
    elector.step()
    store.fail_writes(Fault.DEFERRED)
    clock.advance(RETRY)
    elector.step()  # rev 2 held back
    store.fail_writes(Fault.NOT_APPLIED)
    clock.advance(RETRY)
    elector.step()  # rev 3 not applied
    assert store.deliver_deferred() == 1  # rev 2 lands
    clock.advance(RETRY)
    elector.step()  # sends rev 4: revs 2, 3 and 4 are the three remembered
    assert elector.is_leader  # rev 2 recognised as its own late write
    assert elector.epoch == 1


def test_stuck_for_measures_the_running_step_from_zero() -> None:
    clock = FakeClock()
    seen: list[float] = []

    class Timed(MemoryLeaseStore):
        def _read(self) -> StoredLease | None:
            seen.append(elector.stuck_for())
            clock.advance(2.0)
            seen.append(elector.stuck_for())
            return super()._read()

    elector = _elector(Timed("controller"), clock)
    assert elector.stuck_for() == 0.0
    elector.step()
    assert seen == [0.0, 2.0]
    assert elector.stuck_for() == 0.0


def test_a_renewal_returning_after_the_watchdog_stopped_the_term_campaigns_at_once() -> None:
    clock = FakeClock()

    class Slow(MemoryLeaseStore):
        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.revision == "a-rev-000002":
                clock.advance(DEADLINE)  # the renewal outlives the renew deadline
                elector.watchdog_check()  # the watchdog stops the term's work meanwhile
            super()._put(new, pre)  # type: ignore[arg-type]

    elector = _elector(Slow("controller"), clock)
    elector.step()
    clock.advance(RETRY)
    assert elector.step() == 0.0  # stepped down; the next step takes a new epoch at once
    assert not elector.is_leader
    elector.step()
    assert elector.epoch == 2


def test_a_renewal_that_took_longer_than_the_retry_period_renews_again_at_once() -> None:
    clock = FakeClock()

    class Slow(MemoryLeaseStore):
        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.revision == "a-rev-000002":
                clock.advance(1.5 * RETRY)  # slow, but within the renew deadline
            super()._put(new, pre)  # type: ignore[arg-type]

    elector = _elector(Slow("controller"), clock)
    elector.step()
    clock.advance(RETRY)
    assert elector.step() == 0.0  # overdue: no negative wait
    assert elector.is_leader


def test_a_released_elector_never_touches_the_store_again() -> None:
    reads: list[int] = []

    class Counting(MemoryLeaseStore):
        def _read(self) -> StoredLease | None:
            reads.append(1)
            return super()._read()

    leaders: list[str] = []
    store = Counting("controller")
    elector = LeaderElector(
        _config(),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        on_new_leader=leaders.append,
        clock=FakeClock(),
    )
    elector.step()
    assert elector.release(drain_timeout=5)
    store.record = _record("b", epoch=2, rev="b1")  # another replica takes over
    before = len(reads)
    elector.step()
    assert len(reads) == before
    assert leaders == ["a"]


def test_release_warns_when_it_gives_up_on_a_stuck_renewal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    entered, unblock = threading.Event(), threading.Event()

    class Stuck(MemoryLeaseStore):
        def _put(self, new: LeaseRecord, pre: object) -> None:
            if new.revision == "a-rev-000002":
                entered.set()
                unblock.wait(60)
            super()._put(new, pre)  # type: ignore[arg-type]

    elector = _elector(Stuck("controller"), clock, watchdog_timeout=0.2)
    elector.step()
    clock.advance(RETRY)
    stepper = threading.Thread(target=elector.step, daemon=True)
    stepper.start()
    try:
        assert entered.wait(10)
        with caplog.at_level("WARNING", logger="oab.leader"):
            assert not elector.release(drain_timeout=0)
        assert any("release: the elector step is stuck" in m for m in caplog.messages)
    finally:
        unblock.set()
        stepper.join(10)


def test_release_of_a_stuck_standby_has_no_lease_to_warn_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Blocking()
    elector = _elector(store, FakeClock(), watchdog_timeout=0.2)
    store.gate.clear()
    stepper = threading.Thread(target=elector.step, daemon=True)
    stepper.start()
    try:
        assert store.entered.wait(10)
        with caplog.at_level("WARNING", logger="oab.leader"):
            assert not elector.release(drain_timeout=0)
        assert not any("release: the elector step is stuck" in m for m in caplog.messages)
    finally:
        store.gate.set()
        stepper.join(10)


def test_a_failing_leader_callback_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def on_started(_epoch: Epoch, _stop: threading.Event) -> None:
        raise RuntimeError("the leader's work failed to start")

    elector = LeaderElector(
        _config(), MemoryLeaseStore("controller"), on_started_leading=on_started, clock=FakeClock()
    )
    with caplog.at_level("ERROR", logger="oab.leader"):
        elector.step()
        wait_until(
            lambda: "on_started_leading failed" in caplog.messages,
            timeout=30,
            message="the callback's failure logged",
        )
    elector.stop(timeout=5)


def test_our_revision_under_a_holder_sorting_before_us_is_waited_out() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = _elector(store, clock, name="b")
    elector.step()
    store.record = _record("a", epoch=2, rev="x")
    clock.advance(RETRY)
    elector.step()  # renewal b-rev-000002 lost: b remembers that revision
    store.record = _record("a", epoch=2, rev="b-rev-000002")
    elector.step()
    assert not elector.is_leader  # "a" is not us, whatever the revision


def test_our_own_revision_read_back_from_the_store_is_recognised() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = _elector(store, clock, name="replica-b")
    elector.step()
    assert isinstance(store.record, LeaseRecord)
    # As read from a table: equal values, new string objects.
    store.store_item(json.loads(json.dumps(store.record.to_item())))
    clock.advance(DEADLINE)
    elector.step()  # the loop stalled past the deadline: stepped down
    assert not elector.is_leader
    elector.step()  # the stored revision is our own: a new term at once
    assert elector.epoch == 2


def test_a_late_renewal_read_back_from_the_store_is_recognised_at_a_large_epoch() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    store.record = dataclasses.replace(_record("old", epoch=999, rev="old"), holder=None)
    elector = _elector(store, clock)
    elector.step()
    assert elector.epoch == 1000  # beyond the small integers CPython shares
    store.fail_writes(Fault.DEFERRED)
    clock.advance(RETRY)
    elector.step()  # rev 2 held back
    assert store.deliver_deferred() == 1
    assert isinstance(store.record, LeaseRecord)
    # As read from a table: equal values, new objects.
    store.store_item(json.loads(json.dumps(store.record.to_item())))
    clock.advance(RETRY)
    elector.step()
    assert elector.is_leader
    assert elector.epoch == 1000


def test_the_latest_revision_is_remembered_after_many_renewals() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = _elector(store, clock)
    elector.step()
    for _ in range(10):  # more renewals than the 8 revisions remembered
        clock.advance(RETRY)
        elector.step()
    clock.advance(DEADLINE)
    elector.step()  # the loop stalled past the deadline: stepped down
    assert not elector.is_leader
    elector.step()  # the stored revision is its latest: a new term at once
    assert elector.epoch == 2


def test_a_standby_that_looks_late_takes_an_expired_lease() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    store.record = _record("other", epoch=3)
    elector = _elector(store, clock, name="b")
    elector.step()
    clock.advance(LEASE + 0.5)  # its step ran late: the lease expired half a second ago
    elector.step()
    assert elector.epoch == 4


def test_a_lost_renewal_steps_down_and_looks_again_at_once() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = _elector(store, clock)
    elector.step()
    store.record = _record("b", epoch=2, rev="b1")  # taken over
    clock.advance(RETRY)
    assert elector.step() == 0.0
    assert not elector.is_leader


def test_replacing_an_unreadable_item_is_logged_and_a_normal_acquisition_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = _elector(store, clock)
    with caplog.at_level("WARNING", logger="oab.leader"):
        elector.step()  # an empty table: a normal acquisition
        assert not [m for m in caplog.messages if "replacing the unreadable" in m]
        elector.release(drain_timeout=5)
        store.store_item({**_record("x", epoch=4).to_item(), "holder": {"N": "1"}})
        other = _elector(store, clock, name="b")
        other.step()
        clock.advance(LEASE)
        other.step()
    assert other.epoch == 5
    assert "replacing the unreadable lease item with epoch 5" in caplog.messages


def test_a_new_leader_is_announced_once_however_often_it_is_read() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    leaders: list[str] = []
    elector = LeaderElector(
        _config("b"),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        on_new_leader=leaders.append,
        clock=clock,
    )
    for rev in ("x1", "x2", "x3"):  # the holder renews; each read decodes new strings
        item = _record("replica-x", epoch=3, rev=rev).to_item()
        store.store_item(json.loads(json.dumps(item)))
        elector.step()
        clock.advance(RETRY)
    assert leaders == ["replica-x"]


def test_a_failing_new_leader_callback_is_logged_and_the_step_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_new_leader(_holder: str) -> None:
        raise RuntimeError("the callback failed")

    elector = LeaderElector(
        _config(),
        MemoryLeaseStore("controller"),
        on_started_leading=lambda _e, stop: stop.wait(10),
        on_new_leader=on_new_leader,
        clock=FakeClock(),
    )
    with caplog.at_level("ERROR", logger="oab.leader"):
        elector.step()
    assert "on_new_leader failed" in caplog.messages
    assert elector.is_leader
    elector.stop(timeout=5)


def test_a_failing_stop_callback_is_logged_and_the_step_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_stopped() -> None:
        raise RuntimeError("the callback failed")

    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = LeaderElector(
        _config(),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        on_stopped_leading=on_stopped,
        clock=clock,
    )
    elector.step()
    store.record = _record("b", epoch=2, rev="b1")
    clock.advance(RETRY)
    with caplog.at_level("ERROR", logger="oab.leader"):
        assert elector.step() == 0.0
    assert "on_stopped_leading failed" in caplog.messages
    assert not elector.is_leader


@pytest.mark.parametrize("stubborn", [True, False])
def test_release_warns_only_about_work_that_did_not_drain(
    caplog: pytest.LogCaptureFixture, stubborn: bool
) -> None:
    drained = threading.Event()
    gate = threading.Event()

    def on_started(_epoch: Epoch, stop: threading.Event) -> None:
        stop.wait(30)
        if stubborn:
            gate.wait(30)
        drained.set()

    elector = LeaderElector(
        _config(), MemoryLeaseStore("controller"), on_started_leading=on_started, clock=FakeClock()
    )
    elector.step()
    try:
        with caplog.at_level("WARNING", logger="oab.leader"):
            elector.release(drain_timeout=0 if stubborn else 30)
        warned = "leader work did not drain in time" in caplog.messages
        assert warned is stubborn
        assert drained.is_set() is not stubborn
    finally:
        gate.set()


def test_a_step_during_release_never_asks_for_a_negative_wait() -> None:
    clock = FakeClock()
    reading, go_on = threading.Event(), threading.Event()

    class Gated(MemoryLeaseStore):
        def _read(self) -> StoredLease | None:
            if not go_on.is_set():
                reading.set()
                go_on.wait(30)
            return super()._read()

    store = Gated("controller")
    store.record = _record("other", epoch=3)
    elector = _elector(store, clock, name="b")
    go_on.set()
    elector.step()  # first sight of other's revision
    go_on.clear()
    clock.advance(LEASE + 2)  # long expired, but release() forbids acquiring
    waits: list[float] = []
    stepper = threading.Thread(target=lambda: waits.append(elector.step()))
    stepper.start()
    assert reading.wait(10)
    releaser = threading.Thread(target=elector.release, kwargs={"drain_timeout": 0})
    releaser.start()
    # release() has flagged itself and now waits for the step (a private flag, read only to sync).
    wait_until(lambda: elector._releasing, timeout=10, message="release begun")
    go_on.set()
    stepper.join(10)
    releaser.join(10)
    assert waits == [0.0]
    assert store.record == _record("other", epoch=3)  # never acquired


def test_the_watchdog_has_nothing_to_stop_without_a_term() -> None:
    clock = FakeClock()
    store = MemoryLeaseStore("controller")
    elector = _elector(store, clock)
    assert elector.enforce_deadline() is False  # never led
    elector.step()
    assert elector.enforce_deadline() is False  # leading, within the deadline
    clock.advance(DEADLINE)
    assert elector.enforce_deadline() is True  # the term's work is told to stop
    assert elector.enforce_deadline() is False  # already told
    elector.step()  # steps down
    clock.advance(DEADLINE)
    assert elector.enforce_deadline() is False  # no term any more


# ----------------------------------------------------------------------------- threads


class JumpClock(FakeClock):
    """A fake clock that can jump exactly at the start of one watchdog iteration.

    The jump is applied inside the watchdog loop's own reading of the clock, so the whole
    iteration sees it at once (as after a real pause), whatever real time the threads take.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending = 0.0
        self.loop_reads = 0

    def monotonic(self) -> float:
        if (
            threading.current_thread().name == "elector-watchdog"
            and sys._getframe(1).f_code.co_name == "_loop"
        ):
            self.loop_reads += 1
            if self.pending:
                self.advance(self.pending)
                self.pending = 0.0
        return super().monotonic()


def _recorded_exits() -> tuple[list[int], Callable[[int], NoReturn]]:
    """An ``exit_process`` that records its code and ends only the calling (watchdog) thread
    (the tests using it ignore the unhandled-thread-exception warning)."""
    exits: list[int] = []

    def exit_process(code: int) -> NoReturn:
        exits.append(code)
        raise SystemExit(code)

    return exits, exit_process


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(
    ("jump", "stuck"),
    [(1.45, True), (1.5, True), (1.55, False), (1.0, False)],
    ids=[
        "a slow loop is stuck",
        "exactly 1.5 s is no pause yet",
        "a whole-process pause is not",
        "exactly the timeout is not",
    ],
)
def test_the_watchdog_tells_a_process_pause_from_a_stuck_loop(jump: float, stuck: bool) -> None:
    # Between two watchdog iterations (0.1 s apart) more than 10 intervals + 0.5 s = 1.5 s
    # passed: the whole process was paused, and the stuck timer restarts. Otherwise the loop is
    # stuck once its step ran *longer* than the watchdog timeout (1 s here).
    store = Blocking()
    store.gate.clear()
    clock = JumpClock()
    exits, exit_process = _recorded_exits()

    elector = LeaderElector(
        _config("a", watchdog=True),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=clock,
        exit_process=exit_process,
        watchdog_timeout=1.0,
    )
    elector.start()
    try:
        assert store.entered.wait(10)  # the loop's step hangs from now on
        wait_until(lambda: clock.loop_reads >= 2, timeout=30, message="the watchdog running")
        before = clock.loop_reads
        clock.pending = jump
        watchdogs = [t for t in threading.enumerate() if t.name == "elector-watchdog"]
        assert watchdogs
        assert all(t.daemon for t in watchdogs)  # never keeps the interpreter alive
        if stuck:
            wait_until(lambda: exits, timeout=30, message="the watchdog's exit")
            assert exits == [EXIT_STUCK]
        else:
            wait_until(
                lambda: clock.loop_reads >= before + 3,
                timeout=30,
                message="two watchdog iterations after the jump",
            )
            assert exits == []
    finally:
        store.gate.set()
        elector.stop(timeout=5)


def test_start_runs_the_loop_on_a_daemon_thread() -> None:
    store = MemoryLeaseStore("controller")
    elector = _elector(store, FakeClock())
    before = set(threading.enumerate())  # earlier tests' threads may still be ending
    elector.start()
    try:
        started = [t for t in threading.enumerate() if t not in before]
        loops = [t for t in started if t.name == "elector-a"]
        assert loops
        assert all(t.daemon for t in loops)  # never keeps the interpreter alive
        assert not [t for t in started if t.name == "elector-watchdog"]  # watchdog=False
        wait_until(lambda: elector.is_leader, timeout=30, message="leading")
        work = [t for t in threading.enumerate() if t.name == "leader-work-a-1"]
        assert work
        assert all(t.daemon for t in work)  # nor does the leader's work
    finally:
        elector.stop(timeout=5)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_watchdog_thread_ends_the_process_when_a_step_hangs() -> None:
    store = Blocking()
    store.gate.clear()
    exits, exit_process = _recorded_exits()

    elector = LeaderElector(
        _config("a", watchdog=True),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
        exit_process=exit_process,
        watchdog_timeout=0.3,  # real clock: the step below hangs for real
    )
    elector.start()
    try:
        assert store.entered.wait(10)
        wait_until(lambda: exits, timeout=30, message="the watchdog's exit")
        assert exits[0] == EXIT_STUCK
    finally:
        store.gate.set()
        elector.stop(timeout=5)


def test_stop_without_a_timeout_waits_one_lease_duration_not_forever() -> None:
    store = Blocking()
    elector = LeaderElector(
        ElectionConfig(
            identity=ReplicaId("a"),
            lease_duration=0.5,
            renew_deadline=0.3,
            retry_period=0.2,
            call_timeout=0.1,
            watchdog=False,
        ),
        store,
        on_started_leading=lambda _e, stop: stop.wait(10),
    )
    store.gate.clear()
    elector.start()
    done = threading.Event()
    try:
        assert store.entered.wait(10)  # the loop hangs in a read

        def stop() -> None:
            elector.stop()
            done.set()

        threading.Thread(target=stop, daemon=True).start()
        wait_until(done.is_set, timeout=30, message="stop() returning while the loop hangs")
        assert not store.gate.is_set()  # it returned while the call was still hanging
    finally:
        store.gate.set()


def _fast_config(name: str = "a", **overrides: object) -> ElectionConfig:
    """Short real-time periods, for tests that run the elector's own loop thread."""
    settings: dict[str, object] = {
        "identity": ReplicaId(name),
        "lease_duration": 0.5,
        "renew_deadline": 0.3,
        "retry_period": 0.2,
        "call_timeout": 0.1,
        "watchdog": False,
        **overrides,
    }
    return ElectionConfig(**settings)  # type: ignore[arg-type]


def test_the_loop_survives_an_unexpected_error_from_the_store() -> None:
    class Flaky(MemoryLeaseStore):
        def __init__(self) -> None:
            super().__init__("controller")
            self.failures = 1

        def _read(self) -> StoredLease | None:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("a bug in a store adapter")  # not a LeaderError
            return super()._read()

    store = Flaky()
    elector = LeaderElector(
        _fast_config(), store, on_started_leading=lambda _e, stop: stop.wait(10)
    )
    elector.start()
    try:
        wait_until(lambda: elector.is_leader, timeout=30, message="leading after the error")
        assert store.failures == 0
    finally:
        elector.stop(timeout=5)


def test_release_logs_the_handoff(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryLeaseStore("controller")
    elector = _elector(store, FakeClock())
    elector.step()
    with caplog.at_level("WARNING", logger="oab.leader"):
        assert elector.release(drain_timeout=5)
    assert "stopped leading: released" in caplog.messages


def test_stop_logs_that_the_elector_stopped(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryLeaseStore("controller")
    elector = _elector(store, FakeClock())
    elector.step()
    assert elector.is_leader
    with caplog.at_level("WARNING", logger="oab.leader"):
        elector.stop(timeout=1)
    assert "stopped leading: elector stopped" in caplog.messages
    assert not elector.is_leader


def test_stop_returns_once_the_loop_thread_has_ended() -> None:
    store = Blocking()
    elector = LeaderElector(
        _fast_config(), store, on_started_leading=lambda _e, stop: stop.wait(10)
    )
    store.gate.clear()
    elector.start()
    running_after_stop: list[bool] = []

    def stop() -> None:
        elector.stop(timeout=30)
        running_after_stop.append(elector.running)

    try:
        assert store.entered.wait(10)  # the loop is inside a step
        stopper = threading.Thread(target=stop, daemon=True)
        stopper.start()
        store.gate.set()  # the step ends; the loop sees the stop and ends
        stopper.join(60)
        assert running_after_stop == [False]
    finally:
        store.gate.set()


def test_stop_called_from_the_electors_own_thread_does_not_join_itself() -> None:
    # e.g. a replica that stops campaigning from a callback (they run on the elector's thread).
    returned = threading.Event()
    holder: list[LeaderElector] = []

    def on_new_leader(_holder: str) -> None:
        holder[0].stop(timeout=1)
        returned.set()

    elector = LeaderElector(
        _config(),
        MemoryLeaseStore("controller"),
        on_started_leading=lambda _e, stop: stop.wait(10),
        on_new_leader=on_new_leader,
        clock=FakeClock(),
        watchdog_timeout=0.2,  # stop() waits this long for the step it is called from
    )
    holder.append(elector)
    elector.start()
    try:
        wait_until(returned.is_set, timeout=30, message="stop() returning inside the callback")
        wait_until(lambda: not elector.running, timeout=30, message="the loop ending")
        assert not elector.is_leader
    finally:
        elector.stop(timeout=5)


@pytest.mark.parametrize(
    "field", ["lease_duration", "renew_deadline", "retry_period", "call_timeout"]
)
def test_config_rejects_a_negative_period(field: str) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        ElectionConfig(**{"identity": ReplicaId("a"), field: -1.0})  # type: ignore[arg-type]


def test_config_accepts_the_longest_lease_standbys_honour() -> None:
    assert MAX_LEASE_DURATION_MS == 60_000  # documented: 10 x the 6 s default
    config = ElectionConfig(identity=ReplicaId("a"), lease_duration=60.0, renew_deadline=4.0)
    assert config.lease_duration_ms == MAX_LEASE_DURATION_MS


def test_config_timing_relations_and_their_messages() -> None:
    relaxed = ElectionConfig(
        identity=ReplicaId("a"), lease_duration=3.0, renew_deadline=2.0, retry_period=1.0
    )
    assert relaxed.renew_deadline == 2.0  # 2.0 > 1.2 * 1.0 is enough
    with pytest.raises(ValueError, match=r"lease_duration \(3.0\) must be greater than"):
        ElectionConfig(identity=ReplicaId("a"), lease_duration=3.0, renew_deadline=4.0)
    with pytest.raises(ValueError, match=r"1.2 \* retry_period \(2.4\)"):
        ElectionConfig(identity=ReplicaId("a"), renew_deadline=2.4, retry_period=2.0)
    with pytest.raises(ValueError, match=r"1.2 \* retry_period"):
        ElectionConfig(
            identity=ReplicaId("a"), renew_deadline=1.0, retry_period=1.0, call_timeout=0.5
        )
    with pytest.raises(ValueError, match=r"at most renew_deadline / 2 \(2.0\)"):
        ElectionConfig(identity=ReplicaId("a"), call_timeout=3.0)


def test_lease_clients_keep_their_connections_alive() -> None:
    assert lease_client_config(call_timeout=1.0).tcp_keepalive is True


def test_config_names_the_longest_lease_standbys_honour() -> None:
    with pytest.raises(ValueError, match=r"must be at most 60 s \(the longest duration"):
        ElectionConfig(identity=ReplicaId("a"), lease_duration=61.0, renew_deadline=4.0)


def test_config_requires_remembering_at_least_one_revision() -> None:
    assert ElectionConfig(identity=ReplicaId("a"), recent_revisions=1).recent_revisions == 1
    with pytest.raises(ValueError, match="recent_revisions"):
        ElectionConfig(identity=ReplicaId("a"), recent_revisions=0)


def test_config_accepts_a_call_timeout_of_exactly_half_the_renew_deadline() -> None:
    config = ElectionConfig(identity=ReplicaId("a"), renew_deadline=4.0, call_timeout=2.0)
    assert config.call_timeout == 2.0
    with pytest.raises(ValueError, match="call_timeout"):
        ElectionConfig(identity=ReplicaId("a"), renew_deadline=4.0, call_timeout=2.001)


# ----------------------------------------------------------------------------- store conditions


def _record(holder: str | None, *, epoch: int = 1, rev: str = "r1") -> LeaseRecord:
    return LeaseRecord(
        name="controller",
        holder=ReplicaId(holder) if holder is not None else None,
        epoch=Epoch(epoch),
        revision=Revision(rev),
        lease_duration_ms=6000,
        transitions=epoch,
        acquired_at=1.0,
        renewed_at=1.0,
    )


@pytest.mark.parametrize(("stored", "claimed"), [("a", "b"), ("b", "a")])
def test_renewal_by_another_holder_of_the_same_revision_is_lost(stored: str, claimed: str) -> None:
    # Both orders: the holder comparison is an equality, not an ordering of ids.
    store = MemoryLeaseStore("controller")
    store.record = _record(stored)
    with pytest.raises(LeaseLost):
        store.renew(_record(claimed, rev="r2"), current=_record(claimed))
    assert store.record == _record(stored)


@pytest.mark.parametrize("stored", ["0", "2"])
def test_a_renewal_condition_on_a_garbage_item_compares_numbers_for_equality(stored: str) -> None:
    store = MemoryLeaseStore("controller")
    garbage = {**_record("a").to_item(), "transitions": {"S": "x"}, "epoch": {"N": stored}}
    store.store_item(garbage)
    with pytest.raises(LeaseLost):
        store.renew(_record("a", rev="r2"), current=_record("a"))  # our epoch is 1


def test_epochs_compare_by_value_not_identity() -> None:
    big = 10**6  # beyond the small integers CPython shares
    store = MemoryLeaseStore("controller")
    store.record = _record("a", epoch=big)
    current = _record("a", epoch=int(str(big)))
    assert store.renew(_record("a", epoch=big, rev="r2"), current=current).revision == "r2"


@pytest.mark.parametrize("other", ["a-lease", "z-lease"])
def test_a_store_refuses_a_record_of_another_lease(other: str) -> None:
    store = MemoryLeaseStore("m-lease")
    with pytest.raises(ValueError, match="written to store"):
        store.try_acquire(dataclasses.replace(_record("a"), name=other), expected=None)
    assert store.record is None


def test_replacing_an_unreadable_item_requires_exactly_the_item_read() -> None:
    items = [
        UnreadableLease.of({"epoch": {"S": str(i)}}, name="controller", problem="p")
        for i in range(2)
    ]
    low, high = sorted(items, key=lambda u: u.fingerprint)
    assert Precondition(revision=None, unreadable=low).holds_for(low)
    assert not Precondition(revision=None, unreadable=low).holds_for(high)
    assert not Precondition(revision=None, unreadable=high).holds_for(low)
    again = UnreadableLease.of({"epoch": {"S": "0"}}, name="controller", problem="p")
    first = next(u for u in items if u.attributes == again.attributes)
    assert again.fingerprint is not first.fingerprint  # read twice: equal, not the same object
    assert Precondition(revision=None, unreadable=first).holds_for(again)


def test_a_store_adapter_must_implement_both_primitives() -> None:
    class ReadOnly(ConditionalLeaseStore):
        def _read(self) -> StoredLease | None:
            return None

    class WriteOnly(ConditionalLeaseStore):
        def _put(self, new: LeaseRecord, pre: Precondition) -> None:
            return None

    with pytest.raises(TypeError, match="abstract"):
        ReadOnly("t", "controller")  # type: ignore[abstract]
    with pytest.raises(TypeError, match="abstract"):
        WriteOnly("t", "controller")  # type: ignore[abstract]


def test_names_and_revisions_compare_by_value_not_identity() -> None:
    # Values decoded from a reply or built at run time are equal strings, not the same objects.
    store = MemoryLeaseStore("controller")
    store.record = _record("replica-a", rev="r1")
    current = _record("".join(["replica-", "a"]), rev="".join(["r", "1"]))
    renewed = dataclasses.replace(_record("replica-a", rev="r2"), name="".join(["contr", "oller"]))
    assert store.renew(renewed, current=current) == renewed
    assert store.record == renewed


def test_lease_records_are_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        LeaseRecord("controller", "a", 1, "r1", 6000, 1, 1.0, 1.0)  # type: ignore[misc]


def test_lease_values_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _record("a").epoch = Epoch(2)  # type: ignore[misc]
    unreadable = UnreadableLease.of({"epoch": {"S": "x"}}, name="controller", problem="p")
    with pytest.raises(dataclasses.FrozenInstanceError):
        unreadable.fingerprint = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("stored", "claimed"), [("r1", "r2"), ("r2", "r1")])
def test_a_write_expecting_another_revision_is_lost(stored: str, claimed: str) -> None:
    store = MemoryLeaseStore("controller")
    store.record = _record("a", rev=stored)
    with pytest.raises(LeaseLost):
        store.renew(_record("a", rev="r3"), current=_record("a", rev=claimed))
    with pytest.raises(LeaseLost):
        store.try_acquire(_record("b", epoch=2, rev="r3"), expected=_record("a", rev=claimed))
    assert store.record == _record("a", rev=stored)


def test_renewal_loses_cleanly_when_the_stored_epoch_is_not_a_number() -> None:
    store = MemoryLeaseStore("controller")
    store.store_item({**_record("a").to_item(), "epoch": {"N": "three"}})
    assert isinstance(store.record, UnreadableLease)
    with pytest.raises(LeaseLost):
        store.renew(_record("a", rev="r2"), current=_record("a"))


@pytest.mark.parametrize(("stored", "claimed"), [(1, 2), (2, 1)])
def test_renewal_at_another_epoch_of_the_same_revision_is_lost(stored: int, claimed: int) -> None:
    store = MemoryLeaseStore("controller")
    store.record = _record("a", epoch=stored)
    with pytest.raises(LeaseLost):
        store.renew(_record("a", epoch=claimed, rev="r2"), current=_record("a", epoch=claimed))
    assert store.record == _record("a", epoch=stored)


@pytest.mark.parametrize(
    "epoch",
    [{"S": "1"}, {}, {"N": "1", "S": "1"}],
    ids=["a string", "an empty value", "two types in one value"],
)
def test_renewal_loses_cleanly_when_the_stored_epoch_changed_type(epoch: object) -> None:
    # An operator rewrote the epoch as a string: the item is unreadable and the renewal's
    # condition (epoch = our number) is false; never an error from comparing the two types.
    store = MemoryLeaseStore("controller")
    store.store_item({**_record("a").to_item(), "epoch": epoch})
    assert isinstance(store.record, UnreadableLease)
    with pytest.raises(LeaseLost):
        store.renew(_record("a", rev="r2"), current=_record("a"))
    assert isinstance(store.record, UnreadableLease)


# ----------------------------------------------------------------------------- metrics


def test_a_standby_reports_zero_for_leading_and_epoch() -> None:
    store = MemoryLeaseStore("controller")
    store.record = _record("other", epoch=5)
    elector = _elector(store, FakeClock(), name="b")
    elector.step()
    values = elector.metric_values()
    assert values["oab.leader.is_leader"] == 0.0
    assert values["oab.leader.epoch"] == 0.0
    assert values["oab.leader.seconds_since_renew"] is None


#: Runs in a fresh interpreter: the global meter provider can be set only once per process.
_COUNT_TRANSITIONS = textwrap.dedent(
    """
    import json, threading
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    from oab.leader.config import ElectionConfig, lease_client_config
    from oab.leader.elector import LeaderElector
    from oab.leader.testing import FakeClock, MemoryLeaseStore

    elector = LeaderElector(
        ElectionConfig(identity="a", watchdog=False),
        MemoryLeaseStore("controller"),
        on_started_leading=lambda _e, stop: stop.wait(10),
        clock=FakeClock(),
    )
    elector.step()
    elector.stop(timeout=1)
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "oab.leader.transitions":
                    for p in metric.data.data_points:
                        points[p.attributes["oab.leader.transition"]] = p.value
    print(json.dumps(points))
    """
)


def test_each_start_and_stop_counts_one_transition() -> None:
    # The leader-flapping runbook alerts on this counter.
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_TRANSITIONS],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert json.loads(out.splitlines()[-1]) == {"started": 1, "stopped": 1}


# ----------------------------------------------------------------------------- decoding


def _item(**changes: dict[str, object]) -> dict[str, object]:
    return {**_record("a").to_item(), **changes, **lease_key("controller")}


def test_a_lease_name_longer_than_the_id_limit_is_unreadable() -> None:
    longest = {**_item(), "pk": {"S": "lease#" + "n" * 256}}
    decoded = decode_item(longest, name="n" * 256)
    assert isinstance(decoded, LeaseRecord)
    assert decoded.name == "n" * 256
    too_long = {**_item(), "pk": {"S": "lease#" + "n" * 257}}
    assert isinstance(decode_item(too_long, name="n" * 257), UnreadableLease)


def test_a_problem_quotes_at_most_8_characters_of_a_foreign_type_name() -> None:
    decoded = decode_item(_item(epoch={"Q" * 100: "1"}), name="controller")
    assert isinstance(decoded, UnreadableLease)
    assert decoded.problem == "epoch: expected type N, got QQQQQQQQ"


def test_display_timestamps_are_stored_to_the_millisecond() -> None:
    item = dataclasses.replace(_record("a"), acquired_at=1.23456, renewed_at=2.0).to_item()
    assert item["acquired_at"] == {"N": "1.235"}
    assert item["renewed_at"] == {"N": "2.0"}


def test_an_absent_transitions_count_reads_as_zero() -> None:
    item = {k: v for k, v in _item().items() if k != "transitions"}
    decoded = decode_item(item, name="controller")
    assert isinstance(decoded, LeaseRecord)
    assert decoded.transitions == 0


def test_an_unreadable_items_epoch_is_salvaged_from_zero_up() -> None:
    zero = UnreadableLease.of({"epoch": {"N": "0"}}, name="controller", problem="p")
    assert zero.epoch == 0
    negative = UnreadableLease.of({"epoch": {"N": "-1"}}, name="controller", problem="p")
    assert negative.epoch is None


def test_the_fingerprint_ignores_the_order_attributes_were_read_in() -> None:
    one = UnreadableLease.of(
        {"epoch": {"S": "x"}, "holder": {"S": "a"}}, name="controller", problem="p"
    )
    two = UnreadableLease.of(
        {"holder": {"S": "a"}, "epoch": {"S": "x"}}, name="controller", problem="p"
    )
    assert one.fingerprint == two.fingerprint


def test_absent_display_timestamps_read_as_zero() -> None:
    item = {k: v for k, v in _item().items() if k not in ("acquired_at", "renewed_at")}
    decoded = decode_item(item, name="controller")
    assert isinstance(decoded, LeaseRecord)
    assert (decoded.acquired_at, decoded.renewed_at) == (0.0, 0.0)


def test_a_negative_display_timestamp_is_unreadable() -> None:
    assert isinstance(decode_item(_item(acquired_at={"N": "0"}), name="controller"), LeaseRecord)
    negative = decode_item(_item(acquired_at={"N": "-0.5"}), name="controller")
    assert isinstance(negative, UnreadableLease)


def test_the_fingerprint_ignores_the_key_order_inside_maps() -> None:
    inner = {"x": {"S": "1"}, "y": {"S": "2"}}
    one = UnreadableLease.of({"epoch": {"M": inner}}, name="c", problem="p")
    two = UnreadableLease.of({"epoch": {"M": dict(reversed(inner.items()))}}, name="c", problem="p")
    assert one.fingerprint == two.fingerprint


def test_the_latest_display_timestamp_is_readable() -> None:
    latest = decode_item(_item(renewed_at={"N": "253402300799"}), name="controller")
    assert isinstance(latest, LeaseRecord)
    beyond = decode_item(_item(renewed_at={"N": "253402300799.5"}), name="controller")
    assert isinstance(beyond, UnreadableLease)


def test_a_lease_duration_of_one_millisecond_is_readable() -> None:
    decoded = decode_item(_item(lease_duration_ms={"N": "1"}), name="controller")
    assert isinstance(decoded, LeaseRecord)
    assert decoded.lease_duration_ms == 1


def test_out_of_range_problems_name_the_allowed_range() -> None:
    duration = decode_item(_item(lease_duration_ms={"N": "0"}), name="controller")
    assert isinstance(duration, UnreadableLease)
    assert duration.problem == "lease_duration_ms: out of range (allowed >= 1)"
    epoch = decode_item(_item(epoch={"N": "-1"}), name="controller")
    assert isinstance(epoch, UnreadableLease)
    assert epoch.problem == f"epoch: out of range (allowed 0..{2**63 - 1})"


def test_the_fingerprint_keeps_the_order_of_lists() -> None:
    one = UnreadableLease.of({"epoch": {"L": [{"S": "a"}, {"S": "b"}]}}, name="c", problem="p")
    two = UnreadableLease.of({"epoch": {"L": [{"S": "b"}, {"S": "a"}]}}, name="c", problem="p")
    assert one.fingerprint != two.fingerprint  # a list is ordered (only sets are not)


def test_values_no_decoder_produces_are_fingerprinted_by_type_not_rejected() -> None:
    # Only a foreign writer of the in-memory double can store such values; never an error.
    odd = UnreadableLease.of({"epoch": {"N": Decimal("1")}}, name="c", problem="p")
    other = UnreadableLease.of({"epoch": {"N": Decimal("2")}}, name="c", problem="p")
    assert odd.fingerprint == other.fingerprint  # both are "a Decimal"


def test_binary_attributes_are_fingerprinted_by_content() -> None:
    one = UnreadableLease.of({"epoch": {"B": b"\x00\x01"}}, name="controller", problem="p")
    same = UnreadableLease.of({"epoch": {"B": b"\x00\x01"}}, name="controller", problem="p")
    other = UnreadableLease.of({"epoch": {"B": b"\x00\x02"}}, name="controller", problem="p")
    assert one.fingerprint == same.fingerprint != other.fingerprint


def test_an_item_without_its_key_is_unreadable_not_an_error() -> None:
    item = {k: v for k, v in _item().items() if k != "pk"}
    decoded = decode_item(item, name="controller")
    assert isinstance(decoded, UnreadableLease)
    assert decoded.problem == "pk: missing"


def test_the_largest_epoch_is_readable() -> None:
    decoded = decode_item(_item(epoch={"N": str(2**63 - 1)}), name="controller")
    assert isinstance(decoded, LeaseRecord)
    assert decoded.epoch == 2**63 - 1


def test_an_epoch_of_zero_is_readable() -> None:
    decoded = decode_item(_item(epoch={"N": "0"}), name="controller")
    assert isinstance(decoded, LeaseRecord)
    assert decoded.epoch == 0


@pytest.mark.parametrize("raw", [5, ["1"]])
def test_a_number_attribute_holding_no_string_is_unreadable_not_an_error(raw: object) -> None:
    decoded = decode_item(_item(epoch={"N": raw}), name="controller")
    assert isinstance(decoded, UnreadableLease)
    assert decoded.problem == "epoch: not a number"


def test_a_stored_transitions_count_of_zero_is_readable() -> None:
    decoded = decode_item(_item(transitions={"N": "0"}), name="controller")
    assert isinstance(decoded, LeaseRecord)
    assert decoded.transitions == 0


def test_a_number_longer_than_64_characters_is_unreadable() -> None:
    longest = "0." + "0" * 61 + "1"  # 64 characters: a valid (tiny) timestamp
    assert len(longest) == 64
    decoded = decode_item(_item(acquired_at={"N": longest}), name="controller")
    assert isinstance(decoded, LeaseRecord)
    too_long = "0." + "0" * 62 + "1"
    decoded = decode_item(_item(acquired_at={"N": too_long}), name="controller")
    assert isinstance(decoded, UnreadableLease)
    assert "acquired_at: not a number" in decoded.problem


# ----------------------------------------------------------------------------- fence


def test_a_fence_is_immutable() -> None:
    fence = Fence(table="t", lease_name="controller", holder=ReplicaId("a"), epoch=Epoch(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fence.epoch = Epoch(2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Fence("t", "controller", ReplicaId("a"), Epoch(1))  # type: ignore[misc]


def test_fence_failed_never_reads_a_reason_from_the_end_of_the_list() -> None:
    cancelled = ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}],
        },
        "TransactWriteItems",
    )
    assert fence_failed(cancelled, 1)
    assert not fence_failed(cancelled, 0)
    assert not fence_failed(cancelled, -1)  # no fence at index -1, whatever failed last
    assert not fence_failed(cancelled, 2)
    assert not fence_failed(cancelled, 5)
    assert not fence_failed(ValueError("not a client error"), 0)
    partial = ClientError(
        {"Error": {"Code": "TransactionCanceledException"}, "CancellationReasons": [{}]},
        "TransactWriteItems",
    )
    assert not fence_failed(partial, 0)  # a reason without a code is no failed fence


@pytest.mark.parametrize("code", ["ConditionalCheckFailedException", "ValidationException"])
def test_fence_failed_only_reads_reasons_of_a_cancelled_transaction(code: str) -> None:
    # Codes sorting before and after TransactionCanceledException, with reasons attached.
    other = ClientError(
        {
            "Error": {"Code": code, "Message": "no"},
            "CancellationReasons": [{"Code": "ConditionalCheckFailed"}],
        },
        "TransactWriteItems",
    )
    assert not fence_failed(other, 0)


def test_a_negative_drain_timeout_is_refused_and_stops_nothing() -> None:
    store = MemoryLeaseStore("controller")
    elector = _elector(store, FakeClock())
    elector.step()
    assert elector.is_leader
    with pytest.raises(ValueError, match="drain_timeout must be >= 0"):
        elector.release(drain_timeout=-0.5)
    elector.step()  # still leading and renewing: the bad call stopped nothing
    assert elector.is_leader
    assert store.record is not None
    assert store.record.holder == "a"
    assert elector.release(drain_timeout=5)
