"""Work-queue throughput on the embedded local AWS, relative to the emulator's own raw speed.

Phases, each on a freshly reset emulator (its queries and transactions slow down with table
size, so every phase starts from the same table):

1. raw: conditional PutItem (``attribute_not_exists``) rate with 1 and 4 client processes;
2. enqueue: ``WorkQueue.enqueue`` of N new keys with 1 and 4 processes;
3. drain: N keys preloaded, then 1 or 4 worker processes ``claim`` + ``complete`` until empty.

DynamoDB requests are counted in every process with a botocore ``before-send`` hook (not
estimated); claim latency is measured around each successful ``claim``. The goal checked:
drain rate with 4 workers >= 50% of (raw rate with 4 clients / requests per unit).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import boto3

N_UNITS = 300
N_RAW = 400


def _client() -> Any:
    client = boto3.Session(region_name="us-east-1").client("dynamodb")
    counts: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        counts[event_name.rsplit(".", 1)[-1]] += 1

    client.meta.events.register("before-send.dynamodb.*", count)
    return client, counts


def worker(mode: str, table: str, index: int, n: int) -> dict[str, Any]:
    """One measuring process; returns its figures."""
    from oab.queue.config import QueueConfig
    from oab.queue.workqueue import WorkQueue

    client, counts = _client()
    q = WorkQueue(client, table, config=QueueConfig(shards=4))
    latencies: list[float] = []
    units = 0
    start = time.monotonic()
    if mode == "raw":
        for i in range(n):
            client.put_item(
                TableName=table,
                Item={"pk": {"S": f"raw#{index}#{i}"}, "sk": {"S": "raw"}},
                ConditionExpression="attribute_not_exists(pk)",
            )
            units += 1
    elif mode == "enqueue":
        for i in range(n):
            q.enqueue(f"ns/e{index}-{i}", 1, "spec", f"tok-{index}-{i}")
            units += 1
    else:  # drain
        empty = 0
        while empty < 2:
            t0 = time.monotonic()
            c = q.claim(f"w{index}")
            if c is None:
                empty += 1
                continue
            latencies.append(time.monotonic() - t0)
            empty = 0
            q.complete(c)
            units += 1
    return {
        "units": units,
        "elapsed": time.monotonic() - start,
        "requests": dict(counts),
        "latencies": latencies,
    }


def _run(mode: str, table: str, procs: int, n_each: int, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", mode, "--table", table, "--n", str(n_each)]
    started = time.monotonic()
    children = [
        subprocess.Popen([*cmd, "--index", str(i)], env=env, stdout=subprocess.PIPE, text=True)
        for i in range(procs)
    ]
    results = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode != 0:
            raise RuntimeError(f"{mode} worker failed with {child.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    # Workers start at slightly different times; the rate is over the slowest one's span.
    elapsed = max(r["elapsed"] for r in results)
    units = sum(r["units"] for r in results)
    requests: Counter[str] = Counter()
    for r in results:
        requests.update(r["requests"])
    latencies = sorted(x for r in results for x in r["latencies"])
    return {
        "units": units,
        "rate": units / elapsed,
        "requests_per_unit": sum(requests.values()) / max(units, 1),
        "requests": dict(requests),
        "latencies": latencies,
        "wall": time.monotonic() - started,
    }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> None:
    """Run every phase and print the figures, then one JSON line."""
    from oab.controller.testing import AWS, local_aws
    from oab.queue.workqueue import WorkQueue

    with local_aws() as emulator:
        env = {**os.environ, **emulator.env()}
        os.environ.update(emulator.env())
        aws = AWS(emulator)
        table = aws.tables.queue
        figures: dict[str, Any] = {}
        for procs in (1, 4):
            aws.reset()
            raw = _run("raw", table, procs, N_RAW // procs, env)
            figures[f"raw_conditional_put_per_s_{procs}"] = round(raw["rate"], 1)
            aws.reset()
            enq = _run("enqueue", table, procs, N_UNITS // procs, env)
            figures[f"enqueue_per_s_{procs}"] = round(enq["rate"], 1)
            figures[f"enqueue_requests_per_unit_{procs}"] = round(enq["requests_per_unit"], 2)
            aws.reset()
            preload = WorkQueue(aws.client("dynamodb"), table)
            for i in range(N_UNITS):
                preload.enqueue(f"ns/d{i}", 1, "spec", f"tok-{i}")
            drain = _run("drain", table, procs, 0, env)
            assert drain["units"] == N_UNITS, drain["units"]
            rpu = drain["requests_per_unit"]
            figures[f"claim_complete_per_s_{procs}"] = round(drain["rate"], 1)
            figures[f"claim_complete_requests_per_unit_{procs}"] = round(rpu, 2)
            figures[f"claim_complete_requests_{procs}"] = drain["requests"]
            lat = drain["latencies"]
            figures[f"claim_latency_p50_ms_{procs}"] = round(1000 * _pct(lat, 0.5), 1)
            figures[f"claim_latency_p99_ms_{procs}"] = round(1000 * _pct(lat, 0.99), 1)
            ceiling = raw["rate"] / rpu
            figures[f"claim_complete_ratio_to_raw_per_unit_{procs}"] = round(
                drain["rate"] / ceiling, 3
            )
            figures[f"enqueue_ratio_to_raw_{procs}"] = round(enq["rate"] / raw["rate"], 3)
        figures["units_per_phase"] = N_UNITS
        figures["goal_claim_complete_4_ge_half_raw_per_unit"] = (
            figures["claim_complete_ratio_to_raw_per_unit_4"] >= 0.5
        )
    for name, value in figures.items():
        print(f"{name:50s} {value}")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--worker", choices=["raw", "enqueue", "drain"])
    parser.add_argument("--table", default="")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--n", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.table, args.index, args.n)))
    else:
        main()
