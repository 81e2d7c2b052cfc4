"""The tenant boundary (issue 11 item 5): roles, secrets and bootstrapFrom stay within the agent.

Reproduced by the issue: ``platform.ecs.executionRole``/``taskRole`` accepted any agent's role, so
team A could run its own image with team B's secrets and read or overwrite B's HOME archive.
Also: role names over 64 characters, task definitions over 64 KiB and a ``bootstrapFrom`` inside
the control-plane bucket were accepted. These are pure tests of the policy and of the renderer,
which the controller calls at every reconcile (``RenderError`` is terminal: the agent parks).
"""

from __future__ import annotations

from typing import Any

import pytest

from oab.controller.adapters import store
from oab.controller.api.document import parse_document
from oab.controller.api.service import OABService
from oab.controller.base.names import (
    CLUSTER_PROFILE_KEY,
    CONTROL_PLANE_PREFIXES,
    manifest_key,
    snapshot_record_key,
    snapshot_request_key,
)
from oab.controller.core.outcome import decide
from oab.controller.core.render import (
    POLICY_VIOLATION,
    TASK_DEFINITION_MAX_BYTES,
    RenderContext,
    RenderError,
    artifact_key,
    render_task_definition,
)
from oab.controller.core.tenancy import (
    TenantPolicy,
    check_allowlist,
    control_plane_prefix,
    parse_role_arn,
)

ACCOUNT = "123456789012"
SM = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}"
CTX = RenderContext(
    region="us-east-1",
    bucket="oab-control-plane",
    cluster="oab",
    agent_image="ghcr.io/openabdev/oab-controller:0.1.0",
    execution_role_arn="arn:aws:iam::{account}:role/oab-agent-exec-{namespace}-{name}",
    task_role_arn="arn:aws:iam::{account}:role/oab-agent-task-{namespace}-{name}",
    account_id=ACCOUNT,
    default_subnets=("subnet-0123abcd",),
)


def _svc(name: str = "b", namespace: str = "a", **spec: Any) -> OABService:
    base: dict[str, Any] = {
        "cpu": 256,
        "memory": 512,
        "taskDefinition": {"image": "ghcr.io/openabdev/openab:stable-kiro"},
        "secrets": [
            {
                "name": "DISCORD_BOT_TOKEN",
                "source": "ssm",
                "path": f"/oab/{namespace}/{name}/discord-token",
            }
        ],
        "config": {
            "agent": {"preset": "kiro"},
            "discord": {"bot_token": "${DISCORD_BOT_TOKEN}"},
        },
    }
    base.update(spec)
    obj = parse_document(
        {
            "apiVersion": "oab.dev/v1",
            "kind": "OABService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": base,
        }
    )
    assert isinstance(obj, OABService)
    return obj


def _refused(svc: OABService, ctx: RenderContext = CTX) -> RenderError:
    with pytest.raises(RenderError) as info:
        render_task_definition(svc, ctx)
    return info.value


def _role(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


# ------------------------------------------------------------------------------------- roles


def test_another_agents_role_is_refused_in_either_slot() -> None:
    for key in ("executionRole", "taskRole"):
        victim = _role(f"oab-agent-{'exec' if key == 'executionRole' else 'task'}-team-b-bot")
        err = _refused(_svc(platform={"ecs": {key: victim}}))
        assert err.field == f"spec.platform.ecs.{key}"
        assert err.reason == POLICY_VIOLATION
        assert victim in err.problem
        assert "role_allowlist" in str(err.hint)
        assert decide(error=err).kind == "park"


def test_the_agents_own_roles_are_accepted_as_overrides() -> None:
    td = render_task_definition(
        _svc(
            platform={
                "ecs": {
                    "executionRole": _role("oab-agent-exec-a-b"),
                    "taskRole": "oab-agent-task-a-b",  # a bare name resolves to the same ARN
                }
            }
        ),
        CTX,
    )
    assert td["executionRoleArn"] == _role("oab-agent-exec-a-b")
    assert td["taskRoleArn"] == _role("oab-agent-task-a-b")


def test_own_roles_are_exact_never_a_prefix_of_a_dash_joined_name() -> None:
    # Agent a/b may not take the roles of a-b/c or a/b-c (oab-agent-task-a-b-c), although a
    # pattern "oab-agent-task-a-b-*" would have matched them.
    err = _refused(_svc(platform={"ecs": {"taskRole": _role("oab-agent-task-a-b-c")}}))
    assert err.reason == POLICY_VIOLATION
    # The execution role in the task slot is not "own" either.
    err = _refused(_svc(platform={"ecs": {"taskRole": _role("oab-agent-exec-a-b")}}))
    assert err.reason == POLICY_VIOLATION


def test_allow_list_globs_with_placeholders() -> None:
    ctx = CTX.model_copy(
        update={
            "role_allowlist": (
                "arn:aws:iam::{account}:role/oab/{namespace}/shared-*",
                "arn:aws:iam::999999999999:role/platform-exec",
            )
        }
    )
    td = render_task_definition(
        _svc(platform={"ecs": {"executionRole": _role("oab/a/shared-exec")}}), ctx
    )
    assert td["executionRoleArn"] == _role("oab/a/shared-exec")
    render_task_definition(
        _svc(platform={"ecs": {"taskRole": _role("platform-exec", "999999999999")}}), ctx
    )
    # {namespace} keeps the shared role per namespace: namespace a may not use namespace c's.
    assert _refused(
        _svc(platform={"ecs": {"executionRole": _role("oab/c/shared-exec")}}), ctx
    ).reason == (POLICY_VIOLATION)
    # {account} is the control plane's account, not any account.
    assert (
        _refused(
            _svc(platform={"ecs": {"executionRole": _role("oab/a/shared-exec", "210987654321")}}),
            ctx,
        ).reason
        == POLICY_VIOLATION
    )


def test_unknown_account_is_not_compared_but_the_rest_is() -> None:
    policy = TenantPolicy(partition="aws", region="us-east-1", account=None, bucket="cp")
    own = _role("oab-agent-task-a-b")
    real_account = _role("oab-agent-task-a-b", "999999999999")
    assert policy.role_refusal(real_account, own=own, slot="task", namespace="a", name="b") is None
    assert policy.role_refusal(
        _role("oab-agent-task-c-d", "999999999999"), own=own, slot="task", namespace="a", name="b"
    )
    known = TenantPolicy(partition="aws", region="us-east-1", account=ACCOUNT, bucket="cp")
    assert known.role_refusal(real_account, own=own, slot="task", namespace="a", name="b")


def test_role_names_over_64_characters_are_refused() -> None:
    namespace, name = "n" * 30, "m" * 30  # template name oab-agent-exec-{ns}-{name}: 76 chars
    err = _refused(_svc(name=name, namespace=namespace))
    assert err.field == "metadata.name"
    assert "76 characters; IAM allows at most 64" in err.problem
    assert "execution_role template" in err.problem
    long_override = _role("r" * 65)
    ctx = CTX.model_copy(update={"role_allowlist": ("arn:aws:iam::{account}:role/*",)})
    err = _refused(_svc(platform={"ecs": {"taskRole": long_override}}), ctx)
    assert err.field == "spec.platform.ecs.taskRole"
    # 48 + 16 = 64: the longest name pair the shipped templates allow still renders.
    render_task_definition(_svc(name="m" * 24, namespace="n" * 24), CTX)
    # An agent whose template names are too long may still run with allow-listed roles.
    shared = {"executionRole": _role("shared-exec"), "taskRole": _role("shared-task")}
    ctx = CTX.model_copy(update={"role_allowlist": ("arn:aws:iam::{account}:role/shared-*",)})
    td = render_task_definition(_svc(name=name, namespace=namespace, platform={"ecs": shared}), ctx)
    assert td["taskRoleArn"] == _role("shared-task")
    err = _refused(_svc(name=name, namespace=namespace, platform={"ecs": shared}))
    assert "(it has none)" in err.problem


def test_parse_role_arn_is_whole_string() -> None:
    role = parse_role_arn(_role("oab/team/x"))
    assert role is not None
    assert (role.account, role.path, role.name) == (ACCOUNT, "/oab/team/", "x")
    assert parse_role_arn(_role("x") + "\n") is None
    assert parse_role_arn("arn:aws:iam::123:role/x") is None


# ----------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "secret",
    [
        {"source": "ssm", "path": "/oab/a/b/token"},
        {"source": "ssm", "path": f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/oab/a/b/token"},
        {
            "source": "secretsmanager",
            "arn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:oab/a/b/key-AbCdEf",
        },
        {
            "source": "secretsmanager",
            "arn": f"{SM}:secret:oab/a/b/key-AbCdEf:api:AWSCURRENT:",
        },
    ],
)
def test_own_secret_paths_are_accepted(secret: dict[str, str]) -> None:
    secrets = [
        {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/a/b/discord-token"},
        {"name": "KEY", **secret},
    ]
    render_task_definition(_svc(secrets=secrets), CTX)


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ({"source": "ssm", "path": "/oab/team-b/bot/discord-token"}, "another agent"),
        ({"source": "ssm", "path": "/oab/a/b-c/token"}, "a dash-joined neighbour"),
        ({"source": "ssm", "path": "/oab/a/b"}, "the prefix itself, not under it"),
        ({"source": "ssm", "path": "discord-token"}, "an unscoped name"),
        (
            {"source": "ssm", "path": f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/oab/a/b/t"},
            "another region",
        ),
        (
            {"source": "ssm", "path": "arn:aws:ssm:us-east-1:210987654321:parameter/oab/a/b/t"},
            "another account",
        ),
        (
            {
                "source": "secretsmanager",
                "arn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:oab/c/d/key-AbCdEf",
            },
            "another agent's secret",
        ),
    ],
)
def test_foreign_secrets_are_refused_with_their_field(secret: dict[str, str], why: str) -> None:
    secrets = [
        {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/a/b/discord-token"},
        {"name": "KEY", **secret},
    ]
    err = _refused(_svc(secrets=secrets))
    key = "path" if secret["source"] == "ssm" else "arn"
    assert err.field == f"spec.secrets[1].{key}", why
    assert err.reason == POLICY_VIOLATION
    assert "/oab/a/b/" in str(err.hint) or "oab/a/b/" in str(err.hint)


def test_secret_allow_list_matches_canonical_arns() -> None:
    ctx = CTX.model_copy(
        update={
            "secret_allowlist": (
                "arn:aws:ssm:{region}:{account}:parameter/oab/shared/{namespace}/*",
                "arn:aws:secretsmanager:{region}:{account}:secret:platform/openai-??????",
            )
        }
    )
    secrets = [
        {"name": "DISCORD_BOT_TOKEN", "source": "ssm", "path": "/oab/a/b/discord-token"},
        {"name": "SHARED", "source": "ssm", "path": "/oab/shared/a/api-key"},
        {
            "name": "OPENAI",
            "source": "secretsmanager",
            "arn": f"{SM}:secret:platform/openai-AbCdEf:key::",
        },
    ]
    render_task_definition(_svc(secrets=secrets), ctx)
    secrets[1]["path"] = "/oab/shared/c/api-key"  # namespace c's shared secret
    assert _refused(_svc(secrets=secrets), ctx).field == "spec.secrets[1].path"


# ------------------------------------------------------------------------------ bootstrapFrom


@pytest.mark.parametrize("prefix", CONTROL_PLANE_PREFIXES)
def test_bootstrap_from_may_not_point_into_the_control_plane(prefix: str) -> None:
    err = _refused(_svc(bootstrapFrom=f"s3://oab-control-plane/{prefix}a/b.yaml"))
    assert err.field == "spec.bootstrapFrom"
    assert err.reason == POLICY_VIOLATION
    assert prefix in err.problem


def test_bootstrap_from_elsewhere_is_accepted() -> None:
    render_task_definition(_svc(bootstrapFrom="s3://team-a-state/a/b/home.tar.gz"), CTX)
    # Same bucket, a key outside every control-plane prefix (e.g. a dedicated "agents/" area).
    render_task_definition(_svc(bootstrapFrom="s3://oab-control-plane/agents/a/b.tar.gz"), CTX)


def test_the_prefix_list_covers_every_key_the_control_plane_writes() -> None:
    svc = _svc()
    keys = [
        str(store.object_key("OABService", "a", "b")),
        str(store.object_key("OABFleet", "a", "b")),
        artifact_key(svc),
        snapshot_request_key("a/b"),
        snapshot_record_key("a/b", taken_at=1.0, snapshot_id="1"),
        CLUSTER_PROFILE_KEY,
        manifest_key("a/b"),
    ]
    assert [k for k in keys if control_plane_prefix(k) is None] == []


# ------------------------------------------------------------------------------- 64 KiB limit


def test_task_definitions_over_64_kib_are_refused() -> None:
    env = {f"VALUE_{i}": "x" * 1000 for i in range(70)}
    err = _refused(_svc(env=env))
    assert err.field == "spec"
    assert f"at most {TASK_DEFINITION_MAX_BYTES}" in err.problem
    assert err.reason != POLICY_VIOLATION
    render_task_definition(_svc(env={f"VALUE_{i}": "x" * 1000 for i in range(50)}), CTX)


# ------------------------------------------------------------------------------- allow-lists


@pytest.mark.parametrize(
    ("kind", "entry"),
    [
        ("role", "*"),
        ("role", "arn:aws:s3:::bucket/*"),
        ("role", "arn:aws:iam::{account}:role/{tenant}"),
        ("role", "arn:aws:iam::{account}:role/x y"),
        ("role", "arn:aws:iam::{account}:role/x\n"),
        ("secret", "arn:aws:iam::{account}:role/x"),
        ("secret", "/oab/shared/*"),
    ],
)
def test_allow_list_entries_are_validated(kind: Any, entry: str) -> None:
    with pytest.raises(ValueError, match=r"glob|braces"):
        check_allowlist(kind, (entry,))


def test_allow_list_size_is_bounded() -> None:
    entry = "arn:aws:iam::{account}:role/x"
    check_allowlist("role", (entry,) * 100)
    with pytest.raises(ValueError, match="at most 100"):
        check_allowlist("role", (entry,) * 101)
