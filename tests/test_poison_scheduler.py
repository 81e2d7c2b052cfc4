"""The leader's loops skip and report bad data and go on scheduling everyone else.

Emulator-based: bad queue rows, status items, change records and manifest keys are written
straight into the tables and bucket; the scheduler runs with a real fence on the lease table.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from oab.controller.adapters.changes import ChangeLog, Cursor
from oab.controller.adapters.ecs import EcsAdapter
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.state import status_to_item
from oab.controller.core.status import AgentStatus
from oab.controller.observability import telemetry
from oab.controller.runtime.scheduler import Scheduler, SchedulerConfig
from oab.controller.testing import AWS, FakeClock, wait_until
from oab.leader.errors import FencedOut
from oab.leader.fence import Fence
from oab.leader.record import Epoch, ReplicaId
from oab.queue.config import QueueConfig
from oab.queue.row import State, UnreadableRow
from oab.queue.store import pk_of
from oab.queue.workqueue import WorkQueue

BUCKET = "oab-control-plane"


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    handle = telemetry.setup(
        telemetry.TelemetryConfig(service_name="oab-controller", traces_exporter="none")
    )
    reader = InMemoryMetricReader()
    handle.add_metric_reader(reader)
    yield reader
    handle.remove_metric_reader(reader)


def poison(reader: InMemoryMetricReader) -> dict[tuple[str, str], int]:
    """``oab.poison.items`` by (table, kind), summed over every meter that reports it."""
    out: dict[tuple[str, str], int] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != "oab.poison.items":
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    k = (str(attrs["oab.table"]), str(attrs["oab.kind"]))
                    out[k] = out.get(k, 0) + int(point.value)
    return out


def fence(aws: AWS, epoch: int = 3) -> Fence:
    aws.client("dynamodb").put_item(
        TableName=aws.tables.lease,
        Item={
            "pk": {"S": "lease#controller"},
            "sk": {"S": "lease"},
            "holder": {"S": "r1"},
            "epoch": {"N": str(epoch)},
        },
    )
    return Fence(
        table=aws.tables.lease, lease_name="controller", holder=ReplicaId("r1"), epoch=Epoch(epoch)
    )


def setup(aws: AWS) -> tuple[Scheduler, WorkQueue, ChangeLog]:
    s3, ddb = aws.client("s3"), aws.client("dynamodb")
    s3.create_bucket(Bucket=BUCKET)
    clock = FakeClock(wall=2_000_000_000.0)
    queue = WorkQueue(
        ddb, aws.tables.queue, config=QueueConfig(visibility_timeout=20.0), clock=clock
    )
    changes = ChangeLog(ddb, aws.tables.state, wall_clock=clock.time)
    limiter = RateLimiter({})
    scheduler = Scheduler(
        queue=queue,
        state=aws.state_store(client=ddb, changes=changes),
        s3=s3,
        bucket=BUCKET,
        ecs=EcsAdapter(aws.client("ecs"), cluster="oab", limiter=limiter),
        secrets=SecretVersions(ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"),
                               limiter=limiter),
        config=SchedulerConfig(change_poll_s=0.05, resync_period_s=3600, takeover_lookback_s=60),
        monotonic=clock.monotonic,
        wall=clock.time,
    )  # fmt: skip
    return scheduler, queue, changes


def corrupt_row(aws: AWS, key: str, **attrs: Any) -> None:
    item: dict[str, Any] = {
        "pk": {"S": pk_of(key)},
        "sk": {"S": "unit"},
        "key": {"S": key},
        "state": {"S": "done"},
        "generation": {"N": "1"},
        "version": {"N": "3"},
        "write_id": {"S": "w"},
        **attrs,
    }
    aws.client("dynamodb").put_item(TableName=aws.tables.queue, Item=item)


def test_a_corrupt_queue_row_does_not_stop_the_change_feed(
    aws: AWS, reader: InMemoryMetricReader
) -> None:
    scheduler, queue, changes = setup(aws)
    f = fence(aws)
    corrupt_row(aws, "team/bad", attempts={"S": "lots"})
    for name in ("bad", "good1", "good2"):
        changes.record(f"manifests/team/{name}.yaml", generation=2, kind="apply", version_id="v2")
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(f, stop), daemon=True)
    thread.start()
    try:
        rows = wait_until(
            lambda: (r := {x.key: x for x in queue.list_rows()}) and len(r) == 3 and r,
            timeout=20,
            message="every unit written",
        )
    finally:
        stop.set()
        thread.join(10)
    assert rows["team/good1"].state is State.READY
    assert rows["team/good2"].state is State.READY
    # The bad row was quarantined (parked, with why) and the change then applied to it: a newer
    # generation revives a parked row, as always.
    assert rows["team/bad"].state is State.READY
    assert rows["team/bad"].generation == 2
    assert poison(reader)[("queue", "row")] == 1


def test_a_corrupt_status_is_parked_by_the_resync_and_the_others_are_enqueued(
    aws: AWS, reader: InMemoryMetricReader
) -> None:
    scheduler, queue, _ = setup(aws)
    f = fence(aws)
    s3, ddb = aws.client("s3"), aws.client("dynamodb")
    for name in ("bad", "good"):
        s3.put_object(Bucket=BUCKET, Key=f"manifests/team/{name}.yaml", Body=b"x")
    ddb.put_item(
        TableName=aws.tables.state,
        Item={**status_to_item(AgentStatus(key="team/bad", phase="Running", audit_seq=4)),
              "conditions": {"S": "[" * 5000}},
    )  # fmt: skip
    report = scheduler.resync(f)
    assert report.enqueued == {"team/good": "new"}
    assert list(report.parked) == ["team/bad"]
    parked = queue.get("team/bad")
    assert parked.state is State.PARKED
    assert parked.last_error is not None
    assert parked.last_error.startswith(
        "CorruptStatus: state item agent#team/bad/status: conditions: JSON nested deeper than 3"
    )
    assert parked.last_error.endswith("then `oabctl queue retry team/bad`")
    assert poison(reader)[("state", "status")] == 1
    # A second resync writes nothing more for it (already parked with the same reason).
    version = parked.version
    scheduler.resync(f)
    assert queue.get("team/bad").version == version


def test_a_stale_fence_parks_nothing(aws: AWS) -> None:
    scheduler, queue, _ = setup(aws)
    stale = fence(aws, epoch=3)
    fence(aws, epoch=4)  # a newer leader
    aws.client("dynamodb").put_item(
        TableName=aws.tables.state,
        Item={**status_to_item(AgentStatus(key="team/bad")), "audit_seq": {"S": "x"}},
    )
    with pytest.raises(FencedOut):
        scheduler.resync(stale)
    assert queue.list_rows() == []


def test_bad_change_records_and_manifest_keys_are_skipped_and_counted(
    aws: AWS, reader: InMemoryMetricReader
) -> None:
    scheduler, queue, changes = setup(aws)
    f = fence(aws)
    ddb, s3 = aws.client("dynamodb"), aws.client("s3")
    changes.record("manifests/team/ok.yaml", generation=1, kind="apply", version_id="v1")
    stamp = int(2_000_000_000.0 * 1000)
    ddb.put_item(
        TableName=aws.tables.state,
        Item={"pk": {"S": "changes#1"}, "sk": {"S": f"{stamp:013d}#x#1"},
              "key": {"S": "manifests/team/x.yaml"}, "generation": {"N": "-1"}},
    )  # fmt: skip
    cursor = scheduler.poll_changes(f, Cursor.starting_at(0, shards=4))
    scheduler.poll_changes(f, cursor)  # inside the lookback: not reported twice
    assert [r.key for r in queue.list_rows()] == ["team/ok"]
    s3.put_object(Bucket=BUCKET, Key="manifests/team/a/b.yaml", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="manifests/team/ok.yaml", Body=b"x")
    report = scheduler.resync(f)
    assert report.skipped_keys == ["manifests/team/a/b.yaml"]
    assert poison(reader)[("state", "change")] == 1
    assert poison(reader)[("bucket", "key")] == 1


def test_the_sweep_quarantines_unreadable_rows_under_the_fence(aws: AWS) -> None:
    _, queue, _ = setup(aws)
    f = fence(aws)
    corrupt_row(aws, "team/bad", state={"S": "zombie"})
    assert isinstance(queue.scan()[0], UnreadableRow)
    assert queue.depth_by_state()["corrupt"] == 1
    assert queue.expire_stale_claims(extra_condition=f.condition_check()) == ["team/bad"]
    row = queue.get("team/bad")
    assert (row.state, row.last_error) == (State.PARKED, "CorruptRow: state: not one of "
                                           "ready, in_flight, done, parked")  # fmt: skip
