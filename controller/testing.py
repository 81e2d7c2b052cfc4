"""Test doubles shipped with the package, in the manner of ``kopf.testing``.

- :class:`FakeClock` - a manual clock with both a monotonic and a wall reading; ``advance`` moves
  both. It satisfies the ``Clock`` protocols of ``oab.leader`` and ``oab.queue`` structurally.
- :class:`SequentialIds` - deterministic id generator (``prefix-000001``, ...).
- :func:`local_aws` - start the serialized emulator (see :mod:`oab.controller.localaws`).
- :func:`wait_until` - poll a condition with a deadline (no sleep-and-hope in tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3

from oab.controller import tables
from oab.controller.localaws import LocalAWS, start

__all__ = ["AWS", "FakeClock", "LocalAWS", "SequentialIds", "local_aws", "wait_until"]

T = TypeVar("T")


class FakeClock:
    """A clock that only moves when told to. Thread-safe; ``sleep`` advances it."""

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


def local_aws(*, port: int = 0, dataplane: bool = True) -> LocalAWS:
    """Start a serialized local AWS emulator process; stop it with ``.stop()`` or ``with``.

    ``dataplane`` (default on) runs the simulated ECS data plane inside it, so ECS services get
    deployments and tasks as on AWS (see :mod:`oab.controller.localdataplane`).
    """
    return start(port=port, dataplane=dataplane)


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns a truthy value or ``timeout`` seconds pass.

    Returns the truthy value; raises ``TimeoutError`` naming ``message`` otherwise.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {message}")
        time.sleep(interval)


class AWS:
    """Handles an integration test needs: the emulator, a boto3 session and the table names."""

    def __init__(self, emulator: LocalAWS, *, names: tables.TableNames | None = None) -> None:
        self.emulator = emulator
        self.session = boto3.Session(region_name="us-east-1")
        self.tables = names or tables.TableNames()

    def client(self, service: str) -> Any:
        """A plain boto3 client for ``service`` pointed at the emulator."""
        return self.session.client(service, endpoint_url=self.emulator.endpoint)

    def reset(self) -> None:
        """Empty the emulated account and create the control-plane tables again."""
        self.emulator.reset()
        tables.ensure_tables(self.client("dynamodb"), self.tables)
