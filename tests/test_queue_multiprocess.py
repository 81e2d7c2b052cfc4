"""Several worker processes on the local DynamoDB, with crashes, stalls and re-enqueues.

Four worker processes (``tests/queue_worker.py``) drain 500 keys while this process re-enqueues
newer generations and a killer SIGKILLs a random worker every second and starts a replacement;
one worker is spared the killer and stalls past its claim deadline now and then instead.
Workers log every claim and outcome; the checks read the logs against the final table:

- never two live claims on one key: consecutive claims (ordered by the row version each claim
  wrote) are either separated by the first one's outcome, or the second took over the first
  after the first's last known deadline;
- stale completions are rejected: no claim that was taken over has a successful outcome, every
  ``ClaimLost`` follows a take-over (possibly by a worker killed before it could log its claim),
  and stalled workers did see ``ClaimLost``;
- every enqueued generation is covered by a later completed claim of that generation or newer,
  and each key's last completion is its newest generation;
- no row is lost: every key ends ``done`` at its newest generation.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from emulated import Account

from oab.queue.config import QueueConfig
from oab.queue.row import EnqueueOutcome, State
from oab.queue.testing import wait_until
from oab.queue.workqueue import WorkQueue, idempotency_token

WORKER = Path(__file__).with_name("queue_worker.py")
KEYS = 500
REENQUEUES = 200
VIS = 1.5


def _spawn(
    aws: Account, logdir: Path, n: int, *, stall_prob: float = 0.0
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **aws.emulator.env()}
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "--table",
            aws.tables.queue,
            "--worker",
            f"w{n}",
            "--log",
            str(logdir / f"w{n}.jsonl"),
            "--seed",
            str(n),
            "--visibility",
            str(VIS),
            "--stall-prob",
            str(stall_prob),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(logdir / f"w{n}.err").open("wb"),
    )


@pytest.mark.slow
def test_workers_with_crashes_never_share_a_key_and_lose_nothing(
    aws: Account, tmp_path: Path
) -> None:
    q = WorkQueue(
        aws.client("dynamodb"), aws.tables.queue, config=QueueConfig(shards=4), rng=random.Random(3)
    )
    rng = random.Random(42)
    workers: dict[int, subprocess.Popen[bytes]] = {}
    next_id = 4
    kills = 0
    stop = threading.Event()

    def killer() -> None:
        nonlocal next_id, kills
        krng = random.Random(7)
        born: dict[int, float] = {}
        while not stop.wait(1.0):
            now = time.monotonic()
            # Kill only workers that have been up for a while (so they are mid-claim, not still
            # importing boto3 on a loaded machine); w0 is the staller and is never killed.
            ripe = [n for n in workers if n != 0 and now - born.setdefault(n, now) >= 2.0]
            if not ripe:
                continue
            victim = krng.choice(sorted(ripe))
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            del workers[victim]
            workers[next_id] = _spawn(aws, tmp_path, next_id)
            next_id += 1
            kills += 1

    enqueues: list[tuple[str, int, int]] = []  # key, generation, row version after the write
    newest: dict[str, int] = {}

    def enqueue(key: str, gen: int) -> None:
        res = q.enqueue(key, gen, "spec", idempotency_token(key, gen, "d", "spec"))
        if res.outcome not in (EnqueueOutcome.DUPLICATE, EnqueueOutcome.SUPERSEDED):
            assert res.row is not None
            enqueues.append((key, gen, res.row.version))
        newest[key] = max(newest.get(key, 0), gen)

    kill_thread = threading.Thread(target=killer, daemon=True)
    started = time.monotonic()
    keys = [f"ns/agent-{i:03d}" for i in range(KEYS)]
    for key in keys:
        enqueue(key, 1)
    try:
        # w0 is never killed and often stalls past its deadline: its claims get taken over and
        # its late completions must be rejected. The others crash at random instead.
        workers[0] = _spawn(aws, tmp_path, 0, stall_prob=0.1)
        workers.update({n: _spawn(aws, tmp_path, n) for n in range(1, 4)})
        kill_thread.start()
        for _ in range(REENQUEUES):
            key = rng.choice(keys)
            if rng.random() < 0.1:
                enqueue(key, newest[key])  # a repeated request: duplicate, no new work
            else:
                enqueue(key, newest[key] + 1)
            time.sleep(0.01)

        def drained() -> bool:
            rows = {r.key: r for r in q.list_rows()}
            return len(rows) == KEYS and all(
                r.state is State.DONE and r.generation == newest[r.key] for r in rows.values()
            )

        print(f"enqueued in {time.monotonic() - started:.1f} s")
        try:
            wait_until(drained, timeout=120, interval=0.5, message="every key done at newest gen")
        except TimeoutError:
            pending = [r.as_json() for r in q.list_rows() if r.state is not State.DONE]
            print(len(pending), pending[:5], time.time())
            raise
    finally:
        stop.set()
        kill_thread.join()
        for proc in workers.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    print(f"drained in {time.monotonic() - started:.1f} s, {kills} kills")
    final = {r.key: r for r in q.list_rows()}
    events: list[dict[str, Any]] = []
    for f in tmp_path.glob("w*.jsonl"):
        events += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    print({ev: sum(1 for e in events if e["ev"] == ev) for ev in {e["ev"] for e in events}})
    for err in tmp_path.glob("w*.err"):
        assert "Traceback" not in err.read_text(), err.read_text()
    _check(events, enqueues, newest, final)
    assert kills >= 3


def _check(
    events: list[dict[str, Any]],
    enqueues: list[tuple[str, int, int]],
    newest: dict[str, int],
    final: dict[str, Any],
) -> None:
    claims: dict[str, dict[str, Any]] = {}
    deadline: dict[str, float] = {}
    outcome: dict[str, str] = {}
    for e in events:
        if e["ev"] == "claim":
            claims[e["ct"]] = e
            deadline[e["ct"]] = e["deadline"]
        elif e["ev"] == "hb":
            deadline[e["ct"]] = max(deadline[e["ct"]], e["deadline"])
        elif e["ev"] in ("done", "failed", "lost"):
            outcome[e["ct"]] = e["ev"]
        elif e["ev"] == "completing":
            outcome.setdefault(e["ct"], "unknown")
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in claims.values():
        by_key[c["key"]].append(c)
    taken_over = {c["took_over"] for c in claims.values() if c["took_over"]}

    # A worker SIGKILLed after its claim landed but before it logged it leaves an unlogged claim;
    # whoever takes that one over names a token no log has. A rejected claim must have been taken
    # over by a logged claim, or be followed on its key by such a take-over of an unlogged one.
    unlogged_takeovers: dict[str, list[int]] = defaultdict(list)
    for c in claims.values():
        if c["took_over"] and c["took_over"] not in claims:
            unlogged_takeovers[c["key"]].append(c["seq"])

    # Stale completions are rejected; stalls did provoke some.
    for ct, result in outcome.items():
        if result in ("done", "failed"):
            assert ct not in taken_over, f"claim {ct} was taken over yet its outcome landed"
        if result == "lost":
            lost = claims[ct]
            assert ct in taken_over or any(
                seq > lost["seq"] for seq in unlogged_takeovers[lost["key"]]
            ), f"claim {ct} was rejected but never taken over"
    assert sum(1 for r in outcome.values() if r == "lost") >= 1

    # Never two live claims: each claim follows the previous one's outcome or its deadline.
    completed: dict[str, list[tuple[int, int]]] = defaultdict(list)  # key -> (seq, gen)
    for key, seq_claims in by_key.items():
        seq_claims.sort(key=lambda c: c["seq"])
        for a, b in itertools.pairwise(seq_claims):
            if b["took_over"] is not None and b["took_over"] == a["ct"]:
                assert deadline[a["ct"]] <= b["claimed_now"] + 0.002, (key, a, b)
            elif b["took_over"] is None:
                # b found the row ready: a (if it was the previous holder) had finished.
                assert outcome.get(a["ct"]) != "lost", (key, a, b)
        for i, c in enumerate(seq_claims):
            result = outcome.get(c["ct"])
            nxt = seq_claims[i + 1] if i + 1 < len(seq_claims) else None
            landed = result == "done" or (
                result == "unknown"
                and (
                    (nxt is not None and nxt["took_over"] != c["ct"])
                    or (nxt is None and final[key].completed_generation == c["gen"])
                )
            )
            if landed:
                completed[key].append((c["seq"], c["gen"]))

    # Every enqueued generation is covered by a later completion of it or a newer one.
    for key, gen, version in enqueues:
        assert any(seq > version and g >= gen for seq, g in completed[key]), (key, gen, version)
    for key, done in completed.items():
        assert max(done)[1] == newest[key], key

    # No row lost.
    assert set(final) == set(newest)
    for key, row in final.items():
        assert (row.state, row.generation, row.completed_generation) == (
            State.DONE,
            newest[key],
            newest[key],
        )
