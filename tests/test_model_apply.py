"""The model's rules at the two gates, against the emulator: ``oabctl apply`` and every reconcile.

``oabctl apply`` renders every agent with the settings-derived render context before writing
anything (exit 1, file/document/field path/fix, nothing written when any document is refused);
a stored manifest that breaks the same rules (written by an older oabctl or straight to S3)
parks its agent with a terminal error at reconcile, before any ECS call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from oab.controller.adapters.changes import ChangeLog
from oab.controller.adapters.clusterprofile import read_cluster_profile
from oab.controller.adapters.ecs import CallLog, EcsAdapter
from oab.controller.adapters.objectstore import S3ObjectStore
from oab.controller.adapters.ratelimit import RateLimiter
from oab.controller.adapters.secretversions import SecretVersions
from oab.controller.adapters.store import DesiredStateStore
from oab.controller.base.errors import TerminalError
from oab.controller.core.clusterprofile import render_context
from oab.controller.core.outcome import decide
from oab.controller.core.render import POLICY_VIOLATION, RenderError
from oab.controller.core.settings import load_settings
from oab.controller.core.status import AgentStatus
from oab.controller.reconcile.desired import StoreManifests
from oab.controller.reconcile.reconciler import Reconciler
from oab.controller.testing import AWS, FakeClock, agent_manifest, oabctl, reconcile_request

BUCKET = "oab-control-plane"
ACCOUNT = "123456789012"
VICTIM_TASK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/oab-agent-task-team-b-bot"


@pytest.fixture
def env(aws: AWS, tmp_path: Path) -> dict[str, str]:
    environ = {**os.environ, "OABCTL_CONFIG": str(tmp_path / "no-config")}
    assert oabctl("init", env=environ).code == 0
    return environ


def _writes(aws: AWS) -> tuple[int, int]:
    """(object versions under manifests/ and fleets/, change records): what an apply writes."""
    s3 = aws.client("s3")
    versions = s3.list_object_versions(Bucket=BUCKET).get("Versions", [])
    stored = [v for v in versions if v["Key"].startswith(("manifests/", "fleets/"))]
    scan = aws.client("dynamodb").scan(TableName=aws.tables.state)
    changes = [i for i in scan["Items"] if i["pk"]["S"].startswith("changes#")]
    return len(stored), len(changes)


def _with_task_role(manifest: str, role: str) -> str:
    doc = yaml.safe_load(manifest)
    doc["spec"]["platform"] = {"ecs": {"taskRole": role}}
    return str(yaml.safe_dump(doc, sort_keys=False))


def test_apply_refuses_another_agents_role_and_writes_nothing(
    aws: AWS, env: dict[str, str], tmp_path: Path
) -> None:
    good = agent_manifest("ok")
    bad = _with_task_role(agent_manifest("bot"), VICTIM_TASK_ROLE)
    path = tmp_path / "agents.yaml"
    path.write_text(good + "---\n" + bad)
    for args in (["apply", "-f", str(path)], ["apply", "-f", str(path), "--dry-run"]):
        result = oabctl(*args, env=env)
        assert result.code == 1, result.err
        assert f"{path}" in result.err
        assert "(document 2)" in result.err
        assert "spec.platform.ecs.taskRole" in result.err
        assert "role_allowlist" in result.err
        assert result.out == ""
    assert _writes(aws) == (0, 0)


def test_apply_accepts_a_role_the_platform_allows(aws: AWS, env: dict[str, str]) -> None:
    shared = f"arn:aws:iam::{ACCOUNT}:role/oab/team/shared-task"
    manifest = _with_task_role(agent_manifest("bot"), shared)
    refused = oabctl("apply", "-f", "-", stdin=manifest, env=env)
    assert refused.code == 1
    allowed = {**env, "OAB_ROLE_ALLOWLIST": "arn:aws:iam::{account}:role/oab/{namespace}/shared-*"}
    result = oabctl("apply", "-f", "-", stdin=manifest, env=allowed)
    assert (result.code, result.out) == (0, "oabservice.oab.dev/bot created\n"), result.err


def test_apply_blames_fleet_fields_and_refuses_the_whole_fleet(
    aws: AWS, env: dict[str, str]
) -> None:
    long_name = "x" * 50  # oab-agent-exec-team-xxx...: 70 characters, IAM allows 64
    fleet = {
        "apiVersion": "oab.dev/v1",
        "kind": "OABFleet",
        "metadata": {"name": "f", "namespace": "team"},
        "spec": {
            "defaults": {
                "cpu": 256,
                "memory": 512,
                "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
                "config": {
                    "agent": {"preset": "kiro"},
                    "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
                },
            },
            "agents": [
                {"name": "ok"},
                {"name": long_name},
                {"name": "boot", "bootstrapFrom": f"s3://{BUCKET}/manifests/team/ok.yaml"},
            ],
        },
    }
    result = oabctl("apply", "-f", "-", stdin=yaml.safe_dump(fleet), env=env)
    assert result.code == 1
    assert "spec.agents[1].name: IAM role name" in result.err
    assert "spec.agents[2].bootstrapFrom" in result.err
    assert "manifests/" in result.err
    assert _writes(aws) == (0, 0)


def test_apply_never_echoes_a_literal_secret(aws: AWS, env: dict[str, str]) -> None:
    token = "xoxb-123456789012-123456789012-FAKEfakeFAKEfake"
    doc = yaml.safe_load(agent_manifest("bot"))
    doc["spec"]["env"] = {"SLACK_TOKEN_COPY": token}
    result = oabctl("apply", "-f", "-", stdin=yaml.safe_dump(doc), env=env)
    assert result.code == 1
    assert "spec.env.SLACK_TOKEN_COPY" in result.err
    assert "looks like a Slack token" in result.err
    assert token not in result.err + result.out
    assert _writes(aws) == (0, 0)


def _reconciler(aws: AWS, env: dict[str, str]) -> tuple[Reconciler, Any]:
    s3 = aws.client("s3")
    store = DesiredStateStore(
        S3ObjectStore(s3, BUCKET), changes=ChangeLog(aws.client("dynamodb"), aws.tables.state)
    )
    settings = load_settings(env=env)
    ctx = render_context(settings, read_cluster_profile(s3, BUCKET), account=ACCOUNT)
    limiter = RateLimiter({})
    ecs = aws.client("ecs")
    reconciler = Reconciler(
        manifests=StoreManifests(store),
        ecs=EcsAdapter(ecs, cluster="oab", limiter=limiter),
        s3=s3,
        bucket=BUCKET,
        secrets=SecretVersions(
            ssm=aws.client("ssm"), secretsmanager=aws.client("secretsmanager"), limiter=limiter
        ),
        context=ctx,
        wall=FakeClock().time,
    )
    return reconciler, ecs


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda d: d["spec"].update(platform={"ecs": {"taskRole": VICTIM_TASK_ROLE}}),
            "spec.platform.ecs.taskRole",
        ),
        (
            lambda d: d["spec"]["secrets"][0].update(path="/oab/team-b/bot/discord-token"),
            "spec.secrets[0].path",
        ),
        (
            lambda d: d["spec"].update(bootstrapFrom=f"s3://{BUCKET}/artifacts/team/x.tar.gz"),
            "spec.bootstrapFrom",
        ),
    ],
    ids=["role", "secret", "bootstrapFrom"],
)
def test_a_stored_manifest_outside_the_boundary_parks_before_any_ecs_call(
    aws: AWS, env: dict[str, str], change: Any, field: str
) -> None:
    assert oabctl("apply", "-f", "-", stdin=agent_manifest("bot"), env=env).code == 0
    # A hostile tenant (or an older oabctl) writes the stored manifest directly.
    s3 = aws.client("s3")
    doc = yaml.safe_load(s3.get_object(Bucket=BUCKET, Key="manifests/team/bot.yaml")["Body"].read())
    change(doc)
    s3.put_object(Bucket=BUCKET, Key="manifests/team/bot.yaml", Body=yaml.safe_dump(doc).encode())
    reconciler, ecs = _reconciler(aws, env)
    log = CallLog()
    request = reconcile_request("team/bot")
    with pytest.raises(RenderError) as info:
        reconciler.reconcile(request, status=AgentStatus(key="team/bot"), log=log)
    assert isinstance(info.value, TerminalError)
    assert (info.value.reason, info.value.field) == (POLICY_VIOLATION, field)
    decision = decide(error=info.value)
    assert (decision.kind, decision.reason) == ("park", POLICY_VIOLATION)
    assert field in decision.error
    assert log.snapshot() == ()
    assert ecs.list_task_definitions(familyPrefix="oab-team-bot")["taskDefinitionArns"] == []
    artifacts = s3.list_objects_v2(Bucket=BUCKET, Prefix="artifacts/")
    assert artifacts.get("KeyCount", 0) == 0
