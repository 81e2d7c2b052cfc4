"""A work-queue worker process for the multi-process test (launched as a subprocess).

It claims units, "works" a few milliseconds, sometimes heartbeats, sometimes stalls past its
claim deadline (to provoke take-over and a stale completion), sometimes fails retryably, and
completes. Every step is appended to its own JSON-lines log with ``os.write`` on an O_APPEND
descriptor, so a SIGKILL loses at most the step in progress. ``completing`` is written before the
completion request, its result after: a kill in between leaves the outcome to be inferred.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import boto3

from oab.queue.config import QueueConfig
from oab.queue.errors import ClaimLost
from oab.queue.workqueue import WorkQueue


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--visibility", type=float, default=1.5)
    parser.add_argument("--stall-prob", type=float, default=0.0)
    parser.add_argument("--fail-prob", type=float, default=0.03)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    client = boto3.Session(region_name="us-east-1").client("dynamodb")
    q = WorkQueue(
        client,
        args.table,
        config=QueueConfig(
            shards=4, visibility_timeout=args.visibility, backoff_base=0.05, backoff_cap=0.4
        ),
        rng=random.Random(args.seed + 1),
    )
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(**event: object) -> None:
        os.write(fd, (json.dumps({"w": args.worker, **event}) + "\n").encode())

    while True:
        c = q.claim(args.worker)
        if c is None:
            time.sleep(0.1)  # idle: every empty claim queries all shards
            continue
        log(
            ev="claim",
            key=c.key,
            gen=c.generation,
            ct=c.claim_token,
            seq=c.sequence,
            took_over=c.took_over,
            deadline=c.deadline,
            claimed_now=c.deadline - args.visibility,
        )
        try:
            time.sleep(rng.uniform(0.0, 0.005))
            if rng.random() < 0.1:
                c = q.heartbeat(c)
                log(ev="hb", key=c.key, ct=c.claim_token, deadline=c.deadline)
            if rng.random() < args.stall_prob:
                # A paused worker: stay away until another worker has taken the claim over
                # (bounded), then try to complete as if nothing happened.
                log(ev="stall", key=c.key, ct=c.claim_token)
                give_up = time.monotonic() + 20 * args.visibility
                while q.get(c.key).claim_token == c.claim_token and time.monotonic() < give_up:
                    time.sleep(0.2)
            log(ev="completing", key=c.key, ct=c.claim_token)
            if rng.random() < args.fail_prob:
                q.fail(c, "simulated transient error", retryable=True)
                log(ev="failed", key=c.key, ct=c.claim_token)
            else:
                q.complete(c)
                log(ev="done", key=c.key, ct=c.claim_token, gen=c.generation, seq=c.sequence)
        except ClaimLost as lost:
            log(ev="lost", key=c.key, ct=c.claim_token, owner=lost.current_owner)


if __name__ == "__main__":
    main()
