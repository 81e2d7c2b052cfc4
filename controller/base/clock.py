"""A clock to inject: monotonic time for deadlines, wall time for stored values, and sleep.

Design
------
client-go passes a ``Clock`` in every component's config; this is that seam for the controller's
components that wait (the snapshot sidecar and ``oabctl snapshot``'s requester). Tests pass
``oab.controller.testing.FakeClock``, which satisfies it structurally (as it does the clocks of
``oab.leader`` and ``oab.queue``, which cannot import this one).

Time model: ``monotonic`` is meaningful only on this host and never stored; ``time`` is the wall
clock, for values stored or shown (compared across hosts only with an allowance for skew).
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Monotonic time for deadlines, wall time for records, and a way to wait."""

    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def time(self) -> float:
        """``time.time()``."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)``."""
        time.sleep(max(0.0, seconds))
