"""Scheduler: changes become fenced enqueues; the loop outlives failures; fencing stops it."""

from __future__ import annotations

import threading
from typing import Any

from oab.controller.changes import ChangeLog, Cursor
from oab.controller.ecs import EcsAdapter
from oab.controller.ratelimit import RateLimiter
from oab.controller.scheduler import Scheduler, SchedulerConfig
from oab.controller.secretversions import SecretVersions
from oab.controller.testing import AWS, wait_until
from oab.leader.fence import Fence
from oab.leader.record import Epoch, ReplicaId
from oab.queue.config import QueueConfig
from oab.queue.store import MemoryStore
from oab.queue.workqueue import WorkQueue


class FlakyChangeLog(ChangeLog):
    """A real change log whose first ``failures`` reads fail (an AWS outage)."""

    def __init__(self, *args: Any, failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures
        self.reads = 0

    def read_since(self, cursor: Cursor | None = None) -> Any:
        self.reads += 1
        if self.reads <= self.failures:
            raise RuntimeError("injected outage")
        return super().read_since(cursor)


def _scheduler(aws: AWS, queue: WorkQueue, changes: ChangeLog) -> Scheduler:
    aws.client("s3").create_bucket(Bucket="oab-control-plane")
    limiter = RateLimiter({})
    return Scheduler(
        queue=queue,
        changes=changes,
        s3=aws.client("s3"),
        bucket="oab-control-plane",
        dynamodb=aws.client("dynamodb"),
        state_table=aws.tables.state,
        ecs=EcsAdapter(aws.client("ecs"), cluster="oab", limiter=limiter),
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        config=SchedulerConfig(change_poll_s=0.05, resync_period_s=3600),
    )


FENCE = Fence(table="oab-lease", lease_name="controller", holder=ReplicaId("r1"), epoch=Epoch(3))


def test_changes_are_enqueued_with_epoch_and_the_loop_survives_failures(aws: AWS) -> None:
    ddb = aws.client("dynamodb")
    changes = FlakyChangeLog(ddb, aws.tables.state, failures=3)
    queue = WorkQueue(None, "unused", config=QueueConfig(), store=MemoryStore(shards=4))
    scheduler = _scheduler(aws, queue, changes)
    ChangeLog(ddb, aws.tables.state).record(
        "manifests/team/bot.yaml", generation=2, kind="apply", version_id="v2"
    )
    ChangeLog(ddb, aws.tables.state).record(
        "fleets/team/f.yaml", generation=1, kind="apply", version_id="f1"
    )
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(FENCE, stop), daemon=True)
    thread.start()
    try:
        rows = wait_until(queue.list_rows, timeout=20, message="an enqueued row")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert changes.reads > 3  # it kept going after the injected failures
    assert [r.key for r in rows] == ["team/bot"]  # fleet objects are not agents
    assert rows[0].generation == 2
    assert rows[0].trace_context is not None
    assert rows[0].trace_context["epoch"] == "3"


def test_a_rejected_fence_stops_the_scheduler(aws: AWS) -> None:
    ddb = aws.client("dynamodb")
    queue = WorkQueue(
        None,
        "unused",
        config=QueueConfig(),
        store=MemoryStore(shards=4, extra_check=lambda _i, _item: "ConditionalCheckFailed"),
    )
    scheduler = _scheduler(aws, queue, ChangeLog(ddb, aws.tables.state))
    ChangeLog(ddb, aws.tables.state).record(
        "manifests/team/bot.yaml", generation=1, kind="apply", version_id="v1"
    )
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(FENCE, stop), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive()  # returned by itself: a newer leader exists
    assert not stop.is_set()
    assert queue.list_rows() == []  # nothing was written
