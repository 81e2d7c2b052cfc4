"""Leader failover benchmark: crash (SIGKILL) and graceful (SIGTERM) handoff on the local emulator.

Runs three replica processes (``tests/leader_replica.py``, default election timings: lease 6 s,
renew deadline 4 s, retry 1 s) that make a fenced write every 100 ms while leading. Each trial
signals the current leader and measures, on the host's monotonic clock, the time until the first
fenced write *accepted* under the new leader's epoch. Prints p50/p99/max in seconds and as a ratio
to the lease duration, then one JSON line with every figure.

Goals: crash p99 <= lease + 2 x retry (8 s); graceful p99 <= retry + 0.5 s (1.5 s).

    .venv/bin/python bench/leader_failover.py [--trials 20] [--replicas 3]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from oab.controller.adapters import tables
from oab.controller.base.names import TableNames
from oab.controller.testing import local_aws, wait_until
from oab.leader.config import ElectionConfig
from oab.leader.record import ReplicaId
from oab.leader.status import describe

ROOT = Path(__file__).resolve().parent.parent
REPLICA = ROOT / "tests" / "leader_replica.py"


class Fleet:
    def __init__(self, env: dict[str, str], tmp: Path, size: int) -> None:
        self.env = env
        self.tmp = tmp
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.names: dict[int, str] = {}
        self.count = 0
        for slot in range(size):
            self.spawn(slot)

    def spawn(self, slot: int) -> str:
        self.count += 1
        name = f"r{slot}-{self.count}"
        self.names[slot] = name
        self.procs[slot] = subprocess.Popen(
            [
                sys.executable,
                str(REPLICA),
                "--identity",
                name,
                "--out",
                str(self.tmp / name),
                "--write-interval",
                "0.1",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return name

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self.tmp / name
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def first_write_after(self, epoch: int) -> float | None:
        best: float | None = None
        for name in self.names.values():
            for ev in self.events(name):
                if ev["ev"] == "write" and ev["ok"] and ev["epoch"] > epoch:
                    best = ev["t"] if best is None else min(best, ev["t"])
                    break
        return best

    def slot_of(self, holder: str) -> int:
        return next(slot for slot, name in self.names.items() if name == holder)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def trial(fleet: Fleet, client: Any, table: str, sig: signal.Signals) -> float:
    info = wait_until(
        lambda: (d := describe(client, table, "controller"))["holder"] and d,
        timeout=30,
        message="a leader",
    )
    epoch = int(info["epoch"])
    slot = fleet.slot_of(info["holder"])
    wait_until(
        lambda: any(
            ev["ev"] == "write" and ev["ok"] and ev["epoch"] == epoch
            for ev in fleet.events(info["holder"])
        ),
        timeout=10,
        message="the leader's first fenced write",
    )
    t0 = time.monotonic()
    fleet.procs[slot].send_signal(sig)
    t_write = wait_until(lambda: fleet.first_write_after(epoch), timeout=30, message="new leader")
    fleet.procs[slot].wait(timeout=30)
    name = fleet.spawn(slot)
    wait_until(
        lambda: any(ev["ev"] == "ready" for ev in fleet.events(name)),
        timeout=30,
        message="restarted replica",
    )
    time.sleep(1.0)  # let the restarted standby make its first observation
    return t_write - t0


def summarize(values: list[float], lease: float) -> dict[str, float]:
    p50, p99, worst = percentile(values, 50), percentile(values, 99), max(values)
    return {
        "p50_s": round(p50, 3),
        "p99_s": round(p99, 3),
        "max_s": round(worst, 3),
        "p50_ratio": round(p50 / lease, 3),
        "p99_ratio": round(p99 / lease, 3),
        "max_ratio": round(worst / lease, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="leader failover benchmark")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    config = ElectionConfig(identity=ReplicaId("bench"))
    lease, retry = config.lease_duration, config.retry_period

    with local_aws() as emulator, tempfile.TemporaryDirectory() as tmp:
        env = emulator.env()
        client = boto3.Session(region_name="us-east-1").client(
            "dynamodb",
            endpoint_url=emulator.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        names = TableNames()
        tables.ensure_tables(client, names)
        fleet = Fleet({**env, "PYTHONUNBUFFERED": "1"}, Path(tmp), args.replicas)
        try:
            crash, graceful = [], []
            for i in range(args.trials):
                crash.append(trial(fleet, client, names.lease, signal.SIGKILL))
                print(f"crash    {i + 1:3d}: {crash[-1]:.3f} s", flush=True)
            for i in range(args.trials):
                graceful.append(trial(fleet, client, names.lease, signal.SIGTERM))
                print(f"graceful {i + 1:3d}: {graceful[-1]:.3f} s", flush=True)
        finally:
            fleet.close()

    result = {
        "lease_duration_s": lease,
        "retry_period_s": retry,
        "trials": args.trials,
        "crash": summarize(crash, lease),
        "graceful": summarize(graceful, lease),
        "crash_goal_s": lease + 2 * retry,
        "graceful_goal_s": retry + 0.5,
    }
    result["crash_goal_met"] = result["crash"]["p99_s"] <= result["crash_goal_s"]
    result["graceful_goal_met"] = result["graceful"]["p99_s"] <= result["graceful_goal_s"]
    for kind in ("crash", "graceful"):
        s = result[kind]
        print(
            f"{kind:8s} p50 {s['p50_s']:.3f} s  p99 {s['p99_s']:.3f} s  max {s['max_s']:.3f} s"
            f"  (x lease: {s['p50_ratio']:.2f} / {s['p99_ratio']:.2f} / {s['max_ratio']:.2f})"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
