"""Test doubles for ``oab.queue``: a manual clock, sequential ids and a deadline wait.

The in-memory twin of the DynamoDB store is :class:`oab.queue.store.MemoryStore`, next to the
store it mirrors. These doubles import nothing outside this package (``oab.queue`` knows nothing
of the leader or the controller), so the queue's tests need no other package's test doubles.
:class:`FakeClock` satisfies :class:`oab.queue.config.Clock` structurally.

Time model: :class:`FakeClock` moves only when told; :func:`wait_until` polls real time (for
conditions other threads or processes make true).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["FakeClock", "SequentialIds", "wait_until"]

T = TypeVar("T")


class FakeClock:
    """A clock that only moves when told to. Thread-safe; ``sleep`` advances it.

    Satisfies :class:`~oab.queue.config.Clock` (and any clock protocol with ``monotonic``,
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
