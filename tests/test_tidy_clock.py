"""One clock protocol: every clock the controller builds is a ``base.clock.Clock``, and that
protocol is the leader's and the queue's (which cannot import it) plus ``sleep``."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pytest

from oab.controller.base import clock as controller_clock
from oab.controller.cli.ops import _WallClock
from oab.controller.local.dataplane import OffsetClock, SimClock
from oab.controller.runtime.replica import SkewedClock
from oab.controller.testing import FakeClock
from oab.leader import clock as leader_clock
from oab.queue import config as queue_config


def _members(protocol: type) -> dict[str, inspect.Signature]:
    """The methods a protocol declares (its own and inherited), with their signatures."""
    names = {
        n
        for cls in protocol.__mro__
        if cls not in (object, typing.Protocol, typing.Generic)
        for n in vars(cls)
        if not n.startswith("_")
    }
    return {n: inspect.signature(getattr(protocol, n)) for n in names}


def _satisfies(obj: Any, protocol: type) -> list[str]:
    """What ``obj`` lacks to satisfy ``protocol`` (name and signature of each method)."""
    missing = []
    for name, sig in _members(protocol).items():
        method = getattr(obj, name, None)
        if not callable(method):
            missing.append(f"{name}: absent")
            continue
        expected = [p for p in sig.parameters if p != "self"]
        if list(inspect.signature(method).parameters) != expected:
            missing.append(f"{name}{inspect.signature(method)} is not {name}{sig}")
    return missing


def test_the_leaders_and_the_queues_clocks_are_the_same_protocol() -> None:
    leader, queue = _members(leader_clock.Clock), _members(queue_config.Clock)
    assert leader == queue
    assert set(leader) == {"monotonic", "time"}


def test_the_controllers_clock_is_theirs_plus_sleep() -> None:
    ours = _members(controller_clock.Clock)
    theirs = _members(leader_clock.Clock)
    assert {n: ours[n] for n in theirs} == theirs
    assert set(ours) - set(theirs) == {"sleep"}
    assert set(_members(SimClock)) == set(ours) | {"advance"}


@pytest.mark.parametrize(
    "clock",
    [
        controller_clock.SystemClock(),
        SkewedClock(offset=5.0, rate=2.0),
        _WallClock(lambda: 1_800_000_000.0),
        OffsetClock(),
        FakeClock(),
    ],
    ids=lambda c: type(c).__name__,
)
def test_every_controller_clock_satisfies_all_three(clock: Any) -> None:
    for protocol in (controller_clock.Clock, leader_clock.Clock, queue_config.Clock):
        assert _satisfies(clock, protocol) == [], protocol.__module__
    assert isinstance(clock.monotonic(), float)
    assert isinstance(clock.time(), float)
    clock.sleep(0.0)


def test_a_skewed_clock_runs_at_its_rate_and_offset() -> None:
    skewed, real = SkewedClock(offset=100.0, rate=1.0), controller_clock.SystemClock()
    assert skewed.time() - real.time() == pytest.approx(100.0, abs=1.0)
