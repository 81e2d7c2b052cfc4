"""End to end on local AWS: a schedule flips an agent 1 -> 0 -> 1 across a leader failover.

Two in-process replicas (elector, scheduler, workers) share a wall clock that the test moves
forward by hours; ECS ``desiredCount`` (the emulator with the simulated data plane) is what is
checked. The second transition falls due while no replica leads: the next leader must catch it
up from the manifest and the clock on its takeover.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from oab.controller.runtime.replica import Replica
from oab.controller.testing import (
    AWS,
    agent_manifest,
    all_statuses,
    oabctl,
    prepare_plane,
    replica_settings,
    wait_until,
)

BUCKET = "oab-control-plane"
KEY = "team/bot"
DAY = datetime(2027, 1, 4, tzinfo=UTC).timestamp()


class JumpClock:
    """Real monotonic time; wall time that the test moves forward (``jump_to``)."""

    def __init__(self, wall: float) -> None:
        self._offset = wall - time.time()
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        with self._lock:
            return time.time() + self._offset

    def jump_to(self, wall: float) -> None:
        with self._lock:
            assert wall >= time.time() + self._offset, "a clock never goes backwards"
            self._offset = wall - time.time()


def _desired(aws: AWS) -> int | None:
    found = aws.client("ecs").describe_services(cluster="oab", services=["oab-team-bot"])
    services = [s for s in found["services"] if s.get("status") == "ACTIVE"]
    return int(services[0]["desiredCount"]) if services else None


def _phase(aws: AWS) -> str | None:
    status = all_statuses(aws.client("dynamodb"), aws.tables.state).get(KEY)
    return status.phase if status is not None else None


def _start(aws: AWS, clock: JumpClock, replica_id: str) -> Replica:
    settings = replica_settings(aws.emulator.endpoint, bucket=BUCKET, replica_id=replica_id)
    replica = Replica(settings, clock=clock)  # type: ignore[arg-type]
    replica.start()
    return replica


def test_a_schedule_flips_an_agent_off_and_on_across_a_failover(aws: AWS, tmp_path: Path) -> None:
    env = prepare_plane(aws.emulator, config=tmp_path / "none.toml", bucket=BUCKET, init=True)
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-5e6f7a", Type="SecureString"
    )
    doc: dict[str, Any] = yaml.safe_load(agent_manifest())
    doc["spec"]["schedules"] = [
        {"name": "off", "expr": "cron(0 22 * * ? *)", "replicas": 0},
        {"name": "on", "expr": "cron(0 6 * * ? *)", "replicas": 1},
    ]
    oabctl("apply", "-f", "-", stdin=yaml.safe_dump(doc), env={**os.environ, **env}).ok()
    clock = JumpClock(DAY + 21 * 3600 + 50 * 60)  # 21:50 UTC: "on" since 06:00
    first = _start(aws, clock, "r1")
    second: Replica | None = None
    try:
        wait_until(lambda: _phase(aws) == "Running", timeout=90, message="Running at 21:50")
        assert _desired(aws) == 1

        clock.jump_to(DAY + 22 * 3600 + 1)  # just past 22:00: the leader's heap fires "off"
        wait_until(lambda: _desired(aws) == 0, timeout=60, message="desiredCount 0 after 22:00")
        wait_until(lambda: _phase(aws) == "Suspended", timeout=60, message="Suspended")

        assert first.shutdown()  # the leader goes away (lease released)
        clock.jump_to(DAY + 30 * 3600 + 1)  # 06:00 next day passes with no leader
        second = _start(aws, clock, "r2")
        wait_until(lambda: _desired(aws) == 1, timeout=60, message="desiredCount 1 after 06:00")
        wait_until(lambda: _phase(aws) == "Running", timeout=90, message="Running again")
    finally:
        first.shutdown()
        if second is not None:
            second.shutdown()
    listing = oabctl("history", "bot", "-n", "team", "-o", "json", env={**os.environ, **env})
    runs = listing.json()["items"]
    named = [c["result"] for r in runs for c in r["calls"] if c["action"] == "oab:DesiredCount"]
    assert [n.split(":")[0] for n in named] == ["- -> 1", "1 -> 0", "0 -> 1"]
    assert "schedule on" in named[0]  # created at 21:50, "on" since 06:00
    assert "schedule off" in named[1]
    assert "schedule on" in named[2]
