"""A replica process for the leader chaos test and the failover benchmark (not a test module).

``python tests/leader_replica.py --identity r1 --out r1.jsonl`` runs one
:class:`~oab.leader.elector.LeaderElector` against ``AWS_ENDPOINT_URL``. While leading, it makes a
fenced write every ``--write-interval`` seconds: one ``TransactWriteItems`` holding the fence's
``ConditionCheck`` and an append of ``{epoch, replica}`` to a single log item, so the server's
order of accepted writes can be checked afterwards.

Zombie writes. A leader paused mid-term (SIGSTOP, a VM freeze) may have a write in flight that
reaches the store after it resumes, whatever its stop token says by then. The work loop models
exactly that: when it finds it has not run for longer than the lease duration, it makes one write
with its old fence *without* looking at the stop token, and records it with ``zombie: true``. Only
the fence stands between such a write and the store, so a chaos run can require that the fence was
exercised (zombie writes attempted, rejections seen), not merely that nothing stale got through.

Shutdown. SIGTERM releases the lease gracefully. The handler only sets a flag (a Python signal
handler runs on the main thread between bytecodes, so taking a lock or starting a thread there can
deadlock with whatever the main thread held); the main thread notices the flag within 0.1 s and
runs the release itself, and the process exits 0 once it returns, or 1 if it raised. The handler
is installed before anything else is built; a SIGTERM before that ends the process by default,
before it could have acquired anything.

Every event is one JSON line in ``--out`` (appended, flushed): ``ready``, ``start``/``stop``
(epoch), ``write`` (epoch, ok, fenced, zombie), ``term`` (SIGTERM seen), ``released`` (ok), each
with ``t`` (local monotonic time). Monotonic times are comparable between processes on one Linux
host (CLOCK_MONOTONIC is system-wide).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from typing import Any

import boto3

from oab.leader.config import ElectionConfig
from oab.leader.elector import LeaderElector
from oab.leader.fence import Fence, fence_failed
from oab.leader.lease import DynamoLeaseStore
from oab.leader.record import Epoch, ReplicaId

LOG_KEY = {"pk": {"S": "leader-chaos"}, "sk": {"S": "writes"}}


class Recorder:
    """Appends JSON lines to a file, one ``write`` + flush per event."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ev": event, "t": time.monotonic(), **fields})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


class TermFlag:
    """SIGTERM handling that is safe at any bytecode: the handler only stores a flag."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        self.requested = True


def fenced_write(client: Any, fence: Fence, log_table: str) -> tuple[bool, bool]:
    """One fenced append; returns (accepted, rejected_by_fence)."""
    entry = {"M": {"e": {"N": str(int(fence.epoch))}, "r": {"S": fence.holder}}}
    try:
        client.transact_write_items(
            TransactItems=[
                fence.condition_check(),
                {
                    "Update": {
                        "TableName": log_table,
                        "Key": LOG_KEY,
                        "UpdateExpression": "SET #w = list_append(if_not_exists(#w, :empty), :w)",
                        "ExpressionAttributeNames": {"#w": "writes"},
                        "ExpressionAttributeValues": {":w": {"L": [entry]}, ":empty": {"L": []}},
                    }
                },
            ]
        )
    except Exception as exc:
        return False, fence_failed(exc, 0)
    return True, False


def main(argv: list[str] | None = None) -> None:
    term = TermFlag()  # first: a SIGTERM from here on is a graceful shutdown
    parser = argparse.ArgumentParser()
    parser.add_argument("--identity", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--table", default="oab-lease")
    parser.add_argument("--log-table", default="oab-state")
    parser.add_argument("--lease-name", default="controller")
    parser.add_argument("--write-interval", type=float, default=0.25)
    parser.add_argument("--drain-timeout", type=float, default=2.0)
    args = parser.parse_args(argv)

    record = Recorder(args.out)
    config = ElectionConfig(identity=ReplicaId(args.identity), lease_name=args.lease_name)
    session = boto3.Session()
    lease_client = session.client("dynamodb", config=config.botocore_config())
    work_client = session.client("dynamodb", config=config.botocore_config())
    store = DynamoLeaseStore(lease_client, args.table, args.lease_name)

    def lead(epoch: Epoch, stop: threading.Event) -> None:
        record("start", epoch=int(epoch))
        fence = Fence(
            table=args.table, lease_name=args.lease_name, holder=config.identity, epoch=epoch
        )
        # Deliberately no is_leader check before writing: only the stop token and the fence
        # stand between a paused ex-leader and a stale write.
        last = time.monotonic()
        straddled = False
        while True:
            # Not run for longer than a lease: the process was paused mid-term.
            paused = straddled or time.monotonic() - last > config.lease_duration
            if stop.is_set() and not paused:
                break
            began = time.monotonic()
            ok, fenced = fenced_write(work_client, fence, args.log_table)
            record("write", epoch=int(epoch), ok=ok, fenced=fenced, zombie=paused)
            # A write that spanned a pause may have reached the store before it: the next one
            # is the zombie write.
            straddled = not paused and time.monotonic() - began > config.lease_duration
            last = time.monotonic()
            stop.wait(args.write_interval)
        record("stop", epoch=int(epoch))

    elector = LeaderElector(
        config,
        store,
        on_started_leading=lead,
        on_new_leader=lambda holder: record("leader", holder=holder),
    )
    elector.start()
    record("ready", pid=os.getpid())
    while not term.requested:
        time.sleep(0.1)
    record("term")
    try:
        released = elector.release(drain_timeout=args.drain_timeout)
    except BaseException as exc:  # still exit: a replica that cannot release must not linger
        record("released", ok=False, error=type(exc).__name__)
        os._exit(1)
    record("released", ok=released)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
