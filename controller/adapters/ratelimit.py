"""Client-side rate limiting of AWS calls, per API family (token buckets).

Design: ECS, S3 and DynamoDB limits are per account and region, shared by every replica. Each
replica takes a share of a configured rate per API *family* (for ECS: ``describe``/``list``,
``mutate`` and ``register``) with a bounded burst. A call waits for a token (up to a deadline) and
never spins. Throttling answers from AWS are retried once, by botocore (standard mode) in
:mod:`oab.controller.adapters.aws`; this module keeps us from causing them.

Time model: tokens refill on the injected monotonic clock; ``sleep`` is injected too, so tests run
on a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from oab.controller.base.errors import RetryableError


@dataclass(frozen=True, kw_only=True)
class BucketConfig:
    """Rate (tokens per second) and burst (bucket size) of one API family."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")


#: Defaults well under the documented ECS/S3/DynamoDB account limits, for one replica of three.
DEFAULT_BUCKETS: Mapping[str, BucketConfig] = {
    "ecs.read": BucketConfig(rate=20.0, burst=50),
    "ecs.mutate": BucketConfig(rate=5.0, burst=10),
    "ecs.register": BucketConfig(rate=1.0, burst=5),
    "s3": BucketConfig(rate=100.0, burst=200),
    "secrets.read": BucketConfig(rate=10.0, burst=20),
}


class RateLimitTimeout(RetryableError):
    """No token became available before the caller's deadline (retryable)."""

    reason = "RateLimitTimeout"


class TokenBucket:
    """A thread-safe token bucket on an injected monotonic clock."""

    def __init__(
        self,
        config: BucketConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = float(config.burst)
        self._stamp = monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._monotonic()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(float(self._config.burst), self._tokens + elapsed * self._config.rate)

    def try_take(self) -> float:
        """Take a token if one is there (returns 0.0), else the seconds until one will be."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self._config.rate

    def take(self, *, timeout: float = 30.0) -> float:
        """Block until a token is taken; returns seconds waited. Raises on timeout."""
        waited = 0.0
        while True:
            wait = self.try_take()
            if wait == 0.0:
                return waited
            if waited + wait > timeout:
                raise RateLimitTimeout(f"no token within {timeout:.1f} s")
            self._sleep(wait)
            waited += wait


class RateLimiter:
    """Token buckets by API family; unknown families are not limited."""

    def __init__(
        self,
        buckets: Mapping[str, BucketConfig] = DEFAULT_BUCKETS,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._buckets = {
            name: TokenBucket(cfg, monotonic=monotonic, sleep=sleep)
            for name, cfg in buckets.items()
        }

    def acquire(self, family: str, *, timeout: float = 30.0) -> float:
        """Wait for a token of ``family``; returns the seconds waited."""
        bucket = self._buckets.get(family)
        return bucket.take(timeout=timeout) if bucket else 0.0
