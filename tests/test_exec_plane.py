"""spec.exec: rendering, reconcile on local AWS (flip on and off, ECS refusal), and the simulated
data plane's ExecuteCommand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.api.service import OABService
from oab.controller.base import errors
from oab.controller.core.outcome import Result
from oab.controller.core.render import (
    RenderContext,
    render_create_service,
    render_update_service,
)
from oab.controller.core.status import AgentStatus
from oab.controller.local.dataplane import ControlRequestError, DataPlaneControl
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.reconciler import ReconcileConfig, Reconciler
from oab.controller.testing import AWS, FakeClock, agent_manifest, oabctl, reconcile_request

CTX_ARGS: dict[str, Any] = {
    "region": "us-east-1",
    "bucket": "oab-control-plane",
    "cluster": "oab",
    "agent_image": "ghcr.io/openabdev/oab-controller:0.1.0",
    "execution_role_arn": "arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
    "task_role_arn": "arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
    "account_id": "123456789012",
}


def exec_manifest(*, on: bool) -> str:
    text = agent_manifest()
    return text.replace("spec:\n", f"spec:\n  exec: {'true' if on else 'false'}\n", 1)


def _svc(*, on: bool) -> OABService:
    return OABService.model_validate(yaml.safe_load(exec_manifest(on=on)))


# ------------------------------------------------------------------------------------ render
def test_create_turns_exec_on_only_when_asked() -> None:
    ctx = RenderContext(**CTX_ARGS, default_subnets=("subnet-0123456789abcdef0",))
    on = render_create_service(_svc(on=True), ctx, task_definition="f:1", client_token="t")
    off = render_create_service(_svc(on=False), ctx, task_definition="f:1", client_token="t")
    assert on["enableExecuteCommand"] is True
    assert "enableExecuteCommand" not in off  # ECS's default; the golden files stay as they were


def test_update_sends_exec_to_turn_it_on_or_off_and_not_otherwise() -> None:
    ctx = RenderContext(**CTX_ARGS, default_subnets=("subnet-0123456789abcdef0",))

    def update(on: bool, now: bool) -> dict[str, Any]:
        return render_update_service(_svc(on=on), ctx, task_definition="f:1", exec_enabled=now)

    assert update(True, False)["enableExecuteCommand"] is True
    assert update(True, True)["enableExecuteCommand"] is True
    assert update(False, True)["enableExecuteCommand"] is False
    assert "enableExecuteCommand" not in update(False, False)


def test_exec_off_leaves_the_spec_digest_unchanged() -> None:
    # Agents that never use exec must not see a new generation after an upgrade.
    off = _svc(on=False)
    plain = OABService.model_validate(yaml.safe_load(agent_manifest()))
    assert off.spec_digest() == plain.spec_digest()
    assert "exec" not in off.to_manifest()["spec"]
    assert _svc(on=True).to_manifest()["spec"]["exec"] is True


# ------------------------------------------------------------------------------- reconcile
@pytest.fixture
def plane(aws: AWS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("OABCTL_CONFIG", str(tmp_path / "none.toml"))
    for k, v in aws.emulator.env().items():
        monkeypatch.setenv(k, v)
    assert oabctl("init").code == 0
    control = DataPlaneControl(aws.emulator.endpoint)
    control.configure(paused=True, start_delay_s=1.0)
    s3 = aws.client("s3")
    store = DesiredStateStore(
        S3ObjectStore(s3, "oab-control-plane"),
        changes=ChangeLog(aws.client("dynamodb"), aws.tables.state),
    )
    profile = read_cluster_profile(s3, "oab-control-plane")
    assert profile is not None
    ctx = RenderContext(
        **CTX_ARGS,
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
    return {"reconciler": reconciler, "ecs": ecs, "control": control}


def _run(plane: dict[str, Any], status: AgentStatus, token: str, gen: int) -> tuple[Result, Any]:
    log = CallLog()
    req = reconcile_request("team/bot", token=token)
    return plane["reconciler"].reconcile(req, status=status, log=log), log


def _service(plane: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = plane["ecs"].describe_services(
        cluster="oab", services=["oab-team-bot"]
    )["services"][0]
    return found


def _calls(plane: dict[str, Any]) -> list[dict[str, Any]]:
    """Every UpdateService request the reconciler sends from now on (at the AWS boundary)."""
    seen: list[dict[str, Any]] = []
    plane["ecs"].meta.events.register(
        "provide-client-params.ecs.UpdateService", lambda params, **_: seen.append(dict(params))
    )
    return seen


def test_exec_is_switched_on_and_off_with_a_new_deployment(plane: dict[str, Any]) -> None:
    assert oabctl("apply", "-f", "-", stdin=exec_manifest(on=True)).code == 0
    first, log = _run(plane, AgentStatus(key="team/bot"), "t1", 1)
    assert "ecs:CreateService" in [c.action for c in log.snapshot()]
    assert _service(plane)["enableExecuteCommand"] is True
    plane["control"].step(advance_s=2)
    updates = _calls(plane)
    # Converged: another run sends nothing.
    second, _ = _run(plane, first.status, "t1", 1)
    assert updates == []
    # Turning it off is an update that carries the field and restarts the task.
    assert oabctl("apply", "-f", "-", stdin=exec_manifest(on=False)).code == 0
    third, _ = _run(plane, second.status, "t2", 2)
    assert len(updates) == 1
    assert updates[0]["enableExecuteCommand"] is False
    assert updates[0]["forceNewDeployment"] is True
    assert not _service(plane).get("enableExecuteCommand")
    plane["control"].step(advance_s=2)
    _run(plane, third.status, "t2", 2)
    assert len(updates) == 1


def test_exec_switched_on_out_of_band_is_drift_and_turned_off(plane: dict[str, Any]) -> None:
    assert oabctl("apply", "-f", "-", stdin=exec_manifest(on=False)).code == 0
    first, _ = _run(plane, AgentStatus(key="team/bot"), "t1", 1)
    plane["control"].step(advance_s=2)
    plane["ecs"].update_service(cluster="oab", service="oab-team-bot", enableExecuteCommand=True)
    updates = _calls(plane)
    _run(plane, first.status, "t1", 1)
    assert [u.get("enableExecuteCommand") for u in updates] == [False]


def _refuse(plane: dict[str, Any], operation: str) -> None:
    def refuse(**_: Any) -> None:
        raise ClientError(
            {
                "Error": {
                    "Code": "InvalidParameterException",
                    "Message": "The platform version does not support execute command.",
                },
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            operation,
        )

    plane["ecs"].meta.events.register(f"before-call.ecs.{operation}", refuse)


def test_ecs_refusing_exec_parks_with_exec_refused(plane: dict[str, Any]) -> None:
    assert oabctl("apply", "-f", "-", stdin=exec_manifest(on=True)).code == 0
    _refuse(plane, "CreateService")
    with pytest.raises(errors.TerminalError) as caught:
        _run(plane, AgentStatus(key="team/bot"), "t1", 1)
    assert caught.value.reason == "ExecRefused"
    message = str(caught.value)
    assert "spec.exec: false" in message
    assert "ssmmessages:CreateControlChannel" in message
    assert "does not support execute command" in message


def test_the_same_refusal_without_exec_is_not_blamed_on_exec(plane: dict[str, Any]) -> None:
    assert oabctl("apply", "-f", "-", stdin=exec_manifest(on=False)).code == 0
    _refuse(plane, "CreateService")
    with pytest.raises(errors.AwsError) as caught:
        _run(plane, AgentStatus(key="team/bot"), "t1", 1)
    assert caught.value.code == "InvalidParameterException"


# ---------------------------------------------------------------- data plane ExecuteCommand
def _running_task(plane: dict[str, Any], *, on: bool) -> dict[str, Any]:
    assert oabctl("apply", "-f", "-", stdin=exec_manifest(on=on)).code == 0
    _run(plane, AgentStatus(key="team/bot"), "t1", 1)
    plane["control"].step(advance_s=2)
    ecs = plane["ecs"]
    arns = ecs.list_tasks(cluster="oab", serviceName="oab-team-bot")["taskArns"]
    task: dict[str, Any] = ecs.describe_tasks(cluster="oab", tasks=arns)["tasks"][0]
    return task


def test_execute_command_answers_a_session_for_an_exec_task(plane: dict[str, Any]) -> None:
    task = _running_task(plane, on=True)
    assert task["enableExecuteCommand"] is True
    agent = next(c for c in task["containers"] if c["name"] == "openab")
    assert agent["runtimeId"]
    resp = plane["ecs"].execute_command(
        cluster="oab", task=task["taskArn"], container="openab", interactive=True, command="ls /"
    )
    session = resp["session"]
    assert session["sessionId"].startswith("ecs-execute-command-")
    assert session["streamUrl"].startswith("wss://ssmmessages.us-east-1.amazonaws.com/")
    assert session["tokenValue"]
    seen = plane["control"].exec_session(session["sessionId"])
    assert seen["command"] == "ls /"
    assert seen["runtimeId"] == agent["runtimeId"]
    assert seen["taskArn"] == task["taskArn"]
    assert session["tokenValue"] not in str(seen)  # the control API never returns the token
    with pytest.raises(ControlRequestError):
        plane["control"].exec_session("ecs-execute-command-unknown")


def test_execute_command_refuses_a_task_started_without_exec(plane: dict[str, Any]) -> None:
    task = _running_task(plane, on=False)
    with pytest.raises(ClientError) as caught:
        plane["ecs"].execute_command(
            cluster="oab", task=task["taskArn"], container="openab", interactive=True, command="ls"
        )
    assert caught.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "execute command was not enabled" in caught.value.response["Error"]["Message"]


def test_execute_command_is_interactive_only(plane: dict[str, Any]) -> None:
    task = _running_task(plane, on=True)
    with pytest.raises(ClientError) as caught:
        plane["ecs"].execute_command(
            cluster="oab", task=task["taskArn"], container="openab", interactive=False, command="ls"
        )
    assert "Interactive is the only mode" in caught.value.response["Error"]["Message"]
