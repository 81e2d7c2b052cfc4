"""A replica process for the leader chaos test and the failover benchmark (not a test module).

``python tests/leader_replica.py --identity r1 --out r1.jsonl`` runs one
:class:`~oab.leader.elector.LeaderElector` against ``AWS_ENDPOINT_URL``. While leading, it makes a
fenced write every ``--write-interval`` seconds: one ``TransactWriteItems`` holding the fence's
``ConditionCheck`` and an append of ``{epoch, replica}`` to a single log item, so the server's
order of accepted writes can be checked afterwards. SIGTERM releases the lease gracefully.

Every event is one JSON line in ``--out`` (appended, flushed): ``ready``, ``start``/``stop``
(epoch, local monotonic time), ``write`` (epoch, ok, fenced, t), ``released``. Monotonic times are
comparable between processes on one Linux host (CLOCK_MONOTONIC is system-wide).
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
        while not stop.is_set():
            ok, fenced = fenced_write(work_client, fence, args.log_table)
            record("write", epoch=int(epoch), ok=ok, fenced=fenced)
            stop.wait(args.write_interval)
        record("stop", epoch=int(epoch))

    elector = LeaderElector(
        config,
        store,
        on_started_leading=lead,
        on_new_leader=lambda holder: record("leader", holder=holder),
    )
    done = threading.Event()

    def graceful() -> None:
        released = elector.release(drain_timeout=args.drain_timeout)
        record("released", ok=released)
        done.set()

    def on_term(_signum: int, _frame: object) -> None:
        threading.Thread(target=graceful, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    elector.start()
    record("ready", pid=os.getpid())
    # Wait in short slices: a process-directed SIGTERM may land on another thread, and the
    # Python-level handler only runs when the main thread gets to execute bytecode.
    while not done.wait(0.1):
        pass
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
