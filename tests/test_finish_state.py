"""The product uses the one state store (issue 12): the scheduler reads statuses and change
records through the :class:`StateStore` it is given (here the in-memory twin, with the real
DynamoDB work queue and lease of the emulator), and stores each unit's ``Origin`` as the previous
version did."""

from __future__ import annotations

from oab.controller.adapters.changes import Cursor
from oab.controller.adapters.ecs import EcsAdapter
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.state import status_to_item
from oab.controller.adapters.statestore import MemoryStateStore
from oab.controller.core.status import AgentStatus
from oab.controller.runtime.scheduler import Scheduler, SchedulerConfig
from oab.controller.testing import AWS, FakeClock
from oab.leader.fence import Fence
from oab.leader.record import Epoch, LeaseRecord, ReplicaId, Revision
from oab.queue.config import QueueConfig
from oab.queue.workqueue import WorkQueue

BUCKET = "oab-control-plane"


def _fence(aws: AWS) -> Fence:
    record = LeaseRecord(
        name="controller",
        holder=ReplicaId("r1"),
        epoch=Epoch(5),
        revision=Revision("rev-1"),
        lease_duration_ms=6000,
        transitions=5,
        acquired_at=1.0,
        renewed_at=1.0,
    )
    aws.client("dynamodb").put_item(TableName=aws.tables.lease, Item=record.to_item())
    return Fence(
        table=aws.tables.lease, lease_name="controller", holder=record.holder, epoch=Epoch(5)
    )


def test_the_scheduler_reads_statuses_and_changes_through_its_state_store(aws: AWS) -> None:
    clock = FakeClock(wall=2_000_000_000.0)
    store = MemoryStateStore(names=aws.tables)
    # A Running agent whose manifest is gone: only the store knows it (the table is empty).
    gone = AgentStatus(key="team/gone", phase="Running", manifest_etag='"e1"')
    store.put_raw(aws.tables.state, status_to_item(gone))
    store.changes.record("manifests/team/new.yaml", generation=2, kind="apply", version_id="v2")
    aws.client("s3").create_bucket(Bucket=BUCKET)
    aws.client("ecs").create_cluster(clusterName="oab")
    queue = WorkQueue(
        aws.client("dynamodb"), aws.tables.queue, config=QueueConfig(visibility_timeout=20.0)
    )
    limiter = RateLimiter({})
    scheduler = Scheduler(
        queue=queue,
        state=store,
        s3=aws.client("s3"),
        bucket=BUCKET,
        ecs=EcsAdapter(aws.client("ecs"), cluster="oab", limiter=limiter),
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        config=SchedulerConfig(change_poll_s=0.05, resync_period_s=3600),
        monotonic=clock.monotonic,
        wall=clock.time,
    )
    fence = _fence(aws)

    scheduler.poll_changes(fence, Cursor.starting_at(0, shards=store.changes.shards))
    report = scheduler.resync(fence)

    assert report.enqueued == {"team/gone": "manifest-removed"}
    assert store.requests.get("scan") == 1
    rows = {row.key: row for row in queue.list_rows()}
    assert (rows["team/new"].reason, rows["team/new"].generation) == ("apply", 2)
    assert rows["team/gone"].reason == "resync:manifest-removed"
    # The context map is the stored form every version wrote: trace headers plus the epoch.
    assert rows["team/gone"].trace_context["epoch"] == "5"
    assert set(rows["team/gone"].trace_context) <= {"traceparent", "tracestate", "epoch"}
