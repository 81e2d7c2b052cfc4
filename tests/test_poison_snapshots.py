"""Agent-written snapshot records are parsed as untrusted: size, depth, types, scrubbing.

Records are written straight into the emulator's bucket, as a hostile or broken agent's task
role could; the S3 adapter reads them.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from oab.controller.adapters.snapshots import S3SnapshotRecords, snapshot_call
from oab.controller.api.service import AgentKey
from oab.controller.core.snapshot import SnapshotId, SnapshotRecord, record_key
from oab.controller.core.stored import SNAPSHOT_RECORD_BYTES
from oab.controller.testing import AWS

CP = "oab-control-plane"
KEY = AgentKey("team/bot")
PREFIX = "snapshots/team/bot/"


def _good(n: int, **fields: Any) -> dict[str, Any]:
    record = SnapshotRecord(
        agent=KEY,
        id=SnapshotId(f"snap{n:03d}"),
        trigger="on-demand",
        status="uploaded",
        taken_at=1_800_000_000.0 + n,
        location="s3://agent-state/team/bot/home.tar.gz",
        version_id=f"v{n}",
        members=3,
        size_bytes=42,
    )
    return {**json.loads(record.to_json()), **fields}


def _put(s3: Any, n: int, body: bytes) -> str:
    key = f"{PREFIX}20290101T0000{n:02d}.000Z-snap{n:03d}.json"
    s3.put_object(Bucket=CP, Key=key, Body=body)
    return key


def _bucket(aws: AWS) -> Any:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=CP)
    return s3


def test_an_oversized_record_is_refused_from_the_listing_without_a_get(aws: AWS) -> None:
    s3 = _bucket(aws)
    gets: list[str] = []
    s3.meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )
    big = json.dumps(_good(1, error="x" * 300_000)).encode()
    _put(s3, 1, big)
    good = _put(s3, 2, json.dumps(_good(2)).encode())

    found = S3SnapshotRecords(s3, CP).after(KEY, marker="", limit=10)

    assert [f.record.status for f in found] == ["failed", "uploaded"]
    assert found[0].record.error == (
        f"unreadable snapshot record: record of {len(big)} bytes is over {SNAPSHOT_RECORD_BYTES}"
    )
    assert gets == [good]  # the big one was never fetched
    assert len(snapshot_call(found[0].record).result) < 200


def test_records_that_fail_a_check_are_audited_once_with_a_bounded_reason(aws: AWS) -> None:
    s3 = _bucket(aws)
    bodies = [
        ("[" * 8000 + "]" * 8000).encode(),  # deep: refused before json.loads recurses
        json.dumps(_good(2, status=5)).encode(),
        json.dumps(_good(3, trigger="cron")).encode(),
        json.dumps(_good(4, members="many")).encode(),
        json.dumps(_good(5, agent="team/other")).encode(),
        json.dumps(_good(6, location="file:///etc/passwd")).encode(),
        json.dumps(_good(7, id="../../x")).encode(),
        b"\xff\xfe not utf-8",
        json.dumps([1, 2]).encode(),
        json.dumps(_good(10, taken_at="yesterday")).encode(),
    ]
    keys = [_put(s3, n + 1, body) for n, body in enumerate(bodies)]
    store = S3SnapshotRecords(s3, CP)

    found = store.after(KEY, marker="", limit=20)

    assert [f.key for f in found] == keys
    errors = [f.record.error or "" for f in found]
    assert all(f.record.status == "failed" for f in found)
    assert all(e.startswith("unreadable snapshot record: ") and len(e) < 260 for e in errors)
    for expected, error in zip(
        [
            "nested deeper",
            "status:",
            "trigger:",
            "members:",
            "agent: names another agent",
            "location:",
            "id:",
            "not UTF-8",
            "not a JSON object",
            "taken_at:",
        ],
        errors,
        strict=True,
    ):
        assert expected in error, (expected, error)
    # The marker moves past every one of them: none is read again.
    assert store.after(KEY, marker=found[-1].key, limit=20) == []


def test_the_sidecar_error_text_is_scrubbed_and_cut(aws: AWS) -> None:
    s3 = _bucket(aws)
    token = "ghp_" + "A" * 36
    _put(s3, 1, json.dumps(_good(1, status="failed", error=f"push failed: {token} " + "e" * 9000))
         .encode())  # fmt: skip
    (found,) = S3SnapshotRecords(s3, CP).after(KEY, marker="", limit=5)
    assert found.record.error is not None
    assert token not in found.record.error
    assert len(found.record.error.encode()) <= 512


def test_a_throttled_get_ends_ingestion_at_that_record_and_keeps_the_earlier(aws: AWS) -> None:
    s3 = _bucket(aws)
    first = _put(s3, 1, json.dumps(_good(1)).encode())
    second = _put(s3, 2, json.dumps(_good(2)).encode())
    _put(s3, 3, json.dumps(_good(3)).encode())

    def throttle(params: dict[str, Any], **_kwargs: Any) -> None:
        if params["Key"] == second:
            raise ClientError({"Error": {"Code": "SlowDown", "Message": ""}}, "GetObject")

    s3.meta.events.register("provide-client-params.s3.GetObject", throttle)
    found = S3SnapshotRecords(s3, CP).after(KEY, marker="", limit=10)
    assert [f.key for f in found] == [first]  # the rest waits for the next run


def test_a_good_record_round_trips_exactly(aws: AWS) -> None:
    s3 = _bucket(aws)
    record = SnapshotRecord(
        agent=KEY,
        id=SnapshotId("abc"),
        trigger="shutdown",
        status="uploaded",
        taken_at=1_800_000_000.5,
        location="s3://agent-state/team/bot/home.tar.gz",
        version_id="v9",
        members=7,
        size_bytes=1234,
        excluded=2,
    )
    s3.put_object(Bucket=CP, Key=record_key(record), Body=record.to_json())
    (found,) = S3SnapshotRecords(s3, CP).after(KEY, marker="", limit=5)
    assert found.record == record
