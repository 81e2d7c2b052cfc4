"""Reconcile: outcome policy, pure assessment, drift rules, crash safety on local AWS."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.base import errors
from oab.controller.core.outcome import Result, decide
from oab.controller.core.render import RenderContext
from oab.controller.core.status import AgentStatus, Condition, IllegalTransition
from oab.controller.local.dataplane import DataPlaneControl
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.reconciler import (
    Assessment,
    ReconcileConfig,
    Reconciler,
    assess,
    client_token,
)
from oab.controller.runtime.scheduler import Scheduler
from oab.controller.testing import (
    AWS,
    FakeClock,
    agent_manifest,
    oabctl,
    reconcile_request,
    wait_until,
)
from oab.queue.errors import ClaimLost

# ----------------------------------------------------------------------------- outcome policy


def test_decide_maps_every_outcome() -> None:
    status = AgentStatus(key="a/b")
    assert decide(result=Result(status=status)).kind == "done"
    requeue = decide(result=Result(status=status, requeue_after=2.0))
    assert (requeue.kind, requeue.requeue_after) == ("requeue", 2.0)
    assert decide(error=errors.RetryableError("x")).kind == "retry"
    assert decide(error=errors.TerminalError("x")).kind == "park"
    throttled = errors.AwsError(
        "slow down",
        operation="UpdateService",
        code="ThrottlingException",
        status=400,
        request_id="r",
        retryable=True,
        throttled=True,
    )
    assert decide(error=throttled).kind == "retry"
    assert decide(error=throttled).reason == "Throttled"
    lost = ClaimLost(
        "a/b",
        claim_token="t",
        current_state="in_flight",
        current_owner="x",
        current_claim_token="u",
    )
    assert decide(error=lost).kind == "drop"
    assert decide(error=errors.ClaimInDoubt("gone")).kind == "drop"
    assert decide(error=RuntimeError("bug")).kind == "retry"
    illegal = decide(error=IllegalTransition("Terminating", "Running"))
    assert (illegal.kind, illegal.reason) == ("park", "IllegalTransition")


def test_client_token_fits_ecs_limit_and_is_deterministic() -> None:
    token = client_token("0" * 32)
    assert len(token) <= 36
    assert token == client_token("0" * 32)
    assert token != client_token("1" * 32)


# ------------------------------------------------------------------------------ assessment

TD_NEW = "arn:aws:ecs:us-east-1:123456789012:task-definition/oab-a-b:2"
TD_OLD = "arn:aws:ecs:us-east-1:123456789012:task-definition/oab-a-b:1"


def _service(td: str, rollout: str, running: int, **extra: Any) -> dict[str, Any]:
    return {
        "serviceName": "oab-a-b",
        "taskDefinition": td,
        "runningCount": running,
        "pendingCount": 0 if running else 1,
        "desiredCount": 1,
        "deployments": [{"status": "PRIMARY", "rolloutState": rollout, **extra}],
    }


def _cond(conds: tuple[Condition, ...], type_: str) -> tuple[str, str]:
    found = next(c for c in conds if c.type == type_)
    return found.status, found.reason


def _assess(service: dict[str, Any], *, tasks: list[dict[str, Any]] | None = None) -> Assessment:
    """The verdict for a rollout of ``TD_NEW`` with no prior conditions."""
    return assess(
        service=service,
        task_definition=TD_NEW,
        tasks=tasks or [],
        prior=(),
        refreshed=(),
        now="t",
    )


def test_assess_completed_rollout_is_running_and_available() -> None:
    verdict = _assess(_service(TD_NEW, "COMPLETED", 1))
    assert verdict.phase == "Running"
    assert not verdict.requeue
    assert _cond(verdict.conditions, "Available") == ("True", "TaskRunning")
    assert _cond(verdict.conditions, "Progressing") == ("False", "RolloutCompleted")
    assert _cond(verdict.conditions, "Degraded") == ("False", "AsExpected")


def test_assess_in_progress_requeues_as_pending() -> None:
    verdict = _assess(_service(TD_NEW, "IN_PROGRESS", 0))
    assert verdict.phase == "Pending"
    assert verdict.requeue
    assert _cond(verdict.conditions, "Available") == ("False", "NoRunningTask")


def test_assess_rolled_back_secret_failure_keeps_old_task_available() -> None:
    stopped = {
        "taskDefinitionArn": TD_NEW,
        "lastStatus": "STOPPED",
        "stoppedReason": "ResourceInitializationError: unable to pull secrets or registry auth",
    }
    verdict = _assess(_service(TD_OLD, "COMPLETED", 1), tasks=[stopped])
    assert verdict.phase == "Failed"
    assert not verdict.requeue
    assert _cond(verdict.conditions, "SecretInjectionFailed") == ("True", "SecretNotInjected")
    assert _cond(verdict.conditions, "Available") == ("True", "TaskRunning")
    assert _cond(verdict.conditions, "Degraded") == ("True", "RolloutFailed")
    assert "unable to pull secrets" in verdict.failure


def test_assess_crash_loop_is_failed_without_secret_condition() -> None:
    stopped = {
        "taskDefinitionArn": TD_NEW,
        "lastStatus": "STOPPED",
        "stoppedReason": "Essential container in task exited",
    }
    verdict = _assess(_service(TD_NEW, "FAILED", 0), tasks=[stopped])
    assert verdict.phase == "Failed"
    assert _cond(verdict.conditions, "SecretInjectionFailed") == ("False", "SecretsInjected")


# ------------------------------------------------------------------------------ drift rules


def test_drift_rules() -> None:
    running = AgentStatus(
        key="a/b", phase="Running", manifest_etag="e1", task_definition_arn=TD_NEW
    )
    ok = _service(TD_NEW, "COMPLETED", 1)

    def drift(**kw: Any) -> str | None:
        args: dict[str, Any] = {
            "etag": "e1",
            "status": running,
            "service": ok,
            "checked": True,
            "versions": {},
        }
        args.update(kw)
        return Scheduler._drift("a/b", **args)

    assert drift() is None
    assert drift(etag=None) == "manifest-removed"
    assert drift(status=AgentStatus(key="a/b")) == "new"
    assert drift(etag="e2") == "manifest-changed"
    assert drift(service=None) == "service-missing"
    assert drift(service=_service(TD_OLD, "COMPLETED", 1)) == "task-definition-drift"
    assert drift(service=_service(TD_NEW, "COMPLETED", 0)) == "not-running"
    assert drift(status=replace(running, secret_versions={"T": "1"}), versions={"T": "2"}) == (
        "secret-rotated"
    )
    failed = replace(running, phase="Failed")
    # A rolled-back agent legitimately runs the old revision: not drift.
    assert drift(status=failed, service=_service(TD_OLD, "COMPLETED", 1)) is None


# --------------------------------------------------------------------- against local AWS


@pytest.fixture
def plane(aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("OABCTL_CONFIG", str(tmp_path / "none.toml"))
    for k, v in aws.emulator.env().items():
        monkeypatch.setenv(k, v)
    assert oabctl("init").code == 0
    DataPlaneControl(aws.emulator.endpoint).configure(paused=True)
    s3 = aws.client("s3")
    store = DesiredStateStore(
        S3ObjectStore(s3, "oab-control-plane"),
        changes=ChangeLog(aws.client("dynamodb"), aws.tables.state),
    )
    profile = read_cluster_profile(s3, "oab-control-plane")
    assert profile is not None
    ctx = RenderContext(
        region="us-east-1",
        bucket="oab-control-plane",
        cluster="oab",
        agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
        execution_role_arn="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
        task_role_arn="arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
        account_id="123456789012",
        default_subnets=profile.subnets,
        default_security_groups=profile.security_groups,
    )
    limiter = RateLimiter({})
    ecs = aws.client("ecs")
    reconciler = Reconciler(
        manifests=StoreManifests(store),
        ecs=EcsAdapter(ecs, cluster="oab", limiter=limiter),
        s3=s3,
        bucket="oab-control-plane",
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        context=ctx,
        wall=FakeClock().time,
        config=ReconcileConfig(progress_poll_s=0.1),
    )
    aws.client("ssm").put_parameter(
        Name="/oab/team/bot/discord-token", Value="planted-9f8e7d", Type="SecureString"
    )
    return {"reconciler": reconciler, "ecs": ecs, "dp": DataPlaneControl(aws.emulator.endpoint)}


def _apply(tag: str) -> None:
    assert oabctl("apply", "-f", "-", stdin=agent_manifest(tag=tag)).code == 0


def _run(reconciler: Reconciler, status: AgentStatus, token: str, gen: int) -> tuple[Result, Any]:
    log = CallLog()
    req = reconcile_request("team/bot", token=token)
    return reconciler.reconcile(req, status=status, log=log), log


def test_crash_after_side_effects_does_not_duplicate_them(plane: dict[str, Any]) -> None:
    reconciler: Reconciler = plane["reconciler"]
    _apply("v1")
    empty = AgentStatus(key="team/bot")
    first, log1 = _run(reconciler, empty, "token-a", 1)
    actions1 = [c.action for c in log1.snapshot()]
    assert actions1.count("ecs:RegisterTaskDefinition") == 1
    assert actions1.count("ecs:CreateService") == 1
    # The worker crashed before writing status: a new work unit starts from the empty status.
    second, log2 = _run(reconciler, empty, "token-b", 1)
    actions2 = [c.action for c in log2.snapshot()]
    assert "ecs:RegisterTaskDefinition" not in actions2
    # It creates nothing, and records the service the dead run created as adopted (that run
    # left no audit row): the log names every service once.
    (adopted,) = log2.snapshot()
    assert (adopted.action, adopted.adopted, adopted.request_id) == ("ecs:CreateService", True, "")
    assert adopted.result == first.status.service_arn == second.status.service_arn
    _, log3 = _run(reconciler, second.status, "token-b", 1)
    assert log3.snapshot() == ()  # once committed, the status knows it: nothing to adopt
    assert second.status.task_definition_arn == first.status.task_definition_arn
    arns = plane["ecs"].list_task_definitions(familyPrefix="oab-team-bot")["taskDefinitionArns"]
    assert len(arns) == 1


def test_rival_with_the_same_ecs_name_never_touches_the_owners_service(
    plane: dict[str, Any], aws: AWS
) -> None:
    reconciler: Reconciler = plane["reconciler"]
    ecs = plane["ecs"]
    s3 = aws.client("s3")
    manifest = agent_manifest("b-c", namespace="a")
    assert oabctl("apply", "-f", "-", stdin=manifest).code == 0
    owner_req = reconcile_request("a/b-c", token="t-own", run_id="r1")
    owned = reconciler.reconcile(owner_req, status=AgentStatus(key="a/b-c"), log=CallLog())
    service = ecs.describe_services(cluster="oab", services=["oab-a-b-c"])["services"][0]

    # Two creations that raced past the store's check: a-b/c is stored next to a/b-c.
    body = s3.get_object(Bucket="oab-control-plane", Key="manifests/a/b-c.yaml")["Body"].read()
    rival_body = body.replace(b"name: b-c", b"name: c").replace(b"namespace: a", b"namespace: a-b")
    rival_body = rival_body.replace(b"/oab/a/b-c/", b"/oab/a-b/c/")  # its own secret path
    s3.put_object(Bucket="oab-control-plane", Key="manifests/a-b/c.yaml", Body=rival_body)
    rival_req = reconcile_request("a-b/c", token="t-rival", run_id="r2")
    log = CallLog()
    with pytest.raises(errors.TerminalError, match="belongs to agent a/b-c") as info:
        reconciler.reconcile(rival_req, status=AgentStatus(key="a-b/c"), log=log)
    assert info.value.reason == "NameCollision"
    assert decide(error=info.value).kind == "park"
    assert log.snapshot() == ()

    # Deleting the rival removes only what is its own by path, never the owner's ECS resources.
    assert oabctl("delete", "c", "-n", "a-b").code == 0
    failed = replace(AgentStatus(key="a-b/c"), phase="Failed")
    log = CallLog()
    # Two runs: Failed -> Terminating (only Terminating may end cleared), then the clean-up.
    first = reconciler.reconcile(rival_req, status=failed, log=log)
    assert first.status.phase == "Terminating"
    reconciler.reconcile(rival_req, status=first.status, log=log)
    assert not [c.action for c in log.snapshot() if c.action.startswith("ecs:")]
    after = ecs.describe_services(cluster="oab", services=["oab-a-b-c"])["services"][0]
    assert (after["status"], after["taskDefinition"], after["desiredCount"]) == (
        "ACTIVE",
        service["taskDefinition"],
        1,
    )
    assert after["taskDefinition"] == owned.status.task_definition_arn
    family = ecs.list_task_definitions(familyPrefix="oab-a-b-c", status="ACTIVE")
    assert family["taskDefinitionArns"] == [owned.status.task_definition_arn]
    keys = s3.list_objects_v2(Bucket="oab-control-plane", Prefix="manifests/")["Contents"]
    assert [k["Key"] for k in keys] == ["manifests/a/b-c.yaml"]


def test_secret_injection_failure_keeps_old_task_and_is_not_redeployed(
    plane: dict[str, Any],
) -> None:
    reconciler: Reconciler = plane["reconciler"]
    dp: DataPlaneControl = plane["dp"]
    _apply("v1")
    result, _ = _run(reconciler, AgentStatus(key="team/bot"), "t1", 1)
    dp.step(advance_s=5)
    result, _ = _run(reconciler, result.status, "t1", 1)
    assert result.status.phase == "Running"
    old_tasks = result.status.task_arns
    dp.fail_secret("/oab/team/bot/discord-token")
    _apply("v2")
    status = result.status

    def failed() -> AgentStatus | None:
        nonlocal status
        dp.step(advance_s=5)
        res, _ = _run(reconciler, status, "t2", 2)
        status = res.status
        return status if status.phase == "Failed" else None

    final = wait_until(failed, timeout=30, message="Failed")
    cond = final.condition("SecretInjectionFailed")
    assert cond is not None
    assert cond.status == "True"
    assert final.condition("Available") is not None
    assert final.task_arns == old_tasks  # the old task kept running
    again, log = _run(reconciler, final, "t3", 2)
    assert [c.action for c in log.snapshot()] == []  # no redeploy of the same failed content
    assert again.status.phase == "Failed"
    assert "planted-9f8e7d" not in repr(final)


def test_secret_versions_never_read_values(plane: dict[str, Any], aws: AWS) -> None:
    versions = SecretVersions(
        ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=RateLimiter({})
    )
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="oab/team/bot/key", SecretString="planted-sm-1")["ARN"]
    got = versions.versions(
        [
            {"name": "A", "source": "ssm", "path": "/oab/team/bot/discord-token"},
            {"name": "B", "source": "secretsmanager", "arn": arn},
            {"name": "C", "source": "ssm", "path": "/oab/team/bot/missing"},
        ]
    )
    assert got["A"] == "1"
    assert got["B"]
    assert got["C"] == ""
    assert "planted" not in repr(got)
    # The resync's batched read agrees, in one DescribeParameters + one ListSecrets call.
    calls: list[str] = []
    ssm, sm_client = aws.client("ssm"), aws.client("secretsmanager")
    for client in (ssm, sm_client):
        client.meta.events.register("before-call", lambda model, **_kw: calls.append(model.name))
    batched = SecretVersions(ssm=ssm, secretsmanager=sm_client, limiter=RateLimiter({})).batch(
        [
            ("ssm", "/oab/team/bot/discord-token"),
            ("secretsmanager", arn),
            ("ssm", "/oab/team/bot/missing"),
        ]
    )
    assert batched == {
        ("ssm", "/oab/team/bot/discord-token"): got["A"],
        ("secretsmanager", arn): got["B"],
        ("ssm", "/oab/team/bot/missing"): "",
    }
    assert sorted(calls) == ["DescribeParameters", "ListSecrets"]


def test_aws_errors_are_classified_by_what_a_retry_can_do() -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError, ParamValidationError

    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "rid"},
            },
            "UpdateService",
        )

    throttled = errors.classify_aws(client_error("ThrottlingException", 400), operation="x")
    assert (throttled.retryable, throttled.throttled, throttled.request_id) == (True, True, "rid")
    assert errors.classify_aws(client_error("ServerException", 500), operation="x").retryable
    denied = errors.classify_aws(client_error("AccessDeniedException", 400), operation="x")
    assert not denied.retryable
    assert errors.classify_aws(
        EndpointConnectionError(endpoint_url="http://x"), operation="x"
    ).retryable
    assert not errors.classify_aws(ParamValidationError(report="bad"), operation="x").retryable
