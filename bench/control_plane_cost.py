"""Request counts of the control plane, and the monthly cost they imply (ops/README.md).

Starts its own local AWS with the simulated ECS data plane and three in-process replicas with
the production timings (lease renew, claim and change polls, 300 s resync), then measures every
AWS request the process makes (a wrapper around botocore's ``BaseClient._make_api_call``,
counted per service and operation, with DynamoDB request units estimated from the call shape):

1. ``AGENTS`` agents created (apply -> Running), then all updated (new image): requests per
   change, after subtracting the idle rate over the same window;
2. an idle window of ``IDLE_S`` seconds with every agent Running: requests per second for the
   three replicas together (lease renewals, claim polls, change polls, heartbeats);
3. one full resync run by the leader: requests per agent.

Request units (DynamoDB on-demand, items < 1 KB here): GetItem/Query/Scan page = 1 RRU when
consistent, 0.5 otherwise; PutItem/UpdateItem/DeleteItem = 1 WRU; TransactWriteItems = 2 WRU per
item (condition checks included); TransactGetItems = 2 RRU per item. A resync's status scan reads
every status item (~1.5 KB each): 1 RRU per 4 KB, i.e. about 0.4 RRU per agent at scale.

Prints the figures and the cost table, then ONE line of JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import botocore.client

from oab.controller.adapters.state import read_status
from oab.controller.local.emulator import start
from oab.controller.runtime.replica import Replica
from oab.controller.runtime.settings import DaemonSettings
from oab.controller.testing import agent_manifest, oabctl, prepare_plane

AGENTS = 20
IDLE_S = 30.0
MONTH_S = 730 * 3600
BUCKET = "oab-cost-bench"

# us-east-1 list prices when this was written (they change; check the AWS pricing pages).
PRICE = {
    "wru": 1.25e-6,
    "rru": 0.25e-6,
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST
    "s3_get": 0.0004 / 1000,  # GET and all other requests
    "vcpu_h": 0.04048,
    "gb_h": 0.004445,
    "logs_gb": 0.50,
}
S3_PUT_CLASS = {"PutObject", "CopyObject", "ListObjectsV2", "ListObjectVersions", "DeleteObjects"}


class Meter:
    """Counts AWS requests (and DynamoDB request units) made by this process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.rru = 0.0
        self.wru = 0.0
        self.only_thread: int | None = None

    def add(self, service: str, op: str, params: dict[str, Any]) -> None:
        if self.only_thread is not None and threading.get_ident() != self.only_thread:
            return
        with self.lock:
            self.calls[f"{service}:{op}"] += 1
            if service != "dynamodb":
                return
            consistent = bool(params.get("ConsistentRead"))
            if op in ("GetItem", "Query", "Scan"):
                self.rru += 1.0 if consistent else 0.5
            elif op == "BatchGetItem":
                self.rru += sum(len(v["Keys"]) for v in params["RequestItems"].values())
            elif op in ("PutItem", "UpdateItem", "DeleteItem"):
                self.wru += 1.0
            elif op == "TransactWriteItems":
                self.wru += 2.0 * len(params["TransactItems"])
            elif op == "TransactGetItems":
                self.rru += 2.0 * len(params["TransactItems"])

    def snapshot(self) -> tuple[Counter[str], float, float]:
        with self.lock:
            return Counter(self.calls), self.rru, self.wru


METER = Meter()
_original = botocore.client.BaseClient._make_api_call


def _counting(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
    METER.add(self.meta.service_model.service_name, operation_name, api_params)
    return _original(self, operation_name, api_params)


@contextmanager
def window() -> Iterator[dict[str, Any]]:
    """Counts and duration of the enclosed block (filled in on exit)."""
    before = METER.snapshot()
    t0 = time.monotonic()
    result: dict[str, Any] = {}
    yield result
    after = METER.snapshot()
    result["seconds"] = time.monotonic() - t0
    result["calls"] = after[0] - before[0]
    result["rru"] = after[1] - before[1]
    result["wru"] = after[2] - before[2]


def _s3(calls: Counter[str]) -> tuple[int, int]:
    put = sum(n for k, n in calls.items() if k.startswith("s3:") and k[3:] in S3_PUT_CLASS)
    get = sum(n for k, n in calls.items() if k.startswith("s3:")) - put
    return put, get


def _per_change(w: dict[str, Any], idle: dict[str, Any], agents: int) -> dict[str, float]:
    """Counts of a change window minus the idle rate over the same time, per agent."""
    scale = w["seconds"] / idle["seconds"]
    put, get = _s3(w["calls"])
    iput, iget = _s3(idle["calls"])
    ecs = sum(n for k, n in w["calls"].items() if k.startswith("ecs:"))
    return {
        "rru": max(0.0, w["rru"] - idle["rru"] * scale) / agents,
        "wru": max(0.0, w["wru"] - idle["wru"] * scale) / agents,
        "s3_put": max(0.0, put - iput * scale) / agents,
        "s3_get": max(0.0, get - iget * scale) / agents,
        "ecs": ecs / agents,
    }


def _apply_all(env: dict[str, str], tag: str, replica: Replica, generation: int) -> None:
    for i in range(AGENTS):
        manifest = agent_manifest(f"a{i:03d}", namespace="bench", tag=tag)
        oabctl("apply", "-f", "-", stdin=manifest, env=env).ok()
    deadline = time.monotonic() + 120
    keys = [f"bench/a{i:03d}" for i in range(AGENTS)]
    while time.monotonic() < deadline:
        states = [read_status(replica.dynamodb, replica.tables.state, k) for k in keys]
        if all(s.phase == "Running" and s.observed_generation == generation for s in states):
            return
        time.sleep(0.2)
    raise TimeoutError("agents did not reach Running")


def cost_table(
    *, idle: dict[str, float], change: dict[str, float], resync: dict[str, float]
) -> dict[str, Any]:
    """Monthly cost for 100 and 10,000 agents from the measured rates (see the README)."""
    out: dict[str, Any] = {}
    fargate = 3 * (0.5 * PRICE["vcpu_h"] + 1.0 * PRICE["gb_h"]) * 730
    resyncs = MONTH_S / 300
    changes_per_agent = 10  # applies, restarts, snapshots' nudges, rotations per agent-month
    for agents in (100, 10_000):
        rru = (
            idle["rru_s"] * MONTH_S
            + resync["rru"] * agents * resyncs
            + 0.4 * agents * resyncs  # status scan at ~1.5 KB per item, 4 KB per RRU
            + change["rru"] * agents * changes_per_agent
        )
        wru = idle["wru_s"] * MONTH_S + change["wru"] * agents * changes_per_agent
        ddb = rru * PRICE["rru"] + wru * PRICE["wru"]
        s3_list = max(1.0, agents / 1000) * resyncs  # one ListObjectsV2 per 1,000 manifests
        s3_ctl = (
            s3_list * PRICE["s3_put"]
            + idle["s3_get_s"] * MONTH_S * PRICE["s3_get"]
            + agents
            * changes_per_agent
            * (change["s3_put"] * PRICE["s3_put"] + change["s3_get"] * PRICE["s3_get"])
        )
        s3_poll = agents * (MONTH_S / 60) * PRICE["s3_get"]  # sidecar: 1 GET/agent/60 s
        logs_gb = 3 * 0.1 + agents * changes_per_agent * 4 * 500 / 1e9  # 100 MB/replica idle
        logs = logs_gb * PRICE["logs_gb"]
        total = fargate + ddb + s3_ctl + s3_poll + logs
        out[str(agents)] = {
            "fargate": round(fargate, 2),
            "dynamodb": round(ddb, 2),
            "dynamodb_rru_m": round(rru / 1e6, 2),
            "dynamodb_wru_m": round(wru / 1e6, 2),
            "s3_controller": round(s3_ctl, 2),
            "s3_snapshot_poll": round(s3_poll, 2),
            "cloudwatch_logs": round(logs, 2),
            "total": round(total, 2),
        }
    return out


def main() -> int:
    botocore.client.BaseClient._make_api_call = _counting  # type: ignore[method-assign]
    emulator = start(dataplane=True)
    replicas: list[Replica] = []
    try:
        emulator.apply_env()
        with tempfile.TemporaryDirectory() as tmp:
            plane = prepare_plane(
                emulator, config=Path(tmp) / "none", bucket=BUCKET, tick_s=0.1, init=True
            )
            env = {**os.environ, **plane}
            ssm = boto3.client("ssm", endpoint_url=emulator.endpoint, region_name="us-east-1")
            for i in range(AGENTS):
                ssm.put_parameter(
                    Name=f"/oab/bench/a{i:03d}/discord-token", Value="x", Type="SecureString"
                )
            for n in range(3):
                replica = Replica(
                    DaemonSettings(replica_id=f"r{n}", endpoint=emulator.endpoint, bucket=BUCKET)
                )
                replica.start()
                replicas.append(replica)
            deadline = time.monotonic() + 30
            while not any(r.elector.is_leader for r in replicas):
                if time.monotonic() > deadline:
                    raise TimeoutError("no leader")
                time.sleep(0.1)
            leader = next(r for r in replicas if r.elector.is_leader)
            time.sleep(3)  # the takeover resync
            with window() as created:
                _apply_all(env, "v1", leader, 1)
            time.sleep(3)
            with window() as idle:
                time.sleep(IDLE_S)
            with window() as updated:
                _apply_all(env, "v2", leader, 2)
            time.sleep(3)
            METER.only_thread = threading.get_ident()
            with window() as resync_w:
                report = leader.scheduler.resync(leader.elector.fence())
            METER.only_thread = None
    finally:
        for r in replicas:
            r.shutdown()
        emulator.stop()
        botocore.client.BaseClient._make_api_call = _original  # type: ignore[method-assign]

    idle_put, idle_get = _s3(idle["calls"])
    idle_rates = {
        "requests_s": sum(idle["calls"].values()) / idle["seconds"],
        "rru_s": idle["rru"] / idle["seconds"],
        "wru_s": idle["wru"] / idle["seconds"],
        "s3_get_s": (idle_get + idle_put) / idle["seconds"],
    }
    create = _per_change(created, idle, AGENTS)
    update = _per_change(updated, idle, AGENTS)
    resync = {
        "requests_per_agent": sum(resync_w["calls"].values()) / AGENTS,
        "rru": resync_w["rru"] / AGENTS,
        "ecs_per_agent": sum(n for k, n in resync_w["calls"].items() if k.startswith("ecs:"))
        / AGENTS,
    }
    change = {k: max(create[k], update[k]) for k in create}
    table = cost_table(idle=idle_rates, change=change, resync=resync)

    print(f"idle, 3 replicas, {idle['seconds']:.0f} s window:")
    for op, n in sorted(idle["calls"].items()):
        print(f"  {op:40s} {n / idle['seconds']:7.2f}/s")
    print(f"  DynamoDB {idle_rates['rru_s']:.2f} RRU/s, {idle_rates['wru_s']:.2f} WRU/s")
    print(f"create, per agent: {create}")
    print(f"update, per agent: {update}")
    print(f"resync ({report.agents} agents): {dict(resync_w['calls'])} -> {resync}")
    for agents, row in table.items():
        print(f"{agents:>6} agents: {row}")
    print(
        json.dumps(
            {
                "idle": {k: round(v, 3) for k, v in idle_rates.items()},
                "idle_ops_per_s": {
                    k: round(n / idle["seconds"], 3) for k, n in sorted(idle["calls"].items())
                },
                "create_per_agent": {k: round(v, 2) for k, v in create.items()},
                "update_per_agent": {k: round(v, 2) for k, v in update.items()},
                "resync_per_agent": {k: round(v, 3) for k, v in resync.items()},
                "monthly_cost_usd": table,
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
