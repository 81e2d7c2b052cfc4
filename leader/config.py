"""Configuration of one leader elector, validated once at construction.

Timing relations (as client-go, but shorter defaults and enforced the same way):
``lease_duration > renew_deadline > 1.2 * retry_period > 0`` and
``call_timeout <= renew_deadline / 2``.

Bounds with the defaults (lease 6 s, renew deadline 4 s, retry 1 s, call timeout 1 s):

- **Crash failover** <= ``lease_duration + retry_period + call_timeout`` = 6 + 1 + 1 = **8 s**
  (a standby first sees the dead leader's last revision at most one retry period after it was
  written, takes over exactly one lease duration after that, and the acquiring write takes at most
  one call). Typical: lease + retry/2, about 6.5 s. client-go with defaults: 15-24 s.
- **Graceful handoff** <= ``drain + retry_period + call_timeout`` (typically retry/2 after release).
- **Safety margin**: a leader stops acting at ``renew_deadline`` after *sending* its last
  successful renewal; nobody can take over before ``lease_duration`` after that write was
  *observed*. Margin = ``lease_duration - renew_deadline`` = 2 s of clock-rate drift and scheduling
  delay; a paused process is covered by the fence, not by the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.config import Config

from oab.leader.record import MAX_LEASE_DURATION_MS, ReplicaId


@dataclass(frozen=True, kw_only=True)
class ElectionConfig:
    """Settings of one :class:`~oab.leader.elector.LeaderElector`.

    Attributes:
        identity: This replica's id, unique per *process incarnation* (e.g. host-pid-random);
            stored as ``holder``. Required, non-empty.
        lease_name: Which lease to contend for (item ``lease#{lease_name}``).
            Default ``"controller"``.
        lease_duration: Seconds a standby waits, after it last saw the revision change, before
            taking over. Default 6.0, at most 60 (``MAX_LEASE_DURATION_MS``: standbys clamp
            longer stored durations). Longer = slower crash failover; shorter = less margin for
            clock-rate drift and call latency. Also how long an unreadable lease item must stay
            unchanged before this replica replaces it.
        renew_deadline: Seconds after *sending* its last successful renewal by which the leader
            stops acting if no renewal succeeded. Default 4.0. Must be below ``lease_duration``;
            the difference is the safety margin. Shorter = more spurious step-downs on slow stores.
        retry_period: Seconds between renewals (leader) and between polls (standby). Default 1.0.
            Shorter = faster failover detection and graceful handoff, more store traffic.
        call_timeout: Connect and read timeout of each lease call, seconds. Default 1.0; at most
            ``renew_deadline / 2`` so one hung call cannot eat the whole deadline.
        watchdog: Whether a watchdog thread ends the process hard when the renew loop is stuck
            longer than ``lease_duration``. Default True; turn off only in tests.
        recent_revisions: How many of its own recent write revisions the elector remembers so an
            ambiguous write that applied late is still recognised as its own. Default 8.
    """

    identity: ReplicaId
    lease_name: str = "controller"
    lease_duration: float = 6.0
    renew_deadline: float = 4.0
    retry_period: float = 1.0
    call_timeout: float = 1.0
    watchdog: bool = True
    recent_revisions: int = 8

    def __post_init__(self) -> None:
        if not self.identity or not self.identity.strip():
            raise ValueError("identity must be a non-empty replica id")
        if not self.lease_name:
            raise ValueError("lease_name must be non-empty")
        if min(self.lease_duration, self.renew_deadline, self.retry_period, self.call_timeout) <= 0:
            raise ValueError(
                "lease_duration, renew_deadline, retry_period and call_timeout must be > 0"
            )
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}) must be greater than "
                f"renew_deadline ({self.renew_deadline})"
            )
        if not self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}) must be greater than "
                f"1.2 * retry_period ({1.2 * self.retry_period})"
            )
        if self.call_timeout > self.renew_deadline / 2:
            raise ValueError(
                f"call_timeout ({self.call_timeout}) must be at most renew_deadline / 2 "
                f"({self.renew_deadline / 2})"
            )
        if self.lease_duration_ms > MAX_LEASE_DURATION_MS:
            # Standbys clamp longer stored durations: a longer promise would be cut short.
            raise ValueError(
                f"lease_duration ({self.lease_duration}) must be at most "
                f"{MAX_LEASE_DURATION_MS / 1000:g} s (the longest duration standbys honour)"
            )
        if self.recent_revisions < 1:
            raise ValueError("recent_revisions must be >= 1")

    @property
    def lease_duration_ms(self) -> int:
        """``lease_duration`` in whole milliseconds, as stored."""
        return round(self.lease_duration * 1000)

    @property
    def crash_failover_bound(self) -> float:
        """Worst-case seconds from a leader's crash to a standby's acquisition."""
        return self.lease_duration + self.retry_period + self.call_timeout

    def botocore_config(self) -> Config:
        """The lease client's own botocore ``Config``: short timeouts and no botocore retries.

        botocore's defaults (60 s timeouts, up to 10 attempts) would let one call outlive the
        renew deadline; the elector owns the retry budget instead (one attempt per retry period).
        """
        return lease_client_config(call_timeout=self.call_timeout)


def lease_client_config(*, call_timeout: float) -> Config:
    """A botocore ``Config`` with ``call_timeout`` connect/read timeouts and a single attempt."""
    return Config(
        connect_timeout=call_timeout,
        read_timeout=call_timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
        tcp_keepalive=True,
    )
