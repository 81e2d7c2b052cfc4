"""Reconcile benchmark: latency, AWS requests per reconcile, and throughput with 1 and 3 replicas.

Starts its own local AWS with the simulated ECS data plane, then:

1. **In process** (one :class:`~oab.controller.runtime.replica.Replica`, leader and workers):
   applies ``AGENTS`` agents one by one through ``oabctl apply`` and measures
   - apply -> Available latency p50/p99, with the data plane's task start delay subtracted;
   - apply returning -> the reconcile starting (the worker's ``process`` called for the key), p50;
   - AWS requests per agent to create, then to update (new image), then for one no-op full
     resync, counted with a botocore ``before-call`` handler on the replica's clients and
     attributed by thread: requests made inside ``Worker.process`` (the reconcile and its
     commit) or inside ``Scheduler.resync``; idle polling (claims, change reads, the lease) is
     reported apart. ECS + S3 + secrets and DynamoDB are counted separately.
2. **Subprocesses** (``oab.controller.local.cluster``): ``THROUGHPUT_AGENTS`` agents applied at once
   with 1 replica, then (after a reset) with 3 replicas; reconciles per second = audit rows written
   per second until every agent is Available, and agents Available per second.

Goals (issue 5): reconcile starts <= 2 s after apply (p50); no-op resync <= 0.2 requests per
agent; update <= 6 requests per agent (ECS + S3). Prints figures, then ONE line of JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from oab.controller.base.names import TableNames
from oab.controller.local.cluster import ClusterConfig, LocalCluster
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.local.emulator import LOCAL_ENV, LocalAWS, start
from oab.controller.runtime.replica import Replica
from oab.controller.testing import (
    agent_manifest,
    all_statuses,
    available_at,
    oabctl,
    replica_settings,
)

AGENTS = 20
THROUGHPUT_AGENTS = 40
START_DELAY_S = 0.5
NS = "bench"
BUCKET = "oab-bench-plane"
TABLES = TableNames()


def manifest(i: int, tag: str) -> str:
    """Agent ``i``'s manifest; every other agent auto-restarts on secret rotation."""
    return agent_manifest(f"agent-{i:02d}", namespace=NS, tag=tag, auto_restart=i % 2 == 0)


class Counting:
    """Counts AWS requests per (bucket, service, operation), attributed by the calling thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.reconciles = 0
        self.started: dict[str, float] = {}

    def attach(self, client: Any) -> None:
        """Count every call of ``client``."""
        client.meta.events.register("before-call.*.*", self._before_call)

    def _before_call(self, model: Any, **_kwargs: Any) -> None:
        where = getattr(self._local, "where", "idle")
        service = str(model.service_model.service_name)
        with self._lock:
            self.counts[(where, service, str(model.name))] += 1

    def within(self, where: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its requests attributed to ``where``."""

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self._local.where = where
            try:
                return fn(*args, **kwargs)
            finally:
                self._local.where = "idle"

        return wrapped

    def snapshot(self) -> Counter[tuple[str, str, str]]:
        """A copy of the counts so far."""
        with self._lock:
            return Counter(self.counts)


def per_agent(delta: Counter[tuple[str, str, str]], where: str, agents: int) -> dict[str, Any]:
    """Requests per agent in ``where``: ECS+S3(+secrets) and DynamoDB, with the operations."""
    ecs_s3 = {f"{s}:{op}": n for (w, s, op), n in delta.items() if w == where and s != "dynamodb"}
    ddb = {f"{s}:{op}": n for (w, s, op), n in delta.items() if w == where and s == "dynamodb"}
    return {
        "ecs_s3_secrets_per_agent": round(sum(ecs_s3.values()) / agents, 2),
        "dynamodb_per_agent": round(sum(ddb.values()) / agents, 2),
        "ops": dict(sorted({**ecs_s3, **ddb}.items())),
    }


def wait_all(ddb: Any, keys: list[str], generation: int, *, timeout: float) -> dict[str, float]:
    """Poll until every key is Available at ``generation``; first-seen monotonic time per key."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(keys):
        now = time.monotonic()
        current = all_statuses(ddb, TABLES.state)
        for k in keys:
            if k not in seen and available_at(current.get(k), generation):
                seen[k] = now
        if now > deadline:
            raise TimeoutError(f"{len(keys) - len(seen)} agents not Available after {timeout} s")
        time.sleep(0.1)
    return seen


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def setup(emulator: LocalAWS, env: dict[str, str]) -> Any:
    """Reset the emulator, init the control plane, plant the agents' SSM parameters."""
    emulator.reset()
    DataPlaneControl(emulator.endpoint).configure(start_delay_s=START_DELAY_S, tick_s=0.05)
    oabctl("init", env=env).ok()
    ssm = boto3.client("ssm", endpoint_url=emulator.endpoint, region_name="us-east-1")
    for i in range(max(AGENTS, THROUGHPUT_AGENTS)):
        ssm.put_parameter(
            Name=f"/oab/{NS}/agent-{i:02d}/discord-token",
            Value="bench-not-a-secret",
            Type="SecureString",
        )
    return boto3.client("dynamodb", endpoint_url=emulator.endpoint, region_name="us-east-1")


def in_process(emulator: LocalAWS, env: dict[str, str]) -> dict[str, Any]:
    """Latency and requests per reconcile with one in-process replica."""
    ddb = setup(emulator, env)
    settings = replica_settings(
        emulator.endpoint,
        bucket=BUCKET,
        replica_id="bench-1",
        change_poll_s=0.2,
        idle_poll_s=0.2,
        progress_poll_s=0.5,
        workers=4,
        ecs_register_rate=50.0,
        ecs_mutate_rate=50.0,
    )
    replica = Replica(settings)
    counting = Counting()
    # The replica's clients (the secrets reader keeps its two clients private).
    secrets = replica.reconciler._secrets
    for client in (replica.dynamodb, replica.s3, replica.ecs_client, secrets._ssm, secrets._sm):
        counting.attach(client)
    process = replica.worker.process

    def timed_process(claim: Any, *args: Any, **kwargs: Any) -> Any:
        with counting._lock:
            counting.reconciles += 1
            counting.started.setdefault(f"{claim.key}@{claim.generation}", time.monotonic())
        return process(claim, *args, **kwargs)

    replica.worker.process = counting.within("reconcile", timed_process)  # type: ignore[method-assign]
    replica.start()
    try:
        deadline = time.monotonic() + 15
        while not replica.elector.is_leader:
            if time.monotonic() > deadline:
                raise RuntimeError("the in-process replica did not become leader")
            time.sleep(0.1)
        keys = [f"{NS}/agent-{i:02d}" for i in range(AGENTS)]
        time.sleep(1.0)
        base = counting.snapshot()
        reconciles0 = counting.reconciles
        applied: dict[str, float] = {}
        for i, key in enumerate(keys):
            oabctl("apply", "-f", "-", stdin=manifest(i, "v1"), env=env).ok()
            applied[key] = time.monotonic()
            time.sleep(0.25)  # spread the applies: each one is a separate user action
        seen = wait_all(ddb, keys, 1, timeout=120)
        time.sleep(1.0)  # let requeued progress runs settle
        create = counting.snapshot() - base
        create_runs = counting.reconciles - reconciles0
        start_lat = [counting.started[f"{k}@1"] - applied[k] for k in keys]
        avail_lat = [max(0.0, seen[k] - applied[k] - START_DELAY_S) for k in keys]

        base = counting.snapshot()
        reconciles0 = counting.reconciles
        for i in range(AGENTS):
            oabctl("apply", "-f", "-", stdin=manifest(i, "v2"), env=env).ok()
        wait_all(ddb, keys, 2, timeout=120)
        time.sleep(1.0)
        update = counting.snapshot() - base
        update_runs = counting.reconciles - reconciles0

        time.sleep(1.0)
        base = counting.snapshot()
        reconciles0 = counting.reconciles
        fence = replica.elector.fence()
        counting.within("resync", replica.scheduler.resync)(fence)
        time.sleep(2.0)  # anything the resync enqueued would run now
        resync = counting.snapshot() - base
        resync_runs = counting.reconciles - reconciles0
    finally:
        replica.shutdown()
    return {
        "agents": AGENTS,
        "reconcile_start_p50_s": round(statistics.median(start_lat), 3),
        "reconcile_start_p99_s": round(pct(start_lat, 0.99), 3),
        "available_p50_s": round(statistics.median(avail_lat), 3),
        "available_p99_s": round(pct(avail_lat, 0.99), 3),
        "create": {
            "runs_per_agent": round(create_runs / AGENTS, 2),
            **per_agent(create, "reconcile", AGENTS),
        },
        "update": {
            "runs_per_agent": round(update_runs / AGENTS, 2),
            **per_agent(update, "reconcile", AGENTS),
        },
        "noop_resync": {
            "reconciles_triggered": resync_runs,
            **per_agent(resync, "resync", AGENTS),
            "requests_per_agent": round(
                sum(n for (w, _s, _o), n in resync.items() if w == "resync") / AGENTS, 3
            ),
        },
    }


def throughput(
    emulator: LocalAWS, env: dict[str, str], replicas: int, workdir: Path
) -> dict[str, Any]:
    """Agents applied at once with ``replicas`` subprocess replicas: reconciles per second."""
    ddb = setup(emulator, env)
    config = ClusterConfig(replicas=replicas, bucket=BUCKET, workers=4)
    with LocalCluster(emulator.endpoint, log_dir=workdir / f"logs-{replicas}", config=config) as c:
        c.start()
        c.wait_for_leader(timeout=20)
        keys = [f"{NS}/agent-{i:02d}" for i in range(THROUGHPUT_AGENTS)]
        docs = "---\n".join(manifest(i, "v1") for i in range(THROUGHPUT_AGENTS))
        t0 = time.monotonic()
        oabctl("apply", "-f", "-", stdin=docs, env=env).ok()
        seen = wait_all(ddb, keys, 1, timeout=180)
        elapsed = max(seen.values()) - t0
        rows = sum(
            ddb.query(
                TableName=TABLES.runlog,
                KeyConditionExpression="pk = :k",
                ExpressionAttributeValues={":k": {"S": k}},
                Select="COUNT",
            )["Count"]
            for k in keys
        )
    return {
        "replicas": replicas,
        "agents": THROUGHPUT_AGENTS,
        "seconds": round(elapsed, 2),
        "reconciles_per_s": round(rows / elapsed, 2),
        "agents_available_per_s": round(THROUGHPUT_AGENTS / elapsed, 2),
    }


def main() -> int:
    """Run every measurement; print figures, then one JSON line."""
    emulator = start(dataplane=True)
    saved = dict(os.environ)
    try:
        os.environ.update(emulator.env())
        env = {k: v for k, v in os.environ.items() if not k.startswith("OAB_")}
        env.update({"OABCTL_CONFIG": os.devnull, "OAB_BUCKET": BUCKET, **LOCAL_ENV})
        env["AWS_ENDPOINT_URL"] = emulator.endpoint
        proc = in_process(emulator, env)
        with tempfile.TemporaryDirectory(prefix="oab-bench-") as tmp:
            one = throughput(emulator, env, 1, Path(tmp))
            three = throughput(emulator, env, 3, Path(tmp))
    finally:
        emulator.stop()
        os.environ.clear()
        os.environ.update(saved)
    print(f"agents (in process): {proc['agents']}, simulated task start {START_DELAY_S} s")
    print(
        f"reconcile start after apply: p50 {proc['reconcile_start_p50_s']} s, "
        f"p99 {proc['reconcile_start_p99_s']} s (goal p50 <= 2 s)"
    )
    print(
        f"apply -> Available (start delay subtracted): p50 {proc['available_p50_s']} s, "
        f"p99 {proc['available_p99_s']} s"
    )
    for phase in ("create", "update"):
        d = proc[phase]
        print(
            f"{phase}: {d['runs_per_agent']} runs/agent, ECS+S3+secrets "
            f"{d['ecs_s3_secrets_per_agent']} req/agent, DynamoDB {d['dynamodb_per_agent']} "
            f"req/agent"
        )
        print(f"  {d['ops']}")
    r = proc["noop_resync"]
    print(
        f"no-op resync: {r['requests_per_agent']} req/agent (goal <= 0.2), "
        f"{r['reconciles_triggered']} reconciles triggered; {r['ops']}"
    )
    for t in (one, three):
        print(
            f"throughput, {t['replicas']} replica(s): {t['agents']} agents Available in "
            f"{t['seconds']} s: {t['reconciles_per_s']} reconciles/s, "
            f"{t['agents_available_per_s']} agents/s"
        )
    figures = {
        "reconcile_start_p50_s": proc["reconcile_start_p50_s"],
        "available_p50_s": proc["available_p50_s"],
        "available_p99_s": proc["available_p99_s"],
        "create_ecs_s3_per_agent": proc["create"]["ecs_s3_secrets_per_agent"],
        "create_dynamodb_per_agent": proc["create"]["dynamodb_per_agent"],
        "update_ecs_s3_per_agent": proc["update"]["ecs_s3_secrets_per_agent"],
        "update_dynamodb_per_agent": proc["update"]["dynamodb_per_agent"],
        "noop_resync_requests_per_agent": r["requests_per_agent"],
        "reconciles_per_s_1_replica": one["reconciles_per_s"],
        "reconciles_per_s_3_replicas": three["reconciles_per_s"],
    }
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
