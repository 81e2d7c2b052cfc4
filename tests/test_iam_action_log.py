"""The opt-in AWS action log of ``oab.controller.adapters.aws``: what it records, and what it never
does."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from oab.controller.adapters.aws import ACTION_LOG_ENV, make_client, make_session, resource_params
from oab.controller.testing import AWS

PLANTED = "planted-secret-value-never-logged"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_client_of_the_session_is_logged_with_names_only(aws: AWS, tmp_path: Path) -> None:
    log = tmp_path / "actions.jsonl"
    session = make_session(principal="oabctl", env={ACTION_LOG_ENV: str(log)})
    endpoint = aws.emulator.endpoint
    ssm = make_client(session, "ssm", endpoint_url=endpoint)
    s3 = make_client(session, "s3", endpoint_url=endpoint)
    ddb = session.client("dynamodb", endpoint_url=endpoint)  # not via make_client: still logged
    ssm.put_parameter(Name="/oab/team/bot/token", Value=PLANTED, Type="SecureString")
    s3.create_bucket(Bucket="logged-bucket")
    s3.put_object(Bucket="logged-bucket", Key="manifests/team/bot.yaml", Body=PLANTED.encode())
    item = {"pk": {"S": PLANTED}, "sk": {"S": "x"}}
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": aws.tables.state, "Item": item}}])
    with pytest.raises(ClientError):  # a refused call is logged too: it needed the grant
        s3.get_object(Bucket="logged-bucket", Key="missing")

    rows = _lines(log)
    assert [(r["principal"], r["service"], r["operation"]) for r in rows] == [
        ("oabctl", "ssm", "PutParameter"),
        ("oabctl", "s3", "CreateBucket"),
        ("oabctl", "s3", "PutObject"),
        ("oabctl", "dynamodb", "TransactWriteItems"),
        ("oabctl", "s3", "GetObject"),
    ]
    assert rows[0]["params"] == {"Name": "/oab/team/bot/token"}
    assert rows[2]["params"] == {"Bucket": "logged-bucket", "Key": "manifests/team/bot.yaml"}
    assert rows[3]["params"] == {"TransactItems": [{"Put": aws.tables.state}]}
    assert all(r["signing_name"] == r["service"] and r["region"] == "us-east-1" for r in rows)
    assert PLANTED not in log.read_text()


def test_no_variable_no_log(aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "actions.jsonl"
    endpoint = aws.emulator.endpoint

    def call(**kwargs: Any) -> None:
        make_client(make_session(**kwargs), "s3", endpoint_url=endpoint).list_buckets()

    monkeypatch.setenv(ACTION_LOG_ENV, str(log))
    call(principal="oabctl", env={})  # an explicit environment without the variable wins
    assert not log.exists()
    call(principal="oab-controller")  # the process environment is the default
    assert [r["principal"] for r in _lines(log)] == ["oab-controller"]
    monkeypatch.delenv(ACTION_LOG_ENV)
    call(principal="oab-controller")
    assert len(_lines(log)) == 1


def test_concurrent_calls_append_whole_lines(aws: AWS, tmp_path: Path) -> None:
    log = tmp_path / "actions.jsonl"
    session = make_session(principal="oab-controller", env={ACTION_LOG_ENV: str(log)})
    client = make_client(session, "dynamodb", endpoint_url=aws.emulator.endpoint)

    def reads(i: int) -> None:
        for _ in range(20):
            client.describe_table(TableName=aws.tables.state if i % 2 else aws.tables.queue)

    threads = [threading.Thread(target=reads, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = _lines(log)
    assert len(rows) == 80
    assert {r["params"]["TableName"] for r in rows} == {aws.tables.state, aws.tables.queue}


def test_resource_params_keep_names_and_drop_data() -> None:
    params = {
        "TableName": "oab-state",
        "Item": {"pk": {"S": "data"}},
        "RequestItems": {"oab-state": [], "oab-queue": []},
        "containerDefinitions": [{"environment": [{"name": "X", "value": PLANTED}]}],
        "executionRoleArn": "arn:aws:iam::123456789012:role/oab-agent-exec-team-bot",
        "tags": [{"key": "a", "value": "b"}],
        "SecretId": "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx",
    }
    assert resource_params("BatchWriteItem", params) == {
        "TableName": "oab-state",
        "RequestItems": ["oab-queue", "oab-state"],
        "executionRoleArn": "arn:aws:iam::123456789012:role/oab-agent-exec-team-bot",
        "tags": 1,
        "SecretId": "[REDACTED]",  # a credential-shaped "name" is never written
    }
