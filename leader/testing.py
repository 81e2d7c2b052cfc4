"""Test doubles for ``oab.leader``: an in-memory lease store with fault injection, a fake clock.

:class:`FakeClock` (a manual monotonic and wall clock), :class:`SequentialIds` and
:func:`wait_until` (a condition polled against a deadline) are what the leader's tests need
besides the store; they import nothing outside this package.

:class:`MemoryLeaseStore` shares the conditional-write and ambiguity-resolution logic with the
DynamoDB adapter (both derive from :class:`~oab.leader.lease.ConditionalLeaseStore`); only the two
primitives differ, so unit tests of the elector exercise the real resolution paths.

Faults (queued per primitive, consumed one per call):

- ``Fault.LOST_REPLY``: the write applies, then the caller sees a timeout (ambiguous, succeeded);
- ``Fault.NOT_APPLIED``: the caller sees a timeout and the write does not apply;
- ``Fault.DEFERRED``: the caller sees a timeout, the write is held back and applies (conditionally)
  on :meth:`MemoryLeaseStore.deliver_deferred`, like a delayed request;
- ``Fault.UNAVAILABLE``: the call fails outright (reads: the read-back fails);
- ``Fault.NO_WINNER``: if the write's condition fails, the reply does not carry the stored item
  (as an implementation that ignores ``ReturnValuesOnConditionCheckFailure``).

:meth:`MemoryLeaseStore.store_item` writes any low-level item, garbage included, the way an
operator or a foreign writer could; reads then decode it like the DynamoDB adapter does.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from oab.leader.errors import LeaseLost, LeaseUnavailable
from oab.leader.lease import AmbiguousWrite, ConditionalLeaseStore, Precondition
from oab.leader.record import LeaseRecord, StoredLease, decode_item, lease_key

__all__ = ["FakeClock", "Fault", "MemoryLeaseStore", "SequentialIds", "wait_until"]

T = TypeVar("T")


class Fault(enum.Enum):
    """An injected failure of one store call."""

    LOST_REPLY = "lost_reply"
    NOT_APPLIED = "not_applied"
    DEFERRED = "deferred"
    UNAVAILABLE = "unavailable"
    NO_WINNER = "no_winner"


class MemoryLeaseStore(ConditionalLeaseStore):
    """A thread-safe in-memory :class:`~oab.leader.lease.LeaseStore` for one lease."""

    def __init__(self, name: str = "controller", *, table: str = "memory-lease") -> None:
        super().__init__(table, name)
        self._lock = threading.Lock()
        self.record: StoredLease | None = None
        self.writes = 0  # applied writes
        self._write_faults: deque[Fault] = deque()
        self._read_faults: deque[Fault | None] = deque()
        self._deferred: list[tuple[LeaseRecord, Precondition]] = []

    def fail_writes(self, *faults: Fault) -> None:
        """Queue faults for the next write calls, in order."""
        with self._lock:
            self._write_faults.extend(faults)

    def fail_reads(self, *faults: Fault | None) -> None:
        """Queue faults for the next read calls (any fault fails the read; ``None`` skips one)."""
        with self._lock:
            self._read_faults.extend(faults)

    def store_item(self, attributes: Mapping[str, Any]) -> None:
        """Overwrite the item with ``attributes`` (low-level values; the key is added)."""
        with self._lock:
            self.record = decode_item({**attributes, **lease_key(self.name)}, name=self.name)
            self.writes += 1

    def deliver_deferred(self) -> int:
        """Apply held-back writes whose condition still holds; returns how many applied."""
        with self._lock:
            pending, self._deferred = self._deferred, []
            applied = 0
            for new, pre in pending:
                if pre.holds_for(self.record):
                    self._apply(new)
                    applied += 1
            return applied

    def _apply(self, new: LeaseRecord) -> None:
        self.record = new
        self.writes += 1

    def _read(self) -> StoredLease | None:
        with self._lock:
            if self._read_faults and self._read_faults.popleft() is not None:
                raise LeaseUnavailable("injected: read failed")
            return self.record

    def _put(self, new: LeaseRecord, pre: Precondition) -> None:
        with self._lock:
            fault = self._write_faults.popleft() if self._write_faults else None
            if fault is Fault.UNAVAILABLE:
                raise LeaseUnavailable("injected: store unavailable")
            if fault is Fault.NOT_APPLIED:
                raise AmbiguousWrite("injected: timeout, not applied")
            if fault is Fault.DEFERRED:
                self._deferred.append((new, pre))
                raise AmbiguousWrite("injected: timeout, write delayed")
            if not pre.holds_for(self.record):
                if fault is Fault.NO_WINNER:
                    raise AmbiguousWrite("injected: condition failed, stored item not returned")
                raise LeaseLost("condition failed", current=self.record)
            self._apply(new)
            if fault is Fault.LOST_REPLY:
                raise AmbiguousWrite("injected: timeout after the write applied")


class FakeClock:
    """A clock that only moves when told to. Thread-safe; ``sleep`` advances it.

    Satisfies :class:`~oab.leader.clock.Clock` (and any clock protocol with ``monotonic``,
    ``time`` and ``sleep``) structurally.
    """

    def __init__(self, *, monotonic: float = 1_000.0, wall: float = 1_800_000_000.0) -> None:
        self._mono = monotonic
        self._wall = wall
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        """Seconds on the fake monotonic clock."""
        with self._lock:
            return self._mono

    def time(self) -> float:
        """Seconds since the epoch on the fake wall clock."""
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Move both readings forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock never goes backwards")
        with self._lock:
            self._mono += seconds
            self._wall += seconds

    def sleep(self, seconds: float) -> None:
        """Sleeping on a fake clock advances it instead of blocking."""
        self.advance(max(0.0, seconds))


class SequentialIds:
    """Deterministic ids: ``prefix-000001``, ``prefix-000002``, ..."""

    def __init__(self, prefix: str = "id") -> None:
        self._prefix = prefix
        self._n = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self._n += 1
            return f"{self._prefix}-{self._n:06d}"


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns a truthy value or ``timeout`` seconds pass.

    Returns the truthy value; raises ``TimeoutError`` naming ``message`` otherwise. (Real time:
    for conditions other threads or processes make true; a test's own time is a FakeClock.)
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {message}")
        time.sleep(interval)
