"""A schedule transition at a leader failover: neither missed nor doubled (emulator).

Two real schedulers (real desired-state store, DynamoDB work queue and lease item) share one
fake wall clock. The first leader is fenced out exactly at the transition instant; the second
takes over and must enqueue that transition once, with the token the first would have used.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from oab.controller.adapters.changes import ChangeLog, Cursor
from oab.controller.adapters.ecs import EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.state import status_to_item
from oab.controller.adapters.store import DesiredStateStore, desired_from
from oab.controller.api.document import parse_document
from oab.controller.api.service import OABService
from oab.controller.core.status import AgentStatus, Condition
from oab.controller.runtime.scheduler import Scheduler, SchedulerConfig
from oab.controller.testing import AWS, FakeClock, agent_manifest
from oab.leader.errors import FencedOut
from oab.leader.fence import Fence
from oab.leader.record import Epoch, LeaseRecord, ReplicaId, Revision
from oab.queue.config import QueueConfig
from oab.queue.workqueue import WorkQueue

BUCKET = "oab-control-plane"
LEASE = "controller"
KEY = "team/bot"
BOUNDARY = datetime(2027, 1, 4, 22, tzinfo=UTC).timestamp()


def _lease(aws: AWS, *, holder: str, epoch: int) -> Fence:
    """Store the lease as held by ``holder`` in ``epoch``; return that leader's fence."""
    record = LeaseRecord(
        name=LEASE,
        holder=ReplicaId(holder),
        epoch=Epoch(epoch),
        revision=Revision(f"rev-{epoch}"),
        lease_duration_ms=6000,
        transitions=epoch,
        acquired_at=1.0,
        renewed_at=1.0,
    )
    aws.client("dynamodb").put_item(TableName=aws.tables.lease, Item=record.to_item())
    return Fence(
        table=aws.tables.lease, lease_name=LEASE, holder=ReplicaId(holder), epoch=Epoch(epoch)
    )


def _scheduler(aws: AWS, queue: WorkQueue, clock: FakeClock) -> Scheduler:
    limiter = RateLimiter({})
    ddb = aws.client("dynamodb")
    return Scheduler(
        queue=queue,
        state=aws.state_store(client=ddb),
        s3=aws.client("s3"),
        bucket=BUCKET,
        ecs=EcsAdapter(aws.client("ecs"), cluster="oab", limiter=limiter),
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        config=SchedulerConfig(change_poll_s=0.05, resync_period_s=3600),
        wall=clock.time,
        monotonic=clock.monotonic,
    )


def _agent(aws: AWS, *, changes: ChangeLog | None = None) -> str:
    """Store a scheduled agent (off at 22:00, on at 06:00 UTC) and its Running status; its ETag."""
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    aws.client("ecs").create_cluster(clusterName="oab")  # no service: the resync sees drift too
    doc: dict[str, Any] = yaml.safe_load(agent_manifest())
    doc["spec"]["schedules"] = [
        {"name": "off", "expr": "cron(0 22 * * ? *)", "replicas": 0},
        {"name": "on", "expr": "cron(0 6 * * ? *)", "replicas": 1},
    ]
    obj = parse_document(doc)
    assert isinstance(obj, OABService)
    store = DesiredStateStore(S3ObjectStore(s3, BUCKET), changes=changes)
    store.apply(desired_from(obj))
    stored = store.get(f"manifests/{KEY}.yaml")
    assert stored is not None
    scheduled = Condition(
        type="Scheduled",
        status="True",
        reason="NextTransition",
        message="",
        last_transition_time="",
    )
    status = AgentStatus(
        key=KEY,
        phase="Running",
        observed_generation=1,
        manifest_etag=stored.etag,
        conditions=(scheduled,),
        audit_seq=1,
    )
    aws.client("dynamodb").put_item(TableName=aws.tables.state, Item=status_to_item(status))
    return stored.etag


def _schedule_writes(client: Any) -> list[tuple[str, str]]:
    """(reason, token) of every queue write ``client`` got committed for a ``schedule@`` unit
    (a botocore hook after each call: a write refused by the fence is not counted)."""
    seen: list[tuple[str, str]] = []

    def walk(node: Any, out: list[tuple[str, str]]) -> None:
        if isinstance(node, dict):
            reason = node.get("reason")
            if isinstance(reason, dict) and str(reason.get("S", "")).startswith("schedule@"):
                out.append((reason["S"], node["token"]["S"]))
                return
            for value in node.values():
                walk(value, out)
        elif isinstance(node, list):
            for value in node:
                walk(value, out)

    pending: list[tuple[str, str]] = []

    def before(params: dict[str, Any], **_: Any) -> None:
        pending.clear()
        walk(params, pending)

    def after(parsed: dict[str, Any], **_: Any) -> None:
        if "Error" not in parsed:
            seen.extend(pending)
        pending.clear()

    for op in ("TransactWriteItems", "PutItem", "UpdateItem"):
        client.meta.events.register(f"provide-client-params.dynamodb.{op}", before)
        client.meta.events.register(f"after-call.dynamodb.{op}", after)
    return seen


@pytest.mark.parametrize("first_enqueued", [False, True], ids=["fenced-before", "fenced-after"])
def test_failover_at_the_boundary_enqueues_the_transition_exactly_once(
    aws: AWS, first_enqueued: bool
) -> None:
    _agent(aws)
    clock = FakeClock(wall=BOUNDARY - 1)
    client = aws.client("dynamodb")
    writes = _schedule_writes(client)
    queue = WorkQueue(client, aws.tables.queue, config=QueueConfig())
    first, second = _scheduler(aws, queue, clock), _scheduler(aws, queue, clock)
    fence_1 = _lease(aws, holder="r1", epoch=3)
    first.resync(fence_1)  # plans the schedules: the next transition is 22:00:00
    assert writes == []
    clock.advance(1)  # the boundary instant
    if first_enqueued:
        assert first.fire_schedules(fence_1) == 1  # it enqueued, then lost the lease
        _lease(aws, holder="r2", epoch=4)
    else:
        _lease(aws, holder="r2", epoch=4)  # it lost the lease just before enqueuing
        with pytest.raises(FencedOut):
            first.fire_schedules(fence_1)
    fence_2 = Fence(
        table=aws.tables.lease, lease_name=LEASE, holder=ReplicaId("r2"), epoch=Epoch(4)
    )
    second.resync(fence_2)  # the new leader's takeover resync: catch-up from manifest + clock
    second.fire_schedules(fence_2)
    transition = ("schedule@2027-01-04T22:00:00Z", writes[0][1] if writes else "")
    assert writes == [transition]  # one committed write for the transition, whoever made it
    # The next transition (06:00) belongs to the new leader alone, once.
    clock.advance(8 * 3600)
    assert second.fire_schedules(fence_2) == 1
    assert second.fire_schedules(fence_2) == 0
    assert [w[0] for w in writes] == [
        "schedule@2027-01-04T22:00:00Z",
        "schedule@2027-01-05T06:00:00Z",
    ]


def test_an_applied_schedule_is_planned_from_its_change_record_without_a_resync(aws: AWS) -> None:
    clock = FakeClock(wall=BOUNDARY - 60)
    ddb = aws.client("dynamodb")
    queue = WorkQueue(ddb, aws.tables.queue, config=QueueConfig())
    scheduler = _scheduler(aws, queue, clock)
    fence = _lease(aws, holder="r1", epoch=3)
    cursor = Cursor.starting_at(0, shards=ChangeLog(ddb, aws.tables.state).shards)
    _agent(aws, changes=ChangeLog(ddb, aws.tables.state))  # apply: writes a change record
    scheduler.poll_changes(fence, cursor)  # enqueues the apply and plans its schedules
    assert scheduler.schedules.stats.manifest_reads == 1
    clock.advance(60)
    assert scheduler.fire_schedules(fence) == 1  # no resync happened
    assert queue.list_rows()[0].reason == "schedule@2027-01-04T22:00:00Z"


def test_a_suspended_agent_whose_service_was_scaled_up_by_hand_is_drift() -> None:
    status = AgentStatus(key=KEY, phase="Suspended", manifest_etag="e1")
    drift = Scheduler._drift(
        KEY, etag="e1", status=status, service={"desiredCount": 1}, checked=True, versions={}
    )
    assert drift == "desired-count-drift"
    kept = Scheduler._drift(
        KEY, etag="e1", status=status, service={"desiredCount": 0}, checked=True, versions={}
    )
    assert kept is None
