"""Token buckets on a fake clock."""

from __future__ import annotations

import pytest

from oab.controller.adapters.ratelimit import (
    BucketConfig,
    RateLimiter,
    RateLimitTimeout,
    TokenBucket,
)
from oab.controller.testing import FakeClock


def test_burst_then_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(
        BucketConfig(rate=2.0, burst=3), monotonic=clock.monotonic, sleep=clock.sleep
    )
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    start = clock.monotonic()
    bucket.take()
    assert clock.monotonic() - start == pytest.approx(0.5)


def test_timeout_raises_without_waiting_past_deadline() -> None:
    clock = FakeClock()
    bucket = TokenBucket(
        BucketConfig(rate=0.1, burst=1), monotonic=clock.monotonic, sleep=clock.sleep
    )
    bucket.take()
    start = clock.monotonic()
    with pytest.raises(RateLimitTimeout):
        bucket.take(timeout=1.0)
    assert clock.monotonic() - start <= 1.0


def test_unknown_family_is_not_limited_and_families_are_independent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        {"a": BucketConfig(rate=1.0, burst=1)}, monotonic=clock.monotonic, sleep=clock.sleep
    )
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("zzz") == 0.0
    assert limiter.acquire("a") == pytest.approx(1.0)
