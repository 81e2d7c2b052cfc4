"""The emulator: serialized requests (no lost update), all-or-nothing transactions, clean exit."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from oab.controller.testing import AWS, process_exited, spawn_parent, wait_until


def _hammer(endpoint: str, table: str, worker: int, rounds: int, out: Any) -> None:
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    wins = 0
    for _ in range(rounds):
        # Read-modify-write on a shared counter, guarded by a version condition.
        while True:
            item = ddb.get_item(
                TableName=table, Key={"pk": {"S": "counter"}, "sk": {"S": "c"}}, ConsistentRead=True
            ).get("Item")
            version = int(item["v"]["N"]) if item else 0
            try:
                ddb.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": table,
                                "Item": {
                                    "pk": {"S": "counter"},
                                    "sk": {"S": "c"},
                                    "v": {"N": str(version + 1)},
                                },
                                "ConditionExpression": "attribute_not_exists(pk) OR v = :v",
                                "ExpressionAttributeValues": {":v": {"N": str(version)}},
                            }
                        },
                        {
                            "Put": {
                                "TableName": table,
                                "Item": {
                                    "pk": {"S": f"log#{worker}"},
                                    "sk": {"S": f"{version + 1:08d}"},
                                },
                            }
                        },
                    ]
                )
                wins += 1
                break
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in (
                    "TransactionCanceledException",
                    "ConditionalCheckFailedException",
                ):
                    raise
    out.put(wins)


def test_concurrent_transactions_lose_no_update(aws: AWS) -> None:
    table = aws.tables.state
    procs, rounds = 4, 40
    out: Any = mp.get_context("spawn").Queue()
    ctx = mp.get_context("spawn")
    workers = [
        ctx.Process(target=_hammer, args=(aws.emulator.endpoint, table, w, rounds, out))
        for w in range(procs)
    ]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
        assert p.exitcode == 0
    total = sum(out.get(timeout=5) for _ in workers)
    ddb = aws.client("dynamodb")
    item = ddb.get_item(TableName=table, Key={"pk": {"S": "counter"}, "sk": {"S": "c"}})["Item"]
    # Every acknowledged transaction is visible: the counter equals the number of wins, and
    # every version number was won exactly once (its log row exists once across workers).
    assert total == procs * rounds
    assert int(item["v"]["N"]) == total
    versions: list[str] = []
    for w in range(procs):
        rows = ddb.query(
            TableName=table,
            KeyConditionExpression="pk = :p",
            ExpressionAttributeValues={":p": {"S": f"log#{w}"}},
        )["Items"]
        versions += [r["sk"]["S"] for r in rows]
    assert sorted(versions) == [f"{v:08d}" for v in range(1, total + 1)]


def test_emulator_never_outlives_a_killed_parent() -> None:
    parent, child = spawn_parent(
        "import sys, time\n"
        "from oab.controller.local.emulator import start\n"
        "h = start()\n"
        "print(h.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    assert not process_exited(child)
    parent.send_signal(signal.SIGKILL)  # no cleanup code runs
    parent.wait()
    wait_until(lambda: process_exited(child), timeout=30, message="emulator exits with its parent")


def _item(pk: str, v: int, **extra: dict[str, str]) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": "s"}, "v": {"N": str(v)}, **extra}


def _get(ddb: Any, table: str, pk: str) -> dict[str, Any] | None:
    key = {"pk": {"S": pk}, "sk": {"S": "s"}}
    item: dict[str, Any] | None = ddb.get_item(TableName=table, Key=key).get("Item")
    return item


def test_a_cancelled_transaction_leaves_every_item_and_index_as_it_was(aws: AWS) -> None:
    ddb = aws.client("dynamodb")
    table = aws.tables.queue
    shard = {"ready_shard": {"S": "0"}, "ready_at": {"N": "1"}}
    ddb.put_item(TableName=table, Item=_item("kept", 1))
    ddb.put_item(TableName=table, Item=_item("doomed", 1, **shard))
    ddb.put_item(TableName=table, Item=_item("guard", 1))
    failing_check = {
        "ConditionCheck": {
            "TableName": table,
            "Key": {"pk": {"S": "guard"}, "sk": {"S": "s"}},
            "ConditionExpression": "v = :two",
            "ExpressionAttributeValues": {":two": {"N": "2"}},
        }
    }
    writes = [
        {"Put": {"TableName": table, "Item": _item("new", 1, **shard)}},
        {
            "Update": {
                "TableName": table,
                "Key": {"pk": {"S": "kept"}, "sk": {"S": "s"}},
                "UpdateExpression": "SET v = :nine",
                "ExpressionAttributeValues": {":nine": {"N": "9"}},
            }
        },
        {"Delete": {"TableName": table, "Key": {"pk": {"S": "doomed"}, "sk": {"S": "s"}}}},
    ]
    before = {pk: _get(ddb, table, pk) for pk in ("new", "kept", "doomed", "guard")}
    # The failing check first and last: moto applies the writes around it, then must undo them.
    for order in ([failing_check, *writes], [*writes, failing_check]):
        with pytest.raises(ClientError) as info:
            ddb.transact_write_items(TransactItems=order)
        assert info.value.response["Error"]["Code"] == "TransactionCanceledException"
        assert {pk: _get(ddb, table, pk) for pk in before} == before
        ready = ddb.query(
            TableName=table,
            IndexName="ready-index",
            KeyConditionExpression="ready_shard = :s",
            ExpressionAttributeValues={":s": {"S": "0"}},
        )["Items"]
        assert [i["pk"]["S"] for i in ready] == ["doomed"]
    # With the condition met, every write lands.
    failing_check["ConditionCheck"]["ExpressionAttributeValues"] = {":two": {"N": "1"}}
    ddb.transact_write_items(TransactItems=[failing_check, *writes])
    assert _get(ddb, table, "new") == _item("new", 1, **shard)
    assert _get(ddb, table, "kept") == _item("kept", 9)
    assert _get(ddb, table, "doomed") is None


def test_a_client_stopped_mid_request_does_not_hold_the_lock(aws: AWS) -> None:
    """A client that sent a request's headers but not its body (a replica SIGSTOPped between the
    two, as the chaos tests do) must not stall every other client behind the one lock."""
    import socket
    import threading
    from urllib.parse import urlparse

    url = urlparse(aws.emulator.endpoint)
    stalled = socket.create_connection((url.hostname, url.port))
    try:
        stalled.sendall(
            b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-amz-json-1.0\r\n"
            b"X-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Length: 100\r\n\r\n"
        )
        done = threading.Event()
        client = aws.client("dynamodb")
        threading.Thread(target=lambda: (client.list_tables(), done.set()), daemon=True).start()
        # A deadline on a condition, not a timing claim: without the fix this waits forever.
        assert done.wait(timeout=30), "a stalled client held the emulator's lock"
    finally:
        stalled.close()
