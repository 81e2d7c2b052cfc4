"""A replica process (``tests/leader_replica.py``) always ends after SIGTERM, whenever it arrives.

The cases a shutdown can miss: a SIGTERM that arrives while the process is SIGSTOPped, during
start-up, or while every store call hangs until its timeout. Each must end the process within the
bound its configured timings give (times a load factor for a busy 2-core machine), and never leave
the lease held by a process that is gone when it could have released it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulated import Account

from oab.leader.config import ElectionConfig
from oab.leader.record import ReplicaId
from oab.leader.status import describe
from oab.leader.testing import wait_until

REPLICA = Path(__file__).with_name("leader_replica.py")
#: The replica's election timings (it runs the defaults) and its ``--drain-timeout`` default.
TIMINGS = ElectionConfig(identity=ReplicaId("timings"))
DRAIN_TIMEOUT = 2.0
#: Longest a graceful shutdown takes by construction (see tests/test_leader_chaos.py).
SHUTDOWN_BOUND = DRAIN_TIMEOUT + TIMINGS.lease_duration + 4 * TIMINGS.call_timeout
LOAD_FACTOR = 3.0

pytestmark = pytest.mark.slow


class Replica:
    """One replica process and its event log."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.out = tmp / name
        self.proc = subprocess.Popen(
            [sys.executable, str(REPLICA), "--identity", name, "--out", str(self.out)],
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def events(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def seen(self, event: str) -> list[dict[str, Any]]:
        return [ev for ev in self.events() if ev["ev"] == event]

    def exit_code(self) -> int:
        """Wait for the process to end within the shutdown deadline; its exit code."""
        try:
            return self.proc.wait(timeout=LOAD_FACTOR * SHUTDOWN_BOUND)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            seen = [ev["ev"] for ev in self.events()]
            pytest.fail(f"{self.name} did not exit after SIGTERM; its events: {seen}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.kill()


def holder(aws: Account) -> str | None:
    info = describe(aws.client("dynamodb"), aws.tables.lease, "controller")
    return info["holder"]  # type: ignore[no-any-return]


def test_sigterm_while_stopped_is_handled_on_sigcont(
    aws: Account, tmp_path: Path, replicas: list[Replica]
) -> None:
    r = Replica(tmp_path, "r1", aws.emulator.env())
    replicas.append(r)
    wait_until(lambda: r.seen("start"), timeout=LOAD_FACTOR * SHUTDOWN_BOUND, message="r1 leads")
    r.proc.send_signal(signal.SIGSTOP)
    r.proc.send_signal(signal.SIGTERM)  # pending while stopped
    r.proc.send_signal(signal.SIGCONT)
    assert r.exit_code() == 0
    assert r.seen("term")
    assert [ev["ok"] for ev in r.seen("released")] == [True]
    assert holder(aws) is None


@pytest.mark.parametrize("when", ["at once", "after ready"])
def test_sigterm_during_start_up_ends_the_process_and_leaves_no_lease_behind(
    aws: Account, tmp_path: Path, replicas: list[Replica], when: str
) -> None:
    r = Replica(tmp_path, "r1", aws.emulator.env())
    replicas.append(r)
    if when == "after ready":
        wait_until(lambda: r.seen("ready"), timeout=LOAD_FACTOR * SHUTDOWN_BOUND, message="ready")
    r.proc.send_signal(signal.SIGTERM)
    # Before the handler is installed the default action ends it; after, it releases: exit 0.
    assert r.exit_code() in (0, -signal.SIGTERM)
    assert holder(aws) is None


def test_sigterm_while_every_store_call_hangs_ends_the_process(
    aws: Account, tmp_path: Path, replicas: list[Replica]
) -> None:
    # A server that accepts connections and never answers: every call runs into its timeout.
    with socket.create_server(("127.0.0.1", 0)) as blackhole:
        port = blackhole.getsockname()[1]
        env = {**aws.emulator.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        r = Replica(tmp_path, "r1", env)
        replicas.append(r)
        wait_until(lambda: r.seen("ready"), timeout=LOAD_FACTOR * SHUTDOWN_BOUND, message="ready")
        r.proc.send_signal(signal.SIGTERM)
        assert r.exit_code() == 0
        assert [ev["ok"] for ev in r.seen("released")] == [False]  # never led: nothing to release
