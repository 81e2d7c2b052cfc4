"""The leader elector: campaign, renew, self-fence, hand off.

Design
------
One elector per replica contends for one lease through a :class:`~oab.leader.lease.LeaseStore`.
Its loop is a sequence of :meth:`LeaderElector.step` calls, each returning how long to wait before
the next; :meth:`run` (or :meth:`start`, which runs it on a thread) does the waiting. Tests call
``step`` directly on a fake clock.

Standby (candidate) step: read the lease. Acquire at once (epoch + 1, conditional on the revision
just read) when it is absent, released, or still carries a revision this replica wrote itself;
otherwise acquire only once the *same revision* has been seen for a full stored lease duration
(clamped to :data:`~oab.leader.record.MAX_LEASE_DURATION_MS`).

An unreadable lease item (wrong types, missing attributes, garbage values; see
:class:`~oab.leader.record.UnreadableLease`) is held by nobody once the *same item* (same
fingerprint) has been seen for this replica's configured ``lease_duration``: a live leader would
have rewritten it by then (its renewal either overwrites the item or fails and makes it step
down), so waiting one lease duration is as safe as for a readable item. It is then replaced by an
acquisition conditional on exactly the stored values read. The unreadable item and a clamped
duration are each logged once per observed item version, with the lease name.

Leader step: renew (new revision, same holder and epoch, conditional on the previous revision).

Invariants
----------
1. Epochs only grow: every acquisition writes ``max(stored epoch, highest epoch this replica has
   seen) + 1`` conditionally on the revision read, so at most one replica ever holds a given
   epoch. When the stored epoch is unreadable, the replacement continues from the highest epoch
   this replica has seen. That cannot let a stale fenced write through, whatever epoch the
   garbage hid: a fence matches only while the item holds *both* its holder and its epoch; the
   replacement names this replica as holder with an epoch above every one it held before, so
   no earlier fence of any replica matches it, and since every replica takes ``max`` with its
   own history, no replica ever holds the same epoch twice (holder ids are unique per process
   incarnation). Only the display property "epochs never repeat across replicas" depends on the
   replacing replica having seen the latest epoch (it has, unless every replica that saw it
   restarted while the item was unreadable).
2. A leader stops acting (sets the ``stop`` event its work was started with, then calls
   ``on_stopped_leading``) no later than ``renew_deadline`` after *sending* its last successful
   renewal, whereas nobody can acquire before ``lease_duration`` after having *received* that
   renewal's revision. A watchdog thread enforces the stop independently of the loop, and ends the
   process (``os._exit``) when the loop itself is stuck longer than the watchdog timeout.
3. An acquire or renew whose outcome is ambiguous is resolved by reading back (see
   :mod:`oab.leader.lease`); a renewal that in fact landed is never mistaken for a loss, and the
   elector remembers its recent revisions so a write that lands late is recognised as its own.
4. A term is never resumed after stepping down: leadership starts again only with a new epoch.
5. What a paused or partitioned ex-leader still writes is stopped by the fence
   (:mod:`oab.leader.fence`), not by timing.

Time model
----------
Only the local monotonic clock judges anything (expiry, deadlines, watchdog); it is never compared
across hosts. The wall clock only stamps ``acquired_at``/``renewed_at`` for display. Clock *rate*
differences up to ``(lease_duration - renew_deadline) / lease_duration`` are tolerated.

Callbacks
---------
``on_started_leading(epoch, stop)`` runs on its own thread and should return once ``stop`` is set
and its work has drained (that return is what :meth:`release` waits for). ``on_stopped_leading()``
and ``on_new_leader(holder)`` run on the elector's thread and must be quick.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import NoReturn

from oab.leader import telemetry
from oab.leader.clock import Clock, SystemClock
from oab.leader.config import ElectionConfig
from oab.leader.errors import LeaderError, LeaseLost
from oab.leader.fence import Fence
from oab.leader.lease import LeaseStore
from oab.leader.record import (
    MAX_LEASE_DURATION_MS,
    Epoch,
    LeaseRecord,
    ReplicaId,
    Revision,
    StoredLease,
    UnreadableLease,
)

__all__ = ["EXIT_STUCK", "LeaderElector", "NotLeader"]

log = logging.getLogger("oab.leader")

#: Exit status used by the watchdog (EX_SOFTWARE).
EXIT_STUCK = 70


class NotLeader(LeaderError):
    """Raised by :meth:`LeaderElector.fence` when this replica does not lead."""


def _new_revision() -> str:
    return uuid.uuid4().hex


def _noop_stopped() -> None:
    return None


def _noop_new_leader(_holder: str) -> None:
    return None


def _version(stored: StoredLease | None) -> tuple[str, str] | None:
    """What "unchanged" compares: a record's revision, an unreadable item's fingerprint."""
    if stored is None:
        return None
    if isinstance(stored, UnreadableLease):
        return ("unreadable", stored.fingerprint)
    return ("revision", stored.revision)


class LeaderElector:
    """Lease-based leader election with fencing epochs for one replica (see module docstring)."""

    def __init__(
        self,
        config: ElectionConfig,
        store: LeaseStore,
        *,
        on_started_leading: Callable[[Epoch, threading.Event], None],
        on_stopped_leading: Callable[[], None] = _noop_stopped,
        on_new_leader: Callable[[str], None] = _noop_new_leader,
        clock: Clock | None = None,
        new_revision: Callable[[], str] = _new_revision,
        exit_process: Callable[[int], NoReturn] = os._exit,
        watchdog_timeout: float | None = None,
    ) -> None:
        """Build an elector; nothing runs until :meth:`start`, :meth:`run` or :meth:`step`.

        ``watchdog_timeout`` (default ``config.lease_duration``): how long one loop step may run
        before the watchdog ends the process with ``exit_process(EXIT_STUCK)``.
        """
        if store.name != config.lease_name:
            raise ValueError(f"store is for lease {store.name!r}, config for {config.lease_name!r}")
        self.config = config
        self._store = store
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._clock: Clock = clock or SystemClock()
        self._new_revision = new_revision
        self._exit = exit_process
        self._watchdog_timeout = watchdog_timeout or config.lease_duration

        self._lock = threading.RLock()  # guards the fields below
        self._step_lock = threading.Lock()  # one step (or release) at a time
        self._term: LeaseRecord | None = None  # my record while leading
        self._renew_sent_at = 0.0  # monotonic send time of the last successful write
        self._stop: threading.Event | None = None  # stop token of the current term
        self._work: threading.Thread | None = None
        self._epoch_floor = 0  # highest epoch this replica has seen stored or held
        self._observed: StoredLease | None = None
        self._observed_at = 0.0  # monotonic receive time when _observed's revision was first seen
        self._vacant_since: float | None = None
        self._last_leader: str | None = None
        self._mine: OrderedDict[Revision, float] = OrderedDict()  # my revisions -> send time
        self._closed = False
        self._releasing = False  # set by release(): never acquire again
        self._busy_since: float | None = None

        self._until = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: _Watchdog | None = None
        telemetry.register(self)

    # ------------------------------------------------------------------ public state

    @property
    def identity(self) -> ReplicaId:
        """This replica's id."""
        return self.config.identity

    @property
    def running(self) -> bool:
        """True while the elector's loop thread runs (a health signal for the process)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def is_leader(self) -> bool:
        """True while leading and within the renew deadline of the last successful renewal."""
        with self._lock:
            return self._term is not None and not self._deadline_passed(self._clock.monotonic())

    @property
    def epoch(self) -> Epoch | None:
        """The epoch of the current term, or ``None`` when not leading."""
        with self._lock:
            return self._term.epoch if self._term is not None else None

    def fence(self) -> Fence:
        """The fence of the current term; raises :class:`NotLeader` when not leading."""
        with self._lock:
            term = self._term
        if term is None or not self.is_leader:
            raise NotLeader(f"{self.identity} does not lead {self.config.lease_name}")
        return Fence(
            table=self._store.table,
            lease_name=self.config.lease_name,
            holder=self.identity,
            epoch=term.epoch,
        )

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        """Run the loop (and the watchdog, if configured) on daemon threads.

        After :meth:`release` or :meth:`stop` (a shutdown that arrived during start-up) this starts
        nothing: the elector never campaigns once told to stop.
        """
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("elector already started")
            if self._until.is_set():
                return
            thread = threading.Thread(
                target=self.run, args=(self._until,), name=f"elector-{self.identity}", daemon=True
            )
            watchdog = _Watchdog(self) if self.config.watchdog else None
            self._thread, self._watchdog = thread, watchdog
        # A release() racing with this sees threads that are not alive yet and does not join
        # them; they then start, find ``_until`` set and end at once.
        thread.start()
        if watchdog is not None:
            watchdog.start()

    def stop(self, *, timeout: float | None = None) -> None:
        """Stop campaigning without releasing: step down locally; the lease expires for others."""
        self._until.set()
        self._join_loop(timeout if timeout is not None else self.config.lease_duration)
        if self._watchdog is not None:
            self._watchdog.stop()
        with self._step_or_timeout() as owned:
            self._closed = True
            self._step_down("elector stopped" if owned else "elector stopped (step stuck)")

    def run(self, until: threading.Event) -> None:
        """Step until ``until`` is set. Errors never end the loop: they count as failed steps."""
        while not until.is_set():
            try:
                delay = self.step()
            except Exception:  # the loop must survive anything a store or callback throws
                log.exception("elector step failed", extra=self._extra())
                delay = self.config.retry_period
            until.wait(delay)

    def step(self) -> float:
        """One campaign/renew step; returns seconds to wait before the next one."""
        with self._step_lock:
            if self._closed:
                return self.config.retry_period
            self._busy_since = self._clock.monotonic()
            try:
                if self._term is not None:
                    return self._leader_step()
                return self._candidate_step()
            finally:
                self._busy_since = None

    def release(self, *, drain_timeout: float) -> bool:
        """Graceful handoff: stop leader work, wait for it to drain (bounded), release the lease.

        The loop keeps renewing while the work drains. Afterwards the elector is closed (it never
        campaigns again). Returns True when the lease was released by this call. A negative
        ``drain_timeout`` is a caller's bug (``ValueError``, nothing stopped): a shutdown budget
        already spent is 0, which releases without waiting for the work.
        """
        if drain_timeout < 0:
            raise ValueError(f"drain_timeout must be >= 0, got {drain_timeout}")
        with self._lock:
            self._releasing = True
            stop, work = self._stop, self._work
        if stop is not None:
            stop.set()
        if work is not None:
            work.join(drain_timeout)
            if work.is_alive():
                log.warning("leader work did not drain in time", extra=self._extra())
        self._until.set()
        released = False
        with self._step_or_timeout() as owned:
            self._closed = True
            term = self._term
            if term is not None and owned:
                # Conditional on our revision, so harmless even if someone took over meanwhile.
                released = self._release_term(term)
            elif term is not None:
                log.warning(
                    "release: the elector step is stuck in a store call; not releasing "
                    "(the lease expires for the standbys instead)",
                    extra=self._extra(),
                )
            self._step_down("released" if released else "closing")
        self._join_loop(self.config.lease_duration)
        if self._watchdog is not None:
            self._watchdog.stop()
        return released

    @contextlib.contextmanager
    def _step_or_timeout(self) -> Iterator[bool]:
        """Hold the step lock, waiting at most the watchdog timeout; yields whether it is held.

        A step that runs longer than that is stuck (the watchdog ends the process for it), and a
        shutdown must not wait on it forever: the caller then proceeds without the lock, which
        is safe because a step that finishes later finds the elector closed or releasing (see
        :meth:`_acquire` and the stopped-term check in :meth:`_leader_step`).
        """
        owned = self._step_lock.acquire(timeout=self._watchdog_timeout)
        try:
            yield owned
        finally:
            if owned:
                self._step_lock.release()

    def _join_loop(self, timeout: float) -> None:
        thread = self._thread
        # Never join a thread that is not started yet (start() racing with a shutdown) or itself.
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ steps

    def _leader_step(self) -> float:
        assert self._term is not None
        term = self._term
        now = self._clock.monotonic()
        if self._deadline_passed(now):
            self._step_down("renew deadline passed")
            return 0.0
        new = replace(term, revision=self._revision(), renewed_at=self._clock.time())
        sent = self._sent(new.revision)
        try:
            got = self._store.renew(new, current=term)
        except LeaseLost as exc:
            current = exc.current
            if (
                isinstance(current, LeaseRecord)
                and current.holder == self.identity
                and current.epoch == term.epoch
                and current.revision in self._mine
            ):
                # An earlier ambiguous renewal of ours landed late: still our term.
                with self._lock:
                    self._term = current
                    self._renew_sent_at = self._mine[current.revision]
                return self._next_renew()
            self._renew_failed(exc)
            self._step_down("lease lost", current=current)
            self._observe(current, self._clock.monotonic())
            return 0.0
        except LeaderError as exc:
            self._renew_failed(exc)
            now = self._clock.monotonic()
            if self._deadline_passed(now):
                self._step_down("renew deadline passed")
                return 0.0
            # Retry one period later, but wake exactly at the deadline to step down on time.
            deadline = self._renew_sent_at + self.config.renew_deadline
            return max(0.0, min(self.config.retry_period, deadline - now))
        with self._lock:
            stopped = self._stop is not None and self._stop.is_set()
            if not stopped:
                self._term = got
                self._renew_sent_at = sent
        if stopped:
            # The renewal came back after the watchdog had already stopped this term's work: a
            # stopped term is never resumed (it would hold the lease with no work running).
            # Step down; the lease still carries our revision, so the next step campaigns again
            # at once for a new epoch.
            self._step_down("renew deadline passed (late renewal)")
            return 0.0
        return self._next_renew()

    def _candidate_step(self) -> float:
        try:
            current = self._store.get()
        except LeaderError as exc:
            log.info("reading the lease failed: %s", exc, extra=self._extra())
            return self.config.retry_period
        now = self._clock.monotonic()
        self._observe(current, now)
        if not self._may_acquire(current, now):
            if current is None:
                return self.config.retry_period
            expires = self._observed_at + self._wait_on(current)
            return max(0.0, min(self.config.retry_period, expires - now))
        return self._acquire(current)

    def _wait_on(self, current: StoredLease) -> float:
        """How long ``current`` must stay unchanged before it counts as held by nobody."""
        if isinstance(current, UnreadableLease):
            return self.config.lease_duration
        return current.lease_duration  # the holder's promise, clamped

    def _may_acquire(self, current: StoredLease | None, now: float) -> bool:
        if self._releasing:
            return False
        if current is None:
            return True
        if isinstance(current, LeaseRecord):
            if current.released:
                return True
            if current.holder == self.identity and current.revision in self._mine:
                # Nobody wrote since our own last write (e.g. we stepped down on a store hiccup).
                return True
        return now - self._observed_at >= self._wait_on(current)

    def _acquire(self, expected: StoredLease | None) -> float:
        wall = self._clock.time()
        stored_epoch = expected.epoch if expected is not None else 0
        with self._lock:
            # max(): see invariant 1 (an unreadable epoch, or a store that went backwards).
            epoch = Epoch(max(stored_epoch or 0, self._epoch_floor) + 1)
        known = expected.transitions if expected is not None else 0
        # Unknown (unreadable): one acquisition per epoch is the usual history.
        transitions = int(epoch) if known is None else known + 1
        new = LeaseRecord(
            name=self.config.lease_name,
            holder=self.identity,
            epoch=epoch,
            revision=self._revision(),
            lease_duration_ms=self.config.lease_duration_ms,
            transitions=transitions,
            acquired_at=wall,
            renewed_at=wall,
        )
        expected_unreadable = isinstance(expected, UnreadableLease)
        if expected_unreadable:
            log.warning(
                "replacing the unreadable lease item with epoch %d",
                int(new.epoch),
                extra=self._extra(),
            )
        with telemetry.tracer.start_as_current_span("oab.leader.acquire") as span:
            span.set_attribute("oab.replica", self.identity)
            span.set_attribute("oab.leader.epoch", int(new.epoch))
            span.set_attribute("oab.leader.replaces_unreadable", expected_unreadable)
            sent = self._sent(new.revision)
            try:
                got = self._store.try_acquire(new, expected=expected)
            except LeaseLost as exc:
                span.set_attribute("oab.leader.outcome", "contested")
                log.info("acquire lost to another replica", extra=self._extra())
                self._observe(exc.current, self._clock.monotonic())
                return self.config.retry_period
            except LeaderError as exc:
                span.set_attribute("oab.leader.outcome", "unavailable")
                log.info("acquire failed: %s", exc, extra=self._extra())
                return self.config.retry_period
            span.set_attribute("oab.leader.outcome", "acquired")
        if self._releasing:
            # release() gave up waiting for this step (a stuck call) and returned: hand the lease
            # straight back instead of leading with nobody left to release it.
            self._release_term(got)
            return self.config.retry_period
        self._start_leading(got, sent)
        return self._next_renew()

    # ------------------------------------------------------------------ transitions

    def _start_leading(self, record: LeaseRecord, sent: float) -> None:
        stop = threading.Event()
        with self._lock:
            self._term = record
            self._renew_sent_at = sent
            self._stop = stop
        self._observe(record, self._clock.monotonic())
        self._count_transition("started")
        log.info("started leading", extra=self._extra())
        work = threading.Thread(
            target=self._run_work,
            args=(record.epoch, stop),
            name=f"leader-work-{self.identity}-{record.epoch}",
            daemon=True,
        )
        with self._lock:
            self._work = work
        work.start()

    def _run_work(self, epoch: Epoch, stop: threading.Event) -> None:
        try:
            self._on_started(epoch, stop)
        except Exception:
            log.exception("on_started_leading failed", extra=self._extra())

    def _step_down(self, reason: str, *, current: StoredLease | None = None) -> None:
        with self._lock:
            term, stop = self._term, self._stop
            if term is None:
                return
            self._term = None
        if stop is not None:
            stop.set()
        with telemetry.tracer.start_as_current_span("oab.leader.step_down") as span:
            span.add_event(
                "step_down",
                {
                    "oab.replica": self.identity,
                    "oab.leader.epoch": int(term.epoch),
                    "reason": reason,
                },
            )
        self._count_transition("stopped")
        log.warning(
            "stopped leading: %s",
            reason,
            extra={**self._extra(), "epoch": int(term.epoch), "winner": _holder(current)},
        )
        try:
            self._on_stopped()
        except Exception:
            log.exception("on_stopped_leading failed", extra=self._extra())

    def _release_term(self, term: LeaseRecord) -> bool:
        new = replace(term, holder=None, revision=self._revision(), renewed_at=self._clock.time())
        with telemetry.tracer.start_as_current_span("oab.leader.release") as span:
            span.set_attribute("oab.replica", self.identity)
            span.set_attribute("oab.leader.epoch", int(term.epoch))
            self._sent(new.revision)
            try:
                self._store.release(new, current=term)
            except LeaderError as exc:
                # Not released: standbys take over after the lease expires instead.
                span.set_attribute("oab.leader.outcome", type(exc).__name__)
                log.warning("release failed: %s", exc, extra=self._extra())
                return False
            span.set_attribute("oab.leader.outcome", "released")
        log.info("released the lease", extra={**self._extra(), "epoch": int(term.epoch)})
        return True

    def _renew_failed(self, exc: LeaderError) -> None:
        with telemetry.tracer.start_as_current_span("oab.leader.renew") as span:
            span.add_event(
                "renew_failed",
                {
                    "oab.replica": self.identity,
                    "error": type(exc).__name__,
                    "retryable": exc.retryable,
                },
            )
        log.warning("renew failed: %s", exc, extra=self._extra())

    # ------------------------------------------------------------------ helpers

    def _observe(self, record: StoredLease | None, received_at: float) -> None:
        with self._lock:
            previous = self._observed
            new_version = previous is None or _version(previous) != _version(record)
            if new_version:
                self._observed_at = received_at
            self._observed = record
            if record is not None and record.epoch is not None:
                self._epoch_floor = max(self._epoch_floor, int(record.epoch))
            holder = _holder(record)
            # An unreadable item counts as "without a leader" (that is what it means for the
            # fleet until it is replaced).
            if holder is not None:
                self._vacant_since = None
            elif self._vacant_since is None:
                self._vacant_since = received_at
            changed = holder is not None and holder != self._last_leader
            if holder is not None:
                self._last_leader = holder
        if new_version:
            self._report_oddities(record)
        if changed and holder is not None:
            try:
                self._on_new_leader(holder)
            except Exception:
                log.exception("on_new_leader failed", extra=self._extra())

    def _report_oddities(self, record: StoredLease | None) -> None:
        """Log, once per observed item version, what makes the stored lease unusual."""
        if isinstance(record, UnreadableLease):
            log.warning(
                "lease item is unreadable (%s); it counts as held by nobody once unchanged for "
                "%.1f s, then it is replaced",
                record.problem,
                self.config.lease_duration,
                extra={**self._extra(), "stored_epoch": record.epoch},
            )
        elif isinstance(record, LeaseRecord) and record.duration_clamped:
            log.warning(
                "stored lease duration %d ms exceeds the maximum %d ms; waiting %d ms instead",
                record.lease_duration_ms,
                MAX_LEASE_DURATION_MS,
                MAX_LEASE_DURATION_MS,
                extra=self._extra(),
            )

    def _revision(self) -> Revision:
        return Revision(self._new_revision())

    def _sent(self, revision: Revision) -> float:
        sent = self._clock.monotonic()
        with self._lock:
            self._mine[revision] = sent
            while len(self._mine) > self.config.recent_revisions:
                self._mine.popitem(last=False)
        return sent

    def _deadline_passed(self, now: float) -> bool:
        return now - self._renew_sent_at >= self.config.renew_deadline

    def _next_renew(self) -> float:
        # Due one retry period after the last successful send; always before the renew deadline
        # (ElectionConfig enforces renew_deadline > 1.2 * retry_period).
        return max(0.0, self._renew_sent_at + self.config.retry_period - self._clock.monotonic())

    def _count_transition(self, kind: str) -> None:
        telemetry.transitions.add(1, {**self.metric_attributes(), "oab.leader.transition": kind})

    def _extra(self) -> dict[str, object]:
        with self._lock:
            epoch = int(self._term.epoch) if self._term is not None else None
        return {"replica": self.identity, "lease": self.config.lease_name, "epoch": epoch}

    # ------------------------------------------------------------------ watchdog hooks

    def enforce_deadline(self) -> bool:
        """Set the stop token if the renew deadline has passed (watchdog); True if it was set."""
        with self._lock:
            if self._term is None or self._stop is None:
                return False
            if not self._deadline_passed(self._clock.monotonic()):
                return False
            stop = self._stop
        if not stop.is_set():
            stop.set()
            log.warning("watchdog: renew deadline passed, stopping work", extra=self._extra())
            return True
        return False

    def stuck_for(self) -> float:
        """Seconds the current step has been running (0 when idle)."""
        busy = self._busy_since
        return 0.0 if busy is None else max(0.0, self._clock.monotonic() - busy)

    def watchdog_check(self, *, paused_until: float = 0.0) -> None:
        """One watchdog pass: self-fence past the deadline; end the process if the loop is stuck.

        ``paused_until`` is the monotonic time the watchdog itself last resumed from a pause of the
        whole process (a SIGSTOP pauses the loop too; that is not the loop being stuck).
        """
        self.enforce_deadline()
        busy = self._busy_since
        if busy is None:
            return
        stuck = self._clock.monotonic() - max(busy, paused_until)
        if stuck > self._watchdog_timeout:
            log.critical(
                "watchdog: elector loop stuck for %.1f s, exiting", stuck, extra=self._extra()
            )
            logging.shutdown()
            self._exit(EXIT_STUCK)

    # ------------------------------------------------------------------ telemetry

    def metric_attributes(self) -> dict[str, str]:
        """Metric attributes: replica id and lease name."""
        return {"oab.replica": self.identity, "oab.lease": self.config.lease_name}

    def metric_values(self) -> dict[str, float | None]:
        """Gauge values for :mod:`oab.leader.telemetry`."""
        now = self._clock.monotonic()
        with self._lock:
            leading = self._term is not None
            epoch = int(self._term.epoch) if self._term is not None else 0
            since_renew = now - self._renew_sent_at if leading else None
            vacant_since = self._vacant_since
        without: float | None = None
        if not leading:
            without = 0.0 if vacant_since is None else now - vacant_since
        return {
            telemetry.IS_LEADER: 1.0 if leading else 0.0,
            telemetry.EPOCH: float(epoch),
            telemetry.SECONDS_SINCE_RENEW: since_renew,
            telemetry.SECONDS_WITHOUT_LEADER: without,
        }


def _holder(stored: StoredLease | None) -> ReplicaId | None:
    """The readable holder of ``stored`` (an unreadable item has none)."""
    return stored.holder if isinstance(stored, LeaseRecord) else None


class _Watchdog:
    """A thread that calls :meth:`LeaderElector.watchdog_check` on real time."""

    def __init__(self, elector: LeaderElector, *, interval: float = 0.1) -> None:
        self._elector = elector
        self._interval = interval
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="elector-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()

    def _loop(self) -> None:
        clock = self._elector._clock
        last = clock.monotonic()
        paused_until = 0.0
        while not self._done.wait(self._interval):
            now = clock.monotonic()
            if now - last > 10 * self._interval + 0.5:
                # The whole process was paused (SIGSTOP, VM freeze): restart the stuck timer.
                paused_until = now
            last = now
            self._elector.watchdog_check(paused_until=paused_until)
