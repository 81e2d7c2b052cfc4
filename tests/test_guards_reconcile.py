"""Guards of the reconcile path, each pinned by an emulator test that fails with the guard removed.

Issue 15 found these guards survived one-line mutations: the claim guard in front of every ECS
mutation (``controller/adapters/ecs.py``), the ``clientToken`` of CreateService, task-definition
reuse only of a revision carrying the same content-hash tag, and the Failed -> Terminating
transition (deleting a Failed agent). Everything runs against the emulator with the real reconciler,
worker, work queue and status store; time is a :class:`FakeClock` moved by a botocore hook at the
AWS boundary, so "the claim expired between two calls" happens at an exact point of the run.
``tests/test_mutants_ci.py`` re-applies those mutations and requires these tests to fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.state import read_runlog, read_status, transition_items
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.api.service import AgentKey
from oab.controller.base.errors import TerminalError
from oab.controller.base.names import CONTENT_HASH_TAG
from oab.controller.core.outcome import Result
from oab.controller.core.render import RenderContext
from oab.controller.core.status import AgentStatus, next_status
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.observability import telemetry
from oab.controller.observability.telemetry import TelemetryConfig
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.reconciler import ReconcileConfig, Reconciler, client_token
from oab.controller.runtime.worker import Worker
from oab.controller.testing import (
    AWS,
    FakeClock,
    agent_manifest,
    audit_record,
    oabctl,
    reconcile_request,
)
from oab.queue.config import QueueConfig
from oab.queue.row import State
from oab.queue.workqueue import WorkQueue

KEY = "team/bot"
FAMILY = "oab-team-bot"
BUCKET = "oab-control-plane"
#: Long enough that no heartbeat (every third of it, in real time) runs during a test.
VISIBILITY = 600.0


@dataclass
class Plane:
    """The control plane on the emulator, with the clients the reconciler uses."""

    aws: AWS
    clock: FakeClock
    reconciler: Reconciler
    ecs: Any
    s3: Any
    ddb: Any
    queue: WorkQueue
    worker: Worker


@pytest.fixture
def plane(aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plane:
    monkeypatch.setenv("OABCTL_CONFIG", str(tmp_path / "none.toml"))
    for k, v in aws.emulator.env().items():
        monkeypatch.setenv(k, v)
    assert oabctl("init").code == 0
    DataPlaneControl(aws.emulator.endpoint).configure(paused=True)
    s3, ecs, ddb = aws.client("s3"), aws.client("ecs"), aws.client("dynamodb")
    store = DesiredStateStore(S3ObjectStore(s3, BUCKET), changes=ChangeLog(ddb, aws.tables.state))
    profile = read_cluster_profile(s3, BUCKET)
    assert profile is not None
    ctx = RenderContext(
        region="us-east-1",
        bucket=BUCKET,
        cluster="oab",
        agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
        execution_role_arn="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
        task_role_arn="arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
        account_id="123456789012",
        default_subnets=profile.subnets,
        default_security_groups=profile.security_groups,
    )
    limiter = RateLimiter({})
    clock = FakeClock()
    reconciler = Reconciler(
        manifests=StoreManifests(store),
        ecs=EcsAdapter(ecs, cluster="oab", limiter=limiter),
        s3=s3,
        bucket=BUCKET,
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        context=ctx,
        wall=clock.time,
        config=ReconcileConfig(progress_poll_s=0.1),
    )
    queue = WorkQueue(
        ddb, aws.tables.queue, config=QueueConfig(visibility_timeout=VISIBILITY), clock=clock
    )
    worker = Worker(
        queue=queue,
        reconciler=reconciler,
        state=aws.state_store(client=ddb),
        replica_id="r1",
        monotonic=clock.monotonic,
        wall=clock.time,
    )
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-9f8e7d", Type="SecureString"
    )
    return Plane(aws, clock, reconciler, ecs, s3, ddb, queue, worker)


def _apply(tag: str = "v1") -> None:
    assert oabctl("apply", "-f", "-", stdin=agent_manifest(tag=tag)).code == 0


def _reconcile(plane: Plane, status: AgentStatus, token: str) -> tuple[Result, CallLog]:
    log = CallLog()
    req = reconcile_request(KEY, token=token)
    return plane.reconciler.reconcile(req, status=status, log=log), log


def _ecs_calls(client: Any) -> list[str]:
    """Every ECS operation ``client`` sends from now on, by name, in order."""
    sent: list[str] = []
    client.meta.events.register("before-call.ecs", lambda model, **_: sent.append(str(model.name)))
    return sent


def _process(plane: Plane, token: str, *, generation: int = 1, reason: str = "apply") -> Any:
    plane.queue.enqueue(KEY, generation, reason, token)
    plane.clock.advance(1.0)  # past any requeue delay of an earlier run
    claim = plane.queue.claim("r1/w0")
    assert claim is not None
    return plane.worker.process(claim)


# --------------------------------------------------------------------------- claim guard


def test_a_claim_expiring_mid_reconcile_makes_no_ecs_call_after_it(plane: Plane) -> None:
    _apply()
    calls = _ecs_calls(plane.ecs)
    expired_at: list[int] = []

    def expire(**_: Any) -> None:
        # The artifact write returned: the claim's local deadline passes right now, before the
        # task definition is registered (its guard is the one in the ECS adapter).
        plane.clock.advance(VISIBILITY + 1)
        expired_at.append(len(calls))

    plane.s3.meta.events.register("after-call.s3.PutObject", expire)
    decision = _process(plane, "tok-1")
    assert expired_at, "the run never wrote its artifact"
    after = calls[expired_at[0] :]
    assert not [c for c in after if not c.startswith(("Describe", "List"))], after
    assert decision.kind == "drop"
    # Nothing was committed for the void run: no status, no audit row.
    assert read_status(plane.ddb, plane.aws.tables.state, KEY).phase is None
    assert read_runlog(plane.ddb, plane.aws.tables.runlog, KEY) == []


# ---------------------------------------------------------------------------- clientToken


def test_create_service_carries_the_units_token(plane: Plane) -> None:
    _apply()
    calls = _ecs_calls(plane.ecs)
    sent: list[str] = []
    plane.ecs.meta.events.register(
        "provide-client-params.ecs.CreateService",
        lambda params, **_: sent.append(params.get("clientToken", "")),
    )
    result, _ = _reconcile(plane, AgentStatus(key=KEY), "unit-token-a")
    assert result.status.service_arn
    # Derived from the work unit's idempotency token (the same in every retry of the unit),
    # not from the run: a retry after a crash repeats the same create, which ECS answers
    # idempotently instead of creating a second service.
    assert sent == [client_token("unit-token-a")]
    # The derivation is a stored contract: a controller upgraded between a crashed create and
    # its retry must send the same token, so it is pinned, all 36 characters ECS allows.
    assert client_token("unit-token-a") == "oab-f28bff38cc3935e92ce3bf7099e00f05"
    # The generation's artifact was written fresh, which proves no earlier attempt registered a
    # revision: nothing is looked up for reuse (one read fewer per create).
    assert "DescribeTaskDefinition" not in calls
    assert calls.count("RegisterTaskDefinition") == 1


# ------------------------------------------------------------- task-definition reuse by hash


def _hash_of(ecs: Any, arn: str) -> str | None:
    tags = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"]).get("tags", [])
    return next((t["value"] for t in tags if t["key"] == CONTENT_HASH_TAG), None)


@pytest.mark.parametrize("other", ["0" * 64, "f" * 64], ids=["sorts-before", "sorts-after"])
def test_only_a_revision_with_the_same_hash_tag_is_reused(plane: Plane, other: str) -> None:
    _apply()
    # A run registers a revision (and creates the service), then dies before its commit.
    first, _ = _reconcile(plane, AgentStatus(key=KEY), "tok-a")
    ours = first.status.task_definition_arn
    content_hash = _hash_of(plane.ecs, ours)
    assert content_hash
    # Meanwhile a revision of other content became the family's newest (registered by hand,
    # or by a controller that renders differently).
    foreign = plane.ecs.register_task_definition(
        family=FAMILY,
        containerDefinitions=[{"name": "x", "image": "busybox", "memory": 64}],
        tags=[{"key": CONTENT_HASH_TAG, "value": other}],
    )["taskDefinition"]["taskDefinitionArn"]
    # The next run finds the generation's artifact already written, so it looks for a revision
    # to reuse: the newest one carries another hash, so it must register its own.
    second, log = _reconcile(plane, AgentStatus(key=KEY), "tok-b")
    used = second.status.task_definition_arn
    assert used != foreign
    assert _hash_of(plane.ecs, used) == content_hash
    assert [c.action for c in log.snapshot()].count("ecs:RegisterTaskDefinition") == 1


def test_a_stored_hash_skips_registration_only_for_the_same_content(plane: Plane) -> None:
    _apply("v1")
    status, _ = _reconcile(plane, AgentStatus(key=KEY), "tok-1")
    stored_vs_new: list[tuple[str, str]] = []
    for gen, tag in enumerate(("v2", "v3", "v4"), start=2):
        _apply(tag)
        log = CallLog()
        req = reconcile_request(KEY, token=f"tok-{gen}")
        after = plane.reconciler.reconcile(req, status=status.status, log=log)
        stored_vs_new.append(
            (status.status.task_definition_hash, after.status.task_definition_hash)
        )
        assert after.status.task_definition_arn != status.status.task_definition_arn, gen
        actions = [c.action for c in log.snapshot()]
        assert actions.count("ecs:RegisterTaskDefinition") == 1, gen
        assert "ecs:UpdateService" in actions, gen
        # Same content again (a progress poll): the stored revision is used as it is, without
        # looking for one to reuse or writing the artifact again.
        calls = _ecs_calls(plane.ecs)
        again, poll = _reconcile(plane, after.status, f"tok-{gen}")
        assert again.status.task_definition_arn == after.status.task_definition_arn
        assert poll.snapshot() == ()
        assert "DescribeTaskDefinition" not in calls
        status = after
    # The hashes met in both orders: a comparison other than equality would have skipped one.
    assert any(old > new for old, new in stored_vs_new)
    assert any(old < new for old, new in stored_vs_new)


# --------------------------------------------------------------------- deleting a Failed agent


def test_deleting_a_failed_agent_starts_terminating(plane: Plane) -> None:
    _apply()
    assert _process(plane, "tok-create").kind in ("done", "requeue")
    stored = read_status(plane.ddb, plane.aws.tables.state, KEY)
    assert stored.service_arn
    # The rollout failed (committed as it is in production: status and audit row together).
    failed = next_status(stored, phase="Failed", last_error="circuit breaker rolled back")
    row = audit_record(
        stored,
        failed,
        run_id="run-failed",
        token="tok-create",
        replica="r1",
        error="circuit breaker rolled back",
        at=plane.clock.time(),
    )
    plane.ddb.transact_write_items(
        TransactItems=transition_items(
            state_table=plane.aws.tables.state,
            runlog_table=plane.aws.tables.runlog,
            before=stored,
            after=failed,
            audit=row,
        )
    )
    assert oabctl("delete", "bot", "-n", "team").code == 0
    decision = _process(plane, "tok-delete", reason="delete")
    assert decision.kind == "requeue", decision  # scaling to 0: not parked as illegal
    after = read_status(plane.ddb, plane.aws.tables.state, KEY)
    assert after.phase == "Terminating"
    last = read_runlog(plane.ddb, plane.aws.tables.runlog, KEY)[0]
    assert (last.from_phase, last.to_phase) == ("Failed", "Terminating")
    assert plane.queue.get(KEY).state is State.READY


# ---------------------------------------------------------------- a failed run's audit row


def test_a_failed_run_is_audited_under_the_claimed_generation(plane: Plane) -> None:
    _apply("v1")
    _apply("v2")  # generation 2

    def outage(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "DescribeServices"
        )

    plane.ecs.meta.events.register("before-call.ecs.DescribeServices", outage)
    decision = _process(plane, "tok-1", generation=2)
    assert decision.kind == "retry"
    (row,) = read_runlog(plane.ddb, plane.aws.tables.runlog, KEY)
    assert (row.generation, row.outcome, row.to_phase) == (2, "retry", "Pending")
    assert "ServiceUnavailable" in row.error


def test_a_retryable_failure_backs_off_and_a_terminal_one_parks(plane: Plane) -> None:
    _apply()

    def outage(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "DescribeServices"
        )

    plane.ecs.meta.events.register("before-call.ecs.DescribeServices", outage)
    assert _process(plane, "tok-1").kind == "retry"
    waiting = plane.queue.get(KEY)
    assert (waiting.state, waiting.attempts) == (State.READY, 1)
    assert "injected" in (waiting.last_error or "")  # the error itself, not only its reason
    # A stored manifest that no longer validates: terminal, parked until a newer generation.
    key = f"manifests/{KEY}.yaml"
    stored = plane.s3.get_object(Bucket=BUCKET, Key=key)
    body = stored["Body"].read().replace(b"memory: ", b"memory: -")
    plane.s3.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=stored["Metadata"])
    plane.clock.advance(3600)  # past any backoff
    assert _process(plane, "tok-2").kind == "park"
    assert plane.queue.get(KEY).state is State.PARKED


# ------------------------------------------------------------------------- name collisions


@pytest.mark.parametrize(
    ("owner", "rival"),
    [(("a", "b-c"), ("a-b", "c")), (("a-b", "c"), ("a", "b-c"))],
    ids=["owner-sorts-first", "rival-sorts-first"],
)
def test_a_rival_never_touches_the_owners_service_whichever_name_sorts_first(
    plane: Plane, owner: tuple[str, str], rival: tuple[str, str]
) -> None:
    (ons, oname), (rns, rname) = owner, rival
    assert oabctl("apply", "-f", "-", stdin=agent_manifest(oname, namespace=ons)).code == 0
    owner_req = reconcile_request(f"{ons}/{oname}", token="t-own", run_id="r1")
    plane.reconciler.reconcile(owner_req, status=AgentStatus(key=owner_req.key), log=CallLog())
    # Two creations that raced past the store's check: the rival is stored beside the owner.
    body = plane.s3.get_object(Bucket=BUCKET, Key=f"manifests/{ons}/{oname}.yaml")["Body"].read()
    body = body.replace(f"name: {oname}\n".encode(), f"name: {rname}\n".encode())
    body = body.replace(f"namespace: {ons}\n".encode(), f"namespace: {rns}\n".encode())
    # The rival's own secret path (the tenancy rule would refuse the owner's before any ECS call).
    body = body.replace(f"/oab/{ons}/{oname}/".encode(), f"/oab/{rns}/{rname}/".encode())
    plane.s3.put_object(Bucket=BUCKET, Key=f"manifests/{rns}/{rname}.yaml", Body=body)
    calls = _ecs_calls(plane.ecs)
    rival_key = AgentKey(f"{rns}/{rname}")
    req = reconcile_request(rival_key, token="t-rival", run_id="r2")
    with pytest.raises(TerminalError, match=f"belongs to agent {ons}/{oname}"):
        plane.reconciler.reconcile(req, status=AgentStatus(key=rival_key), log=CallLog())
    assert [c for c in calls if not c.startswith(("Describe", "List"))] == []


# ------------------------------------------------------------------ the worker's commit


def test_a_run_with_nothing_to_do_completes_its_unit(plane: Plane) -> None:
    # No manifest, no status: the run changes nothing, writes no row and completes the unit.
    assert _process(plane, "tok-ghost").kind == "done"
    assert plane.queue.get(KEY).state is State.DONE
    assert read_runlog(plane.ddb, plane.aws.tables.runlog, KEY) == []


def test_a_run_whose_claim_was_taken_over_writes_nothing_and_returns(plane: Plane) -> None:
    """Another host (wall clock ahead) takes the claim over mid-run while this worker's own
    deadline still holds: the commit fails its claim condition, and ``process`` returns."""
    _apply()
    ahead = FakeClock(wall=plane.clock.time() + 10 * VISIBILITY)
    taker = WorkQueue(
        plane.ddb,
        plane.aws.tables.queue,
        config=QueueConfig(visibility_timeout=VISIBILITY),
        clock=ahead,
    )
    taken: list[object] = []

    def take_over(**_: Any) -> None:
        if not taken:
            assert taker.claim("r2/w0") is None  # first sight
            ahead.advance(VISIBILITY)
            taken.append(taker.claim("r2/w0"))

    plane.ecs.meta.events.register("after-call.ecs.DescribeServices", take_over)
    decision = _process(plane, "tok-1")
    assert taken
    assert taken[0] is not None
    assert decision.kind == "drop"  # the run succeeded, but its commit lost the claim ...
    assert read_status(plane.ddb, plane.aws.tables.state, KEY).phase is None  # ... void
    assert read_runlog(plane.ddb, plane.aws.tables.runlog, KEY) == []
    assert plane.queue.get(KEY).owner == "r2/w0"


def _delete_with_the_service_gone(plane: Plane) -> Any:
    _apply()
    _process(plane, "tok-create")
    assert read_status(plane.ddb, plane.aws.tables.state, KEY).phase == "Pending"
    plane.ecs.delete_service(cluster="oab", service="oab-team-bot", force=True)  # by hand
    assert oabctl("delete", "bot", "-n", "team").code == 0
    return _process(plane, "tok-delete", reason="delete")


def test_a_live_agent_whose_service_is_gone_is_terminating_before_it_is_cleared(
    plane: Plane,
) -> None:
    """Deleting an agent whose service was removed by hand: only Terminating may end in a
    cleared status, so the first run records Pending -> Terminating (not an illegal Pending ->
    cleared, which the commit would refuse and park) and asks to run again."""
    decision = _delete_with_the_service_gone(plane)
    assert decision.kind == "requeue", decision
    status = read_status(plane.ddb, plane.aws.tables.state, KEY)
    assert status.phase == "Terminating"
    assert status.finalizer_step == "service-deleted"
    (last, *_) = read_runlog(plane.ddb, plane.aws.tables.runlog, KEY)
    assert (last.from_phase, last.to_phase) == ("Pending", "Terminating")


def test_deleting_an_agent_whose_service_is_already_gone_clears_its_status(
    plane: Plane,
) -> None:
    _delete_with_the_service_gone(plane)
    decision = _process(plane, "tok-delete-2", reason="delete")
    assert plane.queue.get(KEY).state is State.DONE, decision
    assert read_status(plane.ddb, plane.aws.tables.state, KEY).phase is None
    (last, *_) = read_runlog(plane.ddb, plane.aws.tables.runlog, KEY)
    assert (last.from_phase, last.to_phase) == ("Terminating", None)


# ------------------------------------------------------------- the trace of a transition


def test_each_status_transition_is_a_span_event_matching_its_audit_row(plane: Plane) -> None:
    # Whoever is paged reads the phases off the trace (`oabctl trace`): each committed run's
    # span carries one `status.transition` event naming the phases and the audit sequence, the
    # same as the run log's row, the first one from no phase ("").
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    handle = telemetry.setup(TelemetryConfig(traces_exporter="none", trace_file=None))
    exporter = InMemorySpanExporter()
    handle.add_span_exporter(exporter)
    try:
        _apply("v1")
        _process(plane, "tok-1")
        _apply("v2")
        _process(plane, "tok-2", generation=2)
        events = [
            dict(event.attributes or {})
            for span in exporter.get_finished_spans()
            for event in span.events
            if event.name == "status.transition"
        ]
    finally:
        exporter.shutdown()
    rows = read_runlog(plane.ddb, plane.aws.tables.runlog, KEY, newest_first=False)
    assert len(rows) == 2
    assert events == [
        {
            "oab.from_phase": row.from_phase or "",
            "oab.to_phase": row.to_phase or "",
            "oab.audit_seq": row.seq,
        }
        for row in rows
    ]
    assert events[0]["oab.from_phase"] == ""
    assert events[1]["oab.from_phase"] == rows[0].to_phase != ""


# ------------------------------------------------------------ the worker's commit outcomes


def _commit(plane: Plane, client: Any, after_changes: dict[str, Any], run_id: str) -> None:
    before = read_status(client, plane.aws.tables.state, KEY)
    after = next_status(before, **after_changes)
    client.transact_write_items(
        TransactItems=transition_items(
            state_table=plane.aws.tables.state,
            runlog_table=plane.aws.tables.runlog,
            before=before,
            after=after,
            audit=audit_record(before, after, run_id=run_id, at=plane.clock.time()),
        )
    )


def test_a_status_moved_by_another_writer_voids_the_run_without_resuming(
    plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    # The status's own condition failed (another writer committed a transition, status and
    # audit row, while this run worked): the run is void. It is not the "run log ahead of the
    # status" case, which continues after the newest row.
    _apply()
    assert _process(plane, "tok-create").kind in ("done", "requeue")
    _apply("v2")  # generation 2: the next run changes the service, so it commits a transition
    racer = plane.aws.client("dynamodb")
    raced: list[bool] = []

    def race(**_: Any) -> None:
        if not raced:
            raced.append(True)
            _commit(plane, racer, {}, "run-racer")

    plane.ddb.meta.events.register("before-call.dynamodb.TransactWriteItems", race)
    with caplog.at_level("WARNING", logger="oab.controller"):
        decision = _process(plane, "tok-2", generation=2)
    assert raced == [True]
    assert (decision.kind, decision.reason) == ("drop", "ClaimLost")
    assert "extra transaction item 0 failed" in decision.error  # the status item
    assert any("outcome rejected" in m for m in caplog.messages)
    assert not any("behind the run log" in m for m in caplog.messages)
    rows = read_runlog(plane.ddb, plane.aws.tables.runlog, KEY)
    assert rows[0].run_id == "run-racer"  # nothing of the void run was written after it
