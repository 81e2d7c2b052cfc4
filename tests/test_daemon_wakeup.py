"""The daemon's stop flag: set from a signal handler or a thread, it wakes the supervisor."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from oab.controller.runtime.daemon import Wakeup


def test_wait_times_out_while_unset() -> None:
    stop = Wakeup()
    assert stop.wait(0.01) is False
    assert not stop.is_set()


def test_set_from_a_thread_wakes_a_long_wait() -> None:
    stop = Wakeup()
    threading.Thread(target=stop.set).start()
    started = time.monotonic()
    assert stop.wait(600.0) is True  # returns on the wake byte, not after ten minutes
    assert time.monotonic() - started < 300.0


def test_set_from_a_signal_handler_wakes_the_main_thread() -> None:
    stop = Wakeup()
    previous = signal.signal(signal.SIGUSR1, lambda _s, _f: stop.set())
    try:
        threading.Timer(0.05, os.kill, args=(os.getpid(), signal.SIGUSR1)).start()
        assert stop.wait(600.0) is True
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_many_sets_never_block_the_setter() -> None:
    stop = Wakeup()
    for _ in range(100_000):  # far more than a pipe buffer holds
        stop.set()
    assert stop.wait(0.0) is True


def test_lease_longer_than_standbys_accept_is_a_settings_error() -> None:
    # Standbys clamp a stored lease duration to the elector's maximum; a daemon allowed to
    # promise more would be taken over early, so the setting is refused where it is read.
    from oab.controller.runtime.settings import DaemonSettingsError, load_daemon_settings
    from oab.leader.record import MAX_LEASE_DURATION_MS

    limit = MAX_LEASE_DURATION_MS / 1000
    ok = load_daemon_settings({"lease_duration_s": limit, "renew_deadline_s": limit - 1}, env={})
    assert ok.lease_duration_s == limit
    with pytest.raises(DaemonSettingsError, match="lease_duration_s"):
        load_daemon_settings({"lease_duration_s": limit + 1}, env={})
