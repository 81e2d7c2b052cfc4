"""The DynamoDB tables of the control plane: key design, indexes, TTL, and idempotent creation.

Layout (what is hot is kept apart from what grows, because the emulator's transactions copy every
table they touch and its queries scan whole tables; real DynamoDB has neither cost):

- ``lease`` (``pk`` S, ``sk`` S): ``lease#{name}`` / ``lease``, one item per lease.
- ``queue`` (``pk`` S, ``sk`` S): ``unit#{ns}/{name}`` / ``unit``, one work unit per agent.
  Sparse GSI ``ready-index`` (``ready_shard`` S, ``ready_at`` N), present only on rows waiting
  to be claimed; the shard spreads ready rows over several partitions.
- ``state`` (``pk`` S, ``sk`` S): ``agent#{ns}/{name}`` / ``status``, the status per agent;
  ``changes#{shard}`` / ``{ts}#{key}``, change records written by ``oabctl`` for the scheduler.
- ``runlog`` (``pk`` S, ``seq`` N): ``{ns}/{name}`` / 1, 2, 3..., the append-only audit run log.
  GSI ``run-index`` (``run_id`` S) to find a run by id.

Names and key formats are defined in :mod:`oab.controller.base.names` (the lease's and the queue's
in their own packages); the ``state`` and ``runlog`` keys and the ``run-index`` are read from the
models that declare their items (:mod:`oab.controller.adapters.models`). Every table is
on-demand, has TTL on ``expires_at`` (epoch seconds; used by change records and the run log's
retention) and is created with deletion protection where the API supports it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError
from pynamodb.models import Model

from oab.controller.adapters.models import RunLogRow, StatusRow
from oab.controller.base.names import TTL_ATTRIBUTE, TableNames
from oab.queue.store import READY_INDEX

__all__ = ["ensure_tables", "table_definitions"]


def _pk_sk(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    }


def _from_model(model: type[Model], name: str) -> dict[str, Any]:
    """The ``CreateTable`` body of a table whose items a model declares (keys and indexes)."""
    schema = model._get_schema()
    definition: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": schema["attribute_definitions"],
        "KeySchema": [
            {"AttributeName": k["AttributeName"], "KeyType": k["KeyType"]}
            for k in schema["key_schema"]
        ],
    }
    indexes = schema["global_secondary_indexes"]
    if indexes:
        definition["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index["index_name"],
                "KeySchema": index["key_schema"],
                "Projection": index["projection"],
            }
            for index in indexes
        ]
    return definition


def table_definitions(names: TableNames) -> dict[str, dict[str, Any]]:
    """``CreateTable`` request bodies for every table, keyed by table name."""
    lease = _pk_sk(names.lease)
    queue = _pk_sk(names.queue)
    queue["AttributeDefinitions"] += [
        {"AttributeName": "ready_shard", "AttributeType": "S"},
        {"AttributeName": "ready_at", "AttributeType": "N"},
    ]
    queue["GlobalSecondaryIndexes"] = [
        {
            "IndexName": READY_INDEX,
            "KeySchema": [
                {"AttributeName": "ready_shard", "KeyType": "HASH"},
                {"AttributeName": "ready_at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        }
    ]
    state = _from_model(StatusRow, names.state)
    runlog = _from_model(RunLogRow, names.runlog)
    return {d["TableName"]: d for d in (lease, queue, state, runlog)}


def ensure_tables(
    dynamodb: Any, names: TableNames, *, wait_timeout: float = 120.0
) -> Mapping[str, str]:
    """Create missing tables (idempotent) and enable TTL. Returns ``{name: "created"|"exists"}``."""
    result: dict[str, str] = {}
    for name, definition in table_definitions(names).items():
        # Read first: against tables a stack created, init then needs no dynamodb:CreateTable.
        try:
            dynamodb.describe_table(TableName=name)
            result[name] = "exists"
            continue
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        try:
            dynamodb.create_table(**definition, DeletionProtectionEnabled=True)
            result[name] = "created"
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
            result[name] = "exists"
    deadline = time.monotonic() + wait_timeout
    for name in result:
        while dynamodb.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"table {name} did not become ACTIVE in {wait_timeout:.0f} s")
            time.sleep(0.5)
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
    return result
