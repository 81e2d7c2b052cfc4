"""Configuration and time sources of the work queue.

:class:`QueueConfig` is validated once, at construction; every field documents its default and the
trade-off of moving it. :class:`Clock` is the time seam: the queue reads wall time (``time``) only
for values it stores and compares across hosts (``ready_at``, claim deadlines), and monotonic time
(``monotonic``) only for local measurements (a claim's local deadline, work duration). Tests pass
``oab.controller.testing.FakeClock``, which satisfies the protocol structurally.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from oab.queue.errors import InvalidQueueConfig
from oab.queue.row import MAX_TEXT_BYTES

#: Bounds of :class:`QueueConfig`'s durations, in seconds (a claim may last up to 12 hours, as an
#: SQS message's visibility; a backoff up to a day; a clock disagreement up to a day). A base
#: of at least 1 ms (stored times have millisecond precision) and a cap of at most a day put
#: ``base * 2**62`` past any cap.
MAX_VISIBILITY_TIMEOUT = 43_200.0
MIN_BACKOFF_BASE = 0.001
MAX_BACKOFF_BASE = 3_600.0
MAX_BACKOFF_CAP = 86_400.0
MAX_CLOCK_SKEW_ALLOWANCE = 86_400.0


class Clock(Protocol):
    """Where the queue reads time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (local measurements only)."""
        ...

    def time(self) -> float:
        """Seconds since the epoch (stored and compared values)."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` and ``time.time``."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def time(self) -> float:
        """``time.time()``."""
        return time.time()


@dataclass(frozen=True, kw_only=True)
class QueueConfig:
    """Tuning of one :class:`~oab.queue.workqueue.WorkQueue`; invalid values raise
    :class:`~oab.queue.errors.InvalidQueueConfig` at construction."""

    #: Partitions of the sparse ``ready-index`` (default 4). More shards spread hot ready rows
    #: over more index partitions; an idle worker's claim then queries more (empty) shards.
    #: Shards may grow freely. After shrinking, waiting rows in dropped shards are found by
    #: :meth:`~oab.queue.workqueue.WorkQueue.expire_stale_claims` (the leader's periodic sweep)
    #: and rewritten into the remaining ones; in-flight rows move at their next write.
    shards: int = 4
    #: Seconds a claim stays valid without a heartbeat (default 60, at most 12 hours). Shorter
    #: recovers crashed workers sooner but demands more frequent heartbeats.
    visibility_timeout: float = 60.0
    #: Take an expired claim over only after this queue has also seen the row unchanged for a
    #: whole ``visibility_timeout`` on its own monotonic clock (default on). Off, take-over
    #: trusts the stored wall-clock deadline alone: a host whose clock runs ahead then takes
    #: live claims over (safe for writes, which the claim token guards, but not for the old
    #: worker's ECS calls). On, crash recovery takes up to one more visibility timeout.
    observe_takeover: bool = True
    #: Seconds (default 0) by which work that is ready at once (enqueue, release, operator
    #: retry) is stamped ready *in the past*, so that hosts whose wall clocks lag the writer's by
    #: up to this much can claim it at once instead of after the lag. Delays (backoff,
    #: ``requeue_after``) are unaffected. Set it to the clock disagreement to tolerate (at most
    #: a day).
    clock_skew_allowance: float = 0.0
    #: Full-jitter backoff base in seconds (default 1; 1 ms to 1 hour): the n-th consecutive
    #: failure waits ``uniform(0, min(backoff_cap, backoff_base * 2**(n-1)))``.
    backoff_base: float = 1.0
    #: Backoff ceiling in seconds (default 300; at least the base, at most a day). Lower retries
    #: a broken agent more often (more ECS calls); higher leaves it broken longer after the
    #: cause is fixed.
    backoff_cap: float = 300.0
    #: Index entries read per shard query when claiming (default 8). Candidates are tried in a
    #: random order so concurrent workers rarely race for the same row, and the untried ones are
    #: kept as hints for the next claims (one query serves several claims). Larger values spread
    #: workers better and query less often, but make each query heavier, hints staler (a stale
    #: hint costs one read) and the order less FIFO.
    claim_scan: int = 8
    #: Compare-and-swap rounds before :class:`~oab.queue.errors.Contention` (default 8). Each
    #: round re-applies the transition to the row the failed write returned, without a read.
    max_conflict_retries: int = 8
    #: ``last_error`` is cut to this many UTF-8 bytes (default 1024; at most
    #: :data:`~oab.queue.row.MAX_TEXT_BYTES`, what a reader accepts), with a marker, to bound the
    #: row size.
    max_error_length: int = 1024

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 256:
            raise InvalidQueueConfig(f"shards must be in 1..256, got {self.shards}")
        # Upper bounds keep every time the queue stores (now + cap + visibility + skew) inside
        # what a reader accepts, and the backoff exponent's cap (row.backoff_delay) past any cap.
        if not 0 < self.visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
            raise InvalidQueueConfig(
                f"visibility_timeout must be in (0, {MAX_VISIBILITY_TIMEOUT}] seconds"
            )
        if not MIN_BACKOFF_BASE <= self.backoff_base <= MAX_BACKOFF_BASE:
            raise InvalidQueueConfig(
                f"backoff_base must be in {MIN_BACKOFF_BASE}..{MAX_BACKOFF_BASE} seconds"
            )
        if not 0 <= self.clock_skew_allowance <= MAX_CLOCK_SKEW_ALLOWANCE:
            raise InvalidQueueConfig(
                f"clock_skew_allowance must be in 0..{MAX_CLOCK_SKEW_ALLOWANCE} seconds"
            )
        if not self.backoff_base <= self.backoff_cap <= MAX_BACKOFF_CAP:
            raise InvalidQueueConfig(
                f"backoff_cap must be in backoff_base..{MAX_BACKOFF_CAP} seconds"
            )
        if not 1 <= self.claim_scan <= 100:
            raise InvalidQueueConfig(f"claim_scan must be in 1..100, got {self.claim_scan}")
        if self.max_conflict_retries < 1:
            raise InvalidQueueConfig("max_conflict_retries must be >= 1")
        if not 16 <= self.max_error_length <= MAX_TEXT_BYTES:
            raise InvalidQueueConfig(f"max_error_length must be in 16..{MAX_TEXT_BYTES}")
