"""Snapshot records -> audit calls: the pure mapping, which runs look, the S3 listing by marker."""

from __future__ import annotations

from typing import Any

import pytest

from oab.controller.adapters.snapshots import (
    SNAPSHOT_ACTION,
    S3SnapshotRecords,
    snapshot_call,
    wants_ingest,
)
from oab.controller.adapters.state import status_from_item, status_to_item
from oab.controller.api.service import AgentKey
from oab.controller.core.outcome import origin_of
from oab.controller.core.snapshot import SnapshotId, SnapshotRecord, record_key
from oab.controller.core.status import AgentStatus, cleared
from oab.controller.testing import AWS

CP = "oab-control-plane"
KEY = AgentKey("team/bot")
LOCATION = "s3://agent-state/team/bot/home.tar.gz"


def _record(n: int, *, status: str = "uploaded", agent: AgentKey = KEY) -> SnapshotRecord:
    return SnapshotRecord(
        agent=agent,
        id=SnapshotId(f"snap{n:03d}"),
        trigger="on-demand" if n % 2 else "shutdown",
        status=status,  # type: ignore[arg-type]
        taken_at=1_800_000_000.0 + n,
        location=LOCATION,
        version_id=f"v{n}" if status == "uploaded" else None,
        members=3,
        size_bytes=42,
        error=None if status == "uploaded" else "archive too large",
    )


def test_uploaded_record_becomes_a_put_call_with_the_version() -> None:
    call = snapshot_call(_record(1))
    assert (call.action, call.target, call.result) == (SNAPSHOT_ACTION, LOCATION, "v1")
    assert call.request_id == "on-demand:snap001"


def test_failed_record_says_why() -> None:
    call = snapshot_call(_record(2, status="failed"))
    assert call.result == "failed: archive too large"
    assert call.request_id == "shutdown:snap002"


def test_unversioned_upload_is_still_recorded() -> None:
    record = SnapshotRecord(
        agent=KEY,
        id=SnapshotId("x"),
        trigger="on-demand",
        status="uploaded",
        taken_at=1.0,
        location=LOCATION,
    )
    assert snapshot_call(record).result == "uploaded (unversioned bucket)"


@pytest.mark.parametrize(
    ("reason", "phase", "expected"),
    [
        ("apply", "Running", True),
        ("resync:in-progress", "Running", True),
        ("resync:manifest-changed", "Failed", True),
        ("delete", "Pending", False),
        ("delete", None, False),
        ("other", "Pending", True),
        ("other", None, True),
        ("other", "Running", False),
        ("other", "Failed", False),
        ("schedule@2027-01-04T22:00:00Z", "Running", False),
    ],
)
def test_which_runs_look_for_records(reason: str, phase: Any, expected: bool) -> None:
    cause = origin_of(reason, None).cause  # as the worker decodes the stored reason
    assert wants_ingest(cause=cause, phase=phase) is expected


def test_status_round_trips_the_marker_and_deletion_keeps_it() -> None:
    status = AgentStatus(key="team/bot", phase="Running", audit_seq=4, last_snapshot="snapshots/x")
    assert status_from_item(status_to_item(status)).last_snapshot == "snapshots/x"
    assert status.material() != AgentStatus(key="team/bot", phase="Running").material()
    assert cleared(status).last_snapshot == "snapshots/x"
    assert cleared(status).audit_seq == 4


def test_listing_after_a_marker_returns_only_newer_records_in_order(aws: AWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=CP)
    records = [_record(n) for n in range(1, 6)]
    for record in reversed(records):  # written out of order: the keys sort them
        s3.put_object(Bucket=CP, Key=record_key(record), Body=record.to_json())
    other = _record(9, agent=AgentKey("team/bot2"))
    s3.put_object(Bucket=CP, Key=record_key(other), Body=other.to_json())
    store = S3SnapshotRecords(s3, CP)

    first = store.after(KEY, marker="", limit=3)
    assert [f.record.id for f in first] == ["snap001", "snap002", "snap003"]
    rest = store.after(KEY, marker=first[-1].key, limit=3)
    assert [f.record.id for f in rest] == ["snap004", "snap005"]
    assert store.after(KEY, marker=rest[-1].key, limit=3) == []


def test_a_malformed_record_is_audited_as_failed_not_skipped(aws: AWS) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=CP)
    good = _record(2)
    s3.put_object(Bucket=CP, Key="snapshots/team/bot/20290101T000000.000Z-bad.json", Body=b"{")
    s3.put_object(Bucket=CP, Key=record_key(good), Body=good.to_json())
    found = S3SnapshotRecords(s3, CP).after(KEY, marker="", limit=10)
    assert [f.record.status for f in found] == ["uploaded", "failed"]
    assert found[1].record.error == "unreadable snapshot record: record is not valid JSON"
