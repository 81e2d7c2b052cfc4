"""A clock to inject: monotonic time for deadlines, wall time for stored values, and sleep.

Design
------
client-go passes a ``Clock`` in every component's config; this is the controller's one clock
protocol. Every clock the controller builds implements it: :class:`SystemClock`, the replica's
chaos-skewed clock (:class:`oab.controller.runtime.replica.SkewedClock`), ``oabctl``'s display
clock and the simulated data plane's (:mod:`oab.controller.local.dataplane`). Tests pass
``oab.controller.testing.FakeClock``.

``oab.leader`` and ``oab.queue`` import nothing of the controller, so each declares its own
``Clock`` with the same two readings (``monotonic``, ``time``); this protocol is theirs plus
``sleep``, so any controller clock can be handed to the elector and the work queue as is
(``tests/test_tidy_clock.py`` checks the three protocols stay in step).

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
