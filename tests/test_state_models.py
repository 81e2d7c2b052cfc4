"""The PynamoDB models of the controller's own tables: byte-compatible with the rows written before
them, total on hostile items, bound once to the deployment's tables, and never calling AWS."""

from __future__ import annotations

import json
from typing import Any

import pytest

from oab.controller.adapters import models, state, tables
from oab.controller.adapters.aws import make_table_models
from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.statestore import DynamoStateStore
from oab.controller.base.names import RUN_INDEX, TTL_ATTRIBUTE, TableNames
from oab.controller.core import status as st
from oab.controller.core.stored import UnreadableItem
from oab.controller.testing import AWS

# Rows spelled out as the hand-written encoders (before the models) wrote them.
_CONDITIONS = [
    {
        "type": "Available",
        "status": "True",
        "reason": "Running",
        "message": "steady",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
]
OLD_STATUS: dict[str, Any] = {
    "pk": {"S": "agent#team/bot"},
    "sk": {"S": "status"},
    "key": {"S": "team/bot"},
    "observed_generation": {"N": "4"},
    "conditions": {"S": json.dumps(_CONDITIONS)},
    "task_arns": {"S": json.dumps(["arn:aws:ecs:us-east-1:1:task/c/abc"])},
    "service_arn": {"S": "arn:aws:ecs:us-east-1:1:service/c/oab-team-bot"},
    "task_definition_arn": {"S": "arn:aws:ecs:us-east-1:1:task-definition/oab-team-bot:3"},
    "task_definition_hash": {"S": "f" * 64},
    "last_reconciled": {"S": "2026-01-01T00:00:01Z"},
    "last_error": {"S": ""},
    "attempts": {"N": "0"},
    "last_run_id": {"S": "run-9"},
    "trace_id": {"S": "a" * 32},
    "secret_versions": {"S": json.dumps({"A": "1", "B": "2"})},
    "watched_secrets": {"S": json.dumps({"/oab/team/bot/x": "3"})},
    "restart_marker": {"S": "m1"},
    "finalizer_step": {"S": ""},
    "manifest_etag": {"S": '"e1"'},
    "failed_hash": {"S": ""},
    "audit_seq": {"N": "9"},
    "last_snapshot": {"S": "snap-1"},
    "phase": {"S": "Running"},
}
_CALLS = [
    {"action": "ecs:UpdateService", "target": "oab-team-bot", "result": "ok", "requestId": "r1"},
    {"action": "s3:GetObject", "target": "s3://b/k", "result": "", "requestId": ""},
]
OLD_AUDIT: dict[str, Any] = {
    "pk": {"S": "team/bot"},
    "seq": {"N": "9"},
    "run_id": {"S": "run-9"},
    "event": {"S": "reconcile"},
    "generation": {"N": "4"},
    "token": {"S": "tok"},
    "replica": {"S": "r1"},
    "epoch": {"N": "2"},
    "trace_id": {"S": "a" * 32},
    "span_id": {"S": "b" * 16},
    "from_phase": {"S": "Pending"},
    "to_phase": {"S": "Running"},
    "calls": {"S": "[" + ",".join(json.dumps(c) for c in _CALLS) + "]"},
    "outcome": {"S": "done"},
    "error": {"S": ""},
    "duration_ms": {"N": "12"},
    "at": {"S": "2027-01-15T08:00:00Z"},
    "expires_at": {"N": str(1_800_000_000 + 90 * 86_400)},
}
OLD_CHANGE: dict[str, Any] = {
    "pk": {"S": "changes#1"},
    "sk": {"S": "1800000000000#manifests/team/bot.yaml#4"},
    "key": {"S": "manifests/team/bot.yaml"},
    "generation": {"N": "4"},
    "kind": {"S": "apply"},
    "version_id": {"S": "v4"},
    "at": {"S": "2027-01-15T08:00:00.000+00:00"},
    "epoch_ms": {"N": "1800000000000"},
    "trace_context": {"S": json.dumps({"traceparent": "00-a-b-01"}, sort_keys=True)},
    "expires_at": {"N": str(1_800_000_000 + 86_400)},
}


def _store(aws: AWS) -> DynamoStateStore:
    return DynamoStateStore(
        make_table_models(aws.session, aws.tables, endpoint_url=aws.emulator.endpoint)
    )


def test_a_status_written_the_old_way_reads_through_the_model_and_re_encodes_byte_for_byte(
    aws: AWS,
) -> None:
    aws.client("dynamodb").put_item(TableName=aws.tables.state, Item=OLD_STATUS)
    status = _store(aws).read_status("team/bot")
    assert status.phase == "Running"
    assert status.conditions[0].message == "steady"
    assert status.task_arns == ("arn:aws:ecs:us-east-1:1:task/c/abc",)
    assert status.secret_versions == {"A": "1", "B": "2"}
    assert (status.audit_seq, status.observed_generation, status.last_snapshot) == (9, 4, "snap-1")
    # Re-encoded byte for byte, plus the fields added since (webhook ingress), at their defaults.
    added = {"ingress": {"S": "{}"}, "webhook_urls": {"S": "[]"}}
    assert state.status_to_item(status) == {**OLD_STATUS, **added}


def test_an_audit_row_written_the_old_way_reads_by_agent_and_by_run_id(aws: AWS) -> None:
    aws.client("dynamodb").put_item(TableName=aws.tables.runlog, Item=OLD_AUDIT)
    store = _store(aws)
    [row] = store.read_runlog("team/bot")
    assert (row.seq, row.from_phase, row.to_phase, row.at) == (9, "Pending", "Running", 1.8e9)
    assert [c.action for c in row.calls] == ["ecs:UpdateService", "s3:GetObject"]
    assert store.run("run-9") == row
    assert store.run("run-0") is None
    assert state.audit_to_item(row) == OLD_AUDIT


def test_a_change_record_written_the_old_way_reads_through_the_model(aws: AWS) -> None:
    aws.client("dynamodb").put_item(TableName=aws.tables.state, Item=OLD_CHANGE)
    log = ChangeLog(aws.client("dynamodb"), aws.tables.state, wall_clock=lambda: 1_800_000_000.0)
    [change] = log.read_since()[0]
    assert (change.key, change.generation, change.kind, change.version_id) == (
        "manifests/team/bot.yaml",
        4,
        "apply",
        "v4",
    )
    assert change.trace_context == {"traceparent": "00-a-b-01"}
    # Recording the same change now writes the same item (the model's encoding is the old one).
    log.record(
        "manifests/team/bot.yaml",
        generation=4,
        kind="apply",
        version_id="v4",
        trace_context={"traceparent": "00-a-b-01"},
    )
    stored = aws.client("dynamodb").get_item(
        TableName=aws.tables.state, Key={"pk": OLD_CHANGE["pk"], "sk": OLD_CHANGE["sk"]}
    )["Item"]
    assert stored == OLD_CHANGE


def test_rows_of_older_versions_lacking_newer_attributes_read_as_defaults() -> None:
    oldest = {k: OLD_STATUS[k] for k in ("pk", "sk", "phase", "audit_seq")}
    status = state.status_from_item(oldest)
    assert status == st.AgentStatus(key="team/bot", phase="Running", audit_seq=9)
    row = state.audit_from_item({k: OLD_AUDIT[k] for k in ("pk", "seq", "at")})
    assert (row.event, row.calls, row.to_phase) == ("reconcile", (), None)


_WRONG = {"S": {"N": "1"}, "N": {"S": "x"}}


@pytest.mark.parametrize(
    ("model", "old", "decode"),
    [
        (models.StatusRow, OLD_STATUS, state.status_from_item),
        (models.RunLogRow, OLD_AUDIT, state.audit_from_item),
    ],
)
def test_every_attribute_of_the_wrong_type_is_named_never_a_crash(
    model: type[Any], old: dict[str, Any], decode: Any
) -> None:
    for attr in model.get_attributes().values():
        if attr.attr_name == TTL_ATTRIBUTE:
            continue
        for bad in (_WRONG[attr.attr_type], {"NULL": True}, "text", {"S": "1", "N": "1"}):
            with pytest.raises(UnreadableItem) as exc:
                decode({**old, attr.attr_name: bad})
            assert exc.value.field == attr.attr_name


def test_an_unreadable_ttl_does_not_make_its_row_unreadable() -> None:
    row = state.audit_from_item({**OLD_AUDIT, TTL_ATTRIBUTE: {"N": "1e999"}})
    assert row.seq == 9


@pytest.mark.parametrize("text", ["1.5", "1e3", "-1", "9" * 41, "nan"])
def test_a_number_that_is_not_a_bounded_integer_is_refused(text: str) -> None:
    with pytest.raises(UnreadableItem, match="audit_seq"):
        state.status_from_item({**OLD_STATUS, "audit_seq": {"N": text}})


def test_the_factory_binds_each_model_once_to_the_prefixed_tables(aws: AWS) -> None:
    names = TableNames.with_prefix("blue")
    bound = make_table_models(aws.session, names, endpoint_url=aws.emulator.endpoint)
    other = make_table_models(aws.session, TableNames(), endpoint_url=aws.emulator.endpoint)
    assert (bound.status.Meta.table_name, bound.runlog.Meta.table_name) == (
        "blue-state",
        "blue-runlog",
    )
    assert bound.change.Meta.table_name == "blue-state"
    assert bound.status.Meta.host == aws.emulator.endpoint
    assert bound.status.Meta.region == "us-east-1"
    assert models.StatusRow.Meta.table_name == "state"  # the unbound model is left as it was
    assert bound.runlog.run_index is not other.runlog.run_index
    # The models and the tables they are created as agree (keys, the run-id index).
    definitions = tables.table_definitions(names)
    schema = bound.runlog._get_schema()
    runlog = definitions["blue-runlog"]
    assert schema["key_schema"] == [
        {"KeyType": k["KeyType"], "AttributeName": k["AttributeName"]} for k in runlog["KeySchema"]
    ]
    assert schema["attribute_definitions"] == runlog["AttributeDefinitions"]
    [index] = schema["global_secondary_indexes"]
    assert index["index_name"] == RUN_INDEX
    assert index["key_schema"] == runlog["GlobalSecondaryIndexes"][0]["KeySchema"]
    state_schema = bound.status._get_schema()
    assert (
        state_schema["attribute_definitions"] == definitions["blue-state"]["AttributeDefinitions"]
    )


def test_binding_encoding_and_decoding_make_no_aws_request(aws: AWS) -> None:
    # PynamoDB never does I/O here (no DescribeTable on first use): every request goes through
    # the factory's client, which the IAM action log sees (tests/test_iam_calls.py).
    calls: list[str] = []
    client = aws.client("dynamodb")
    client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    bound = make_table_models(aws.session, aws.tables, client=client)
    item = state.status_to_item(state.status_from_item(OLD_STATUS))
    bound.status.from_raw_data(item)
    bound.status._get_connection()
    assert calls == []
    DynamoStateStore(bound).read_status("team/bot")
    assert calls == ["GetItem"]
