"""Renderers: golden files, botocore's ECS model, hash stability, secrets as placeholders.

Golden files live in ``tests/golden/render/``: per agent ``{ns}.{name}.config.toml`` and
``{ns}.{name}.json`` (the whole ``RenderedAgent.to_dict()``). After an intended change, regenerate
them and review the diff::

    OAB_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_render.py

Every rendered request is also checked with botocore's own parameter validator against the ECS
service model shipped with boto3, so a field or type ECS would reject fails here even though the
local emulator would accept it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator
from pydantic import ValidationError

from oab.controller.api.document import parse_document
from oab.controller.api.fleet import OABFleet, expand_fleet
from oab.controller.api.service import OABService
from oab.controller.base import taskcontract
from oab.controller.base.names import CONTENT_HASH_TAG
from oab.controller.core.render import (
    RenderContext,
    RenderError,
    artifact_key,
    artifact_uri,
    check_service_request,
    check_task_definition,
    example_client_token,
    family,
    render_agent,
    render_config_toml,
    render_create_service,
    render_task_definition,
    render_update_service,
    service_name,
    task_definition_hash,
    validate_request,
)
from oab.controller.testing import AWS

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "render"
UPDATE = os.environ.get("OAB_UPDATE_GOLDEN") == "1"

CTX = RenderContext(
    region="us-east-1",
    bucket="oab-control-plane",
    cluster="oab",
    agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
    execution_role_arn="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
    task_role_arn="oab-agent-task-{namespace}-{name}",
    account_id="123456789012",
    default_subnets=("subnet-0ddd0000", "subnet-0ccc0000"),
    default_security_groups=("sg-0eee0000",),
    # The fixtures' shared roles and secret (tests/test_model_tenancy.py covers the boundary).
    role_allowlist=(
        "arn:aws:iam::{account}:role/custom-exec",
        "arn:aws:iam::210987654321:role/custom-task",
        "arn:aws:iam::{account}:role/other-task",
    ),
    secret_allowlist=("arn:aws:secretsmanager:{region}:{account}:secret:oab/gw-*",),
)

FAKE_TOKEN = "xoxb-000000000000-FAKE-SECRET-do-not-leak"


def _manifest(**spec: Any) -> dict[str, Any]:
    """A minimal valid Discord OABService manifest; ``spec`` keys replace the defaults."""
    base: dict[str, Any] = {
        "cpu": 256,
        "memory": 512,
        "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
        "secrets": [
            {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/default/bot/token"}
        ],
        "config": {
            "agent": {"preset": "kiro"},
            "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
        },
    }
    base.update(spec)
    return {
        "apiVersion": "oab.dev/v1",
        "kind": "OABService",
        "metadata": {"name": "bot", "namespace": "default", "generation": 3},
        "spec": base,
    }


def _service(doc: dict[str, Any]) -> OABService:
    obj = parse_document(doc)
    assert isinstance(obj, OABService)
    return obj


# Services defined here (beside examples/) to cover what the examples do not: no networking
# (context defaults), role names, platform.ecs overrides of everything, a gateway agent, ARM.
FIXTURES: dict[str, dict[str, Any]] = {
    "fixture-minimal": _manifest(),
    "fixture-platform-override": {
        **_manifest(
            capacityProvider="FARGATE",
            networking={"subnets": ["subnet-0aaa0000"], "assignPublicIp": False},
            bootstrapFrom="s3://agent-state/ops/gw/home.tar.gz",
            env={"LOG_LEVEL": "debug", "TZ": "UTC"},
            secrets=[
                {
                    "name": "GATEWAY_TOKEN",
                    "source": "secretsmanager",
                    "arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:oab/gw-AbCdEf",
                },
                {
                    "name": "OPENAI_API_KEY",
                    "source": "ssm",
                    "path": "arn:aws:ssm:us-east-1:123456789012:parameter/oab/ops/gw/openai",
                },
            ],
            config={
                "agent": {"preset": "codex"},
                "gateway": {"url": "wss://gw.example.com/ws", "token": "${GATEWAY_TOKEN}"},
            },
            platform={
                "ecs": {
                    "capacityProvider": "FARGATE_SPOT",
                    "executionRole": "custom-exec",
                    "taskRole": "arn:aws:iam::210987654321:role/custom-task",
                    "networking": {
                        "subnets": ["subnet-0bbb0000", "subnet-0abc0000"],
                        "securityGroups": ["sg-0fff0000", "sg-0abc0000"],
                        "assignPublicIp": True,
                    },
                },
                "k8s": {"nodeSelector": {"pool": "agents"}},
            },
        ),
        "metadata": {"name": "gw", "namespace": "ops", "generation": 12},
    },
}


def _example_services() -> list[tuple[str, OABService]]:
    out: list[tuple[str, OABService]] = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            obj = parse_document(doc)
            children = expand_fleet(obj) if isinstance(obj, OABFleet) else [obj]
            out.extend((f"{path.stem}:{svc.key}", svc) for svc in children)
    return out


ALL: list[tuple[str, OABService]] = [
    *((name, _service(doc)) for name, doc in FIXTURES.items()),
    *_example_services(),
]
IDS = [name for name, _ in ALL]
SERVICES = [svc for _, svc in ALL]


def _golden_stem(svc: OABService) -> str:
    return f"{svc.metadata.namespace}.{svc.metadata.name}"


def _check_golden(path: Path, text: str) -> None:
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.exists(), f"{path} missing: run with OAB_UPDATE_GOLDEN=1 and review the diff"
    assert path.read_text() == text, f"{path} differs: re-render with OAB_UPDATE_GOLDEN=1"


@pytest.fixture(scope="module")
def ecs_model() -> Any:
    return botocore.session.get_session().get_service_model("ecs")


def _botocore_errors(model: Any, operation: str, params: dict[str, Any]) -> str:
    report = ParamValidator().validate(params, model.operation_model(operation).input_shape)
    return report.generate_report() if report.has_errors() else ""


# ---------------------------------------------------------------------------------------------
# Golden files and the model


def test_examples_are_covered() -> None:
    # The examples must be present and expand (a fleet of 10); otherwise the golden test below
    # would silently shrink.
    examples = [name for name in IDS if not name.startswith("fixture-")]
    assert len(examples) >= 12


@pytest.mark.parametrize("svc", SERVICES, ids=IDS)
def test_golden(svc: OABService) -> None:
    rendered = render_agent(svc, CTX)
    stem = _golden_stem(svc)
    _check_golden(GOLDEN / f"{stem}.config.toml", rendered.config_toml)
    text = json.dumps(rendered.to_dict(), indent=2, ensure_ascii=False) + "\n"
    _check_golden(GOLDEN / f"{stem}.json", text)


def test_no_orphan_golden_files() -> None:
    expected = set()
    for svc in SERVICES:
        stem = _golden_stem(svc)
        expected |= {f"{stem}.config.toml", f"{stem}.json"}
    present = {p.name for p in GOLDEN.iterdir()} if GOLDEN.exists() else set()
    if UPDATE:
        for stale in present - expected:
            (GOLDEN / stale).unlink()
        return
    assert present == expected


@pytest.mark.parametrize("svc", SERVICES, ids=IDS)
def test_every_request_passes_botocore_validation(svc: OABService, ecs_model: Any) -> None:
    task_def = render_task_definition(svc, CTX)
    create = render_create_service(
        svc, CTX, task_definition=f"{task_def['family']}:7", client_token="t" * 36
    )
    updates = [
        render_update_service(svc, CTX, task_definition=f"{task_def['family']}:7"),
        render_update_service(
            svc, CTX, task_definition=f"{task_def['family']}:7", force_new_deployment=True
        ),
    ]
    assert _botocore_errors(ecs_model, "RegisterTaskDefinition", task_def) == ""
    assert _botocore_errors(ecs_model, "CreateService", create) == ""
    for update in updates:
        assert _botocore_errors(ecs_model, "UpdateService", update) == ""
    # The stricter in-package check (enums, maximum lengths) agrees.
    validate_request("RegisterTaskDefinition", task_def)
    validate_request("CreateService", create)


def test_model_validation_catches_what_ecs_rejects(ecs_model: Any) -> None:
    task_def = render_task_definition(_service(_manifest()), CTX)
    unknown = copy.deepcopy(task_def)
    unknown["containerDefinitions"][2]["stopTimeoutSeconds"] = 30
    assert "stopTimeoutSeconds" in _botocore_errors(ecs_model, "RegisterTaskDefinition", unknown)
    with pytest.raises(RenderError, match="stopTimeoutSeconds"):
        validate_request("RegisterTaskDefinition", unknown)
    wrong_type = copy.deepcopy(task_def)
    wrong_type["containerDefinitions"][2]["stopTimeout"] = "120"
    assert "stopTimeout" in _botocore_errors(ecs_model, "RegisterTaskDefinition", wrong_type)
    # botocore skips enums; the package check does not.
    bad_enum = copy.deepcopy(task_def)
    bad_enum["containerDefinitions"][2]["dependsOn"][0]["condition"] = "SUCCEEDED"
    with pytest.raises(RenderError, match="SUCCEEDED"):
        validate_request("RegisterTaskDefinition", bad_enum)
    too_long = copy.deepcopy(task_def)
    too_long["tags"][0]["key"] = "k" * 129
    with pytest.raises(RenderError, match="longer than 128"):
        validate_request("RegisterTaskDefinition", too_long)


# ---------------------------------------------------------------------------------------------
# config.toml


@pytest.mark.parametrize("svc", SERVICES, ids=IDS)
def test_config_toml_round_trips(svc: OABService) -> None:
    text = render_config_toml(svc)
    assert tomllib.loads(text) == svc.spec.config_toml_dict()


def test_secrets_reach_config_only_as_placeholders() -> None:
    svc = _service(
        _manifest(
            env={"SIGNING_HINT": "plain-value"},
            secrets=[
                {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/default/bot/token"},
                {
                    "name": "ANTHROPIC_API_KEY",
                    "source": "secretsmanager",
                    "arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
                    "oab/default/bot/sk-FAKE-AbCdEf",
                },
            ],
        )
    )
    text = render_config_toml(svc)
    data = tomllib.loads(text)
    assert data["discord"]["bot_token"] == "${DISCORD_BOT_TOKEN}"
    assert "plain-value" not in text
    assert "/oab/default/bot/token" not in text
    assert "sk-FAKE" not in text
    # The agent CLI needs its API key (its environment is cleared) but not the bot token.
    assert data["agent"]["inherit_env"] == ["ANTHROPIC_API_KEY", "SIGNING_HINT"]
    # In the task definition secrets are references in `secrets`, never in `environment`.
    main = render_task_definition(svc, CTX)["containerDefinitions"][2]
    env_names = {e["name"] for e in main["environment"]}
    assert {"DISCORD_BOT_TOKEN", "ANTHROPIC_API_KEY"}.isdisjoint(env_names)
    assert [s["name"] for s in main["secrets"]] == ["ANTHROPIC_API_KEY", "DISCORD_BOT_TOKEN"]


def test_a_literal_token_never_gets_to_the_renderer() -> None:
    doc = _manifest()
    doc["spec"]["config"]["discord"]["bot_token"] = FAKE_TOKEN
    with pytest.raises(ValueError, match="looks like a Slack token") as info:
        parse_document(doc)
    assert FAKE_TOKEN not in str(info.value)
    # Nor in plain env, where it used to reach the task definition in plaintext.
    with pytest.raises(ValueError, match=r"spec\.env\.SIGNING_HINT") as info:
        parse_document(_manifest(env={"SIGNING_HINT": FAKE_TOKEN}))
    assert FAKE_TOKEN not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Task definition shape


def test_task_definition_follows_the_startup_design() -> None:
    svc = _service(_manifest(bootstrapFrom="s3://agent-state/default/bot/home.tar.gz"))
    td = render_task_definition(svc, CTX)
    assert td["family"] == "oab-default-bot" == family("default", "bot")
    assert (td["networkMode"], td["requiresCompatibilities"]) == ("awsvpc", ["FARGATE"])
    assert (td["cpu"], td["memory"]) == ("256", "512")
    assert td["volumes"] == [{"name": taskcontract.SHARED_VOLUME}]
    init, sidecar, main = td["containerDefinitions"]
    assert [init["name"], sidecar["name"], main["name"]] == [
        taskcontract.INIT_CONTAINER,
        taskcontract.SIDECAR_CONTAINER,
        "openab",
    ]
    assert (init["essential"], sidecar["essential"], main["essential"]) == (False, False, True)
    assert init["image"] == sidecar["image"] == CTX.agent_image
    assert main["image"] == "ghcr.io/openabdev/openab:stable-kiro"
    assert init["command"] == taskcontract.init_command()
    assert sidecar["command"] == taskcontract.sidecar_command()
    assert main["entryPoint"] + main["command"] == taskcontract.entry_command()
    assert main["dependsOn"] == [
        {"containerName": taskcontract.INIT_CONTAINER, "condition": "SUCCESS"},
        {"containerName": taskcontract.SIDECAR_CONTAINER, "condition": "START"},
    ]
    # Fargate Spot gives 120 s: the agent archives HOME first, the sidecar uploads it after.
    assert main["stopTimeout"] < sidecar["stopTimeout"] == 120
    digest = hashlib.sha256(render_config_toml(svc).encode()).hexdigest()
    uri = f"s3://oab-control-plane/artifacts/default/bot/3/{digest[:16]}/config.toml"
    assert artifact_uri(CTX, svc) == uri
    assert {e["name"]: e["value"] for e in init["environment"]}["CONFIG_SHA256"] == digest
    init_env = {e["name"]: e["value"] for e in init["environment"]}
    assert init_env["CONFIG_ARTIFACT_PATH"] == uri
    assert init_env["BOOTSTRAP_FROM"] == "s3://agent-state/default/bot/home.tar.gz"
    sidecar_env = {e["name"]: e["value"] for e in sidecar["environment"]}
    assert sidecar_env["BOOTSTRAP_FROM"] == init_env["BOOTSTRAP_FROM"]
    assert sidecar_env[taskcontract.ENV_NAMESPACE] == "default"
    main_env = {e["name"]: e["value"] for e in main["environment"]}
    assert main_env["CONFIG_ARTIFACT_PATH"] == uri
    for container in (init, sidecar, main):
        assert container["mountPoints"] == [
            {"sourceVolume": taskcontract.SHARED_VOLUME, "containerPath": "/oab", "readOnly": False}
        ]
        assert container["logConfiguration"] == {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": "/oab/agents",
                "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "default/bot",
            },
        }
    assert main["secrets"] == [{"name": "DISCORD_BOT_TOKEN", "valueFrom": "/oab/default/bot/token"}]
    tags = {t["key"]: t["value"] for t in td["tags"]}
    assert tags["oab.dev/namespace"] == "default"
    assert tags["oab.dev/name"] == "bot"
    assert tags["oab.dev/generation"] == "3"

    # The content-hash tag is the sha256 of exactly what is registered apart from the tags,
    # computed here independently of the renderer (canonical JSON: sorted keys, no spaces).
    def canonical_sha256(request: dict[str, Any]) -> str:
        body = {k: v for k, v in request.items() if k != "tags"}
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    assert tags[CONTENT_HASH_TAG] == canonical_sha256(td)
    changed = copy.deepcopy(td)
    changed["containerDefinitions"][2]["environment"].append({"name": "X", "value": "1"})
    assert canonical_sha256(changed) != tags[CONTENT_HASH_TAG]


def test_no_bootstrap_means_no_bootstrap_variable() -> None:
    td = render_task_definition(_service(_manifest()), CTX)
    for container in td["containerDefinitions"]:
        assert "BOOTSTRAP_FROM" not in {e["name"] for e in container["environment"]}


def test_unapplied_manifest_renders_as_generation_one() -> None:
    doc = _manifest()
    del doc["metadata"]["generation"]
    svc = _service(doc)
    assert artifact_key(svc).startswith("artifacts/default/bot/1/")


def test_a_different_rendering_of_one_generation_gets_its_own_artifact() -> None:
    # Artifacts are write-once: a controller upgrade that renders generation N differently must
    # not meet the old bytes under the same key (the init container would refuse them).
    svc = _service(_manifest())
    doc = _manifest()
    doc["spec"]["config"]["pool"] = {"max_sessions": 3}
    other = _service(doc)
    assert svc.metadata.generation == other.metadata.generation
    assert render_config_toml(svc) != render_config_toml(other)
    assert artifact_key(svc) != artifact_key(other)
    assert artifact_key(svc) == artifact_key(_service(_manifest()))


def test_output_is_sorted_whatever_the_manifest_order() -> None:
    secrets = [
        {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/default/bot/token"},
        {"name": "A_KEY", "source": "ssm", "path": "/oab/default/bot/a"},
    ]
    networking = {"subnets": ["subnet-0bbb0000", "subnet-0aaa0000"]}
    one = _service(_manifest(secrets=secrets, env={"Z": "1", "B": "2"}, networking=networking))
    two = _service(
        _manifest(
            secrets=list(reversed(secrets)),
            env={"B": "2", "Z": "1"},
            networking={"subnets": list(reversed(networking["subnets"]))},
        )
    )
    assert render_task_definition(one, CTX) == render_task_definition(two, CTX)
    update = render_update_service(one, CTX, task_definition="f:1")
    assert update == render_update_service(two, CTX, task_definition="f:1")
    assert update["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [
        "subnet-0aaa0000",
        "subnet-0bbb0000",
    ]


# ---------------------------------------------------------------------------------------------
# Roles and platform.ecs


def test_roles_from_templates_per_agent() -> None:
    td = render_task_definition(_service(_manifest()), CTX)
    assert td["executionRoleArn"] == "arn:aws:iam::123456789012:role/oab-agent-exec-default-bot"
    # A role name becomes an ARN when the account is known ...
    assert td["taskRoleArn"] == "arn:aws:iam::123456789012:role/oab-agent-task-default-bot"
    # ... in the region's partition ...
    cn = CTX.model_copy(update={"region": "cn-north-1"})
    assert render_task_definition(_service(_manifest()), cn)["taskRoleArn"].startswith(
        "arn:aws-cn:iam::123456789012:role/"
    )
    # ... and passes through as a name when it is not.
    no_account = CTX.model_copy(
        update={"account_id": None, "execution_role_arn": "exec-{namespace}-{name}"}
    )
    td = render_task_definition(_service(_manifest()), no_account)
    assert (td["executionRoleArn"], td["taskRoleArn"]) == (
        "exec-default-bot",
        "oab-agent-task-default-bot",
    )


def test_account_placeholder_without_account_is_an_error() -> None:
    ctx = CTX.model_copy(update={"account_id": None})
    with pytest.raises(RenderError, match="account_id") as info:
        render_task_definition(_service(_manifest()), ctx)
    assert info.value.field == "execution_role_arn"
    assert not info.value.retryable


def test_platform_ecs_overrides_the_top_level() -> None:
    svc = dict(ALL)["fixture-platform-override"]
    td = render_task_definition(svc, CTX)
    assert td["executionRoleArn"] == "arn:aws:iam::123456789012:role/custom-exec"
    assert td["taskRoleArn"] == "arn:aws:iam::210987654321:role/custom-task"
    create = render_create_service(svc, CTX, task_definition="f:1", client_token="tok")
    assert create["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    assert create["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-0abc0000", "subnet-0bbb0000"],
            "securityGroups": ["sg-0abc0000", "sg-0fff0000"],
            "assignPublicIp": "ENABLED",
        }
    }
    # The k8s overlay is kept by the API but leaves no trace in ECS requests.
    assert "nodeSelector" not in json.dumps([td, create])


def test_context_networking_when_the_spec_has_none() -> None:
    update = render_update_service(_service(_manifest()), CTX, task_definition="f:1")
    assert update["networkConfiguration"] == {
        "awsvpcConfiguration": {
            "subnets": ["subnet-0ccc0000", "subnet-0ddd0000"],
            "securityGroups": ["sg-0eee0000"],
            "assignPublicIp": "DISABLED",
        }
    }
    bare = CTX.model_copy(update={"default_subnets": ()})
    with pytest.raises(RenderError, match="no subnets"):
        render_update_service(_service(_manifest()), bare, task_definition="f:1")


# ---------------------------------------------------------------------------------------------
# Services


def test_create_and_update_service_requests() -> None:
    svc = _service(_manifest(capacityProvider="FARGATE_SPOT"))
    create = render_create_service(svc, CTX, task_definition="oab-default-bot:4", client_token="x")
    assert create["serviceName"] == service_name("default", "bot") == "oab-default-bot"
    assert create["cluster"] == "oab"
    assert create["taskDefinition"] == "oab-default-bot:4"
    assert create["desiredCount"] == 1
    assert create["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    assert "launchType" not in create
    assert "loadBalancers" not in create
    assert create["deploymentConfiguration"] == {
        "minimumHealthyPercent": 0,
        "maximumPercent": 100,
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    }
    update = render_update_service(
        svc, CTX, task_definition="oab-default-bot:5", force_new_deployment=True
    )
    assert update["service"] == "oab-default-bot"
    assert update["forceNewDeployment"] is True
    for key in ("desiredCount", "capacityProviderStrategy", "deploymentConfiguration"):
        assert update[key] == create[key]


@pytest.mark.parametrize("token", ["", "x" * 37, "tok en", "tökén"])
def test_client_token_is_validated(token: str) -> None:
    with pytest.raises(RenderError, match="clientToken"):
        render_create_service(_service(_manifest()), CTX, task_definition="f:1", client_token=token)


def test_example_client_token_is_deterministic_and_short() -> None:
    svc = _service(_manifest())
    token = example_client_token(svc)
    assert token == example_client_token(_service(_manifest()))
    assert 0 < len(token) <= 36
    other = _manifest()
    other["metadata"]["generation"] = 4
    assert example_client_token(_service(other)) != token


# ---------------------------------------------------------------------------------------------
# Rules the emulator does not enforce


def test_check_task_definition_refuses_what_real_ecs_refuses() -> None:
    good = render_task_definition(_service(_manifest()), CTX)
    check_task_definition(good)
    bridge = {**good, "networkMode": "bridge"}
    with pytest.raises(RenderError, match="awsvpc"):
        check_task_definition(bridge)
    bad_pair = {**good, "cpu": "256", "memory": "4096"}
    with pytest.raises(RenderError, match="not a Fargate size"):
        check_task_definition(bad_pair)
    no_role = {k: v for k, v in copy.deepcopy(good).items() if k != "executionRoleArn"}
    with pytest.raises(RenderError, match=r"containerDefinitions\[0\]: .* required for awslogs"):
        check_task_definition(no_role)
    for container in no_role["containerDefinitions"]:
        container.pop("logConfiguration")
    with pytest.raises(RenderError, match=r"containerDefinitions\[2\]: .* required for secrets"):
        check_task_definition(no_role)


def test_check_service_request_refuses_what_real_ecs_refuses() -> None:
    good = render_create_service(
        _service(_manifest()), CTX, task_definition="f:1", client_token="t"
    )
    check_service_request(good)
    with pytest.raises(RenderError, match="mutually exclusive"):
        check_service_request({**good, "launchType": "FARGATE"})
    two_copies = copy.deepcopy(good)
    two_copies["deploymentConfiguration"]["maximumPercent"] = 200
    with pytest.raises(RenderError, match="two copies"):
        check_service_request(two_copies)
    with pytest.raises(RenderError, match="exactly one task"):
        check_service_request({**good, "desiredCount": 2})


def test_context_is_validated() -> None:
    base = CTX.model_dump()
    for field, value in [
        ("region", "Europe"),
        ("bucket", "Not_A_Bucket"),
        ("execution_role_arn", "role-{namespace}-{tenant}"),
        ("default_subnets", ("subnet-xyz",)),
        ("default_security_groups", ("group",)),
        ("account_id", "12345"),
        ("log_group", "bad group name"),
    ]:
        with pytest.raises(ValidationError, match=field):
            RenderContext(**{**base, field: value})
    with pytest.raises(ValidationError):
        RenderContext(**{**base, "surprise": 1})


# ---------------------------------------------------------------------------------------------
# The content hash


def test_hash_is_stable_and_ignores_tags() -> None:
    one = render_task_definition(_service(_manifest()), CTX)
    two = render_task_definition(_service(_manifest()), CTX)
    assert task_definition_hash(one) == task_definition_hash(two)
    retagged = {**one, "tags": [{"key": "other", "value": "x"}]}
    assert task_definition_hash(retagged) == task_definition_hash(one)
    untagged = {k: v for k, v in one.items() if k != "tags"}
    assert task_definition_hash(untagged) == task_definition_hash(one)
    # Labels are not part of the task definition.
    labelled = _manifest()
    labelled["metadata"]["labels"] = {"team": "x"}
    assert render_task_definition(_service(labelled), CTX) == one


def _hash_of(doc: dict[str, Any], ctx: RenderContext = CTX) -> str:
    return task_definition_hash(render_task_definition(_service(doc), ctx))


def _with_generation(generation: int) -> dict[str, Any]:
    doc = _manifest()
    doc["metadata"]["generation"] = generation
    return doc


@pytest.mark.parametrize(
    ("change", "doc", "ctx"),
    [
        ("image", _manifest(taskDefinition={"image": "ghcr.io/openabdev/openab:v2"}), CTX),
        ("cpu/memory", _manifest(cpu=512, memory=1024), CTX),
        ("env", _manifest(env={"LOG_LEVEL": "debug"}), CTX),
        (
            "secret reference",
            _manifest(
                secrets=[
                    {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/default/bot/t2"}
                ]
            ),
            CTX,
        ),
        ("bootstrap", _manifest(bootstrapFrom="s3://agent-state/x.tar.gz"), CTX),
        ("generation (artifact path)", _with_generation(4), CTX),
        ("task role", _manifest(platform={"ecs": {"taskRole": "other-task"}}), CTX),
        ("agent image", _manifest(), CTX.model_copy(update={"agent_image": "oab/ctl:0.2"})),
        ("log group", _manifest(), CTX.model_copy(update={"log_group": "/other"})),
        ("architecture", _manifest(), CTX.model_copy(update={"cpu_architecture": "ARM64"})),
    ],
)
def test_any_container_affecting_change_changes_the_hash(
    change: str, doc: dict[str, Any], ctx: RenderContext
) -> None:
    assert _hash_of(doc, ctx) != _hash_of(_manifest()), change


# ---------------------------------------------------------------------------------------------
# Against the emulator: boto3 accepts the requests as rendered


def test_requests_are_accepted_by_the_local_emulator(aws: AWS) -> None:
    ec2 = aws.client("ec2")
    ecs = aws.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="oab", Description="oab", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName="oab", capacityProviders=["FARGATE", "FARGATE_SPOT"])
    ctx = CTX.model_copy(update={"default_subnets": (subnet,), "default_security_groups": (group,)})
    svc = _service(_manifest())
    rendered = render_task_definition(svc, ctx)
    registered = ecs.register_task_definition(**rendered)
    arn = registered["taskDefinition"]["taskDefinitionArn"]
    described = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
    tags = {t["key"]: t["value"] for t in described["tags"]}
    assert tags[CONTENT_HASH_TAG] == task_definition_hash(rendered)
    names = [c["name"] for c in described["taskDefinition"]["containerDefinitions"]]
    assert names == [taskcontract.INIT_CONTAINER, taskcontract.SIDECAR_CONTAINER, "openab"]
    ecs.create_service(
        **render_create_service(
            svc, ctx, task_definition=arn, client_token=example_client_token(svc)
        )
    )
    ecs.update_service(
        **render_update_service(svc, ctx, task_definition=arn, force_new_deployment=True)
    )
    service = ecs.describe_services(cluster="oab", services=["oab-default-bot"])["services"][0]
    assert service["taskDefinition"] == arn
    assert service["desiredCount"] == 1
