"""Scheduler: changes become fenced enqueues; the loop outlives failures; fencing stops it.

Emulator tests with the real change log, the real DynamoDB work queue and a real lease item for
the fence: failures are injected at the AWS boundary (a botocore hook on the client), never by
replacing the project's classes.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import ClientError

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.ecs import EcsAdapter
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.runtime.scheduler import Scheduler, SchedulerConfig
from oab.controller.testing import AWS, wait_until
from oab.leader.fence import Fence
from oab.leader.record import Epoch, LeaseRecord, ReplicaId, Revision
from oab.queue.config import QueueConfig
from oab.queue.workqueue import WorkQueue

LEASE = "controller"
FENCE_HOLDER = ReplicaId("r1")


def _scheduler(aws: AWS, queue: WorkQueue, changes: ChangeLog) -> Scheduler:
    aws.client("s3").create_bucket(Bucket="oab-control-plane")
    limiter = RateLimiter({})
    return Scheduler(
        queue=queue,
        state=aws.state_store(changes=changes),
        s3=aws.client("s3"),
        bucket="oab-control-plane",
        ecs=EcsAdapter(aws.client("ecs"), cluster="oab", limiter=limiter),
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        config=SchedulerConfig(change_poll_s=0.05, resync_period_s=3600),
    )


def _lease(aws: AWS, *, holder: str, epoch: int) -> Fence:
    """Store the lease item as a leader in ``epoch`` would; the fence of holder r1, epoch 3."""
    record = LeaseRecord(
        name=LEASE,
        holder=ReplicaId(holder),
        epoch=Epoch(epoch),
        revision=Revision("rev-1"),
        lease_duration_ms=6000,
        transitions=epoch,
        acquired_at=1.0,
        renewed_at=1.0,
    )
    aws.client("dynamodb").put_item(TableName=aws.tables.lease, Item=record.to_item())
    return Fence(table=aws.tables.lease, lease_name=LEASE, holder=FENCE_HOLDER, epoch=Epoch(3))


def _fail_change_reads(client: Any, *, times: int) -> list[int]:
    """Make the first ``times`` change-record Queries of ``client`` fail with a 500 (an outage).

    Returns a one-element list counting every change-record Query the client made.
    """
    count = [0]

    def hook(params: dict[str, Any], **_: Any) -> None:
        pk = params.get("ExpressionAttributeValues", {}).get(":pk", {}).get("S", "")
        if not pk.startswith("changes#"):
            return
        count[0] += 1
        if count[0] <= times:
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "injected outage"}}, "Query"
            )

    client.meta.events.register("provide-client-params.dynamodb.Query", hook)
    return count


def _run(scheduler: Scheduler, fence: Fence) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(fence, stop), daemon=True)
    thread.start()
    return thread, stop


def test_changes_are_enqueued_with_epoch_and_the_loop_survives_failures(aws: AWS) -> None:
    fence = _lease(aws, holder="r1", epoch=3)
    reader = aws.client("dynamodb")
    reads = _fail_change_reads(reader, times=3)
    queue = WorkQueue(aws.client("dynamodb"), aws.tables.queue, config=QueueConfig())
    scheduler = _scheduler(aws, queue, ChangeLog(reader, aws.tables.state))
    writer = ChangeLog(aws.client("dynamodb"), aws.tables.state)
    writer.record("manifests/team/bot.yaml", generation=2, kind="apply", version_id="v2")
    writer.record("fleets/team/f.yaml", generation=1, kind="apply", version_id="f1")
    thread, stop = _run(scheduler, fence)
    try:
        rows = wait_until(queue.list_rows, timeout=20, message="an enqueued row")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert reads[0] > 3  # it kept reading after the injected failures
    assert [r.key for r in rows] == ["team/bot"]  # fleet objects are not agents
    assert rows[0].generation == 2
    assert rows[0].trace_context is not None
    assert rows[0].trace_context["epoch"] == "3"


def test_a_rejected_fence_stops_the_scheduler(aws: AWS) -> None:
    # A newer leader (r2, epoch 4) holds the lease: the fence of r1 in epoch 3 is stale.
    fence = _lease(aws, holder="r2", epoch=4)
    ddb = aws.client("dynamodb")
    queue = WorkQueue(ddb, aws.tables.queue, config=QueueConfig())
    scheduler = _scheduler(aws, queue, ChangeLog(ddb, aws.tables.state))
    ChangeLog(ddb, aws.tables.state).record(
        "manifests/team/bot.yaml", generation=1, kind="apply", version_id="v1"
    )
    thread, stop = _run(scheduler, fence)
    # Until it stops by itself or (a broken fence) a row lands: either ends the wait at once.
    wait_until(
        lambda: not thread.is_alive() or queue.list_rows(), timeout=20, message="scheduler end"
    )
    written = queue.list_rows()
    returned_by_itself = not thread.is_alive()
    stop.set()
    thread.join(timeout=10)
    assert written == []  # nothing was written
    assert returned_by_itself  # a newer leader exists: it stopped without being told
