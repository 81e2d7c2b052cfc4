"""The clock the leader package reads, injected so tests can drive time by hand.

Two readings with different jobs: ``monotonic()`` decides every lease judgement (expiry, renew
deadline, watchdog) and is never compared across hosts; ``time()`` (wall clock) only stamps values
that are stored for display (``acquired_at``, ``renewed_at``). ``oab.controller.testing.FakeClock``
satisfies :class:`Clock` structurally.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of monotonic and wall time, in seconds."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; meaningful only on this host."""
        ...

    def time(self) -> float:
        """Seconds since the Unix epoch; for stored and displayed values only."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and ``time.time``."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def time(self) -> float:
        """``time.time()``."""
        return time.time()
